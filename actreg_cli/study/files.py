"""Atomic file writes: a reader (or a crash) never sees a half-written result file."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


@functools.cache
def current_umask() -> int:
    """The process umask, read once: reading means setting it and putting it straight back, which
    must not race with threads creating files later (the result's writes happen on threads)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    The file gets the mode a plain `open(path, "w")` would give (0666 minus the umask): mkstemp
    creates 0600, which would hide results from the group a shared runs/ folder is meant for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def csv_field(value: Any) -> str:
    """Exact text for a CSV field: floats round-trip (repr), booleans true/false, None empty,
    lists and mappings as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A CSV table (header, then one line per row; missing keys are empty fields)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_field(row.get(c)) for c in columns])
    return buffer.getvalue()


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` as the whole file, atomically (e.g. a TensorBoard event file)."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def json_safe(data: Any) -> Any:
    """`data` with every non-finite float (a diverged run's NaN) replaced by None, so that the
    file is standard JSON (`null`) that any reader accepts; bare NaN is not JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(value) for value in data]
    return data


def write_json(path: Path, data: Any) -> Path:
    """Standard JSON: NaN and infinities are written as null (read them back with `json_float`)."""
    return write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def json_float(value: Any) -> float:
    """A float read from a file written by `write_json`: null (a non-finite value) -> NaN."""
    return float("nan") if value is None else float(value)


def save_figure(path: Path, figure: Any) -> Path:
    """Save a matplotlib figure atomically (format from the suffix of `path`).

    A figure laid out by matplotlib's constrained layout already fits its labels inside the
    canvas; "tight" bounding boxes would lay it out a second time (a whole extra draw, ~30% of
    saving a two-panel sweep figure), so only other figures are cropped to their contents."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    fmt = Path(path).suffix.lstrip(".") or "png"
    constrained = isinstance(figure.get_layout_engine(), ConstrainedLayoutEngine)
    crop = None if constrained else "tight"
    return atomic_write(path, lambda p: figure.savefig(p, format=fmt, dpi=110, bbox_inches=crop))


def write_csv_bytes(path: Path, header: str, parts: Sequence[Any]) -> None:
    """Write `header` then each uint8 numpy array of ASCII rows, atomically, without joining them."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            for part in parts:
                fh.write(memoryview(part))

    atomic_write(path, write)


def write_npy(path: Path, array: Any) -> Path:
    """Save one numpy array as .npy atomically (read with numpy.load)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would append .npy to a name
            np.save(fh, array)

    return atomic_write(path, write)


#: The time stamp of every member of an .npz file this module writes: numpy.savez stamps the
#: time of writing, so the same arrays saved twice would differ in their bytes.
NPZ_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, Any]) -> Path:
    """Save numpy arrays as an uncompressed .npz atomically (read with numpy.load), as
    numpy.savez lays it out but byte for byte the same for the same arrays (NPZ_MEMBER_TIME)."""
    import zipfile

    import numpy as np

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_STORED) as archive:
            for name, value in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_MEMBER_TIME)
                with archive.open(member, mode="w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)

    return atomic_write(path, write)
