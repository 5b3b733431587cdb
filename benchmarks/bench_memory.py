"""Peak memory of every shipped config (issue 23, item 6: every shipped study under 1 GB; the
README says what a 24 GB laptop can run).

Each config in configs/ runs in a fresh process as a user would run it (`actreg sweep` for a
sweep file, `actreg run` for an experiment), engine `auto` (or each of `--engines`, a column
each), into a temporary folder, with `--epochs` cut to a few (peak memory does not grow with
epochs: the engines keep per-epoch totals only; `--check-epochs` reruns one config at its full
epochs to show it). The peak resident set size of the process (getrusage ru_maxrss of the
child; TensorFlow's own ~0.54 GB after `import tensorflow` without the Keras and jax it would
load, actreg_cli/quiet_tensorflow.py, included where an engine imports it) is printed next to
the 1 GB target, with the process's CPU seconds (user + system, its workers included): at the
cut epochs mostly start-up and compilation, at full epochs (`--check-epochs`) what an engine
costs for the study, so that `--engines auto,jax` shows what the lower footprint costs.

Run:    python3 benchmarks/bench_memory.py [--epochs 3] [--only digits_conv_l1,...]
                                           [--check-epochs digits_conv_l1] [--engines auto,jax]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from targets import record, run_main, write  # noqa: E402

from actreg_cli.versions import machine_info  # noqa: E402

TARGET_MB = 1024.0

#: Runs the command as its own child and prints that child's peak RSS (KiB on Linux).
WRAPPER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": done.returncode, "peak_kib": usage.ru_maxrss,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "tail": done.stdout[-400:]
                  + done.stderr[-400:]}))
"""


def auto_choice(config: Path) -> list[str]:
    """The engines `auto` picks for `config` at its own epochs (its cost model weighs start-up
    against the work, so a run cut to a few epochs may be sent elsewhere), one per cell."""
    from actreg_cli.config import SweepConfig
    from actreg_cli.config.loading import load_any
    from actreg_cli.engines import select_engine
    from actreg_cli.study.sweep.grid import expand_grid
    from actreg_cli.study.sweep.plan import resolve_engines

    loaded = load_any(config)
    if isinstance(loaded, SweepConfig):
        return sorted(set(resolve_engines(expand_grid(loaded), "auto")[0].values()))
    return [select_engine("auto", [loaded])[0].name]


def measure(config: Path, epochs: int | None, engine: str = "auto") -> dict:
    command = "sweep" if "grid" in (yaml.safe_load(config.read_text()) or {}) else "run"
    with tempfile.TemporaryDirectory() as runs:
        argv = [sys.executable, "-m", "actreg_cli", command, str(config), "--runs-dir", runs]
        if epochs is not None:
            argv += ["--epochs", str(epochs)]
        if engine != "auto":
            argv += ["--engine", engine]
        out = subprocess.run(
            [sys.executable, "-c", WRAPPER, *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["command"] = command
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated config names")
    parser.add_argument("--check-epochs", default="", help="configs to rerun at full epochs")
    parser.add_argument(
        "--engines", default="auto", help="comma-separated engines, a column each (auto,jax,...)"
    )
    parser.add_argument("--json", help="also write the targets' records to this file")
    args = parser.parse_args()
    engines = [name for name in args.engines.split(",") if name]
    records = []
    only = {name for name in args.only.split(",") if name}
    configs = [
        path for path in sorted((REPO / "configs").glob("*.yaml")) if not only or path.stem in only
    ]
    print(f"peak RSS MB per shipped config, --epochs {args.epochs}; {machine_info()['cpu']}")
    print(
        "| config | command | "
        + " | ".join(f"{name} | within {TARGET_MB:.0f}" for name in engines)
        + " |"
    )
    print("|---|---|" + "---:|---|" * len(engines))
    runs = [(path, args.epochs) for path in configs]
    runs += [
        (REPO / "configs" / f"{name}.yaml", None)
        for name in filter(None, args.check_epochs.split(","))
    ]
    for path, epochs in runs:
        label = path.stem + ("" if epochs is not None else " (full epochs)")
        cells, command = [], ""
        for engine in engines:
            if engine == "auto":  # what auto runs at the config's epochs, at the cut epochs
                chosen = auto_choice(path)
                engine = chosen[0] if len(chosen) == 1 else "auto"
                cut = epochs if len(chosen) == 1 else None  # several: the run itself decides
                result = measure(path, cut, engine)
                result["label"] = "+".join(chosen) + ("" if cut == epochs else ", full epochs")
            else:
                result = measure(path, epochs, engine)
            command = result["command"]
            if result["rc"] != 0:
                cells.append(f"exit {result['rc']} | ")
                print(f"{label} on {engine}: {result['tail']}", file=sys.stderr)
                continue
            mb = result["peak_kib"] / 1024
            label_mb = f"{mb:.0f}" + (f" ({result['label']})" if "label" in result else "")
            label_mb += f", {result['cpu_s']:.1f} s CPU"
            cells.append(f"{label_mb} | {'yes' if mb <= TARGET_MB else 'no'}")
            records.append(
                record(
                    "3, 6" if path.stem == "digits_conv_l1" else "6",  # item 3: Conv2D's too
                    f"peak memory of {label} on {result.get('label', engine)}",
                    mb,
                    TARGET_MB,
                    "MiB",
                    f"`actreg {result['command']}`, {result['cpu_s']:.1f} s CPU",
                )
            )
        print(f"| {label} | {command} | " + " | ".join(cells) + " |", flush=True)
    write(args.json, records)


if __name__ == "__main__":
    run_main(main)
