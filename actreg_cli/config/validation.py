"""Plain data checked against the schema: `set_path` walks a dotted key step by step (unknown
keys with a suggestion), `validate_mapping` validates a whole mapping, and
`format_validation_error` turns pydantic's errors into one line each that names the file or the
`--set` item, the field, the value and what is allowed."""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from actreg_cli.config.base import ConfigError, StrictModel
from actreg_cli.config.data import DATA_SOURCES, DataConfig
from actreg_cli.config.model import LAYER_KINDS, LayerConfig


def set_path(
    data: dict[str, Any], dotted: str, value: Any, *, model: type[BaseModel], origin: str
) -> None:
    """Set `a.b.0.c` in nested dicts/lists, checking every step against the config schema.

    Missing intermediate mappings are created, so `--set training.epochs=5` works on a file that
    has no `training:` section. Unknown keys raise ConfigError with a suggestion.
    """
    parts = dotted.split(".")
    node: Any = data
    schema: Any = model
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if schema is DataConfig:
            schema = _data_source(node.get("name") if isinstance(node, dict) else None, origin)
        elif schema is LayerConfig:
            kind = node.get("kind") if isinstance(node, dict) else None
            schema = _layer_kind(kind, origin, ".".join(parts[:depth]))
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            fields = schema.model_fields
            if part not in fields:
                raise ConfigError([f"{origin}: unknown key {here!r}{_suggest(part, fields)}"])
            if not isinstance(node, dict):
                raise ConfigError(
                    [f"{origin}: {'.'.join(parts[:depth]) or 'config'} is not a mapping"]
                )
            if last:
                node[part] = value
                return
            schema = _inner_type(fields[part].annotation)
            if part not in node or node[part] is None:
                node[part] = [] if schema is list else {}
            node = node[part]
        elif schema is dict:
            # a free mapping (model.args): any key, nested mappings made as needed
            if not isinstance(node, dict):
                raise ConfigError(
                    [f"{origin}: {'.'.join(parts[:depth]) or 'config'} is not a mapping"]
                )
            if last:
                node[part] = value
                return
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        elif schema is list or _is_list_of_models(schema):
            item_schema = _list_item_model(schema)
            # isdigit alone passes '²' (int() refuses it) and other non-ASCII digits
            if not (part.isascii() and part.isdigit()):
                raise ConfigError(
                    [f"{origin}: {'.'.join(parts[:depth])} is a list; {part!r} must be an index"]
                )
            index = int(part)
            if not isinstance(node, list) or index >= len(node):
                n = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    [
                        f"{origin}: {here!r} does not exist: the list has {n} item(s) (indices 0..{n - 1})"
                    ]
                )
            if last:
                node[index] = value
                return
            node = node[index]
            schema = item_schema
        else:
            raise ConfigError([f"{origin}: {'.'.join(parts[:depth])} has no sub-key {part!r}"])


