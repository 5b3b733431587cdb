"""Engines train models: `keras` (model.fit, the reference) and `fused` (many models, one program).

`select_engine` is the one place that decides which engine runs a set of configs.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import Engine, EngineUnsupported


class EngineName(str, Enum):
    auto = "auto"
    keras = "keras"
    fused = "fused"


def select_engine(
    name: EngineName | str, configs: Sequence[ExperimentConfig]
) -> tuple[Engine, str | None]:
    """The engine to run `configs` with, and a one-line note when `auto` had to fall back.

    `fused` raises EngineUnsupported naming the feature it lacks; `auto` picks fused whenever it
    supports every config, otherwise keras (and says why).
    """
    name = EngineName(name)
    if name is EngineName.keras:
        from actreg_cli.engines.keras_engine import KerasEngine

        return KerasEngine(), None
    from actreg_cli.engines.fused import FusedEngine

    fused = FusedEngine()
    reasons = sorted({r for c in configs if (r := fused.unsupported(c)) is not None})
    if not reasons:
        return fused, None
    if name is EngineName.fused:
        raise EngineUnsupported("the fused engine cannot run this config: " + "; ".join(reasons))
    from actreg_cli.engines.keras_engine import KerasEngine

    return (
        KerasEngine(),
        "using the keras engine: the fused engine cannot run this config ("
        + "; ".join(reasons)
        + ")",
    )
