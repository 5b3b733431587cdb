"""Engines train models: `keras` (model.fit, the reference), `fused` (many models, one XLA
program; MLPs and layer lists: conv2d, lstm, dropout, ...), `cpu` (a hand-fused MLP loop
compiled with Numba, the fastest on a CPU) and `jax` (the keras engine's models, a Keras model
of your own included, many at once in one JAX program of Keras's own train step).

`select_engine` is the one place that decides which engine runs a set of configs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import Engine, EngineUnsupported


class EngineName(str, Enum):
    auto = "auto"
    keras = "keras"
    fused = "fused"
    cpu = "cpu"
    jax = "jax"


def _engine(name: EngineName) -> Engine:
    if name is EngineName.cpu:
        from actreg_cli.engines.cpu.engine import CpuEngine

        return CpuEngine()
    if name is EngineName.fused:
        from actreg_cli.engines.fused.engine import FusedEngine

        return FusedEngine()
    if name is EngineName.jax:
        from actreg_cli.engines.jax.engine import JaxEngine

        return JaxEngine()
    from actreg_cli.engines.keras.engine import KerasEngine

    return KerasEngine()


#: Keras backends the keras engine is tested on (KERAS_BACKEND; tensorflow is the reference)
KERAS_BACKENDS = ("tensorflow", "jax")


def check_keras_backend() -> None:
    """Raise EngineUnsupported when KERAS_BACKEND names a backend the keras engine cannot use
    (Keras would fail at import, after a run folder was made)."""
    name = keras_backend()
    if name not in KERAS_BACKENDS:
        raise EngineUnsupported(
            f"KERAS_BACKEND={name!r} (the environment variable, or keras.json) is not a backend "
            f"the keras engine runs on; use {' or '.join(KERAS_BACKENDS)} (tensorflow is the "
            f"reference), or unset it"
        )
    if importlib.util.find_spec(name) is None:
        raise EngineUnsupported(
            f"KERAS_BACKEND={name} but {name} is not installed: pip install 'actreg[{name}]', "
            f"or unset KERAS_BACKEND"
        )


def keras_backend() -> str:
    """The backend Keras will load, found as Keras finds it (keras/src/backend/config.py) but
    without importing Keras: KERAS_BACKEND, else "backend" in $KERAS_HOME/keras.json (default
    ~/.keras), else tensorflow."""
    if name := os.environ.get("KERAS_BACKEND"):
        return name
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text())["backend"])
    except (OSError, ValueError, KeyError, TypeError):
        return "tensorflow"


def engine_backend(name: str) -> str:
    """What computes an engine's training, as runs record it: the Keras backend for `keras`
    (`keras_backend`), 'tensorflow-xla' for `fused`, 'numba' for `cpu`, 'jax' for `jax` (Keras
    on its JAX backend, in a worker process when this one is not). Imports nothing."""
    if name == EngineName.keras.value:
        return keras_backend()
    return {
        EngineName.fused.value: "tensorflow-xla",
        EngineName.cpu.value: "numba",
        EngineName.jax.value: "jax",
    }[name]


#: What `auto` tries, fastest first on a CPU for the tutorial MLP (the cpu engine ~7 µs CPU a
#: model-epoch, fused ~21-25, keras ~43 ms an epoch; README "Speed"); jax trains what the
#: first two cannot (a Keras model of your own, a custom regularizer function) 5-9x cheaper
#: than keras (docs/own_model.md) when jax is installed; keras, the reference, runs everything.
AUTO_ORDER = (EngineName.cpu, EngineName.fused, EngineName.jax, EngineName.keras)


def select_engine(
    name: EngineName | str, configs: Sequence[ExperimentConfig]
) -> tuple[Engine, str | None]:
    """The engine to run `configs` with, and a one-line note when `auto` had to fall back.

    A named engine that cannot run a config raises EngineUnsupported naming the feature it
    lacks; `auto` picks the first engine of AUTO_ORDER that supports every config and says why
    it passed over the faster ones.
    """
    name = EngineName(name)
    candidates = AUTO_ORDER if name is EngineName.auto else (name,)
    passed: dict[str, list[str]] = {}  # why -> the engines passed over for it
    for candidate in candidates:
        engine = _engine(candidate)
        reasons = sorted({r for c in configs if (r := engine.unsupported(c)) is not None})
        if not reasons and candidate is EngineName.keras:
            check_keras_backend()
        if not reasons:
            if not passed:
                return engine, None
            said = [
                f"the {' and '.join(names)} engine{'s' if len(names) > 1 else ''} cannot run "
                f"this config ({why})"
                for why, names in passed.items()
            ]
            return engine, f"using the {engine.name} engine: " + "; ".join(said)
        if name is not EngineName.auto:
            raise EngineUnsupported(
                f"the {candidate.value} engine cannot run this config: " + "; ".join(reasons)
            )
        passed.setdefault("; ".join(reasons), []).append(candidate.value)
    raise AssertionError("the keras engine runs every config")  # pragma: no cover
