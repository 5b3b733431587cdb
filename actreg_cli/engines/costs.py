"""What an engine is estimated to cost for a job, from measured engine costs (costs.json).

`auto` picks, among the engines that can run a job, the one estimated cheapest in CPU time
(engines.select_engine). costs.json is written by benchmarks/bench_engine_costs.py, which runs
each engine's sweeps as a user would and solves, per engine and workload family,

    CPU s = start_s + per_cell_s x cells + per_model_step_us x 1e-6 x model-steps

start_s: a fresh process up to its first step (imports, a worker process, the first compile);
per_cell_s: another cell's model built and program compiled; per_model_step_us: one minibatch
step of one model with its share of the per-epoch evaluation. A model-step is a repeat x an
epoch x a minibatch. Families: "own" for a Keras model of your own (measured on
configs/own_model_example.yaml), "mlp" for `hidden_units` MLPs (measured on the tutorial MLP);
layer lists are not measured and keep AUTO_ORDER.

The table is a property of the package, not of the machine it runs on: the same config picks
the same engine everywhere (an engine's float rounding is part of a result). Its numbers come
from one CPU (`measured_on`); the ratios between engines, which decide, vary less than the
absolute times between CPUs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from actreg_cli.config import ConfigError, ExperimentConfig

COSTS_FILE = Path(__file__).with_name("costs.json")


@dataclass(frozen=True)
class EngineCost:
    """One engine's measured costs for one family (see the module docstring)."""

    start_s: float
    per_cell_s: float
    per_model_step_us: float

    def estimate(self, cells: int, model_steps: int) -> float:
        """Estimated CPU seconds of `cells` cells of `model_steps` model-steps in all."""
        return self.start_s + self.per_cell_s * cells + self.per_model_step_us * 1e-6 * model_steps


@dataclass(frozen=True)
class CostTable:
    measured_on: str
    date: str
    families: dict[str, dict[str, EngineCost]]

    def cost(self, family: str, engine: str) -> EngineCost | None:
        return self.families.get(family, {}).get(engine)


@lru_cache(maxsize=4)
def load_costs(path: Path = COSTS_FILE) -> CostTable | None:
    """The shipped cost table; None when the file is missing or unreadable (then `auto` keeps
    its fixed order)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        families = {
            family: {
                engine: EngineCost(
                    float(c["start_s"]), float(c["per_cell_s"]), float(c["per_model_step_us"])
                )
                for engine, c in engines.items()
            }
            for family, engines in data["families"].items()
        }
        return CostTable(str(data["measured_on"]), str(data["date"]), families)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def family(config: ExperimentConfig) -> str:
    """The workload family whose measured costs stand for `config`: "own" (a Keras model of
    your own), "mlp" (`hidden_units`), "layers" (a layer list: not measured, so `auto` keeps
    its fixed order there)."""
    if config.model.is_keras_model:
        return "own"
    return "layers" if config.model.layers else "mlp"


def batches_per_epoch(config: ExperimentConfig) -> int:
    """Minibatches in one epoch of `config`: its training rows over the batch size (the data is
    loaded once and cached: data.check_data)."""
    from actreg_cli.data import check_data

    n_train = check_data(config).n_train
    return max(1, math.ceil(n_train / max(1, min(config.training.batch_size, n_train))))


def job_size(configs: Sequence[ExperimentConfig]) -> tuple[int, int] | None:
    """(cells, model-steps) of a job of `configs` (one config a cell, each trained its
    repeats x epochs); None when a config's data cannot be read (the check that follows names
    the problem)."""
    try:
        steps = sum(c.training.repeats * c.training.epochs * batches_per_epoch(c) for c in configs)
    except (ConfigError, OSError):  # raised again by check_model, naming its file
        return None
    return len(configs), steps


def estimates(
    engines: Sequence[str], configs: Sequence[ExperimentConfig]
) -> dict[str, float] | None:
    """Estimated CPU seconds of the job `configs` on each of `engines`; None when the table
    lacks one of them for the configs' family, the configs mix families, or the job's size is
    unknown."""
    table = load_costs()
    families = {family(c) for c in configs}
    if table is None or len(families) != 1:
        return None
    costs = [table.cost(next(iter(families)), name) for name in engines]
    size = job_size(configs)
    if size is None or None in costs:
        return None
    return {name: cost.estimate(*size) for name, cost in zip(engines, costs, strict=True) if cost}
