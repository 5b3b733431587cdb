"""The grid of a sweep: its cells, validated before anything is trained.

`expand_grid` turns a `SweepConfig` into `Cell`s (a base experiment times the grid's values, plus
baseline cells without the penalties), with every error found before any training; two cells
that are the same experiment (`hashed_config`) are refused. `baseline_for` pairs each cell with
its baseline.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actreg_cli.config import (
    ConfigError,
    EarlyStoppingConfig,
    ExperimentConfig,
    SweepConfig,
    get_path,
    set_path,
    validate_mapping,
)
from actreg_cli.weights import repeat_seeds

#: Fields of a cell's config that cannot change its results (left out of its hash).
UNHASHED_FIELDS = ("name", "description")
#: Grids with more cells than this are refused unless asked for explicitly (`allow_large`): each
#: cell is a validated config held in memory (10**6 cells took ~4 GB before anything printed).
MAX_GRID_CELLS = 10_000
#: At most this many invalid-cell lines are printed; the rest are counted.
MAX_ERROR_LINES = 20

#: How a baseline cell is named: the cell without its penalties (every `regularizers` entry,
#: the layers' own included). Dropout and the other swept keys stay: a sweep over
#: model.dropout gets one baseline per dropout rate.
BASELINE_LABEL = "baseline (no penalties)"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a validated experiment, trained `config.training.repeats` times.

    values: swept key -> value as validated (e.g. the YAML string '1e-4' becomes 0.0001); a
      baseline cell holds only the swept keys outside `regularizers`.
    """

    id: str
    values: dict[str, Any]
    config: ExperimentConfig
    baseline: bool = False

    @property
    def seeds(self) -> list[int]:
        """Model seeds of repeats 0..repeats-1 (the same for every cell of a sweep)."""
        return repeat_seeds(self.config.training.seed, self.config.training.repeats)

    @property
    def label(self) -> str:
        parts = [f"{key}={setting_text(key, v)}" for key, v in self.values.items()]
        if self.baseline:
            return ", ".join([BASELINE_LABEL, *parts])
        return ", ".join(parts)


#: Swept keys whose value is a group of fields that is on or off (None), and the config class
#: that gives the fields' defaults: a label says 'off', 'on' or 'on (patience: 10)'.
ON_OFF_SETTINGS = {"training.early_stopping": EarlyStoppingConfig}


def setting_text(key: str, value: Any) -> str:
    """A swept value as a label says it: `format_value`, except for ON_OFF_SETTINGS: 'off',
    'on', or 'on (patience: 10)' with the fields that differ from their defaults."""
    if key not in ON_OFF_SETTINGS:
        return format_value(value)
    if value is None:
        return "off"
    defaults = ON_OFF_SETTINGS[key]().model_dump()
    changed = {k: v for k, v in value.items() if defaults.get(k) != v}
    return "on" + (f" ({format_value(changed)[1:-1]})" if changed else "")


