"""Results folders received from someone else: re-drawing, listing, comparing and
exporting read saved numbers and never import the code a config names; a damaged folder is
bad input (exit 2, one line naming it), never a traceback; names cannot drive the terminal.
Property-based tests (hypothesis) damage folders at random."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BOUNDED, assert_exit_2, invoke, write_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

TINY = {
    "model": {"hidden_units": [4]},
    "regularizers": [{"strength": 1.0e-3}],
    "training": {"epochs": 3, "repeats": 2},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two finished run folders (cpu engine, 3 epochs): runs/a-..., runs/b-..."""
    root = tmp_path_factory.mktemp("trained")
    for name, strength in (("a", 1e-3), ("b", 1e-2)):
        data = {**TINY, "name": name, "regularizers": [{"strength": strength}]}
        config = write_yaml(root / f"{name}.yaml", data)
        result = invoke("run", config, "--engine", "cpu", "--runs-dir", root / "runs")
        assert result.exit_code == 0, result.output
    return root / "runs"


@pytest.fixture
def runs(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of the two run folders."""
    copy = tmp_path / "runs"
    shutil.copytree(trained, copy)
    return copy


def folders(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir())


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- class 1: a received folder never runs code --------------------------------------------------

PLANTED = (
    "from pathlib import Path\n"
    "Path(__file__).with_name('PLANTED_RAN').write_text('imported')\n"
    "def fn(x):\n"
    "    return 0.0\n"
)


def plant(folder: Path, where: Path) -> None:
    """Make `folder`'s saved config name a custom function in a module planted in `where`."""
    (where / "planted_reg.py").write_text(PLANTED)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["regularizers"] = [
        {**config["regularizers"][0], "norm": "custom", "function": "planted_reg:fn"}
    ]
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_report_runs_compare_and_export_never_import_a_received_config_s_code(
    runs: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the planted module sits in the current folder
    monkeypatch.delitem(sys.modules, "planted_reg", raising=False)
    a, b = folders(runs)
    plant(a, tmp_path)
    plant(b, tmp_path)
    result = invoke("report", a)
    assert result.exit_code == 0, result.output
    assert "Test:" in result.output  # re-drawn from the saved numbers
    assert invoke("runs", runs).exit_code == 0
    assert invoke("compare", a, b, "--plot", runs / "c.png").exit_code == 0
    assert not (tmp_path / "PLANTED_RAN").exists(), "a received folder ran code"


def test_a_received_sweep_folder_never_imports_its_code(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "planted_reg", raising=False)
    (tmp_path / "planted_reg.py").write_text(PLANTED)
    sweep = {"name": "sw", "base": TINY, "grid": {"training.seed": [0]}, "baseline": False}
    path = write_yaml(tmp_path / "sweep.yaml", sweep)
    result = invoke("sweep", path, "--engine", "cpu", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (study,) = [p.parent for p in (tmp_path / "runs" / "sw").rglob("sweep.yaml")]
    meta = yaml.safe_load((study / "sweep.yaml").read_text())
    written = meta["sweep_as_written"]
    written["base"]["regularizers"] = [
        {"strength": 1.0e-3, "norm": "custom", "function": "planted_reg:fn"}
    ]
    (study / "sweep.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    result = invoke("report", study)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "PLANTED_RAN").exists(), "a received sweep folder ran code"


def test_validate_and_run_still_check_a_custom_function(tmp_path: Path, monkeypatch) -> None:
    """The probe stays where the user chose the config: `validate` imports and calls it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "planted_reg", raising=False)
    (tmp_path / "planted_reg.py").write_text(PLANTED)
    regs = [{"norm": "custom", "function": "planted_reg:fn"}]
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "regularizers": regs})
    assert invoke("validate", config).exit_code == 0
    assert (tmp_path / "PLANTED_RAN").exists()


# --- class 3: damaged folders never crash a reader -----------------------------------------------

DAMAGE = {
    "summary truncated": ("summary.json", lambda b: b[: len(b) // 2]),
    "summary empty": ("summary.json", lambda b: b""),
    "summary a list": ("summary.json", lambda b: b"[1, 2, 3]"),
    "summary wrong types": ("summary.json", lambda b: b'{"test_accuracy": "high", "task": 7}'),
    "summary not utf-8": ("summary.json", lambda b: b"\xff\xfe{"),
    "history truncated": ("history.csv", lambda b: b[: len(b) // 2 + 3]),
    "history header only": ("history.csv", lambda b: b.split(b"\n")[0] + b"\n"),
    "history garbage": ("history.csv", lambda b: b"repeat,epoch,a,b,c,d\nx,y,z,,,\n"),
    "history missing": ("history.csv", None),
    "history a folder": ("history.csv", "folder"),
    "config missing": ("config.yaml", None),
    "config empty": ("config.yaml", lambda b: b""),
    "run.yaml missing": ("run.yaml", None),
    "run.yaml cut short": ("run.yaml", lambda b: b[: len(b) // 2]),
}


def damage(folder: Path, name: str, how) -> None:
    path = folder / name
    if how is None:
        path.unlink()
    elif how == "folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(how(path.read_bytes()))


@pytest.mark.parametrize("variant", list(DAMAGE))
def test_compare_of_a_damaged_run_is_bad_input(runs: Path, variant: str) -> None:
    a, b = folders(runs)
    damage(a, *DAMAGE[variant])
    plot = runs / "c.png"
    assert_exit_2(invoke("compare", a, b, "--plot", plot), a.name)
    assert not plot.exists()


@pytest.mark.parametrize("variant", list(DAMAGE))
def test_runs_lists_every_folder_whatever_one_of_them_holds(runs: Path, variant: str) -> None:
    a, b = folders(runs)
    damage(a, *DAMAGE[variant])
    result = invoke("runs", runs)
    assert result.exit_code == 0, result.output
    assert b.name in result.output and "Traceback" not in result.output
    assert a.name in result.output  # listed (as unreadable where it is), never left out


def test_a_summary_that_is_a_json_list_does_not_hide_the_other_folders(runs: Path) -> None:
    a, b = folders(runs)
    (a / "summary.json").write_text("[]")
    result = invoke("runs", runs)
    assert result.exit_code == 0, result.output
    assert a.name in result.output and b.name in result.output
    assert "unreadable" in result.output or "nan" in result.output


@pytest.mark.parametrize(
    ("plot", "words"),
    [
        ("c.txt", ["--plot", "png, .pdf, .svg"]),
        ("a_folder", ["--plot", "is a folder"]),
        ("/proc/actreg_compare.png", ["--plot", "/proc"]),
        ("/dev/null/c.png", ["--plot"]),
    ],
)
def test_compare_refuses_a_plot_path_it_cannot_write(runs: Path, plot: str, words) -> None:
    a, b = folders(runs)
    target = Path(plot) if plot.startswith("/") else runs / plot
    if plot == "a_folder":
        target.mkdir()
    before = files_under(runs)
    assert_exit_2(invoke("compare", a, b, "--plot", target), *words)
    assert files_under(runs) == before


def test_runs_and_compare_escape_terminal_sequences_in_names(runs: Path) -> None:
    a, b = folders(runs)
    evil = a.with_name("evil\x1b]0;owned\x07\x1b[31mred")
    a.rename(evil)
    config = yaml.safe_load((evil / "config.yaml").read_text())
    config["name"] = "name\x1b[2J"
    (evil / "config.yaml").write_text(yaml.safe_dump(config))
    for result in (invoke("runs", runs), invoke("compare", evil, b, "--plot", runs / "c.png")):
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "evil\\x1b]0;owned\\x07\\x1b[31mred" in result.output


# --- class 4: exports end in a message --------------------------------------------------------------


def test_export_of_a_damaged_run_is_bad_input(runs: Path, tmp_path: Path) -> None:
    a, _ = folders(runs)
    (a / "repeats.csv").write_text("repeat,seed\nx,y\n")
    assert_exit_2(invoke("export", "tensorboard", a, "--logdir", tmp_path / "tb"), a.name)
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("logdir", ["a_file", "/proc/actreg_tb", "/dev/null"])
def test_export_refuses_a_logdir_it_cannot_write(runs: Path, tmp_path: Path, logdir: str):
    a, _ = folders(runs)
    target = Path(logdir) if logdir.startswith("/") else tmp_path / logdir
    if logdir == "a_file":
        target.write_text("x")
    result = invoke("export", "tensorboard", a, "--logdir", target)
    assert_exit_2(result, "--logdir")


def test_export_failing_to_write_exits_1_with_one_line(runs: Path, tmp_path, monkeypatch):
    """A full disk (or any failure of the tracker's writer) is no traceback."""
    import actreg_cli.report.export as export

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "export_tensorboard", full_disk)
    a, _ = folders(runs)
    result = invoke("export", "tensorboard", a, "--logdir", tmp_path / "tb")
    assert result.exit_code == 1, result.output
    assert "export to TensorBoard failed" in result.output
    assert "No space left on device" in result.output
    assert isinstance(result.exception, SystemExit)


def test_mlflow_file_store_is_refused_with_the_sqlite_hint(runs: Path, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    a, _ = folders(runs)
    uri = f"file:{tmp_path / 'mlruns'}"
    result = invoke("export", "mlflow", a, "--tracking-uri", uri)
    if result.exit_code == 0:  # an MLflow that still takes its file store
        return
    assert_exit_2(result, "sqlite:///mlflow.db")


# --- property-based: damaged run folders -------------------------------------------------------------

RUN_FILES = ["summary.json", "history.csv", "repeats.csv", "config.yaml", "run.yaml"]
DAMAGES = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("replace"), st.binary(max_size=64)),
    st.tuples(
        st.just("json"),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["test_accuracy", "mean", "task", "main_metric", "config"]),
                    inner,
                    max_size=3,
                )
            ),
            max_leaves=8,
        ),
    ),
    st.tuples(st.just("delete"), st.none()),
)


