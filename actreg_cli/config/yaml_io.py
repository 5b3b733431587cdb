"""YAML in and out: a config file or a command-line value read safely (no duplicate keys, alias
bombs or deep nesting), and plain data written back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from actreg_cli.config.base import ConfigError, FileProblem, regular_file_size

#: A config is a few dozen values: anything much bigger is a mistake or an attack (YAML aliases
#: can make a 1 kB file expand to gigabytes; deep nesting can exhaust Python's stack).
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50
#: The largest config file read (bytes); checked before reading, so that /dev/zero-like or huge
#: files never fill memory.
MAX_CONFIG_BYTES = 10_000_000


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML keeps the last one, silently); merge
    keys (`<<: *defaults`) work as in SafeLoader."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # `<<: *defaults` merges a mapping in; keys written beside it override the
                # merged ones by design (SafeLoader's flatten_mapping), so they are no duplicates
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first}); each key may appear once",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _check_yaml_size(data: Any) -> str | None:
    """Why `data` is too big or too deep to be a config (aliases counted as expanded), or None."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            return (
                f"the file expands to more than {MAX_YAML_VALUES} values (YAML aliases?); "
                "a config holds a few dozen"
            )
        if depth > MAX_YAML_DEPTH:
            return f"nesting deeper than {MAX_YAML_DEPTH} levels; a config is a few levels deep"
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def load_yaml_text(text: str, origin: str, loader: type[_ConfigLoader] = _ConfigLoader) -> Any:
    """Parse YAML text as a config: duplicate keys, alias bombs and deep nesting are ConfigErrors
    naming `origin` (and the line where the parser knows it)."""
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{origin}: invalid YAML{where}: {problem}"]) from None
    except RecursionError:
        raise ConfigError(
            [f"{origin}: invalid YAML: nesting too deep; a config is a few levels deep"]
        ) from None
    why = _check_yaml_size(data)
    if why:
        raise ConfigError([f"{origin}: invalid YAML: {why}"])
    return data


def read_config_text(path: Path) -> str:
    """The text of a config file, refused (ConfigError) before reading when it is not a regular
    file (a folder, /dev/zero, a FIFO: endless or blocking) or larger than MAX_CONFIG_BYTES."""
    try:
        size = regular_file_size(path)
    except FileProblem as problem:
        raise ConfigError([f"{path}: {problem}; expected a YAML config file"]) from None
    limit_mb = MAX_CONFIG_BYTES // 1_000_000
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: {size} bytes; a config file is at most {limit_mb} MB"])
    try:
        with path.open("rb") as file:
            # bounded even where st_size lies (files under /proc report 0 bytes)
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {limit_mb} MB; a config file is smaller"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {exc.start}); expected a YAML config file"]
        ) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; ConfigError (with the line) otherwise."""
    text = read_config_text(Path(path))
    data = load_yaml_text(text, str(path))
    if data is None:
        raise ConfigError([f"{path}: the file is empty; expected a mapping of config sections"])
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping (key: value), got a {type(data).__name__}"]
        )
    return data


class _CommandLineLoader(_ConfigLoader):
    """_ConfigLoader with YAML 1.2's floats: unquoted `1e-5` is a number (YAML 1.1 wants
    `1.0e-5`), while a quoted `'1e5'` stays the string the user typed."""


_CommandLineLoader.add_implicit_resolver(  # PyYAML copies the inherited resolvers first
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: Decimal numbers as people type them (`64`, `-3`, `0.5`, `1e-05`, `2.5E+3`), which
#: `_CommandLineLoader` reads as Python's int() and float() read them; anything else (octal
#: `010`, `1_000`, `.5`, `1:30`, `.inf`) goes through YAML. A 1000-value --grid item was 1000
#: YAML parses (~70 us each, 5% of what a 1000-cell sweep costs outside training).
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def read_value(text: str, origin: str = "command line") -> Any:
    """A value typed on the command line, read as YAML (`_CommandLineLoader`), but a lone
    punctuation character, which is itself (`data.decimal=,`; `~` stays YAML's null). ConfigError
    naming `origin` for invalid YAML, duplicate keys, alias bombs or deep nesting
    (`load_yaml_text`)."""
    if not text.strip():
        return ""
    plain = text.strip(" ")
    if _PLAIN_INT.fullmatch(plain):
        return int(plain)
    if _PLAIN_FLOAT.fullmatch(plain):
        return float(plain)
    if len(plain) == 1 and not plain.isalnum() and plain != "~":  # (`~`: YAML's null)
        return plain  # `data.decimal=,`, `delimiter=|`: YAML reads a lone `,` `|` as syntax
    return load_yaml_text(text, origin, loader=_CommandLineLoader)


#: libyaml's safe dumper and loader where PyYAML was built with it (the same output, 3-5x less
#: CPU: a 1000-cell sweep.yaml is ~240 KB), else PyYAML's own.
_FAST_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_FAST_DUMPER, sort_keys=False, default_flow_style=False)


def load_saved_mapping(path: Path) -> dict[str, Any]:
    """A YAML mapping this tool wrote into a results folder (run.yaml, sweep.yaml, study.yaml);
    ValueError naming the file when it is damaged, cut short or holds no mapping."""
    try:
        data = load_yaml_data(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"{path.name} is damaged or cut short{line}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is damaged or empty: it holds no mapping")
    return data


def load_yaml_data(text: str) -> Any:
    """A YAML file this tool wrote (sweep.yaml, run.yaml), read with the safe loader: plain
    data, never objects (a received results folder is data)."""
    return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a safe loader
