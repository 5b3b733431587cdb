"""Command-line changes to a config: `--set KEY=VALUE` and `--grid KEY=V1,V2,...` parsed and
applied, and the name and description of a changed experiment made to say what changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from actreg_cli.config.base import ConfigError, StrictModel
from actreg_cli.config.describe import describe_experiment
from actreg_cli.config.experiment import ExperimentConfig
from actreg_cli.config.validation import set_path
from actreg_cli.config.yaml_io import read_value


def parse_override(item: str) -> tuple[str, Any]:
    """Split `KEY=VALUE` of `--set`; VALUE is read as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=200"])
    value = read_value(raw, f"--set {item!r}")
    return key, value


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], *, model: type[StrictModel], prefix: str = ""
) -> dict[str, str]:
    """Apply `--set KEY=VALUE` items (KEY relative to `prefix`, e.g. 'base.' for sweeps).

    Returns dotted key (with prefix) -> `--set 'KEY=VALUE'`, the origin of each overridden value."""
    overridden: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        origin = f"--set {item!r}"
        set_path(data, prefix + key, value, model=model, origin=origin)
        overridden[prefix + key] = origin
    return overridden


#: Keys whose last part alone would be ambiguous in a derived name.
_NAME_KEYS = ("name", "description")
#: Changes that repeat the same experiment rather than change it: they keep the name.
_SAME_EXPERIMENT_KEYS = ("training.repeats", "training.seed")


def _short_key(key: str) -> str:
    last = key.split(".")[-1]
    return key if last in _NAME_KEYS else last


def renamed(
    config: ExperimentConfig, changes: Sequence[tuple[str, Any]], origin: str
) -> ExperimentConfig:
    """`config` with a name and description that say what the `changes` (key, value) made of it.

    `--set regularizers.0.strength=1e-3` on circles_l1_before_relu gives the name
    'circles_l1_before_relu-strength-0.001' and a description generated from the resolved config
    (`describe_experiment`), so that folder names, plot titles and saved descriptions never show
    the file's stale words. Changes that set `name` or `description` themselves win.
    """
    set_keys = {key for key, _ in changes}
    effective = [
        (key, value)
        for key, value in changes
        if key not in _NAME_KEYS and key not in _SAME_EXPERIMENT_KEYS
    ]
    if not effective:
        return config
    previous = list(config._changed_by)
    config = config.model_copy(deep=True)
    config._changed_by = [*previous, origin]
    if "name" not in set_keys:
        resolved = config.resolved()
        parts = []
        for key, _ in effective:
            try:
                value = get_path(resolved, key)
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            parts.append(f"{_short_key(key)}-{_name_value(value)}")
        config.name = "-".join([config.name, *parts])
    if "description" not in set_keys:
        config.description = f"{describe_experiment(config)} (from {'; '.join(config._changed_by)})"
    return config


def get_path(data: Any, dotted: str) -> Any:
    """The value at `a.b.0.c` in nested dicts and lists (KeyError/IndexError if absent)."""
    node = data
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _name_value(value: Any) -> str:
    """A value as a short part of a folder name: 0.001, 64x64 (a list of numbers), 'set' for
    anything nested (a whole regularizer list), which the description spells out."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and all(isinstance(v, int | float | str) for v in value):
        return "x".join(_name_value(v) for v in value) or "none"
    if isinstance(value, list | dict):
        return "set"
    return str(value)


def grid_key(item: str) -> str:
    """The key of a `--grid KEY=V1,V2,...` item, without reading its values."""
    return item.partition("=")[0].strip()


def parse_grid_option(item: str) -> tuple[str, list[Any]]:
    """Split `--grid KEY=V1,V2,...` into the key and its values, each read as YAML.

    As in Hydra's multirun, commas inside brackets belong to one value:
    `model.hidden_units=[8,8],[16]` sweeps two values, `[8,8]` and `[16]`.
    """
    key, sep, raw = item.partition("=")
    key = grid_key(item)
    if not sep or not key or not raw.strip():
        raise ConfigError(
            [f"--grid {item!r}: expected KEY=V1,V2,... e.g. regularizers.0.strength=1e-5,1e-4"]
        )
    parts, depth, current = [], 0, ""
    for char in raw:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    try:
        values = [read_value(part) for part in parts]
    except yaml.YAMLError as exc:
        raise ConfigError([f"--grid {item!r}: a value is not valid YAML: {exc}"]) from exc
    return key, values
