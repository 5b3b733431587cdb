"""Config files to validated configs: `load_experiment`, `load_sweep` (a sweep file, or an
experiment file with `--grid`), `load_any`, with `--set` applied; data paths made absolute.

`load_experiment` and `load_sweep` also take a dict (the Python API's `actreg.run({...})`),
validated as the same mapping read from a file would be; its errors name `DICT_ORIGIN`."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actreg_cli.config.base import ConfigError
from actreg_cli.config.experiment import ExperimentConfig, SweepConfig
from actreg_cli.config.overrides import apply_overrides, parse_grid_option, parse_override, renamed
from actreg_cli.config.validation import validate_mapping
from actreg_cli.config.yaml_io import read_yaml_mapping

#: A config file's path, or a config as a dict (the Python API).
ConfigSource = str | os.PathLike[str] | Mapping[str, Any]
#: What errors in a dict config name instead of a file.
DICT_ORIGIN = "config dict"


def config_origin(source: ConfigSource) -> str:
    """What an error in `source` names first: the file's path, or DICT_ORIGIN for a dict."""
    return DICT_ORIGIN if isinstance(source, Mapping) else str(source)


def read_config_source(source: ConfigSource) -> tuple[dict[str, Any], Path]:
    """The mapping of a config file, or a deep copy of a dict config (the caller's dict is never
    changed); and the path that relative paths in it are read against: the file, or for a dict
    a name in the current folder (so `data.path: x.csv` is ./x.csv)."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), Path.cwd() / DICT_ORIGIN
    return read_yaml_mapping(Path(source)), Path(source)


def load_experiment(path: ConfigSource, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config (a file, or a dict). Raises ConfigError.

    With overrides, the name and description are made to describe what will run (unless the
    overrides set them): see `renamed`.
    """
    data, relative_to = read_config_source(path)
    origin = config_origin(path)
    if "grid" in data and "base" in data:
        raise ConfigError(
            [f"{origin}: this is a sweep config (it has 'base' and 'grid'); use `actreg sweep`"]
        )
    resolve_data_path(data, relative_to)
    overridden = apply_overrides(data, overrides, model=ExperimentConfig)
    config = validate_mapping(data, ExperimentConfig, origin, overridden)
    changes = [parse_override(item) for item in overrides]
    return renamed(config, changes, f"{relative_to.name} with --set {' '.join(overrides)}")


def load_sweep(
    path: ConfigSource, overrides: Sequence[str] = (), grid: Sequence[str] = ()
) -> SweepConfig:
    """Read a sweep config; `--set` keys address the base experiment (e.g. training.epochs=5).

    path: a sweep file (`base:` a mapping, or the path of an experiment file relative to the
      sweep file), or an experiment file when `grid` is given (Hydra-style multirun: the file is
      the base, the sweep is named `<name>-<swept keys>` so that re-running it resumes); or
      either as a dict (relative paths in it are read from the current folder).
    grid: `--grid KEY=V1,V2,...` items (see `parse_grid_option`); they add keys to, or replace
      keys of, the file's grid.
    """
    data, relative_to = read_config_source(path)
    origin = config_origin(path)
    is_sweep_file = "grid" in data or "base" in data
    if not is_sweep_file:
        if not grid:
            raise ConfigError(
                [
                    f"{origin}: an experiment config, not a sweep: give the values to sweep with "
                    "--grid KEY=V1,V2 (e.g. --grid regularizers.0.strength=1e-5,1e-4), or train "
                    "it once with `actreg run`"
                ]
            )
        data = {"base": data, "grid": {}}
    elif "grid" not in data and not grid:
        raise ConfigError(
            [f"{origin}: a sweep config needs a 'grid' mapping (dotted key: list of values)"]
        )
    if isinstance(data.get("base"), str):
        data["base"] = _base_from_file(relative_to, data["base"], origin)
    data.setdefault("base", {})
    if isinstance(data["base"], dict):
        resolve_data_path(data["base"], relative_to)
    if not isinstance(data.get("grid", {}), dict):
        raise ConfigError([f"{origin}: grid must be a mapping (dotted key: list of values)"])
    data.setdefault("grid", {})
    for item in grid:
        key, values = parse_grid_option(item)
        data["grid"][key] = values
    if not is_sweep_file:
        base_name = data["base"].get("name") or ExperimentConfig().name
        keys = "-".join(k.split(".")[-1] for k in data["grid"])
        data["name"] = f"{base_name}-{keys}"
    overridden = apply_overrides(data, overrides, model=SweepConfig, prefix="base.")
    return validate_mapping(data, SweepConfig, origin, overridden)


def _base_from_file(sweep_path: Path, name: str, origin: str) -> dict[str, Any]:
    """`base: experiment.yaml` of a sweep file: that file's mapping, validated on its own first
    so that its errors name it (relative paths are read from the sweep file's folder; `origin`
    names the sweep)."""
    base_path = Path(name)
    if not base_path.is_absolute():
        base_path = sweep_path.parent / base_path
    data = read_yaml_mapping(base_path)
    if "grid" in data or "base" in data:
        raise ConfigError(
            [f"{origin}: base: {name} is a sweep config; it must name an experiment config"]
        )
    resolve_data_path(data, base_path)
    validate_mapping(data, ExperimentConfig, str(base_path))
    return data


def load_any(path: Path) -> ExperimentConfig | SweepConfig:
    """Validate either kind of config (used by `actreg validate`)."""
    data = read_yaml_mapping(path)
    if "grid" in data or "base" in data:
        return load_sweep(path)
    resolve_data_path(data, path)
    return validate_mapping(data, ExperimentConfig, str(path))


def resolve_data_path(experiment: dict[str, Any], config_path: Path) -> None:
    """A data file's relative `path` is relative to the config file's folder: make it absolute
    (so the saved, resolved config names the file that was read). The model's files too
    (`resolve_model_path`)."""
    resolve_model_path(experiment, config_path)
    section = experiment.get("data")
    if isinstance(section, dict) and isinstance(section.get("path"), str | os.PathLike):
        file = Path(section["path"]).expanduser()
        if not file.is_absolute():
            section["path"] = str((Path(config_path).parent / file).resolve())
        elif not isinstance(section["path"], str):
            section["path"] = str(section["path"])  # a Path object in a dict config


def with_training(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A copy with some `training` fields replaced and re-validated (for --epochs and friends)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return config
    data = config.resolved()
    data["training"].update(changes)
    # named as the user gave them: "--epochs 2000000: training.epochs: ..."
    options = " ".join(f"--{key} {value}" for key, value in changes.items())
    changed = validate_mapping(data, ExperimentConfig, options)
    changed._changed_by = list(config._changed_by)
    return renamed(changed, [(f"training.{k}", v) for k, v in changes.items()], options)


def resolve_model_path(experiment: dict[str, Any], config_path: Path) -> None:
    """A Keras model of your own read from a file, `model.keras_file: m.keras` or
    `model.keras: file.py:build`, is relative to the config file's folder as data files are:
    make the path absolute. A dotted module (`package.module:build`) is imported from the
    current folder or PYTHONPATH and stays as it is."""
    section = experiment.get("model")
    if not isinstance(section, dict):
        return
    base = Path(config_path).parent
    file = section.get("keras_file")
    if isinstance(file, str | os.PathLike):
        section["keras_file"] = str((base / Path(file).expanduser()).resolve())
    spec = section.get("keras")
    if isinstance(spec, str):
        module, sep, function = spec.rpartition(":")
        if sep and module.endswith(".py"):
            section["keras"] = f"{(base / Path(module).expanduser()).resolve()}:{function}"
