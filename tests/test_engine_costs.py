"""`auto` picks the engine estimated cheapest for the job from measured costs (engines/costs.py,
costs.json written by benchmarks/bench_engine_costs.py), and says why."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines import AUTO_ORDER, EngineName, select_engine
from actreg_cli.engines import costs as costs_module
from actreg_cli.engines.costs import (
    COSTS_FILE,
    CostTable,
    EngineCost,
    batches_per_epoch,
    estimates,
    load_costs,
)
from actreg_cli.study.sweep.grid import expand_grid
from actreg_cli.study.sweep.plan import resolve_engines


def mlp(
    epochs: int = 10, repeats: int = 2, batch_size: int = 32, **regularizer
) -> ExperimentConfig:
    """The tutorial's MLP on circles 100/30 (30 training rows)."""
    return ExperimentConfig.model_validate(
        {
            "model": {"hidden_units": [16]},
            "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-4, **regularizer}],
            "training": {"epochs": epochs, "repeats": repeats, "batch_size": batch_size},
        }
    )


def custom(epochs: int, repeats: int) -> ExperimentConfig:
    """An MLP with a custom regularizer function: only the jax and keras engines train it."""
    return mlp(
        epochs, repeats, norm="custom", function="actreg_cli.custom_regularizers:log_sparsity"
    )


#: jax starts dearer but steps cheaper than keras: the crossover is at
#: (12 - 8) / ((2000 - 100) e-6) = 2105 model-steps.
TABLE = CostTable(
    "a test CPU",
    "2026-01-01",
    {
        "mlp": {
            "cpu": EngineCost(1.0, 0.1, 10.0),
            "fused": EngineCost(6.0, 0.1, 30.0),
            "jax": EngineCost(12.0, 0.0, 100.0),
            "keras": EngineCost(8.0, 0.0, 2000.0),
        }
    },
)


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(costs_module, "load_costs", lambda path=COSTS_FILE: TABLE)
    return TABLE


def jax_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None


def test_the_shipped_table_covers_every_engine_and_says_where_it_was_measured():
    data = json.loads(COSTS_FILE.read_text())
    assert data["by"] == "benchmarks/bench_engine_costs.py" and data["measured_on"]
    table = load_costs()
    assert table is not None and table.measured_on == data["measured_on"]
    assert set(table.families["mlp"]) == {e.value for e in AUTO_ORDER}
    assert set(table.families["own"]) == {"jax", "keras"}
    for engines in table.families.values():
        for cost in engines.values():
            # a step can cost less than the benchmark resolves (the jax engine's: ~0.02 ms)
            assert cost.start_s > 0 and cost.per_cell_s >= 0 and cost.per_model_step_us >= 0
    # what decides: model.fit's steps cost more than the many-model engines' steps
    for engines in table.families.values():
        keras = engines["keras"].per_model_step_us
        assert all(c.per_model_step_us < keras for n, c in engines.items() if n != "keras")


def test_a_missing_or_damaged_table_leaves_auto_its_fixed_order(tmp_path: Path):
    assert load_costs(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"families": {"mlp": {"cpu": {"start_s": 1}}}}')
    assert load_costs(tmp_path / "bad.json") is None


def test_an_estimate_counts_cells_and_model_steps(table):
    config = mlp(epochs=10, repeats=2, batch_size=8)  # 30 training rows: 4 batches an epoch
    assert batches_per_epoch(config) == math.ceil(30 / 8)
    steps = 2 * 10 * 4
    got = estimates(["cpu", "keras"], [config, config])
    assert got == pytest.approx(
        {"cpu": 1.0 + 0.1 * 2 + 10e-6 * 2 * steps, "keras": 8.0 + 2000e-6 * 2 * steps}
    )
    # a batch larger than the data is one batch an epoch
    assert batches_per_epoch(mlp(batch_size=1000)) == 1


@pytest.mark.skipif(not jax_installed(), reason="needs jax (the jax engine)")
def test_auto_takes_keras_for_a_small_job_and_jax_for_a_large_one(table):
    small = custom(epochs=5, repeats=2)  # 10 model-steps: keras' start-up is cheaper
    engine, note = select_engine("auto", [small])
    assert engine.name == "keras"
    estimate = estimates(["jax", "keras"], [small])
    assert note.startswith("using the keras engine: the cpu engine cannot run this config (")
    assert "; the fused engine cannot run this config (custom regularizer" in note
    assert note.endswith(
        f"; estimated {estimate['keras']:.0f} s of CPU for this job against "
        f"{estimate['jax']:.0f} s on jax (engine costs measured on a test CPU)"
    )
    large = custom(epochs=3000, repeats=2)  # 6000 model-steps: past the crossover
    engine, note = select_engine("auto", [large])
    assert engine.name == "jax"
    assert note.startswith("using the jax engine: the cpu engine cannot run")
    assert "estimated" not in note  # jax comes first in AUTO_ORDER: nothing to explain


def test_auto_keeps_the_cheapest_first_engine_without_a_note(table):
    engine, note = select_engine("auto", [mlp()])
    assert (engine.name, note) == ("cpu", None)


def test_auto_passes_over_a_dearer_first_engine_and_says_so(monkeypatch):
    dear_cpu = CostTable(
        "a test CPU",
        "2026-01-01",
        {"mlp": {**TABLE.families["mlp"], "cpu": EngineCost(50.0, 0.0, 10.0)}},
    )
    monkeypatch.setattr(costs_module, "load_costs", lambda path=COSTS_FILE: dear_cpu)
    engine, note = select_engine("auto", [mlp()])
    assert engine.name == "fused"
    assert note.startswith("using the fused engine: estimated 6 s of CPU for this job against ")
    assert "50 s on cpu (engine costs measured on a test CPU)" in note


def test_a_named_engine_is_never_second_guessed(table):
    engine, note = select_engine(EngineName.keras, [mlp()])
    assert (engine.name, note) == ("keras", None)


@pytest.mark.skipif(not jax_installed(), reason="needs jax (the jax engine)")
def test_a_sweeps_notes_group_cells_by_reason_without_numbers(table):
    from actreg_cli.config import SweepConfig

    sweep = SweepConfig.model_validate(
        {
            "name": "costs",
            "base": custom(epochs=5, repeats=2).model_dump(exclude={"name", "description"}),
            "grid": {"regularizers.0.strength": [1e-5, 1e-4, 1e-3]},
            "baseline": False,
        }
    )
    engines, notes = resolve_engines(expand_grid(sweep), "auto")
    assert set(engines.values()) == {"keras"}
    assert len(notes) == 1, notes
    assert notes[0].startswith("cells c1, c2, c3: using the keras engine: the cpu engine cannot")
    assert notes[0].endswith(
        "it costs less CPU than the jax engine here (engine costs measured on a test CPU)"
    )
