"""Sweep logic without TensorFlow: grid expansion, bad grids, hashing, chunking, store and resume.

Training is replaced by `FakeExecutor`, whose numbers are a deterministic function of each job's
config and seed, so resumed and uninterrupted sweeps can be compared exactly in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    forget_stored_cell,
    rewrite_stored_record,
    run_and_report,
    stored_cell_hashes,
    stored_record,
    write_yaml,
)

from actreg_cli.config import ConfigError, ExperimentConfig, SweepConfig, load_sweep
from actreg_cli.engines.base import TrainJob, TrainResult
from actreg_cli.study.executors import LocalExecutor
from actreg_cli.study.sweep.grid import baseline_for, expand_grid
from actreg_cli.study.sweep.plan import plan_chunks, plan_sweep, resolve_engines
from actreg_cli.study.sweep.run import run_sweep
from actreg_cli.study.sweep.store import CellStore, cell_hash
from actreg_cli.weights import repeat_seeds


def fake_result(job: TrainJob, epochs_rows: int = 3) -> TrainResult:
    """Numbers that depend on the job only (strength, placement, seed), like a real engine's."""
    config = job.config
    strength = config.regularizers[0].strength if config.regularizers else 0.0
    rng = np.random.default_rng(job.seed)
    accuracy = 0.7 + 0.1 * math.exp(-abs(math.log10(strength) + 4)) if strength else 0.7
    # Noise that differs between cells of the same seed, so paired differences have spread.
    noise = np.random.default_rng([job.seed, round(strength * 1e12)])
    accuracy += float(noise.normal(0.0, 0.01))
    result = TrainResult(
        history=rng.random((epochs_rows, 6 if config.has_validation else 4)),
        train_accuracy=1.0,
        test_accuracy=accuracy,
        train_loss=0.1,
        test_loss=0.5 + strength,
        mean_activation=1.0 / (1.0 + 1000 * strength),
        zero_fraction=0.5,
        diverged=False,
    )
    if config.has_validation:  # best on validation at 1e-2, where the test set's best is 1e-4
        val = 0.7 + 0.1 * math.exp(-abs(math.log10(strength) + 2)) if strength else 0.7
        result.val_accuracy = val + float(noise.normal(0.0, 0.01))
        result.val_loss = 0.4
    return result


class FakeExecutor:
    """An `Executor` that makes results with `fake_result`; records what it was asked to train.

    fail: chunk indices (within one `run` call) that fail; interrupt_after: raise
    KeyboardInterrupt after that many chunks in total (a Ctrl-C mid-sweep).
    """

    def __init__(self, fail: set[int] = frozenset(), interrupt_after: int | None = None):
        self.fail = set(fail)
        self.interrupt_after = interrupt_after
        self.chunks: list[list[TrainJob]] = []
        self.engines: list[str] = []

    def run(self, chunks, engine, on_done, on_failed):
        for index, jobs in enumerate(chunks):
            if self.interrupt_after is not None and len(self.chunks) >= self.interrupt_after:
                raise KeyboardInterrupt
            self.chunks.append(list(jobs))
            self.engines.append(engine)
            if index in self.fail:
                on_failed(index, "RuntimeError: injected failure")
            else:
                on_done(index, [fake_result(job) for job in jobs])


def sweep_config(**changes) -> SweepConfig:
    data = {
        "name": "unit",
        "base": {
            "model": {"hidden_units": [16]},
            "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-4}],
            "training": {"epochs": 3, "repeats": 3, "seed": 5},
        },
        "grid": {
            "regularizers.0.strength": [1e-2, 1e-4, 1e-6],
            "regularizers.0.placement": ["before_activation", "after_activation"],
        },
    }
    data.update(changes)
    return SweepConfig.model_validate(data)


# ---------------------------------------------------------------------------------------------
# Expansion


def test_expand_grid_is_the_product_plus_a_baseline_first():
    sweep = sweep_config()
    cells = expand_grid(sweep)
    assert len(cells) == 1 + 3 * 2
    assert cells[0].baseline and cells[0].config.regularizers == []
    assert [c.id for c in cells[1:]] == [f"c{i}" for i in range(1, 7)]
    # The last key varies fastest.
    assert [c.values["regularizers.0.placement"] for c in cells[1:3]] == [
        "before_activation",
        "after_activation",
    ]
    for cell in cells[1:]:
        reg = cell.config.regularizers[0]
        assert reg.strength == cell.values["regularizers.0.strength"]
        assert reg.placement.value == cell.values["regularizers.0.placement"]
        assert cell.config.training.epochs == 3
    assert not any(c.baseline for c in expand_grid(sweep_config(baseline=False)))


