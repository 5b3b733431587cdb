"""Numeric CSV text for large tables (history.csv: 240 repeats x 4000 epochs is ~1M rows).

One Python `repr` per number costs ~0.5 µs, seconds per file; this compiled loop (Numba,
cached on disk like the cpu engine's) writes the same table in a few hundredths of that.
Floats are float32 numbers (every engine computes its history in float32), written with the 9
significant digits that identify a float32 exactly: '7.33333349e-01', '1e+00', '-2.49999994e-05',
'0', 'nan', 'inf'. Read the text back as float32 to get the very same number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.target import pin

pin()  # the cpu engine's target, set before Numba's first compile in the process (target.py)

_JIT = {"cache": True, "error_model": "numpy", "nogil": True}

# Bytes per row field at most: a non-negative int64 (19 digits), a float ('-d.ddddddddE-dd').
_INT_WIDTH = 20
_FLOAT_WIDTH = 16
#: 10.0**k for k in -_POW_BIAS.._POW_BIAS (float32 spans 1e-45..3e38): a lookup, not pow().
_POW_BIAS = 64
_POWERS = 10.0 ** np.arange(-_POW_BIAS, _POW_BIAS + 1, dtype=np.float64)


@njit(**_JIT)
def _write_int(buf, pos, value):
    """Decimal digits of value >= 0 at buf[pos:]; returns the position after them."""
    n = 1
    t = value
    while t >= 10:
        t //= 10
        n += 1
    for k in range(n - 1, -1, -1):
        buf[pos + k] = 48 + value % 10
        value //= 10
    return pos + n


@njit(**_JIT)
def _write_text(buf, pos, text):
    for k in range(text.shape[0]):
        buf[pos + k] = text[k]
    return pos + text.shape[0]


@njit(**_JIT)
def _write_float32(buf, pos, x, powers):
    """x (a float32 value) with 9 significant digits, trailing zeros of the mantissa dropped.

    The 9-digit mantissa is rint(|x| * 10**(8 - e)) in float64: its error (< 1e-15 relative)
    can move it by at most one unit in the 9th digit at a tie, far inside half a float32 step
    (> 3e-8 relative), so the text reads back as x.
    """
    if x != x:
        buf[pos] = 110  # n
        buf[pos + 1] = 97  # a
        buf[pos + 2] = 110  # n
        return pos + 3
    if x < 0:
        buf[pos] = 45  # -
        pos += 1
        x = -x
    if x == np.inf:
        buf[pos] = 105  # i
        buf[pos + 1] = 110  # n
        buf[pos + 2] = 102  # f
        return pos + 3
    if x == 0:
        buf[pos] = 48
        return pos + 1
    e = int(np.floor(np.log10(x)))
    m = int(np.rint(x * powers[_POW_BIAS + 8 - e]))
    if m >= 1_000_000_000:  # log10 one decade off next to a power of ten
        e += 1
        m = int(np.rint(x * powers[_POW_BIAS + 8 - e]))
    elif m < 100_000_000:
        e -= 1
        m = int(np.rint(x * powers[_POW_BIAS + 8 - e]))
    n_digits = 9
    while m % 10 == 0 and n_digits > 1:
        m //= 10
        n_digits -= 1
    first = pos
    pos = _write_int(buf, pos, m)  # n_digits digits; the point goes after the first
    if n_digits > 1:
        for k in range(pos, first + 1, -1):
            buf[k] = buf[k - 1]
        buf[first + 1] = 46  # .
        pos += 1
    buf[pos] = 101  # e
    buf[pos + 1] = 45 if e < 0 else 43  # - or +
    e = -e if e < 0 else e
    if e < 10:
        buf[pos + 2] = 48
        return _write_int(buf, pos + 3, e)
    return _write_int(buf, pos + 2, e)


@njit(**_JIT)
def _format_rows(prefix, ints, floats, powers):
    n = ints.shape[0] if ints.shape[1] > 0 else floats.shape[0]
    width = prefix.shape[0] + ints.shape[1] * _INT_WIDTH + floats.shape[1] * _FLOAT_WIDTH + 1
    buf = np.empty(n * width, np.uint8)
    pos = 0
    for r in range(n):
        pos = _write_text(buf, pos, prefix)
        for j in range(ints.shape[1]):
            if j > 0:
                buf[pos] = 44  # ,
                pos += 1
            pos = _write_int(buf, pos, ints[r, j])
        for j in range(floats.shape[1]):
            if j > 0 or ints.shape[1] > 0:
                buf[pos] = 44
                pos += 1
            pos = _write_float32(buf, pos, floats[r, j], powers)
        buf[pos] = 10  # newline
        pos += 1
    return buf[:pos]


def numeric_csv_rows(
    int_columns: Sequence[np.ndarray], float32_columns: Sequence[np.ndarray], prefix: str = ""
) -> np.ndarray:
    """CSV lines (no header): `prefix` (constant text, e.g. 'overfit,none,'), then
    non-negative integer columns, then float32 columns (given as any float dtype); all [rows].

    Returns the ASCII text as uint8 [bytes] (write it with `file.write`; no str copy of a
    file that can reach tens of MB)."""
    n = len(int_columns[0]) if int_columns else len(float32_columns[0])
    ints = np.zeros((n, len(int_columns)), dtype=np.int64)
    for j, column in enumerate(int_columns):
        ints[:, j] = column
    floats = np.zeros((n, len(float32_columns)), dtype=np.float64)
    for j, column in enumerate(float32_columns):
        floats[:, j] = np.asarray(column, dtype=np.float32)
    if np.any(ints < 0):
        raise ValueError("numeric_csv_rows writes non-negative integers only")
    text = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8).copy()
    return _format_rows(text, ints, floats, _POWERS)
