"""A Keras model of your own (`model.keras: package.module:build` with `model.args`, or
`model.keras_file: model.keras`): imported, built for the data and checked against the task and
the config's regularizers, before anything is trained or written.

`build_own_model` is what the keras engine trains (engines/keras/own_model.py attaches the
config's penalties to a clone of it); `check_own_model` is what `run` and `sweep` check first:
the function or file loads, the model takes the data's samples, its output fits the task
(units, and the activation the loss expects), and each regularizer names a layer that has the
weight it targets. Every error is a ConfigError naming the config field and, for user code, the
exception it raised. Keras (and the user's code) are imported here on first use only; config/
never imports either, and a results folder is re-drawn without them (run.yaml records
`own_model_summary`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actreg_cli.config import (
    BUILDER_INPUTS,
    ConfigError,
    ExperimentConfig,
    Placement,
    Target,
)
from actreg_cli.models.keras_on_jax import set_random_seed
from actreg_cli.tasks import Task, output_units, spec

#: Keras layer classes that apply their `activation` to their output last, so that a penalty
#: `before_activation` can sit between the layer (made linear) and an Activation layer.
SPLITTABLE_LAYERS = (
    "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
    "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D",
)  # fmt: skip


def source_field(config: ExperimentConfig) -> str:
    """The config field that holds the model: 'model.keras' or 'model.keras_file'."""
    return "model.keras" if config.model.keras is not None else "model.keras_file"


def user_code_error(field: str, what: str, exc: BaseException) -> ConfigError:
    """A ConfigError for an exception raised by the user's code (no traceback, its words)."""
    if isinstance(exc, SystemExit):
        return ConfigError([f"{field}: {what} called sys.exit({exc.code})"])
    return ConfigError([f"{field}: {what} raised {type(exc).__name__}: {exc}"])


def import_builder(spec_text: str) -> Callable[..., Any]:
    """The function of `model.keras`: 'package.module:function' (imported from the current
    folder or PYTHONPATH) or '/path/file.py:function' (loaded from that file, its folder put on
    sys.path so that it can import its neighbours). ConfigError saying what went wrong."""
    field = "model.keras"
    module_name, _, attr = spec_text.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _module_from_file(Path(module_name), field)
        else:
            cwd = os.getcwd()
            # the installed `actreg` script has no current folder on sys.path (python -m has)
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except BaseException as exc:  # noqa: BLE001 (user code: any failure is a config error)
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, ModuleNotFoundError) and not module_name.endswith(".py"):
            raise ConfigError(
                [
                    f"{field}: cannot import module {module_name!r} (looked in the current "
                    f"folder and on PYTHONPATH): {exc}"
                ]
            ) from None
        raise user_code_error(field, f"importing {module_name!r}", exc) from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError([f"{field}: module {module_name!r} has no function {attr!r}"])
    return fn


