"""Table files (CSV, Parquet) as people have them: read with pyarrow, never cell by cell.

A table becomes `Samples`: numeric feature columns as float64, text columns (and those listed in
`data.categorical`) kept as text for data/encode.py to one-hot encode on the training rows after
the split; missing cells handled as `data.missing` says (error, drop, impute). A column with an
empty or `Unnamed: N` header holding distinct whole numbers (pandas' default `to_csv()` index,
also after sorting or filtering the frame), and a Parquet file's stored pandas index (its
`index_columns`), are dropped with a note: row labels are never features (a file sorted by its
label would leak the label through them).

Every problem is a DataError naming the file, the column and what is allowed.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import CsvData, MissingPolicy, ParquetData
from actreg_cli.data import DataError, Samples, TableColumn
from actreg_cli.data.table_columns import float64_into, target_values, text_column

#: pandas' default missing-value markers, and `?` (common in published tables).
DEFAULT_NA_VALUES = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
    "?",
)
DELIMITERS = (",", ";", "\t", "|")
SNIFF_BYTES = 1 << 16  # the header line is looked for in the file's first 64 KiB
CSV_CHUNK_BYTES = 8 << 20  # a parsed byte range; column types come from the first
UNNAMED = re.compile(r"^(Unnamed: \d+(_level_\d+)?|__index_level_\d+__)?$")


def delimiter_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def read_header(path: Path, config: CsvData) -> tuple[list[str], str, int]:
    """The header's column names (an empty name becomes `Unnamed: N`, as pandas names it), the
    delimiter: config.delimiter, or (auto) the one of `DELIMITERS` that splits the header line
    into the most columns (`,` first among equals; never the decimal mark), and the number of
    lines up to and including the header (blank lines may come before it)."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    encoding = (
        "utf-8-sig"
        if config.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        else config.encoding
    )
    text = head.decode(encoding, errors="replace")
    lines = text.split("\n")
    at = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    line = "" if at is None else lines[at].rstrip("\r")
    if not line:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns")
    candidates = [d for d in DELIMITERS if d != config.decimal]

    def split(delimiter: str) -> list[str]:
        return next(csv.reader([line], delimiter=delimiter), [])

    if config.delimiter == "auto":
        delimiter = max(candidates, key=lambda d: len(split(d)))  # max keeps the first of ties
    else:
        delimiter = config.delimiter
        if len(split(delimiter)) == 1:
            better = [d for d in candidates if len(split(d)) > 1]
            if better:
                raise DataError(
                    f"{path}: with data.delimiter {delimiter_name(delimiter)} the header is one "
                    f"column ({line[:60]!r}); {delimiter_name(better[0])} splits it into "
                    f"{len(split(better[0]))}: set data.delimiter: {better[0]!r} (or auto)"
                )
    header = [name.strip() or f"Unnamed: {i}" for i, name in enumerate(split(delimiter))]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataError(f"{path}: column names must be unique; repeated: {', '.join(duplicates)}")
    return header, delimiter, at + 1


