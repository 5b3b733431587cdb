"""Shared fixtures: tiny configs that train in well under a second an epoch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


#: Property-based tests' bounded profile: few examples, no deadline (a loaded CI machine must not
#: flake); a test may lower max_examples further (`settings(BOUNDED, max_examples=10)`).
BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_tests():
    """A suite started as a background job of a non-interactive shell (`pytest &` in a script)
    inherits SIGINT ignored, and Python then keeps it ignored: the Ctrl-C tests would wait for
    ever. They test what a user's Ctrl-C does, so the default handling is put back (children
    started by the tests then get SIGINT's default too)."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


#: A tiny job of each compiled entry of the cpu engine (kernel.train_models: MLPs,
#: kernel.train_conv_models: Conv2D networks, kernel.train_lstm_models: LSTM networks), trained
#: once to compile or load it.
_WARM_UP = """
import sys
from actreg_cli.config import ExperimentConfig, validate_mapping
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.cpu.engine import CpuEngine
raw = {"training": {"epochs": 1}}
if sys.argv[1] == "conv":
    layers = [{"kind": "conv2d", "filters": 2}, {"kind": "max_pool2d"}, {"kind": "flatten"}]
    raw["data"] = {"name": "digits", "input_shape": [8, 8, 1]}
    raw["model"] = {"layers": layers}
if sys.argv[1] == "lstm":
    raw["data"] = {"name": "digits", "input_shape": [8, 8]}
    raw["model"] = {"layers": [{"kind": "lstm", "units": 2}]}
CpuEngine().train([TrainJob(validate_mapping(raw, ExperimentConfig, "warm-up"), 1)])
"""


_WARM_UP_KINDS = ("mlp", "conv", "lstm")


def pytest_sessionstart(session) -> None:
    """The xdist controller compiles the cpu engine's three compiled entries (or loads them, ~3
    s) in three processes at once, before its workers start: otherwise every worker that trains
    on the cpu engine compiled the MLP loops itself (~1 minute of CPU each), and the ones that
    train Conv2D or LSTM networks those loops after them. A run of tests that train nothing on the cpu
    engine pays it too, once per checkout and version of the loops (then ~3 s). A warm-up that
    fails only costs that time again (the tests then compile, and fail where something is
    wrong); it says so."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    import subprocess
    import sys

    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _WARM_UP, kind],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for kind in _WARM_UP_KINDS
    ]
    for kind, run in zip(_WARM_UP_KINDS, runs, strict=True):
        _, err = run.communicate()
        if run.returncode != 0:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            last = err.strip().splitlines()[-1:] or ["(no message)"]
            if reporter is not None:
                reporter.write_line(
                    f"warning: warming the cpu engine's {kind} loops up failed: {last[0]}"
                )


#: Environment variable naming a folder that the xdist workers of one test run share.
SHARED_ENV = "ACTREG_TESTS_SHARED"


@pytest.fixture(scope="session", autouse=True)
def shared_folder(request, tmp_path_factory):
    """Under pytest-xdist, a folder of this run's own beside the workers' temporary folders
    (named after the run's id, which every worker of it gets; removed with pytest's other old
    temporary folders) in SHARED_ENV, for `computed_once`; without xdist, none (a value
    inherited from another run is dropped)."""
    run_id = getattr(request.config, "workerinput", {}).get("testrunuid")
    if run_id:
        folder = tmp_path_factory.getbasetemp().parent / f"shared-{run_id}"
        folder.mkdir(exist_ok=True)
        os.environ[SHARED_ENV] = str(folder)
    else:
        os.environ.pop(SHARED_ENV, None)
    yield


def computed_once(key: str, compute):
    """`compute()`'s value, computed by one worker of the run and read back by the others: a
    Keras reference that tests in two files compare with would otherwise train in both
    workers (model.fit: ~15 s each). A worker that asks while another computes it waits for
    that one. Outside xdist, it just computes (callers cache it in the process)."""
    folder = os.environ.get(SHARED_ENV)
    if not folder:
        return compute()
    import fcntl  # POSIX: xdist runs of this suite are on Linux and macOS
    import pickle

    path = Path(folder) / f"computed-{key}.pkl"
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = compute()
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(value))
        partial.replace(path)
        return value


def invoke(*args):
    """`actreg ARGS...` through typer's CliRunner (paths and numbers as strings)."""
    from typer.testing import CliRunner

    from actreg_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_exit_2(result, *words: str) -> None:
    """Bad input as a user sees it: exit 2, the words, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def run_and_report(sweep, **options):
    """What `actreg sweep` does: train and store the cells (study.sweep.run_sweep), then write
    the tables, figures and report (report.sweep.write_outputs)."""
    from actreg_cli.report.sweep import write_outputs
    from actreg_cli.study.sweep.run import run_sweep

    outcome = run_sweep(sweep, **options)
    outcome.files = write_outputs(outcome)
    return outcome


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_config_data() -> dict:
    """A fast experiment: the tutorial's data, 16 hidden units, 3 epochs, 2 repeats."""
    return {
        "name": "tiny",
        "model": {"hidden_units": [16]},
        "regularizers": [
            {"target": "activity", "norm": "l1", "strength": 1e-3, "placement": "before_activation"}
        ],
        "training": {"epochs": 3, "repeats": 2, "seed": 7},
    }


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_config_data: dict) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_config_data)


