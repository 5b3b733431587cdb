"""Reorganizing code and storage changes no result: the tutorial and a shipped sweep, run at a
few epochs by the code of a reference commit and by this tree, write the same numbers byte for
byte in every CSV table. (Reports, figures, metadata and the cell store's layout may change on
purpose.)

The reference is the last commit before sweep cells were stored in packs; it is taken from this
repository's history with `git archive`, so the test is skipped in a checkout without that
history. It is a `slow` test (`python3 -m pytest -m slow tests/test_same_results.py`).
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

#: main before a sweep's cells were stored one pack file per chunk (and before the cpu engine's
#: block loop, whose sums run in another order: the sweep below runs on the fused engine)
REFERENCE_COMMIT = "6affe10"
#: metadata that names when, how and where a study ran, not what it computed
VOLATILE_KEYS = {"command", "created", "store"}
COMMANDS = {
    # the tutorial on the fused engine's MLP program, 30 epochs, 2 repeats per arm
    "tutorial": ["tutorial", "--epochs", "30", "--repeats", "2", "--engine", "fused"],
    # kernel vs bias vs activity on the fused engine, 20 epochs
    "sweep": ["sweep", str(REPO / "configs" / "sweep_targets.yaml"), "--epochs", "20",
              "--repeats", "2", "--engine", "fused"],
}  # fmt: skip


def reference_tree(tmp: Path) -> Path | None:
    """actreg_cli as it was at REFERENCE_COMMIT, unpacked under tmp; None without history."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", REFERENCE_COMMIT, "actreg_cli"],
        capture_output=True,
    )
    if archive.returncode != 0:
        return None
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    return tmp


def run_all(code: Path, runs: Path, numba_cache: Path | None = None) -> None:
    """Run COMMANDS with the actreg_cli under `code`; numba_cache: where that code's compiled
    cpu-engine loops go (None: Numba's default, beside the module, shared with other tests)."""
    # The reference compiled the cpu engine's loops for this host; so does this tree here.
    # `-S` skips site-packages' .pth files: an editable install's import hook would otherwise
    # load this checkout's actreg_cli whatever PYTHONPATH says; the packages themselves are
    # put on the path by hand, after `code`.
    path = os.pathsep.join([str(code), *site.getsitepackages()])
    env = dict(os.environ, PYTHONPATH=path, COLUMNS="200", ACTREG_CPU_TARGET="native")
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    for args in COMMANDS.values():
        done = subprocess.run(
            [sys.executable, "-S", "-m", "actreg_cli", *args, "--runs-dir", str(runs)],
            cwd=runs.parent,  # not this checkout: `-m` puts the working folder first on the path
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]


def files(runs: Path) -> dict[str, bytes]:
    """Every file under runs/, keyed by its path with the timestamped folder name cut to its
    kind (tutorial-20261203-081959 -> tutorial) and a sweep study folder's digest cut (it
    hashes the sweep's resolved config, which grows with every new config field)."""
    out = {}
    for path in sorted(runs.rglob("*")):
        if path.is_file():
            parts = list(path.relative_to(runs).parts)
            if parts[0].startswith("tutorial-"):
                parts[0] = "tutorial"
            if len(parts) > 2 and re.fullmatch(r".+-[0-9a-f]{8}", parts[1]):
                parts[1] = parts[1].rsplit("-", 1)[0]
            out["/".join(parts)] = path.read_bytes()
    return out


def numbers(name: str) -> bool:
    """The files that hold computed numbers: the tables (results.csv holds every stored cell's
    results; the store itself changed its layout since, one file a chunk instead of two a
    cell)."""
    return name.endswith(".csv")


def comparable(name: str, content: bytes) -> object:
    if name.endswith("report.md"):  # a sweep's report says how long the sweep took
        return re.sub(rb"\d+\.\d s\b", b"<seconds> s", content)
    if name.endswith(".yaml") and name.split("/")[-1] in ("study.yaml", "sweep.yaml"):
        data = yaml.safe_load(content)
        return {k: v for k, v in data.items() if k not in VOLATILE_KEYS}
    return content


@pytest.mark.slow  # ~2 minutes: the reference code compiles the cpu engine's loops afresh
def test_the_tutorial_and_a_sweep_write_the_same_files_as_before_the_move(tmp_path: Path):
    reference = reference_tree(tmp_path / "reference")
    if reference is None:
        pytest.skip(f"this checkout lacks commit {REFERENCE_COMMIT[:7]} (shallow clone)")
    run_all(reference, tmp_path / "before", tmp_path / "numba-before")
    run_all(REPO, tmp_path / "after")
    before, after = (
        {name: content for name, content in files(tmp_path / kind).items() if numbers(name)}
        for kind in ("before", "after")
    )
    assert sorted(before) == sorted(after)
    assert len(before) >= 4  # the tutorial's and the sweep's tables
    for name in before:
        assert comparable(name, after[name]) == comparable(name, before[name]), name