def csv_batches(path: Path, config: CsvData, stream: bool = True) -> tuple[Any, Any, int]:
    """The CSV's schema, an iterator of its record batches (target and categorical columns
    as text) in the file's row order, and its number of rows: exact when the file is read
    whole, otherwise estimated from the first byte range's rows per byte.

    The rows below the header are cut into byte ranges of about `CSV_CHUNK_BYTES` at line ends
    and parsed by pyarrow on every core at once (pyarrow releases the GIL), a few ranges in
    flight, so neither the file's bytes nor its parsed columns are ever all held (a memory
    map of the file would count it all in the peak RSS, for no speed). Column types
    come from the first range and are imposed on the others; a column whose type changes later
    (numbers, then a word), a bad row, or an encoding whose line end is not the byte `\n`
    (UTF-16) makes the whole file be read at once (`stream=False`), which infers each column's
    type from all of its cells and numbers rows from the file's start in its messages."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header, delimiter, skip_rows = read_header(path, config)
    check_columns(path, config, header)
    as_text = {name: pa.string() for name in (config.target, *config.categorical)}
    parse_options = pacsv.ParseOptions(delimiter=delimiter)

    def convert_options(column_types: dict[str, Any]) -> Any:
        return pacsv.ConvertOptions(
            null_values=[*DEFAULT_NA_VALUES, *(config.na_values or ())],
            strings_can_be_null=True,
            decimal_point=config.decimal,
            column_types=column_types,
            include_columns=used_columns(config, header),
        )

    def fail(exc: Exception) -> DataError:
        return DataError(
            f"{path}: cannot read as CSV (delimiter {delimiter_name(delimiter)}, encoding "
            f"{config.encoding}): {exc}"
        )

    errors = (pa.ArrowException, UnicodeError, ValueError, OSError)
    byte_lines = ascii_compatible(config.encoding)
    if not stream or not byte_lines:
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(
                    column_names=header, skip_rows=skip_rows, encoding=config.encoding
                ),
                parse_options=parse_options,
                convert_options=convert_options(as_text),
            )
        except errors as exc:
            raise fail(exc) from None
        return table.schema, iter(table.to_batches()), table.num_rows

    ranges = line_ranges(path, skip_rows, CSV_CHUNK_BYTES)
    if not ranges:
        raise DataError(f"{path}: no data rows below the header")

    def parse(first: int, last: int, column_types: dict[str, Any]) -> Any:
        with open(path, "rb") as fh:
            fh.seek(first)
            chunk = fh.read(last - first)
        return pacsv.read_csv(
            pa.py_buffer(chunk),
            read_options=pacsv.ReadOptions(
                column_names=header, encoding=config.encoding, use_threads=False
            ),
            parse_options=parse_options,
            convert_options=convert_options(column_types),
        )

    try:
        first_table = parse(*ranges[0], as_text)
    except errors:  # e.g. a bad row: the whole-file read says where, counted from the top
        return csv_batches(path, config, stream=False)
    schema = first_table.schema
    imposed = {
        field.name: pa.float64() if pa.types.is_integer(field.type) else field.type
        for field in schema
        if not pa.types.is_null(field.type)
    }

    def batches() -> Any:
        yield from first_table.to_batches()
        if len(ranges) == 1:
            return
        from concurrent.futures import ThreadPoolExecutor

        workers = max(1, min(len(ranges) - 1, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="actreg-csv") as pool:
            pending = [pool.submit(parse, *r, imposed) for r in ranges[1 : 1 + 2 * workers]]
            upcoming = iter(ranges[1 + 2 * workers :])
            while pending:
                future = pending.pop(0)
                nxt = next(upcoming, None)
                if nxt is not None:
                    pending.append(pool.submit(parse, *nxt, imposed))
                try:
                    table = future.result()
                except errors:
                    for other in pending:
                        other.cancel()
                    raise RetryWholeFile from None
                for field in table.schema:  # a column all missing in the first range
                    kind = field.type
                    if field.name not in imposed and not (
                        pa.types.is_null(kind)
                        or pa.types.is_integer(kind)
                        or pa.types.is_floating(kind)
                    ):
                        raise RetryWholeFile  # words (or dates) below: decide on all cells
                yield from table.to_batches()

    first, last = ranges[0]
    rows = first_table.num_rows
    if len(ranges) > 1:  # rows per byte of the first range; 5% spare, grown if short
        rows = int(rows * (ranges[-1][1] - first) / (last - first) * 1.05) + 64
    return schema, batches(), rows


def ascii_compatible(encoding: str) -> bool:
    """Whether the encoding writes a line end as the byte `\n` and ASCII as itself (UTF-8,
    Latin-1, cp1252, ...; not UTF-16 or UTF-32), so the file can be cut at newline bytes."""
    try:
        return "a,\n".encode(encoding.lower().replace("-sig", "")) == b"a,\n"
    except LookupError:
        return False


def line_ranges(path: Path, skip_lines: int, size: int) -> list[tuple[int, int]]:
    """Byte ranges [first, last) of about `size` bytes covering the file after its first
    `skip_lines` lines, each ending at a line end (or the file's end); empty if no byte
    follows those lines."""
    total = path.stat().st_size
    with open(path, "rb") as fh:
        for _ in range(skip_lines):
            fh.readline()
        bounds = [fh.tell()]
        while bounds[-1] + size < total:
            fh.seek(bounds[-1] + size)
            fh.readline()  # on to the end of the line the cut fell in
            if fh.tell() >= total:
                break
            bounds.append(fh.tell())
    if bounds[0] >= total:
        return []
    return list(zip(bounds, [*bounds[1:], total], strict=True))


class RetryWholeFile(Exception):
    """The streaming CSV reader met a cell its first block's types cannot hold."""


def parquet_batches(path: Path, config: ParquetData) -> tuple[Any, Any, int]:
    """The Parquet file's schema (used columns), an iterator of its record batches and its
    number of rows (from the file's metadata).

    The file is mapped into memory: its pages are decoded from the page cache, where a plain
    read would first copy them into fresh memory (on this project's test machine that copy's
    page faults cost more than the decoding)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path, memory_map=True)
        header = list(file.schema_arrow.names)
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates:
            raise DataError(
                f"{path}: column names must be unique; repeated: {', '.join(duplicates)}"
            )
        check_columns(path, config, header)
        used = used_columns(config, header)
        # (with the file's metadata: pandas' says which columns hold its stored index)
        schema = pa.schema(
            [file.schema_arrow.field(name) for name in used], metadata=file.schema_arrow.metadata
        )
        batches = file.iter_batches(batch_size=1 << 16, columns=used)
        return schema, batches, file.metadata.num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None


def check_columns(path: Path, config: CsvData | ParquetData, header: list[str]) -> None:
    """Every column the config names is in the header."""
    columns = ", ".join(header[:30]) + (", ..." if len(header) > 30 else "")
    if config.target not in header:
        raise DataError(
            f"{path}: data.target {config.target!r} is not a column of the header "
            f"(columns: {columns})"
        )
    for key in ("features", "categorical", "drop"):
        names = getattr(config, key) or []
        missing = [name for name in names if name not in header]
        if missing:
            raise DataError(f"{path}: data.{key} {missing} not in the header (columns: {columns})")
    if config.features is not None and config.target in config.features:
        raise DataError(f"{path}: data.features must not contain the target {config.target!r}")
    if config.target in config.drop:
        raise DataError(f"{path}: data.drop must not contain the target {config.target!r}")


def used_columns(config: CsvData | ParquetData, header: list[str]) -> list[str]:
    """The target and the candidate features, in the file's order (`drop` left out)."""
    wanted = set(header if config.features is None else config.features) - set(config.drop)
    return [name for name in header if name in wanted or name == config.target]


def table_samples(
    path: Path, config: CsvData | ParquetData, schema: Any, batches: Any, n_rows: int
) -> Samples:
    """Record batches -> Samples: the label column, the missing-value policy, the index-column
    rule; numeric features as float64 [rows, features], text ones left for data/encode.py.

    n_rows: the number of rows (Parquet: from the file's metadata; CSV: an estimate). Each
    batch's numbers are copied straight into one float64 [rows, features] array, reserved at
    n_rows and grown if the file holds more: the numbers are held once and written once. (The
    first touch of fresh memory, the kernel zeroing it, is the largest single cost of reading
    a Parquet file on this project's 2-core VM: from 0.02 s to 0.6 s for 160 MB, as the host
    has the memory ready or not; a CSV read that first filled blocks, then the array, paid
    it twice.)"""
    import pyarrow as pa

    stored_index = set()
    if config.features is None:  # a Parquet file pandas wrote: the columns of its index
        pandas_metadata = schema.pandas_metadata or {}
        stored_index = {c for c in pandas_metadata.get("index_columns", []) if isinstance(c, str)}
    names = [name for name in schema.names if name != config.target and name not in stored_index]
    kinds = {name: column_kind(path, config, name, schema.field(name).type) for name in names}
    numeric = [name for name in names if kinds[name] == "number"]
    # Unnamed numeric columns that may hold row labels: still whole numbers (a file sorted or
    # filtered after pandas numbered its rows holds them in any order, with gaps).
    index_candidates = (
        {j: True for j, name in enumerate(numeric) if UNNAMED.match(name)}
        if config.features is None
        else {}
    )
    text_chunks: dict[str, list[Any]] = {name: [] for name in names if kinds[name] == "text"}
    # With text columns the numbers leave as one array per column (TableColumn): stored
    # column by column (Fortran order), each is then a view, not a copy. Rows past n are
    # never touched, so an estimate above the row count costs no memory.
    order = "F" if text_chunks else "C"
    x = np.empty((max(n_rows, 0), len(numeric)), dtype=np.float64, order=order)
    per_column = np.zeros(len(numeric), dtype=np.int64)  # missing (NaN) cells per column
    target_chunks: list[Any] = []
    n = 0
    try:
        for batch in batches:
            m = batch.num_rows
            if n + m > len(x):  # more rows than estimated: a copy into a larger array
                grown = np.empty((max(n + m, len(x) * 3 // 2), len(numeric)), order=order)
                grown[:n] = x[:n]
                x = grown
            block = x[n : n + m]
            for j, name in enumerate(numeric):
                float64_into(batch.column(name), block[:, j])
            if not np.isfinite(block).all():
                check_finite(path, block, numeric, n)
                per_column += np.isnan(block).sum(axis=0)
            for j, whole in index_candidates.items() if m else ():
                column = block[:, j]
                index_candidates[j] = whole and bool(np.all(column == np.floor(column)))
            for name, chunks in text_chunks.items():
                chunks.append(batch.column(name))
            target_chunks.append(batch.column(config.target))
            n += m
    except pa.ArrowException as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if n == 0:
        raise DataError(f"{path}: no data rows below the header")
    x = x[:n]
    notes = [
        f"{path}: column {name!r} is the index pandas stored with the table: not used as a feature"
        for name in schema.names
        if name in stored_index and name != config.target
    ]
    index_columns = {
        numeric[j]
        for j, whole in index_candidates.items()
        if whole and np.unique(x[:, j]).size == n
    }
    for name in sorted(index_columns):
        notes.append(
            f"{path}: column {name!r} holds row numbers (an unnamed index column, as pandas' "
            f"to_csv() writes it): not used as a feature"
        )
    names = [name for name in names if name not in index_columns]
    if not names:
        raise DataError(f"{path}: no feature columns: the file has only the target column")
    if index_columns:
        kept = [j for j, name in enumerate(numeric) if name not in index_columns]
        numeric = [numeric[j] for j in kept]
        x, per_column = np.ascontiguousarray(x[:, kept]), per_column[kept]
    text = {
        name: text_column(path, config, name, pa.chunked_array(chunks, schema.field(name).type))
        for name, chunks in text_chunks.items()
    }
    notes += identifier_notes(path, x, numeric, text, n)
    y, y_missing = target_values(
        path,
        config.target,
        pa.chunked_array(target_chunks, schema.field(config.target).type),
        getattr(config, "decimal", "."),
    )
    del target_chunks, text_chunks
    position = {name: j for j, name in enumerate(numeric)}
    any_missing = y_missing.copy()
    if per_column.any():
        any_missing |= np.isnan(x).any(axis=1)
    counts = {name: int(per_column[j]) for j, name in enumerate(numeric) if per_column[j]}
    for name, column in text.items():
        mask = np.equal(column.values, None)  # elementwise: None marks a missing cell
        any_missing |= mask
        if mask.any():
            counts[name] = int(mask.sum())
    counts = {name: counts[name] for name in names if name in counts}  # the file's order
    if y_missing.any():
        counts = {config.target: int(y_missing.sum()), **counts}
    n_missing = int(any_missing.sum())
    described = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    keep = None
    if n_missing and config.missing is MissingPolicy.error:
        raise DataError(
            f"{path}: {n_missing} of {n} rows have a missing value ({described}); set "
            f"data.missing: drop or impute"
        )
    if n_missing and config.missing is MissingPolicy.drop:
        keep = ~any_missing
        notes.append(f"{path}: dropped {n_missing} of {n} rows with a missing value ({described})")
    elif y_missing.any():  # impute: a row without a label cannot train or be scored
        keep = ~y_missing
        notes.append(
            f"{path}: dropped {int(y_missing.sum())} of {n} rows without a label "
            f"({config.target}); missing features are imputed on the training rows"
        )
    if keep is not None:
        if not keep.any():
            raise DataError(f"{path}: every row has a missing value ({described})")
        y, x = y[keep], x[keep]
        text = {name: column.subset(keep) for name, column in text.items()}
    record = {
        "file": str(path),
        "file_sha256": "",  # read_file hashes the file beside the parsing
        "missing": config.missing.value,
        "rows_read": n,
        "rows_dropped": 0 if keep is None else int(n - keep.sum()),
    }
    origin = str(path)
    if not text and not (per_column.any() and config.missing is MissingPolicy.impute):
        return Samples(x=x, y=y, origin=origin, feature_names=tuple(names), record=record,
                       notes=tuple(notes))  # fmt: skip
    columns = tuple(
        text[name]
        if name in text
        else TableColumn(name, np.ascontiguousarray(x[:, position[name]]), is_text=False)
        for name in names
    )
    return Samples(x=np.empty((len(y), 0)), y=y, origin=origin, feature_names=tuple(names),
                   table=columns, record=record, notes=tuple(notes))  # fmt: skip


def identifier_notes(
    path: Path, x: np.ndarray, numeric: list[str], text: dict[str, Any], n: int
) -> list[str]:
    """Notes on feature columns that look like identifiers, used as features as named: numbers
    that are n different whole numbers lo..lo+n-1 (row numbers under a name: a file sorted by
    its label leaks it through them), text with a different value in every row (one-hot, each
    becomes a feature no test row shares)."""
    if n < 20:
        return []
    notes = []
    head = x[:1000]  # (whole numbers there first: a pass over a float column costs its reading)
    for j in np.flatnonzero(np.all(head == np.floor(head), axis=0)) if len(numeric) else ():
        column = x[:, j]
        low, high = column.min(), column.max()
        whole = high - low + 1 == n and np.all(column == np.floor(column))
        if whole and np.unique(column).size == n:
            notes.append(
                f"{path}: column {numeric[j]!r} numbers the rows ({low:g}..{high:g}, each "
                f"once): used as a feature as named; if it is an identifier, leave it out "
                f"(data.drop)"
            )
    for name, column in text.items():
        present = [value for value in column.values if value is not None]
        if len(present) >= 20 and len(set(present)) == len(present):
            notes.append(
                f"{path}: column {name!r} has a different value in every row (an identifier?): "
                f"one-hot, each value becomes a feature no test row shares; leave it out "
                f"(data.drop) if it is one"
            )
    return notes


def column_kind(path: Path, config: CsvData | ParquetData, name: str, kind: Any) -> str:
    """'number' (integers, floats, booleans, decimals; all-missing) or 'text' (strings, and
    the columns listed in data.categorical); DataError for other types (dates, lists, ...)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if name in config.categorical or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    ):
        return "number"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):  # a CSV's bytes not UTF-8
        encoding = getattr(config, "encoding", None)
        raise DataError(
            f"{path}: column {name!r} holds bytes that are not {encoding or 'UTF-8'} text; "
            + (
                "set data.encoding to the file's encoding (e.g. latin-1 or cp1252)"
                if encoding is not None
                else "features must be numbers or text (list the usable ones in data.features, "
                "or drop it with data.drop)"
            )
        )
    raise DataError(
        f"{path}: column {name!r} has type {kind}; features must be numbers or text "
        f"(list the usable ones in data.features, or drop it with data.drop)"
    )


def check_finite(path: Path, block: np.ndarray, names: list[str], first_row: int) -> None:
    infinite = np.isinf(block)
    if infinite.any():
        row, j = (int(v) for v in np.argwhere(infinite)[0])
        raise DataError(
            f"{path}: column {names[j]!r}, data row {first_row + row + 1}: {block[row, j]}; "
            f"features must be finite numbers ({int(infinite.sum())} such cells)"
        )
