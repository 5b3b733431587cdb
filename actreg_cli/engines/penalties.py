"""Penalty factors as numbers: the table every vectorized engine (fused, cpu) reads.

A model's penalties become one row of factors per layer with a kernel, float64 [12] in the order
of COEF_COLUMNS, so models that differ only in strength, norm, target, placement or reduction
differ only in data and can train in one compiled loop.
"""

from __future__ import annotations

import numpy as np

from actreg_cli.config import ExperimentConfig, Norm, PenaltyConfig, Placement, Reduction, Target
from actreg_cli.engines.base import EngineUnsupported
from actreg_cli.models.plan import KERNEL_KINDS, ModelPlan

#: Per hidden layer, the penalty factors a model can carry (see `coefficients`). Activity
#: factors named *_mean_* are divided by the current batch size (reduction batch_mean), *_sum_*
#: ones are not (batch_sum).
COEF_COLUMNS = (
    "kernel_l1",
    "kernel_l2",
    "bias_l1",
    "bias_l2",
    "before_mean_l1",
    "before_mean_l2",
    "before_sum_l1",
    "before_sum_l2",
    "after_mean_l1",
    "after_mean_l2",
    "after_sum_l1",
    "after_sum_l2",
)
COEF_INDEX = {name: k for k, name in enumerate(COEF_COLUMNS)}


def coefficients(config: ExperimentConfig) -> np.ndarray:
    """Penalty factors of one model: float64 [L, 12] (hidden layers x COEF_COLUMNS).

    Several regularizers on the same slot add their factors (Keras sums their penalties).
    """
    table = np.zeros((len(config.model.hidden_units), len(COEF_COLUMNS)), dtype=np.float64)
    for reg in config.regularizers:
        add_penalty(table[reg.layer], reg)
    return table


def add_penalty(row: np.ndarray, reg: PenaltyConfig) -> None:
    """Add the factors of one penalty to `row`, float64 [12] (COEF_COLUMNS) of its layer."""
    if reg.norm is Norm.custom:
        raise EngineUnsupported(custom_reason(reg.function))
    if reg.target is Target.activity:
        side = "before" if reg.placement is Placement.before_activation else "after"
        red = "mean" if reg.reduction is Reduction.batch_mean else "sum"
        prefix = f"{side}_{red}"
    else:
        prefix = reg.target.value
    row[COEF_INDEX[f"{prefix}_l1"]] += reg.l1_factor
    row[COEF_INDEX[f"{prefix}_l2"]] += reg.l2_factor


def custom_reason(function: str | None) -> str:
    return f"custom regularizer '{function}' cannot be vectorized"


def penalty_table(plan: ModelPlan) -> np.ndarray:
    """Penalty factors of one model of a layer list: float64 [kernel layers, 12]
    (COEF_COLUMNS), the output layer's row included (always 0)."""
    kernel = [layer for layer in plan.layers if layer.kind in KERNEL_KINDS]
    table = np.zeros((len(kernel), len(COEF_COLUMNS)), dtype=np.float64)
    for row, layer in zip(table, kernel, strict=True):
        for reg in layer.penalties:
            add_penalty(row, reg)
    return table
