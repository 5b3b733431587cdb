"""The README's tutorial table, regenerated: runs `actreg tutorial` (the README's first command)
into a temporary folder and prints the table of its report.md, the CPU it ran on and the time it
took (wall and CPU of the whole process, compilation included when the cache is cold).

    python3 benchmarks/readme_tutorial.py            # print the table
    python3 benchmarks/readme_tutorial.py --check    # and compare it with README.md's

The cpu engine's loops are compiled for one portable target on every x86-64 CPU with AVX2 and
FMA (docs/fidelity.md), so `--check` holds on any of them: the README's table, computed on an
AMD EPYC, came out the same on an Intel Xeon (2026-12-04). With ACTREG_CPU_TARGET=native, or
on a CPU without AVX2, the last digits may differ.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actreg_cli.versions import machine_info  # noqa: E402

TABLE_HEAD = "| variant | reduction | train | test |"


def table_rows(markdown: str) -> list[str]:
    """The tutorial table's lines (header, rule, one per arm) from a markdown text."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TABLE_HEAD))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def run_tutorial(extra: list[str]) -> tuple[list[str], float, float]:
    """The table of a fresh `actreg tutorial`, its wall and CPU seconds."""
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [sys.executable, "-m", "actreg_cli", "tutorial", "--runs-dir", runs, *extra],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter() - started
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        folder = Path(out.stdout.strip().splitlines()[-1])
        return table_rows((folder / "report.md").read_text(encoding="utf-8")), wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with README.md's table")
    args, extra = parser.parse_known_args()
    rows, wall, cpu = run_tutorial(extra)
    machine = machine_info()
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores; {' '.join(machine['isa'])})")
    print(f"actreg tutorial {' '.join(extra)}: {wall:.1f} s wall, {cpu:.1f} s CPU\n")
    print("\n".join(rows))
    if args.check:
        readme = table_rows((REPO / "README.md").read_text(encoding="utf-8"))
        if readme != rows:
            print("\nREADME.md's table differs:\n" + "\n".join(readme))
            return 1
        print("\nREADME.md's table is the same.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
