"""What every config section is built on: `ConfigError`, `StrictModel`, the number field types
and the limits that keep a valid config runnable."""

from __future__ import annotations

import errno
import os
import stat
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Field types. Floats are finite: `.inf` or `.nan` in a config is a typo, never a setting.
# Numbers refuse booleans (`epochs: true` would otherwise train 1 epoch) but keep accepting
# numeric strings, because YAML 1.1 reads `1e-4` as a string.


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")  # (the value: validation.py)
    return value


NoBool = BeforeValidator(_not_a_boolean)
PositiveInt = Annotated[int, Field(gt=0, strict=False), NoBool]
NonNegativeInt = Annotated[int, Field(ge=0), NoBool]
Strength = Annotated[float, Field(ge=0, allow_inf_nan=False), NoBool]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False), NoBool]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False), NoBool]
#: Upper bounds that keep a valid config runnable: what numpy/scikit-learn accept as a seed, and
#: sizes whose arrays fit in memory (history is float64 [repeats, epochs, 4]).
MAX_RANDOM_STATE = 2**32 - 1
MAX_EPOCHS = 1_000_000
MAX_REPEATS = 10_000
MAX_SAMPLES = 10_000_000
MAX_UNITS = 100_000


class ConfigError(Exception):
    """A config (file, `--set` override or sweep grid) is invalid. `errors` holds one line each."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are an error, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def members_by_tag(union: Any, tag: str) -> dict[str, Any]:
    """tag value -> class, for a discriminated union Annotated[A | B | ..., Field(discriminator=tag)]."""
    members = typing.get_args(typing.get_args(union)[0])
    return {
        value: cls for cls in members for value in typing.get_args(cls.model_fields[tag].annotation)
    }


class FileProblem(ValueError):
    """Why a path cannot be read as a config or data file, in words ("is a folder")."""


def regular_file_size(path: Path) -> int:
    """The size in bytes of `path`, a regular file this process may read; else FileProblem.

    Checked before anything is opened: a folder, a device (/dev/zero: endless), a FIFO (blocks
    for ever) or a symlink loop is refused at once."""
    try:
        info = Path(path).stat()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileProblem("no such file") from None
        if exc.errno == errno.ELOOP:
            raise FileProblem("a symlink loop; name the file itself") from None
        raise FileProblem(f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileProblem("is a folder")
    if not stat.S_ISREG(info.st_mode):
        what = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "a socket"
        )
        raise FileProblem(f"is {what}, not a regular file")
    if not os.access(path, os.R_OK):
        raise FileProblem("cannot read: permission denied")
    return info.st_size