# Stored sweep cells (study/sweep/store.py keeps a chunk's cells in one pack file).
def stored_record(store_folder: Path, digest: str) -> dict:
    """The stored record (the JSON written for a cell) of cell `digest`."""
    from actreg_cli.study.sweep.store import CellStore

    store = CellStore(store_folder)
    found = store.locate(digest)
    assert found is not None, f"cell {digest[:12]} is not stored in {store.folder}"
    if found.pack is None:  # an earlier version's single-cell file
        return json.loads(store.json_path(digest).read_text(encoding="utf-8"))
    return found.data


def rewrite_stored_record(store_folder: Path, digest: str, edit) -> Path:
    """Change the stored record of cell `digest` in place, as damage or an older version would:
    `edit(record)` mutates the record; returns the file rewritten (the cell's pack)."""
    import numpy as np

    from actreg_cli.study.sweep.store import CellStore

    found = CellStore(store_folder).locate(digest)
    assert found is not None and found.pack is not None
    with np.load(found.pack) as pack:
        arrays = {name: pack[name] for name in pack.files}
    records = json.loads(arrays["cells"].tobytes().decode("utf-8"))
    edit(records[found.position])
    arrays["cells"] = np.frombuffer(json.dumps(records).encode("utf-8"), dtype=np.uint8)
    with open(found.pack, "wb") as fh:
        np.savez(fh, **arrays)
    return found.pack


def stored_cell_hashes(store_folder: Path) -> set[str]:
    """The hashes of every cell stored in `store_folder` (a sweep's folder)."""
    from actreg_cli.study.sweep.store import CellStore

    return {record["hash"] for record in CellStore(store_folder).stored_cells()}


def forget_stored_cell(store_folder: Path, digest: str) -> None:
    """Remove cell `digest` from its pack (the pack's other cells stay), as if it had never
    been stored: the next run of the sweep trains it again."""
    import numpy as np

    from actreg_cli.study.sweep.store import CellStore

    found = CellStore(store_folder).locate(digest)
    assert found is not None and found.pack is not None
    with np.load(found.pack) as pack:
        arrays = {name: pack[name] for name in pack.files}
    records = json.loads(arrays.pop("cells").tobytes().decode("utf-8"))
    kept = [i for i in range(len(records)) if i != found.position]
    if not kept:
        found.pack.unlink()
        return
    renamed = {"cells": json.dumps([records[i] for i in kept]).encode("utf-8")}
    renamed["cells"] = np.frombuffer(renamed["cells"], dtype=np.uint8)
    for new, old in enumerate(kept):  # arrays are named by their cell's position in the pack
        for name, value in arrays.items():
            for prefix in (f"history_{old}", f"samples_{old}_"):
                if name == prefix or (prefix.endswith("_") and name.startswith(prefix)):
                    renamed[name.replace(f"_{old}", f"_{new}", 1)] = value
    with open(found.pack, "wb") as fh:
        np.savez(fh, **renamed)