def test_values_are_the_validated_ones(tmp_path: Path):
    """YAML reads `1e-3` as a string; the cell holds the float the config validated to."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "base:\n  regularizers: [{strength: 1.0e-4}]\n"
        "grid:\n  regularizers.0.strength: [1e-3, 1e-5]\n",
        encoding="utf-8",
    )
    cells = expand_grid(load_sweep(path))
    assert [c.values.get("regularizers.0.strength") for c in cells] == [None, 1e-3, 1e-5]


def test_defaults_are_derived_per_cell():
    """An activity regularizer's default placement must not leak into a kernel cell."""
    sweep = sweep_config(grid={"regularizers.0.target": ["activity", "kernel", "bias"]})
    cells = {c.values.get("regularizers.0.target"): c for c in expand_grid(sweep)}
    assert cells["activity"].config.regularizers[0].placement.value == "after_activation"
    assert cells["kernel"].config.regularizers[0].placement is None
    assert cells["bias"].config.regularizers[0].reduction is None


def test_one_baseline_per_combination_of_non_regularizer_keys():
    sweep = sweep_config(
        grid={"model.hidden_units": [[8], [16]], "regularizers.0.strength": [1e-3, 1e-5]}
    )
    cells = expand_grid(sweep)
    baselines = [c for c in cells if c.baseline]
    assert [b.values for b in baselines] == [
        {"model.hidden_units": [8]},
        {"model.hidden_units": [16]},
    ]
    for cell in cells:
        if not cell.baseline:
            base = baseline_for(cell, cells)
            assert base.config.model.hidden_units == cell.config.model.hidden_units


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        (
            {"regularizers.0.strenght": [1e-3]},
            ["regularizers.0.strenght", "did you mean 'strength'"],
        ),
        ({"regularizer.0.strength": [1e-3]}, ["'regularizer'", "did you mean 'regularizers'"]),
        ({"regularizers.1.strength": [1e-3]}, ["regularizers.1", "1 item"]),
        ({"training.epochs": [3, 5, 3]}, ["training.epochs", "listed twice"]),
        (
            {"regularizers.0": [{"strength": 1e-3}], "regularizers.0.strength": [1e-3]},
            ["overlap"],
        ),
    ],
)
def test_bad_grid_keys_are_rejected(grid, words):
    with pytest.raises(ConfigError) as info:
        expand_grid(sweep_config(grid=grid))
    text = str(info.value)
    for word in words:
        assert word in text


def test_empty_list_is_rejected_naming_the_key(tmp_path: Path):
    path = write_yaml(
        tmp_path / "s.yaml",
        {"base": {"regularizers": [{"strength": 1e-4}]}, "grid": {"regularizers.0.strength": []}},
    )
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert "regularizers.0.strength" in str(info.value)
    assert "at least 1" in str(info.value)


def test_invalid_cell_names_the_cell_and_the_field():
    sweep = sweep_config(grid={"regularizers.0.strength": [1e-3, -0.5]})
    with pytest.raises(ConfigError) as info:
        expand_grid(sweep)
    (line,) = info.value.errors
    assert "cell c2" in line and "regularizers.0.strength=-0.5" in line
    assert "regularizers.0.strength: Input should be greater than or equal to 0" in line


def test_placement_for_a_kernel_target_is_rejected():
    sweep = sweep_config(
        base={"regularizers": [{"strength": 1e-4, "placement": "before_activation"}]},
        grid={"regularizers.0.target": ["activity", "kernel"]},
    )
    with pytest.raises(ConfigError) as info:
        expand_grid(sweep)
    (line,) = info.value.errors
    assert "regularizers.0.target=kernel" in line
    assert "'placement' applies only to activity regularizers" in line


def test_two_values_that_are_the_same_experiment_are_rejected():
    with pytest.raises(ConfigError, match="same experiment"):
        expand_grid(sweep_config(grid={"regularizers.0.strength": [1e-4, "0.0001"]}))


def test_a_baseline_equal_to_a_grid_cell_is_rejected():
    sweep = sweep_config(
        base={"model": {"hidden_units": [8]}}, grid={"model.hidden_units": [[8], [16]]}
    )
    with pytest.raises(ConfigError, match="baseline: false"):
        expand_grid(sweep)


