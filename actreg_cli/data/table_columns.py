"""A table's columns, arrow arrays -> NumPy arrays for data/tables.py: numbers as float64 (NaN
where missing), text as categories, the label column; the checks on text that is mostly numbers.

Why not pyarrow's own `to_numpy()`: its first call imports pandas (and so does any Python value
made into an Arrow scalar: `pa.scalar(...)`, a str or float passed to a compute function),
about 0.2 s in a fresh process, as long as reading a 150 MB Parquet file. These functions use
the arrays' buffers and compute functions of whole arrays only, so reading a table never
imports pandas. Text is dictionary-encoded by arrow first: trimming, the blank check and the
conversion to Python strings then work on each chunk's few distinct values, not on every cell.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import CsvData, ParquetData
from actreg_cli.data import DataError, TableColumn


def present(array: Any) -> np.ndarray:
    """bool [rows]: True where the (non-chunked) arrow array has a value, False where null."""
    n = len(array)
    if array.null_count == 0:
        return np.ones(n, dtype=bool)
    if array.null_count == n:
        return np.zeros(n, dtype=bool)
    return unpack_bits(array.buffers()[0], array.offset, n)


def unpack_bits(buffer: Any, offset: int, n: int) -> np.ndarray:
    """bool [n]: bits offset .. offset+n-1 of an arrow bitmap (least significant bit first)."""
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), count=offset + n, bitorder="little")
    return bits[offset:].view(bool)


def float64_into(array: Any, out: np.ndarray) -> None:
    """Write a numeric (non-chunked) arrow array (integers, floats, booleans, decimals,
    dictionary-encoded numbers, all-null) into `out` (float64 [rows], may be a strided column
    view) as float64, NaN where a cell is null."""
    import pyarrow as pa

    if pa.types.is_null(array.type):
        out[:] = np.nan
        return
    if pa.types.is_decimal(array.type):  # arrow's decimal -> float64 cast can miss by an ulp
        array = array.cast(pa.string())  # (7.77 -> 7.7700000000000005): parsed from text
    if not pa.types.is_float64(array.type):
        array = array.cast(pa.float64())
    if len(array) == 0:
        return
    values = np.frombuffer(array.buffers()[1], dtype=np.float64, count=array.offset + len(array))
    out[:] = values[array.offset :]
    if array.null_count:  # a null cell's slot holds anything: NaN marks it missing
        out[~present(array)] = np.nan


def chunked_float64(column: Any) -> np.ndarray:
    """A numeric chunked arrow column as float64 [rows], NaN where null."""
    out = np.empty(len(column), dtype=np.float64)
    row = 0
    for chunk in column.chunks:
        float64_into(chunk, out[row : row + len(chunk)])
        row += len(chunk)
    return out


def blank_to_null(column: Any) -> Any:
    """A string array with its whitespace trimmed and empty strings made null (an empty or
    blank cell is a missing value), without a Python-value scalar (see the module's note)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.utf8_trim_whitespace(column)
    # byte length 0 -> False (and null stays null); if_else's false and null branches: null
    has_text = pc.cast(pc.binary_length(column), pa.bool_())
    return pc.if_else(has_text, column, pa.nulls(len(column), column.type))


def encoded_chunks(column: Any) -> list[tuple[np.ndarray, Any]]:
    """A string chunked arrow column, chunk by chunk, as (codes int64 [chunk rows]: the index
    into the chunk's distinct values, -1 where missing; those values as an arrow string
    array, trimmed, a blank one null).

    Arrow encodes each chunk, so trimming and every later step work on the few distinct
    values, never on each cell."""
    out = []
    for chunk in column.chunks:
        encoded = chunk.dictionary_encode()
        values = blank_to_null(encoded.dictionary)
        remap = np.where(present(values), np.arange(len(values)), -1)
        indices = encoded.indices
        codes = np.full(len(indices), len(values), dtype=np.int64)  # the slot past the end: -1
        if len(indices):
            raw = np.frombuffer(
                indices.buffers()[1], dtype=np.int32, count=indices.offset + len(indices)
            )
            where = present(indices)
            codes[where] = raw[indices.offset :][where]
        out.append((np.append(remap, -1)[codes], values))
    return out


def category_codes(column: Any) -> tuple[np.ndarray, list[str]]:
    """A string chunked arrow column as (codes int64 [rows]: the category's index, -1 where
    missing or blank; the categories, trimmed, in order of first appearance). Only the
    distinct values of each chunk become Python strings (never one object per cell)."""
    index: dict[str, int] = {}
    parts = []
    for codes, values in encoded_chunks(column):
        names = values.to_pylist()
        remap = np.array(
            [-1 if name is None else index.setdefault(name, len(index)) for name in names] + [-1],
            dtype=np.int64,
        )
        parts.append(remap[codes])  # code -1 picks the appended -1
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return codes, list(index)


def text_column(path: Path, config: CsvData | ParquetData, name: str, column: Any) -> TableColumn:
    """A text (or categorical) column as an object array [rows], None where missing; the
    cells of one category share one Python string (arrow encodes the column first)."""
    import pyarrow as pa

    codes, categories = category_codes(column.cast(pa.string()))
    if name not in config.categorical:
        check_mostly_text(path, name, codes, categories, getattr(config, "decimal", "."))
    values = np.array([*categories, None], dtype=object)[codes]  # code -1: the None
    return TableColumn(name, values, is_text=True)


def check_mostly_text(
    path: Path, name: str, codes: np.ndarray, categories: list[str], decimal: str
) -> None:
    """A DataError when a text column is mostly numbers: a typo or an unlisted missing-value
    marker, not categories (one-hot encoding it would hide the mistake). codes: int [rows],
    the index into `categories`, -1 where missing."""
    present_rows = np.flatnonzero(codes >= 0)
    if not len(present_rows):
        return
    cells = np.bincount(codes[present_rows], minlength=len(categories))  # per category
    other = "," if decimal == "." else "."

    def share(numeric: np.ndarray) -> float:  # the share of present cells that are numbers
        return float(cells[numeric].sum() / cells.sum())

    numeric = np.array([is_number(c, decimal) for c in categories])
    # (the separator looked for first: an identifier column's many values skip the pattern)
    grouped = np.array([other in c and has_thousands(c, other, decimal) for c in categories])
    other_decimal = np.array([is_number(c, other) for c in categories])
    example = categories[codes[present_rows[0]]]
    if grouped.any() and share(grouped | numeric) >= 0.5 and (grouped & ~other_decimal).any():
        example = categories[int(np.flatnonzero(grouped & ~other_decimal)[0])]
        raise DataError(
            f"{path}: column {name!r} holds numbers with {other!r} separating thousands (e.g. "
            f"{example!r}); read as text, each value would become a category of its own. Write "
            f"the numbers without the separator (pandas: pd.read_csv(path, thousands="
            f"{other!r}).to_csv(new_path, index=False)), or leave the column out (data.drop)"
        )
    if share(other_decimal) >= 0.5 and not share(numeric) >= 0.5:
        either = bool(grouped[other_decimal].all())  # 1,234: a decimal mark or thousands?
        raise DataError(
            f"{path}: column {name!r} holds numbers written with {other!r} as the decimal mark "
            f"(e.g. {example!r}); set data.decimal: {other!r}"
            + (
                f" (if {other!r} separates thousands there instead, write the numbers without "
                f"it: pandas' pd.read_csv(path, thousands={other!r}))"
                if either
                else ""
            )
        )
    if numeric.any() and share(numeric) >= 0.5:
        row = int(present_rows[~numeric[codes[present_rows]]][0])
        raise DataError(
            f"{path}: column {name!r}, data row {row + 1}: {categories[codes[row]]!r} is not a "
            f"number, though most of the column is; add it to data.na_values if it marks a "
            f"missing value, or list {name!r} in data.categorical if the column holds categories"
        )


def has_thousands(text: str, separator: str, decimal: str) -> bool:
    """Whether text is a number with `separator` between groups of three digits (1,234 or
    -1,234,567.5 for separator ',' and decimal '.')."""
    pattern = rf"[+-]?\d{{1,3}}(?:{re.escape(separator)}\d{{3}})+(?:{re.escape(decimal)}\d+)?"
    return re.fullmatch(pattern, text.strip()) is not None


def is_number(text: str, decimal: str) -> bool:
    try:
        float(text.replace(decimal, ".") if decimal != "." else text)
    except ValueError:
        return False
    return True


def target_values(
    path: Path, target: str, column: Any, decimal: str = "."
) -> tuple[np.ndarray, np.ndarray]:
    """The label column: numbers as float64 or text as str [rows], and its missing mask.
    decimal: the file's decimal mark (a CSV's target is read as text, its numbers converted
    here)."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), ""), np.ones(len(column), dtype=bool)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # numbers written as text (the CSV reader reads the label column as text): most
        # often plain ones, cast at once; a blank or padded cell fails that cast, and then
        # each chunk's distinct values are trimmed and cast
        number = cast_or_none(column, pa.float64()) if decimal == "." else None
        values = text_numbers(column, decimal) if number is None else chunked_float64(number)
        if values is None:  # words: class names
            codes, categories = category_codes(column)
            return np.array([*categories, ""], dtype=str)[codes], codes < 0
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = chunked_float64(column)
    else:
        raise DataError(
            f"{path}: target column {target!r} has type {kind}; labels must be numbers or text"
        )
    if np.isinf(values).any():
        row = int(np.flatnonzero(np.isinf(values))[0])
        raise DataError(f"{path}: target column {target!r}, data row {row + 1}: not finite")
    return values, np.isnan(values)


def cast_or_none(column: Any, kind: Any) -> Any:
    """The column cast to arrow type `kind`, or None when a cell cannot be (text in numbers)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(column, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def text_numbers(column: Any, decimal: str) -> np.ndarray | None:
    """A string chunked arrow column as float64 [rows] (NaN where missing or blank), or None
    if a (trimmed) cell is not a number. decimal: the decimal mark the cells use."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for codes, values in encoded_chunks(column):
        if decimal != ".":
            values = pc.replace_substring(values, decimal, ".")
        number = cast_or_none(values, pa.float64())
        if number is None:
            return None
        table = np.empty(len(number) + 1)
        float64_into(number, table[:-1])
        table[-1] = np.nan  # code -1: missing
        parts.append(table[codes])
    return np.concatenate(parts) if parts else np.zeros(0)