def format_value(value: Any) -> str:
    """A swept value for labels and table cells: 0.0001 -> '0.0001', 1e-07 -> '1e-07'."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, dict):  # e.g. a whole regularizer: its set fields, no nulls
        return (
            "{"
            + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items() if v is not None)
            + "}"
        )
    return json.dumps(value, separators=(",", ":"))


_LAYER_REGULARIZERS = re.compile(r"model\.layers\.\d+\.regularizers(\.|$)")


def is_regularizer_key(key: str) -> bool:
    """Whether a swept key sets a penalty (`regularizers...`, `model.layers.N.regularizers...`):
    baseline cells leave those out."""
    return (
        key == "regularizers"
        or key.startswith("regularizers.")
        or _LAYER_REGULARIZERS.match(key) is not None
    )


def grid_size(sweep: SweepConfig) -> int:
    """Number of cells `expand_grid` would make (grid product plus baselines), without making them."""
    n = math.prod(len(values) for values in sweep.grid.values())
    if sweep.baseline:
        n += math.prod(len(v) for k, v in sweep.grid.items() if not is_regularizer_key(k))
    return n


def check_grid_size(sweep: SweepConfig, origin: str, allow_large: bool = False) -> None:
    """ConfigError stating the size of a grid above MAX_GRID_CELLS, unless `allow_large`."""
    n = grid_size(sweep)
    if n > MAX_GRID_CELLS and not allow_large:
        sizes = " x ".join(f"{len(v)} ({k})" for k, v in sweep.grid.items())
        models = n * sweep.base.training.repeats
        raise ConfigError(
            [
                f"{origin}: the grid has {n} cells ({sizes}{' + baselines' if sweep.baseline else ''}"
                f"), {models} models to train: more than {MAX_GRID_CELLS} cells; pass "
                "--allow-large-grid to run it anyway"
            ]
        )


def expand_grid(
    sweep: SweepConfig,
    origin: str = "grid",
    allow_large: bool = False,
    origins: Mapping[str, str] | None = None,
) -> list[Cell]:
    """Every cell of the sweep, validated: baseline cell(s) first, then the grid in order.

    The grid is the Cartesian product of its lists, the last key varying fastest. Cells are
    expanded from the base *as written* (`exclude_unset`), so defaults that depend on other fields
    (an activity regularizer's placement) are derived again for each cell. With `baseline`, one
    unregularized cell (no `regularizers`, on the experiment or on any layer) is added per
    combination of the swept keys outside them (just one when every swept key is a regularizer
    key).

    origin: who wrote the grid, as errors name it (the sweep file); origins: the same for
      single keys (`--grid 'KEY=V1,V2'` for a key given on the command line).
    Raises ConfigError naming the grid key, or the cell (its swept values) and the field, and
    for a grid of more than MAX_GRID_CELLS cells (its size, before expanding) unless `allow_large`.
    """
    made_for, large, cells = _last_expansion
    if made_for is sweep and large == allow_large:  # checked already: `sweep` has no errors
        return list(cells)
    cells = _expand(sweep, origin, allow_large, origins)
    _last_expansion[:] = [sweep, allow_large, cells]
    return list(cells)


#: The last expansion: (the sweep, allow_large, its cells). A sweep is expanded when checked
#: and again when planned (~0.3 s each at 1000 cells of validation).
_last_expansion: list[Any] = [None, None, []]


def _expand(
    sweep: SweepConfig, origin: str, allow_large: bool, origins: Mapping[str, str] | None
) -> list[Cell]:
    """expand_grid's work, uncached."""
    check_grid_size(sweep, origin, allow_large)
    base = sweep.base.model_dump(mode="json", exclude_unset=True)
    keys = list(sweep.grid)
    origins = dict(origins or {})
    errors = _check_keys(base, sweep.grid, origin, origins)
    if errors:
        raise ConfigError(errors)

    cells: list[Cell] = []
    errors = []

    def build(values: dict[str, Any], *, baseline: bool, cell_id: str) -> None:
        data = copy.deepcopy(base)
        if baseline:
            # a Keras model of your own: the baseline summarises the layer the cells penalize
            # (without penalties it would fall back to the model's first layer with a kernel)
            probe = sweep.base.probe_layer
            if sweep.base.model.is_keras_model and isinstance(probe, str):
                data.setdefault("model", {})["probe"] = probe
            data["regularizers"] = []
            for layer in (data.get("model") or {}).get("layers") or []:
                if isinstance(layer, dict):
                    layer.pop("regularizers", None)
        for key, value in values.items():
            set_path(
                data, key, copy.deepcopy(value), model=ExperimentConfig,
                origin=origins.get(key, origin),
            )  # fmt: skip
        label = ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "no swept keys"
        cell = f"cell {cell_id} ({'baseline, ' if baseline else ''}{label})"
        where = f"{origin}: {cell}"
        # A bad value of a key from the command line is blamed on its --grid option.
        blamed = {key: f"{origins[key]}: {cell}" for key in values if key in origins}
        try:
            config = validate_mapping(data, ExperimentConfig, where, blamed)
        except ConfigError as exc:
            errors.extend(exc.errors)
            return
        resolved = config.resolved()
        validated = {key: get_path(resolved, key) for key in values}
        cells.append(Cell(id=cell_id, values=validated, config=config, baseline=baseline))

    if sweep.baseline:
        outer = [k for k in keys if not is_regularizer_key(k)]
        combos = list(itertools.product(*(sweep.grid[k] for k in outer)))
        for i, combo in enumerate(combos):
            cell_id = (
                "baseline" if len(combos) == 1 else f"baseline-{i + 1:0{len(str(len(combos)))}d}"
            )
            build(dict(zip(outer, combo, strict=True)), baseline=True, cell_id=cell_id)
    combos = list(itertools.product(*(sweep.grid[k] for k in keys)))
    width = len(str(len(combos)))
    for i, combo in enumerate(combos):
        build(dict(zip(keys, combo, strict=True)), baseline=False, cell_id=f"c{i + 1:0{width}d}")

    if errors:
        shown = errors[:MAX_ERROR_LINES]
        if len(errors) > MAX_ERROR_LINES:
            shown.append(f"... and {len(errors) - MAX_ERROR_LINES} more errors in other cells")
        raise ConfigError(shown)
    _check_distinct(cells, origin)
    return cells


def _check_keys(
    base: dict[str, Any], grid: dict[str, list[Any]], default: str, origins: dict[str, str]
) -> list[str]:
    """Each grid key must be a config key that exists in the base; lists non-empty, no repeats."""
    errors: list[str] = []
    for key, values in grid.items():
        origin = origins.get(key, default)
        if not isinstance(values, list) or not values:
            errors.append(
                f"{origin}: {key!r}: the list of values is empty; give at least one value"
            )
            continue
        try:
            set_path(copy.deepcopy(base), key, values[0], model=ExperimentConfig, origin=origin)
        except ConfigError as exc:
            errors.extend(exc.errors)
            continue
        seen: list[Any] = []
        for value in values:
            if value in seen:
                errors.append(f"{origin}: {key!r}: the value {format_value(value)} is listed twice")
            seen.append(value)
    keys = list(grid)
    for a, b in itertools.permutations(keys, 2):
        if b.startswith(a + "."):
            errors.append(f"{default}: keys {a!r} and {b!r} overlap: sweep one or the other")
    return errors


def _check_distinct(cells: Sequence[Cell], origin: str) -> None:
    """Two cells that are the same experiment (e.g. 1e-4 and 0.0001) would share one result."""
    first: dict[str, Cell] = {}
    errors = []
    for cell in cells:
        key = canonical(hashed_config(cell.config))
        if key in first:
            fix = (
                "set 'baseline: false' (the grid has unregularized cells already)"
                if cell.baseline or first[key].baseline
                else "remove one of the values"
            )
            errors.append(
                f"{origin}: cell {cell.id} ({cell.label}) is the same experiment as cell "
                f"{first[key].id} ({first[key].label}); {fix}"
            )
        else:
            first[key] = cell
    if errors:
        raise ConfigError(errors)


def baseline_keys(cells: Sequence[Cell]) -> list[str]:
    """The swept keys a baseline cell keeps (those outside the penalties, e.g. model.dropout):
    each cell is compared with the baseline of its own values of these keys."""
    return list(next((c.values for c in cells if c.baseline), {}))


def baseline_for(cell: Cell, cells: Sequence[Cell]) -> Cell | None:
    """The baseline cell that shares `cell`'s swept values outside `regularizers`."""
    for other in cells:
        if other.baseline and all(cell.values.get(k) == v for k, v in other.values.items()):
            return other
    return None


# ---------------------------------------------------------------------------------------------
# What makes two cells the same experiment (also what store.cell_hash covers)


#: The model fields of a Keras model of your own, and their values when unset: a YAML
#: model's hash leaves them out, so cells stored before these fields existed keep their hash.
OWN_MODEL_FIELDS = {"keras": None, "args": {}, "keras_file": None, "probe": None}


def hashed_config(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config without UNHASHED_FIELDS (and unset OWN_MODEL_FIELDS): equal for
    two cells that are the same experiment."""
    data = config.resolved()
    for name in UNHASHED_FIELDS:
        data.pop(name, None)
    model = data.get("model") or {}
    for name, unset in OWN_MODEL_FIELDS.items():
        if name in model and model[name] == unset:
            del model[name]
    return data


def canonical(data: Any) -> str:
    """One JSON text per value (sorted keys, no spaces, ASCII; NaN refused): what is hashed."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