def test_sweep_name_must_be_a_folder_name(tmp_path: Path):
    with pytest.raises(ConfigError, match="folder"):
        plan_sweep(sweep_config(name="../elsewhere"), engine="keras", runs_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Hashing


def test_cell_hash_covers_what_changes_results_and_nothing_else():
    config = expand_grid(sweep_config())[1].config
    digest = cell_hash(config, "keras")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert cell_hash(config, "keras") == digest
    renamed = config.model_copy(update={"name": "other", "description": "other"})
    assert cell_hash(renamed, "keras") == digest
    explicit = ExperimentConfig.model_validate(config.resolved())  # defaults written out
    assert cell_hash(explicit, "keras") == digest
    assert cell_hash(config, "fused") != digest
    for key, value in [("epochs", 4), ("seed", 6), ("repeats", 2), ("learning_rate", 0.01)]:
        data = config.resolved()
        data["training"][key] = value
        assert cell_hash(ExperimentConfig.model_validate(data), "keras") != digest, key


def test_cell_hash_is_the_same_in_a_fresh_process():
    config = expand_grid(sweep_config())[3].config
    code = (
        "import sys, json; from actreg_cli.config import ExperimentConfig;"
        "from actreg_cli.study.sweep.store import cell_hash;"
        "c = ExperimentConfig.model_validate(json.loads(sys.stdin.read()));"
        "print(cell_hash(c, 'keras'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(config.resolved()),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert out.stdout.strip() == cell_hash(config, "keras")


# ---------------------------------------------------------------------------------------------
# Chunking


def test_auto_fallback_is_one_note_for_all_the_cells_it_concerns():
    """Six cells the fast engines cannot run (a custom regularizer) give one note, not six."""
    sweep = sweep_config(
        base={
            "model": {"hidden_units": [16]},
            "regularizers": [
                {"norm": "custom", "function": "actreg_cli.custom_regularizers:log_sparsity"}
            ],
            "training": {"epochs": 3, "repeats": 2},
        }
    )
    cells = expand_grid(sweep)
    engines, notes = resolve_engines(cells, "auto")
    regularized = [c.id for c in cells if not c.baseline]
    fallback = "keras"  # where jax is installed, the one of jax and keras estimated cheaper
    if importlib.util.find_spec("jax") is not None:
        from actreg_cli.engines.costs import estimates

        cost = estimates(["jax", "keras"], [cells[1].config])
        fallback = min(cost, key=cost.get)
    assert len(regularized) == 6 and {engines[c] for c in regularized} == {fallback}
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"cells c1, c2, c3, ... c6 (6 cells): using the {fallback} engine")
    assert "custom" in notes[0]


def test_keras_chunks_hold_one_cell_and_fused_chunks_are_balanced_whole_cells():
    cells = expand_grid(sweep_config())  # 7 cells x 3 repeats
    keras = plan_chunks(cells, {c.id: "keras" for c in cells})
    assert [[c.id for c in chunk.cells] for chunk in keras] == [[c.id] for c in cells]
    fused = plan_chunks(cells, {c.id: "fused" for c in cells}, models_per_chunk=10)
    assert [c.id for chunk in fused for c in chunk.cells] == [c.id for c in cells]
    assert all(chunk.n_models <= 10 for chunk in fused)
    assert len(fused) == math.ceil(7 * 3 / 10)
    assert max(ch.n_models for ch in fused) - min(ch.n_models for ch in fused) <= 3


def test_chunks_do_not_depend_on_what_is_done(tmp_path: Path):
    sweep = sweep_config()
    first = plan_sweep(sweep, engine="keras", runs_dir=tmp_path, models_per_chunk=4)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            sweep,
            engine="keras",
            runs_dir=tmp_path,
            executor=FakeExecutor(interrupt_after=1),
            models_per_chunk=4,
        )
    second = plan_sweep(sweep, engine="keras", runs_dir=tmp_path, models_per_chunk=4)
    assert second.done and second.to_run
    assert [ch.cells for ch in second.chunks] == [ch.cells for ch in first.chunks]


# ---------------------------------------------------------------------------------------------
# Store, resume, failures


def test_cells_are_stored_and_a_rerun_trains_nothing(tmp_path: Path):
    sweep = sweep_config()
    executor = FakeExecutor()
    outcome = run_sweep(sweep, engine="keras", runs_dir=tmp_path, executor=executor)
    assert outcome.exit_code == 0 and outcome.n_trained == 7
    assert len(executor.chunks) == 7 and set(executor.engines) == {"keras"}
    store = CellStore(outcome.store_folder)
    for cell in outcome.cells:
        digest = outcome.plan.hashes[cell.id]
        record = store.load(digest, 3)
        assert [r["seed"] for r in record.runs] == repeat_seeds(5, 3)
        assert store.load_history(digest).shape == (3, 3, 4)
    again = FakeExecutor()
    rerun = run_sweep(sweep, engine="keras", runs_dir=tmp_path, executor=again)
    assert again.chunks == [] and rerun.n_trained == 0
    assert rerun.plan.summary_line() == "7 of 7 cells already done, 0 to run"
    forced = FakeExecutor()
    run_sweep(sweep, engine="keras", runs_dir=tmp_path, executor=forced, force=True)
    assert len(forced.chunks) == 7


