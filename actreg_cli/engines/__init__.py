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


#: What `auto` considers, in its order of preference when no measured costs decide (the cpu
#: engine ~7 µs CPU a model-epoch of the tutorial MLP, fused ~21-25, keras ~43 ms an epoch;
#: README "Speed"); jax trains what the first two cannot (a Keras model of your own, a custom
#: regularizer function) when jax is installed; keras, the reference, runs everything.
AUTO_ORDER = (EngineName.cpu, EngineName.fused, EngineName.jax, EngineName.keras)


def select_engine(
    name: EngineName | str, configs: Sequence[ExperimentConfig], *, numbers: bool = True
) -> tuple[Engine, str | None]:
    """The engine to run `configs` with, and a one-line note when `auto` did not take the
    first engine of AUTO_ORDER.

    A named engine that cannot run a config raises EngineUnsupported naming the feature it
    lacks. `auto` takes, among the engines of AUTO_ORDER that support every config, the one
    estimated cheapest in CPU time for the whole job (engines/costs.py: measured costs per
    engine, the job's cells and model-steps), the first of them where no estimate can be made,
    and says why it passed over the ones before it. numbers: put the estimates in the note (a
    sweep groups its cells' notes by their words, so it leaves them out).
    """
    name = EngineName(name)
    if name is not EngineName.auto:
        engine = _engine(name)
        reasons = sorted({r for c in configs if (r := engine.unsupported(c)) is not None})
        if reasons:
            raise EngineUnsupported(
                f"the {name.value} engine cannot run this config: " + "; ".join(reasons)
            )
        if name is EngineName.keras:
            check_keras_backend()
        return engine, None
    passed: dict[str, list[str]] = {}  # why -> the engines passed over for it
    supported: list[Engine] = []
    for candidate in AUTO_ORDER:
        engine = _engine(candidate)
        reasons = sorted({r for c in configs if (r := engine.unsupported(c)) is not None})
        if reasons:
            passed.setdefault("; ".join(reasons), []).append(candidate.value)
        else:
            supported.append(engine)
    chosen, cost_note = _cheapest(supported, configs, numbers)
    if chosen.name == EngineName.keras.value:
        check_keras_backend()
    before = AUTO_ORDER.index(EngineName(chosen.name))
    said = [
        f"the {' and '.join(names)} engine{'s' if len(names) > 1 else ''} cannot run "
        f"this config ({why})"
        for why, every in passed.items()
        if (names := [n for n in every if AUTO_ORDER.index(EngineName(n)) < before])
    ]
    if cost_note:
        said.append(cost_note)
    if not said:
        return chosen, None
    return chosen, f"using the {chosen.name} engine: " + "; ".join(said)


def _cheapest(
    supported: Sequence[Engine], configs: Sequence[ExperimentConfig], numbers: bool
) -> tuple[Engine, str | None]:
    """The supported engine estimated cheapest for the job (the first of AUTO_ORDER on a tie
    or without estimates), and a note when it is not the first supported one."""
    from actreg_cli.engines.costs import estimates, load_costs

    first = supported[0]  # keras runs every config: never empty
    if len(supported) == 1:
        return first, None
    estimate = estimates([e.name for e in supported], configs)
    if estimate is None:
        return first, None
    chosen = min(supported, key=lambda e: estimate[e.name])  # min keeps the first on a tie
    if chosen is first:
        return first, None
    dearer = [e.name for e in supported[: supported.index(chosen)]]
    table = load_costs()
    source = f"engine costs measured on {table.measured_on}" if table else "measured costs"
    if not numbers:
        return chosen, (f"it costs less CPU than the {' and '.join(dearer)} engine here ({source})")
    against = ", ".join(f"{estimate[n]:.0f} s on {n}" for n in dearer)
    return chosen, (
        f"estimated {estimate[chosen.name]:.0f} s of CPU for this job against {against} ({source})"
    )