def _inner_type(annotation: Any) -> Any:
    """The config class, or `list`, that a field annotation refers to (else None)."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _inner_type(typing.get_args(annotation)[0])
    args = set(typing.get_args(annotation)) - {type(None)}
    if args == set(DATA_SOURCES.values()):
        return DataConfig  # the data union: one source, picked by `name` (see _data_source)
    if args == set(LAYER_KINDS.values()):
        return LayerConfig  # the layer union: one kind, picked by `kind` (see _layer_kind)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _inner_type(args.pop())  # an optional section
    if origin is list:
        return annotation
    if origin is dict:
        return dict  # a free mapping (model.args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _data_source(name: Any, origin: str) -> type[BaseModel]:
    """The config class of data source `name` (circles when the section names none)."""
    name = "circles" if name is None else name
    if name not in DATA_SOURCES:
        raise ConfigError(
            [
                f"{origin}: data.name {name!r} is not a data source{_suggest(str(name), DATA_SOURCES)}"
            ]
        )
    return DATA_SOURCES[name]


def _layer_kind(kind: Any, origin: str, where: str) -> type[BaseModel]:
    """The config class of layer kind `kind`."""
    if kind not in LAYER_KINDS:
        raise ConfigError(
            [
                f"{origin}: {where}.kind {kind!r} is not a layer kind (one of "
                f"{', '.join(LAYER_KINDS)}){_suggest(str(kind), LAYER_KINDS)}"
            ]
        )
    return LAYER_KINDS[kind]


def _is_list_of_models(schema: Any) -> bool:
    import typing

    return typing.get_origin(schema) is list


def _list_item_model(schema: Any) -> Any:
    import typing

    args = typing.get_args(schema)
    return _inner_type(args[0]) if args else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    allowed = ", ".join(choices)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed: {allowed})"


def format_validation_error(
    exc: ValidationError,
    origin: str,
    model: type[BaseModel],
    overridden: dict[str, str] | None = None,
) -> list[str]:
    """One line per pydantic error: `file: field.path: message (got value)`.

    overridden: dotted key -> `--set 'KEY=VALUE'`; an error at or under an overridden key is
    blamed on that --set item instead of the file (the file never held the bad value)."""
    lines = []
    for err in exc.errors():
        raw_loc = [str(p) for p in err["loc"]]
        loc = _drop_union_tags(model, raw_loc)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found") and "'kind'" in str(
            err.get("ctx", {}).get("discriminator")
        ):
            # a layer of model.layers, picked by its `kind`
            tag = err["input"].get("kind") if isinstance(err.get("input"), dict) else None
            what = "has no 'kind'" if tag is None else f"{tag!r} is not a layer kind"
            lines.append(
                f"{_origin_of('.'.join(loc), origin, overridden or {})}: {'.'.join(loc)}.kind: "
                f"{what}{_suggest(str(tag), LAYER_KINDS) if tag is not None else ''}"
                + ("" if tag is not None else f" (allowed: {', '.join(LAYER_KINDS)})")
            )
            continue
        if err["type"] == "union_tag_invalid":
            tag = err.get("input", {}).get("name") if isinstance(err.get("input"), dict) else None
            lines.append(
                f"{origin}: {'.'.join(loc)}.name: {tag!r} is not a data source"
                f"{_suggest(str(tag), DATA_SOURCES)}"
            )
            continue
        path = ".".join(loc) or "config"
        origin_here = _origin_of(path, origin, overridden or {})
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, raw_loc[:-1])
            suggestion = _suggest(loc[-1], parent.model_fields) if parent else ""
            lines.append(f"{origin_here}: unknown key {path!r}{suggestion}")
            continue
        got = err.get("input")
        got_text = (
            ""
            if isinstance(got, dict | list) or got is None and "missing" in err["type"]
            else f" (got {_shown(got)}){_object_hint(got)}"
        )
        lines.append(f"{origin_here}: {path}: {msg}{got_text}")
    return lines


def _shown(value: Any) -> str:
    """A value as a message quotes it: a boolean as YAML writes it, a text or number as Python
    does (cut at 80 characters), any other object by its type (a DataFrame, a function)."""
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str | int | float | os.PathLike):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def _object_hint(value: Any) -> str:
    """Where a notebook user gave an object for what a config names: how to name it."""
    kind = type(value).__name__
    if kind == "DataFrame":
        return "; a config reads tables from files: save it first, e.g. df.to_parquet('t.parquet')"
    if callable(value) and not isinstance(value, type):
        return "; name a function by where it is: 'file.py:function' or 'package.module:function'"
    return ""


def _origin_of(path: str, origin: str, overridden: dict[str, str]) -> str:
    """Who set the value at `path`: the deepest `--set` key at or above it, else `origin`."""
    best = ""
    for key in overridden:
        if (path == key or path.startswith(key + ".")) and len(key) > len(best):
            best = key
    return overridden[best] if best else origin


def _drop_union_tags(model: type[BaseModel], loc: list[str]) -> list[str]:
    """pydantic puts a data source's name or a layer's kind into error paths
    (data.circles.noise, model.layers.0.conv2d.filters): drop it."""
    out: list[str] = []
    schema: Any = model
    skip_next = False
    for part in loc:
        if skip_next:
            skip_next = False
            schema = DATA_SOURCES.get(part) or LAYER_KINDS.get(part) or schema
            continue
        out.append(part)
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            field = schema.model_fields.get(part)
            schema = _inner_type(field.annotation) if field else None
            if schema is DataConfig:
                skip_next = True
        elif _is_list_of_models(schema):
            schema = _list_item_model(schema)
            skip_next = schema is LayerConfig
        else:
            schema = None
    return out


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    schema: Any = model
    for part in loc:
        if schema is DataConfig or schema is LayerConfig:
            schema = DATA_SOURCES.get(part) or LAYER_KINDS.get(part)
            continue
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            field = schema.model_fields.get(part)
            if field is None:
                return None
            schema = _inner_type(field.annotation)
        elif _is_list_of_models(schema):
            schema = _list_item_model(schema)
        else:
            return None
    return schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None


def validate_mapping(
    data: dict[str, Any],
    model: type[StrictModel],
    origin: str,
    overridden: dict[str, str] | None = None,
) -> Any:
    """Validate plain data into `model`, turning pydantic errors into a ConfigError.

    overridden: what `apply_overrides` returned, so that errors name the --set item at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin, model, overridden)) from None
