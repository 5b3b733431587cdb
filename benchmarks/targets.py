"""Issue 23's targets as the benchmarks measure them: one record per target, written with
`--json PATH` by each benchmark and printed side by side by bench_targets.py.

A record: the issue's item, what is measured, the measured value, the aim, the unit, whether
the aim is met, and a detail (what the value is next to: the FLOP bound, the other engine).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def record(
    item: str, what: str, measured: float, aim: float, unit: str, detail: str = ""
) -> dict[str, Any]:
    """A target whose measured value must be at most `aim` (every target of the issue is)."""
    return {
        "item": item,
        "what": what,
        "measured": float(measured),
        "aim": float(aim),
        "unit": unit,
        "met": bool(measured <= aim),
        "detail": detail,
    }


def write(path: str | None, records: list[dict[str, Any]]) -> None:
    """Write the records as JSON to `path` (nothing when None)."""
    if path:
        Path(path).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_main(main: Callable[[], Any]) -> None:
    """Run a benchmark's `main`: Ctrl-C ends it with "interrupted" and exit code 130 (its
    worker processes get the same SIGINT from the terminal), not a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