def _module_from_file(path: Path, field: str) -> Any:
    if not path.is_file():
        raise ConfigError([f"{field}: {path}: no such file"])
    # one module per file, kept: repeats and cells reuse it
    name = "actreg_own_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec_ = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec_)
    sys.modules[name] = module
    try:
        spec_.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def builder_kwargs(
    fn: Callable[..., Any], inputs: dict[str, Any], args: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments `fn` is called with: those of `inputs` (input_shape, n_outputs,
    task) it declares, and every one of `args`. ConfigError for an argument it does not take
    or a parameter nothing gives."""
    field = "model.keras"
    name = getattr(fn, "__name__", "the function")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C function: pass args only
        return dict(args)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [
        p.name
        for p in params.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = [key for key in args if key not in named and not takes_any]
    if unknown:
        raise ConfigError(
            [
                f"model.args.{unknown[0]}: {name}() has no parameter {unknown[0]!r} (its "
                f"parameters: {', '.join(named) or 'none'})"
            ]
        )
    kwargs = {key: value for key, value in inputs.items() if key in named or takes_any}
    kwargs.update(args)
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and p.kind is not inspect.Parameter.VAR_POSITIONAL
        and p.name not in kwargs
    ]
    if missing:
        raise ConfigError(
            [
                f"{field}: {name}() needs {', '.join(repr(m) for m in missing)}, which neither "
                f"model.args nor the tool ({', '.join(BUILDER_INPUTS)}) gives"
            ]
        )
    return kwargs


@functools.lru_cache(maxsize=8)
def _saved_model(path: str, stamp: tuple[int, int]) -> Any:
    """A `.keras` file loaded once per process (and again when the file changes)."""
    import keras

    return keras.saving.load_model(path, compile=False)


def load_keras_file(path_text: str) -> Any:
    """The model saved in `model.keras_file` (its weights are not used). ConfigError otherwise."""
    field = "model.keras_file"
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError([f"{field}: {path}: no such file"])
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # (Keras: "File not found")
        raise ConfigError(
            [
                f"{field}: {path}: not a saved Keras model (a .keras file is a zip archive): "
                "damaged, cut short, or not written by model.save"
            ]
        )
    info = path.stat()
    try:
        return _saved_model(str(path), (info.st_mtime_ns, info.st_size))
    except (KeyboardInterrupt, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 (a damaged file, or a custom layer unknown here)
        raise user_code_error(field, f"loading {path.name}", exc) from None


def builder_inputs(data: Any) -> dict[str, Any]:
    """What a `keras` function may declare: input_shape (tuple, one sample), n_outputs (the
    task's output units) and task (its name)."""
    return {
        "input_shape": tuple(data.input_shape),
        "n_outputs": output_units(data.task, data.n_classes, data.n_features),
        "task": data.task.value,
    }


def build_own_model(config: ExperimentConfig, data: Any, seed: int) -> Any:
    """The user's model for `data`, built (inputs and outputs known) and checked against the
    task; the builder runs under `keras.utils.set_random_seed(seed)`. Its weights are not the
    ones trained: engines/keras/own_model.py clones it (fresh weights from the repeat's seed).
    Raises ConfigError."""
    import keras

    set_random_seed(seed)
    if config.model.keras_file is not None:
        model = load_keras_file(config.model.keras_file)
        field, what = "model.keras_file", Path(config.model.keras_file).name
    else:
        fn = import_builder(config.model.keras)
        kwargs = builder_kwargs(fn, builder_inputs(data), dict(config.model.args))
        field, what = "model.keras", f"{getattr(fn, '__name__', 'the function')}()"
        try:
            model = fn(**kwargs)
        except ConfigError:
            raise
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as exc:  # noqa: BLE001 (user code: any failure is a config error)
            raise user_code_error(field, what, exc) from None
        if not isinstance(model, keras.Model):
            raise ConfigError(
                [f"{field}: {what} returned {type(model).__name__}, not a keras.Model"]
            )
    model = functional_view(model, data.input_shape, field, what)
    check_output(model, data, field, what)
    return model


def functional_view(model: Any, input_shape: tuple[int, ...], field: str, what: str) -> Any:
    """`model` as a functional model on its layers (a Sequential is built for `input_shape`
    first; its layers are shared, not copied), checked to take one input of the data's shape.
    A subclassed model (layers known only when called) is refused: it cannot be cloned."""
    import keras

    try:
        if isinstance(model, keras.Sequential):
            if not model.built or not getattr(model, "_functional", None):
                model.build((None, *input_shape))
            # single tensors, not lists: called on an array, the model then expects one
            model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError, TypeError) as exc:
        raise ConfigError(
            [
                f"{field}: {what} is not a Sequential or functional keras.Model ({exc}); a "
                f"subclassed model cannot be cloned to attach the penalties"
            ]
        ) from None
    if not inputs or not outputs:
        raise ConfigError(
            [f"{field}: {what} is a subclassed keras.Model: write it as Sequential or functional"]
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            [
                f"{field}: {what} has {len(inputs)} inputs and {len(outputs)} outputs; the data "
                f"gives one input and the task one output"
            ]
        )
    got = tuple(inputs[0].shape[1:])
    fits = len(got) == len(input_shape) and all(
        g is None or g == n for g, n in zip(got, input_shape, strict=True)
    )
    if not fits:
        raise ConfigError(
            [
                f"{field}: {what} takes inputs of shape {_shape(got)} per sample, but the data's "
                f"samples are {_shape(input_shape)} (set data.input_shape, or the model's Input)"
            ]
        )
    return model


def output_layer(model: Any) -> Any:
    """The layer whose output is the model's output."""
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = getattr(history, "operation", None) or (history[0] if history else None)
    return layer if layer is not None else model.layers[-1]


def activation_name(layer: Any) -> str | None:
    """A layer's activation by name ('relu', 'linear'), None when it has none."""
    fn = getattr(layer, "activation", None)
    if fn is None:
        return None
    return str(getattr(fn, "__name__", fn))


def check_output(model: Any, data: Any, field: str, what: str) -> None:
    """The output has the task's units per sample and the activation its loss expects
    (sigmoid: binary cross-entropy, softmax: sparse categorical cross-entropy, linear: MSE)."""
    task: Task = data.task
    units = output_units(task, data.n_classes, data.n_features)
    got = tuple(model.outputs[0].shape[1:])
    expected = spec(task).output_activation
    what_layer = f"Dense({units}, activation='{expected}')"
    if got != (units,):
        raise ConfigError(
            [
                f"{field}: {what} gives outputs of shape {_shape(got)} per sample; a {task.value} "
                f"task on this data needs [{units}]: end the model with {what_layer}"
                + (
                    ""
                    if field == "model.keras_file"
                    else f" (the function may declare n_outputs={units})"
                )  # fmt: skip
            ]
        )
    layer = output_layer(model)
    name = activation_name(layer) or "linear"
    if name != expected:
        raise ConfigError(
            [
                f"{field}: {what}'s output layer '{layer.name}' has activation '{name}'; the "
                f"{spec(task).loss} loss of a {task.value} task expects '{expected}': end the "
                f"model with {what_layer}"
            ]
        )


def check_regularized_layers(config: ExperimentConfig, model: Any) -> None:
    """Every `regularizers` item names a layer of the model that has the weight it targets;
    `before_activation` only where the activation can be split off; `model.probe` names a
    layer. ConfigError otherwise."""
    # Input layers have no weights and no output of their own to penalize
    names = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    errors = []
    probe = config.model.probe
    if probe is not None and probe not in names:
        errors.append(
            f"model.probe: the model has no layer named {probe!r}; its layers: " + ", ".join(names)
        )
    for i, reg in enumerate(config.regularizers):
        where = f"regularizers.{i}.layer"
        if reg.layer not in names:
            errors.append(
                f"{where}: the model has no layer named {reg.layer!r}; its layers: "
                f"{', '.join(names)}"
            )
            continue
        layer = model.get_layer(reg.layer)
        kind = type(layer).__name__
        if reg.target is Target.kernel and not hasattr(layer, "kernel_regularizer"):
            errors.append(
                f"{where}: layer {reg.layer!r} ({kind}) has no kernel; target: kernel needs a "
                f"layer with one (Dense, Conv*, LSTM, ...); target: activity penalizes its output"
            )
        elif reg.target is Target.bias and (
            not hasattr(layer, "bias_regularizer") or getattr(layer, "use_bias", True) is False
        ):
            errors.append(
                f"{where}: layer {reg.layer!r} ({kind}) has no bias; target: bias needs a "
                f"layer with one"
            )
        elif (
            reg.placement is Placement.before_activation
            and needs_split(layer)
            and kind not in SPLITTABLE_LAYERS
        ):
            errors.append(
                f"{where}: layer {reg.layer!r} ({kind}) applies its activation "
                f"'{activation_name(layer)}' inside the layer, so placement "
                f"before_activation cannot reach its pre-activation output; use "
                f"after_activation (or one of {', '.join(SPLITTABLE_LAYERS[:3])}, ...)"
            )
    if errors:
        raise ConfigError(errors)


def needs_split(layer: Any) -> bool:
    """The layer has a non-linear activation (a penalty before it needs the layer's linear
    output): 'linear' and no activation at all need none."""
    return activation_name(layer) not in (None, "linear")


def check_own_model(config: ExperimentConfig, data: Any) -> dict[str, Any]:
    """Build the model once (seed = training.seed), check it and the regularizers, and clone
    it as training will; returns `own_model_summary`. Raises ConfigError."""
    import keras

    model = build_own_model(config, data, config.training.seed)
    check_regularized_layers(config, model)
    try:  # training clones it (engines/keras/own_model.py): a layer without a working
        # get_config / from_config (a custom layer) fails here, before anything is written
        keras.models.clone_model(model)
    except (KeyboardInterrupt, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 (user code: any failure is a config error)
        raise user_code_error(
            source_field(config), "cloning the model (each layer's get_config, from_config)", exc
        ) from None
    return own_model_summary(config, model)


def own_model_summary(config: ExperimentConfig, model: Any) -> dict[str, Any]:
    """What run.yaml records of the model, so that the report never imports it: its source,
    parameter count and, per layer, name, kind, activation, parameters and the penalties the
    model itself carries (`kept_penalties`, kept besides the config's own)."""
    layers = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":  # no weights; its name varies by process
            continue
        row: dict[str, Any] = {
            "name": layer.name,
            "kind": type(layer).__name__,
            "parameters": int(layer.count_params()) if layer.built else 0,
        }
        if (name := activation_name(layer)) is not None:
            row["activation"] = name
        if kept := kept_penalties(layer):
            row["own_penalties"] = kept
        layers.append(row)
    return {
        "source": config.model.keras_source,
        "parameters": int(sum(row["parameters"] for row in layers)),
        "layers": layers,
    }


def kept_penalties(layer: Any) -> dict[str, str]:
    """The regularizers a layer of the user's model carries itself (slot -> description)."""
    out = {}
    for key, value in sorted(vars(layer).items()):
        if key.endswith("_regularizer") and value is not None:
            out[key] = describe_regularizer(value)
    for slot in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
        value = getattr(layer, slot, None)
        if value is not None and slot not in out:
            out[slot] = describe_regularizer(value)
    return out


def describe_regularizer(value: Any) -> str:
    """'L2(l2=0.01)' for a Keras regularizer, the function's name otherwise."""
    get_config = getattr(value, "get_config", None)
    if callable(get_config):
        try:
            settings = ", ".join(f"{k}={v:g}" for k, v in get_config().items())
            return f"{type(value).__name__}({settings})"
        except (TypeError, ValueError, NotImplementedError):
            pass
    return str(getattr(value, "__name__", type(value).__name__))


def _shape(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join("None" if n is None else str(n) for n in shape) + "]"


def model_source_hash(config: ExperimentConfig) -> str | None:
    """sha256 (hex) of the file a Keras model of your own comes from: the `keras_file`, or the
    file of `model.keras`'s function (imported as training will import it; a sweep trains it
    anyway). An edited builder or saved model recomputes its cells; a module the builder
    imports in turn is not covered. None for YAML models, or when the file cannot be read or
    imported (checking the model reports why)."""
    from actreg_cli.data import DataError
    from actreg_cli.data.files import file_sha256

    model = config.model
    if model.keras_file is not None:
        path = Path(model.keras_file)
    elif model.keras is not None:
        try:
            source = inspect.getsourcefile(import_builder(model.keras))
        except (ConfigError, TypeError):  # TypeError: a builtin or C function has no source
            return None
        if source is None:
            return None
        path = Path(source)
    else:
        return None
    try:
        return file_sha256(path)
    except (OSError, DataError):
        return None
