"""Penalties: what they act on (`Target`), their norm, placement and batch reduction, as a
layer's `regularizers` item (`PenaltyConfig`) or the experiment's (`RegularizerConfig`); and the
import and check of a custom penalty function."""

from __future__ import annotations

import contextvars
import importlib
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any

from pydantic import PlainValidator, model_validator

from actreg_cli.config.base import Strength, StrictModel


class Target(str, Enum):
    activity = "activity"
    kernel = "kernel"
    bias = "bias"


class Norm(str, Enum):
    l1 = "l1"
    l2 = "l2"
    l1_l2 = "l1_l2"
    custom = "custom"


class Placement(str, Enum):
    before_activation = "before_activation"
    after_activation = "after_activation"


class Reduction(str, Enum):
    """How an activity penalty is reduced over the samples of a batch.

    batch_mean: sum over samples divided by the batch size (Keras >= 3.14, tf.keras 2.x).
    batch_sum: plain sum over samples (standalone Keras 2.3, which the 2019 tutorial ran on).
    """

    batch_mean = "batch_mean"
    batch_sum = "batch_sum"


class PenaltyConfig(StrictModel):
    """One penalty on one layer (as a layer's `regularizers` item: the layer it sits on).

    penalty = strength * sum|x| (l1), strength * sum x**2 (l2, no 1/2), both for l1_l2 (the L2
    factor is `l2_strength`, default `strength`), or strength * function(x) for a custom one.
    x is the layer's kernel, bias, or output (activity). Activity penalties are applied to the
    layer's output before or after its activation (`placement`) and reduced over the batch by
    `reduction`.
    """

    target: Target = Target.activity
    norm: Norm = Norm.l1
    strength: Strength = 1e-4
    l2_strength: Strength | None = None  # l1_l2 only: the L2 factor (default: strength)
    placement: Placement | None = None  # activity only; default after_activation
    reduction: Reduction | None = None  # activity only; default batch_mean
    function: str | None = None  # custom only: "package.module:function", tensor -> scalar

    @model_validator(mode="after")
    def _fields_fit_target_and_norm(self) -> PenaltyConfig:
        if self.target is not Target.activity:
            for name in ("placement", "reduction"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"'{name}' applies only to activity regularizers; "
                        f"remove it for target '{self.target.value}'"
                    )
        else:
            # Fill the defaults in so that the resolved config says what ran.
            if self.placement is None:
                object.__setattr__(self, "placement", Placement.after_activation)
            if self.reduction is None:
                object.__setattr__(self, "reduction", Reduction.batch_mean)
        if self.norm is Norm.custom:
            if not self.function:
                raise ValueError("norm 'custom' needs 'function: package.module:function'")
            if _READING_SAVED_RESULTS.get():
                check_function_spec(self.function)
            else:
                check_custom_function(self.function)
        elif self.function is not None:
            raise ValueError(
                f"'function' applies only to norm 'custom' (norm is '{self.norm.value}')"
            )
        if self.l2_strength is not None and self.norm is not Norm.l1_l2:
            raise ValueError(
                f"'l2_strength' applies only to norm 'l1_l2' (norm is '{self.norm.value}')"
            )
        return self

    @property
    def l1_factor(self) -> float:
        """The factor of sum|x| in the penalty (0 when the norm has no L1 part)."""
        return self.strength if self.norm in (Norm.l1, Norm.l1_l2) else 0.0

    @property
    def l2_factor(self) -> float:
        """The factor of sum x**2 in the penalty (0 when the norm has no L2 part)."""
        if self.norm is Norm.l2:
            return self.strength
        if self.norm is Norm.l1_l2:
            return self.strength if self.l2_strength is None else self.l2_strength
        return 0.0


#: The longest layer name accepted (Keras's own names are far shorter).
MAX_LAYER_NAME = 200