def apply_damage(path: Path, kind: str, arg) -> None:
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * arg)])
    elif kind == "replace":
        path.write_bytes(arg)
    elif kind == "json":
        path.write_text(json.dumps(arg))
    else:
        path.unlink()


@BOUNDED
@given(damages=st.lists(st.tuples(st.sampled_from(RUN_FILES), DAMAGES), min_size=1, max_size=3))
def test_damaged_run_folders_give_exit_0_or_2_and_write_nothing_outside(
    trained: Path, tmp_path_factory, damages
) -> None:
    root = tmp_path_factory.mktemp("damaged")
    runs = root / "runs"
    shutil.copytree(trained, runs)
    a, b = folders(runs)
    for name, (kind, arg) in damages:
        if (a / name).is_file():
            apply_damage(a / name, kind, arg)
    outside = sorted(p.name for p in root.iterdir())
    results = [
        invoke("runs", runs),
        invoke("compare", a, b, "--plot", runs / "c.png"),
        invoke("report", a),
    ]
    for result in results:
        assert_read_or_refused(result)
    assert sorted(p.name for p in root.iterdir()) == outside


def assert_read_or_refused(result) -> None:
    """A reader's answer to a damaged folder: exit 0, or exit 2 with an error line; never a
    traceback."""
    assert result.exit_code in (0, 2), result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error:" in result.output


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory) -> Path:
    """A finished two-cell sweep (cpu engine): runs/sw/cells/ and runs/sw/<study>/."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = {"name": "sw", "base": TINY, "grid": {"regularizers.0.strength": [1e-3, 1e-2]}}
    path = write_yaml(root / "sweep.yaml", sweep)
    result = invoke("sweep", path, "--engine", "cpu", "--runs-dir", root / "runs")
    assert result.exit_code == 0, result.output
    return root / "runs"


@settings(BOUNDED, max_examples=10)  # each example re-draws a sweep's figures (~1 s)
@given(data=st.data())
def test_damaged_sweep_folders_give_exit_0_or_2_and_write_nothing_outside(
    trained_sweep: Path, tmp_path_factory, data
) -> None:
    root = tmp_path_factory.mktemp("damaged_sweep")
    runs = root / "runs"
    shutil.copytree(trained_sweep, runs)
    (study,) = [p.parent for p in runs.rglob("sweep.yaml")]
    files = sorted(p for p in (runs / "sw").rglob("*") if p.is_file() and p.suffix != ".png")
    chosen = data.draw(st.lists(st.sampled_from(files), min_size=1, max_size=3, unique=True))
    for path in chosen:
        kind, arg = data.draw(DAMAGES)
        apply_damage(path, kind, arg)
    outside = sorted(p.name for p in root.iterdir())
    for result in (invoke("runs", runs), invoke("report", study)):
        assert_read_or_refused(result)
    assert sorted(p.name for p in root.iterdir()) == outside


@pytest.mark.parametrize("how", ["copied alone", "cells removed"])
def test_report_of_a_study_without_its_cells_rewrites_nothing(
    trained_sweep: Path, tmp_path: Path, how: str
) -> None:
    """A study folder received without the cells folder beside it (or with its cells deleted)
    is refused with exit 2 naming the store; its results, summary and report stay as they were
    (re-drawing would have written every cell as failed)."""
    (study,) = [p.parent for p in trained_sweep.rglob("sweep.yaml")]
    if how == "copied alone":
        copy = tmp_path / "received" / study.name
        shutil.copytree(study, copy)
    else:
        shutil.copytree(trained_sweep, tmp_path / "runs")
        copy = tmp_path / "runs" / "sw" / study.name
        shutil.rmtree(copy.parent / "cells")
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    result = invoke("report", copy)
    assert_exit_2(result, copy.name)
    assert "holds 0 of 3 cells of this study" in " ".join(result.stderr.split())
    assert "nothing rewritten" in result.stderr
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def test_compare_names_a_missing_folder_and_one_that_holds_no_results(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("compare", tmp_path / "nothere", tmp_path / "empty")
    assert_exit_2(result, "nothere")
    flat = " ".join(result.stderr.split())
    assert "nothere: no such folder" in flat
    assert "empty: not a run, sweep study or tutorial folder" in flat
    assert "list index" not in flat


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_export_of_a_damaged_summary_is_bad_input(runs: Path, tmp_path: Path, tracker) -> None:
    a, _ = folders(runs)
    (a / "summary.json").write_text("{")
    if tracker == "mlflow":
        pytest.importorskip("mlflow")
    target = (
        ["--logdir", tmp_path / "tb"]
        if tracker == "tensorboard"
        else ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    )
    result = invoke("export", tracker, a, *target)
    assert_exit_2(result, a.name)
    assert "cannot read the saved results" in result.stderr


@pytest.mark.parametrize(
    ("name", "how", "said"),
    [
        ("history.csv", lambda b: b[: len(b) // 2 + 3], "history.csv is damaged or cut short"),
        ("history.csv", lambda b: b"", "history.csv holds no per-epoch rows"),
        ("repeats.csv", lambda b: b[: len(b) // 2], "repeats.csv is damaged or cut short"),
        ("run.yaml", lambda b: b[: len(b) // 2] + b"\n  - [", "run.yaml is damaged or cut short"),
    ],
)
def test_report_of_a_damaged_file_names_the_file(runs: Path, name, how, said) -> None:
    a, _ = folders(runs)
    damage(a, name, how)
    assert_exit_2(invoke("report", a), a.name, said)


def test_report_of_a_tutorial_without_study_yaml_or_a_sweeps_top_folder(
    trained_sweep: Path, tmp_path: Path
) -> None:
    tutorial = tmp_path / "tutorial-x"
    tutorial.mkdir()
    for name in ("history.csv", "repeats.csv", "test_accuracy_overlay.png"):
        (tutorial / name).write_text("")
    assert_exit_2(invoke("report", tutorial), "not a complete tutorial folder; missing study.yaml")
    (study,) = [p.parent for p in trained_sweep.rglob("sweep.yaml")]
    result = invoke("report", study.parent)
    assert_exit_2(result, "holds a sweep's cells and its study folders")
    assert str(study) in result.stderr.replace("\n", "")