def test_interrupted_sweep_resumes_to_the_same_results(tmp_path: Path):
    sweep = sweep_config()
    whole = run_and_report(sweep, engine="keras", runs_dir=tmp_path / "a", executor=FakeExecutor())
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            sweep,
            engine="keras",
            runs_dir=tmp_path / "b",
            executor=FakeExecutor(interrupt_after=3),
        )
    executor = FakeExecutor()
    lines = []
    resumed = run_and_report(
        sweep,
        engine="keras",
        runs_dir=tmp_path / "b",
        executor=executor,
        on_plan=lambda plan: lines.append(plan.summary_line()),
    )
    assert lines == ["3 of 7 cells already done, 4 to run"]
    assert len(executor.chunks) == 4
    for name in ("results.csv", "summary.csv"):
        assert (resumed.folder / name).read_bytes() == (whole.folder / name).read_bytes()


def test_a_failed_chunk_is_reported_and_the_rest_completes(tmp_path: Path):
    outcome = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp_path, executor=FakeExecutor(fail={2})
    )
    assert outcome.exit_code == 1
    assert outcome.failures == {"c2": "RuntimeError: injected failure"}
    assert set(outcome.records) == {c.id for c in outcome.cells} - {"c2"}
    assert (
        "c2: failed: RuntimeError: injected failure" in (outcome.folder / "report.md").read_text()
    )
    # The failed cell is not stored: the next run trains it alone.
    executor = FakeExecutor()
    rerun = run_sweep(sweep_config(), engine="keras", runs_dir=tmp_path, executor=executor)
    assert rerun.exit_code == 0
    assert [job.config.regularizers[0].strength for job in executor.chunks[0]] == [1e-2] * 3


def test_diverged_runs_are_recorded_and_the_sweep_goes_on(tmp_path: Path):
    class Diverging(FakeExecutor):
        def run(self, chunks, engine, on_done, on_failed):
            def done(index, results):
                for job, result in zip(chunks[index], results, strict=True):
                    if job.config.regularizers and job.config.regularizers[0].strength == 1e-2:
                        result.diverged = True
                        result.test_accuracy = result.train_accuracy = float("nan")
                on_done(index, results)

            super().run(chunks, engine, done, on_failed)

    outcome = run_sweep(sweep_config(), engine="keras", runs_dir=tmp_path, executor=Diverging())
    assert outcome.exit_code == 0 and len(outcome.records) == 7
    record = outcome.records["c1"]
    assert record.n_diverged == 3 and all(math.isnan(v) for v in record.metric("test_accuracy"))
    assert outcome.records["c3"].n_diverged == 0


def test_local_executor_reports_a_failing_chunk_and_goes_on(monkeypatch):
    import actreg_cli.study.executors as executors

    def train_chunk(engine, jobs, progress=None):
        if jobs[0].seed == 2:
            raise ValueError("cannot train this one")
        return [fake_result(job) for job in jobs]

    monkeypatch.setattr(executors, "train_chunk", train_chunk)
    config = expand_grid(sweep_config())[1].config
    done, failed = {}, {}
    LocalExecutor().run(
        [[TrainJob(config, 1)], [TrainJob(config, 2)], [TrainJob(config, 3)]],
        "keras",
        lambda i, results: done.setdefault(i, results),
        lambda i, message: failed.setdefault(i, message),
    )
    assert sorted(done) == [0, 2]
    assert failed[1].startswith("ValueError: cannot train this one")


def test_local_sweep_progress_counts_model_epochs_as_they_train(tmp_path) -> None:
    """The bar moves during a chunk (the engine reports), and ends at repeats x epochs."""
    from contextlib import contextmanager

    totals: list[int] = []
    advances: list[int] = []

    @contextmanager
    def progress(total: int, description: str):
        totals.append(total)
        yield advances.append

    sweep = sweep_config(grid={"regularizers.0.strength": [1e-2, 1e-4]})
    outcome = run_sweep(sweep, engine="fused", runs_dir=tmp_path, progress=progress)
    expected = sum(c.config.training.repeats * c.config.training.epochs for c in outcome.cells)
    assert totals == [expected]
    assert sum(advances) == expected
    assert len(advances) > len(outcome.plan.chunks)  # during chunks, not only after each