def _layer_reference(value: Any) -> int | str:
    """An index into hidden_units or model.layers (0, 1, ...), or the name of a layer of a
    Keras model of your own; one message for anything else (not one per union member)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a layer index must be 0 or more")
        return value
    if isinstance(value, str):
        if not 1 <= len(value) <= MAX_LAYER_NAME:
            raise ValueError(f"a layer name must have 1 to {MAX_LAYER_NAME} characters")
        return value
    raise ValueError(
        "must be a layer index (0, 1, ...) or the name of a layer of a Keras model of your own"
    )


#: `regularizers[].layer`: an index (YAML models) or a layer name (`model.get_layer(name)`).
LayerReference = Annotated[int | str, PlainValidator(_layer_reference)]


class RegularizerConfig(PenaltyConfig):
    """One penalty on one layer, listed under the experiment's `regularizers`: `layer` indexes
    model.hidden_units (the MLP shorthand) or model.layers, or names a layer of a Keras model
    of your own (`model.keras`, `model.keras_file`)."""

    layer: LayerReference = 0


# ---------------------------------------------------------------------------------------------
# Custom regularizers


#: True while configs read back from a results folder are validated (`saved_results_only`).
_READING_SAVED_RESULTS = contextvars.ContextVar("reading_saved_results", default=False)


@contextmanager
def saved_results_only() -> Iterator[None]:
    """Validate configs without importing their custom `function:` modules.

    Re-drawing, listing, comparing and exporting a results folder read the numbers it saved; a
    received folder is data, and its config.yaml must never make us import (run) code, e.g. a
    planted module in the current folder. Inside this block a custom `function:` is checked
    for its form (`package.module:function`) only.
    """
    token = _READING_SAVED_RESULTS.set(True)
    try:
        yield
    finally:
        _READING_SAVED_RESULTS.reset(token)


def reading_saved_results() -> bool:
    """Whether configs are being read back from a results folder (`saved_results_only`): then
    nothing of the user's is imported, neither a custom function nor a Keras model."""
    return _READING_SAVED_RESULTS.get()


def check_function_spec(spec: str) -> tuple[str, str]:
    """`package.module:function` split into module and function names; ValueError otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"function must look like 'package.module:function' (got {spec!r})")
    return module_name, attr


def import_custom_function(spec: str) -> Any:
    """Import `package.module:function`; raise ValueError saying what is wrong."""
    module_name, attr = check_function_spec(spec)
    # `python -m actreg_cli` has the current folder on sys.path, the installed `actreg` script
    # does not: put it there so that `function: myreg:fn` finds ./myreg.py either way.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:  # user code calling sys.exit must not end `validate` with 0
        raise ValueError(
            f"importing module {module_name!r} for function {spec!r} called sys.exit({exc.code})"
        ) from None
    except Exception as exc:  # any import failure is a config error, not a crash
        raise ValueError(
            f"cannot import module {module_name!r} for function {spec!r} (looked in the current "
            f"folder and on PYTHONPATH): {exc}"
        ) from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"module {module_name!r} has no callable {attr!r}")
    return fn


def check_custom_function(spec: str) -> None:
    """The function must import and map a [batch, units] float32 array to a finite scalar."""
    import numpy as np

    fn = import_custom_function(spec)
    probe = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    try:
        value = np.asarray(fn(probe))
    except SystemExit as exc:
        raise ValueError(
            f"custom function {spec!r} called sys.exit({exc.code}) on a [3, 4] float32 array"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"custom function {spec!r} failed on a [3, 4] float32 array: {exc}"
        ) from exc
    if value.ndim != 0:
        raise ValueError(
            f"custom function {spec!r} must return a scalar; it returned shape {list(value.shape)}"
        )
    if value.dtype.kind not in "biuf":  # None, a complex number, a string: not a penalty
        raise ValueError(
            f"custom function {spec!r} must return a real number; it returned "
            f"{_short_repr(value.item())}"
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"custom function {spec!r} returned a non-finite value ({float(value)})")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