def test_a_damaged_stored_cell_is_named_and_recomputed(tmp_path: Path):
    first = run_sweep(sweep_config(), engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    digest = first.plan.hashes["c2"]

    def drop_a_metric(record: dict) -> None:
        del record["runs"][1]["test_accuracy"]  # parseable, but a metric is missing

    path = rewrite_stored_record(first.store_folder, digest, drop_a_metric)
    executor = FakeExecutor()
    again = run_sweep(sweep_config(), engine="keras", runs_dir=tmp_path, executor=executor)
    assert again.exit_code == 0 and again.n_trained == 1
    assert [note for note in again.plan.notes if str(path) in note] == [
        f"{path}: damaged stored cell {digest[:12]} (missing 'test_accuracy'); recomputing it"
    ]
    assert again.records["c2"].metric("test_accuracy") == first.records["c2"].metric(
        "test_accuracy"
    )


def test_diverged_cells_are_stored_as_standard_json(tmp_path: Path):
    class AllDiverge(FakeExecutor):
        def run(self, chunks, engine, on_done, on_failed):
            def done(index, results):
                for result in results:
                    result.diverged = True
                    result.test_accuracy = result.train_accuracy = float("nan")
                on_done(index, results)

            super().run(chunks, engine, done, on_failed)

    outcome = run_sweep(sweep_config(), engine="keras", runs_dir=tmp_path, executor=AllDiverge())
    found = CellStore(outcome.store_folder).locate(outcome.plan.hashes["c1"])
    assert found is not None and found.pack is not None
    with np.load(found.pack) as pack:  # the records of a pack are one JSON text
        assert "NaN" not in pack["cells"].tobytes().decode("utf-8")
    rerun = run_sweep(sweep_config(), engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    assert rerun.n_trained == 0
    assert all(math.isnan(v) for v in rerun.records["c1"].metric("test_accuracy"))


def test_a_chunk_is_stored_in_one_file_and_cells_stored_one_by_one_still_load(tmp_path: Path):
    """A chunk's cells go into one pack; cells stored one file each (an earlier version's
    layout) load as before and move into a pack when stored again."""
    first = run_sweep(sweep_config(), engine="fused", runs_dir=tmp_path, executor=FakeExecutor())
    cells_dir = first.store_folder / "cells"
    assert len(first.plan.chunks) == 1 and len(first.cells) == 7
    assert [p.name.endswith(".pack.npz") for p in cells_dir.iterdir()] == [True]
    # Two cells as an earlier version stored them: <hash>.json written after <hash>.history.npy.
    store = CellStore(first.store_folder)
    histories = {c.id: store.load_history(first.plan.hashes[c.id]) for c in first.cells}
    for cell_id in ("c1", "c4"):
        digest = first.plan.hashes[cell_id]
        record = stored_record(first.store_folder, digest)
        forget_stored_cell(first.store_folder, digest)
        np.save(cells_dir / f"{digest}.history.npy", histories[cell_id])
        (cells_dir / f"{digest}.json").write_text(json.dumps(record, indent=2))
    assert len(list(cells_dir.iterdir())) == 5
    again = run_sweep(sweep_config(), engine="fused", runs_dir=tmp_path, executor=FakeExecutor())
    assert again.n_trained == 0 and not again.plan.notes
    reread = CellStore(again.store_folder)
    for cell in first.cells:
        assert again.records[cell.id].runs == first.records[cell.id].runs
        digest = again.plan.hashes[cell.id]
        np.testing.assert_array_equal(reread.load_history(digest), histories[cell.id])
    # Trained again (--force): one new pack; the old files and the emptied pack are removed.
    forced = run_sweep(
        sweep_config(), engine="fused", runs_dir=tmp_path, executor=FakeExecutor(), force=True
    )
    assert forced.n_trained == 7
    assert [p.name.endswith(".pack.npz") for p in cells_dir.iterdir()] == [True]
    assert stored_cell_hashes(first.store_folder) == set(first.plan.hashes.values())


def test_a_damaged_pack_is_named_and_its_cells_recomputed(tmp_path: Path):
    first = run_sweep(sweep_config(), engine="fused", runs_dir=tmp_path, executor=FakeExecutor())
    [pack] = (first.store_folder / "cells").iterdir()
    pack.write_bytes(pack.read_bytes()[:100])  # cut short, as by a full disk in another tool
    again = run_sweep(sweep_config(), engine="fused", runs_dir=tmp_path, executor=FakeExecutor())
    assert again.n_trained == 7
    [note] = [note for note in again.plan.notes if str(pack) in note]
    assert note.startswith(f"{pack}: damaged pack of stored cells (")
    assert note.endswith("); recomputing its cells")
