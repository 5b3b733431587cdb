"""Peak memory of every shipped config (issue 23, item 6: every shipped study under 1 GB; the
README says what a 24 GB laptop can run).

Each config in configs/ runs in a fresh process as a user would run it (`actreg sweep` for a
sweep file, `actreg run` for an experiment), engine `auto`, into a temporary folder, with
`--epochs` cut to a few (peak memory does not grow with epochs: the engines keep per-epoch
totals only; `--check-epochs` reruns one config at its full epochs to show it). The peak
resident set size of the process (getrusage ru_maxrss of the child; TensorFlow's own ~0.85 GB
after `import tensorflow` included where an engine imports it) is printed next to the 1 GB
target.

Run:    python3 benchmarks/bench_memory.py [--epochs 3] [--only digits_conv_l1,...]
                                           [--check-epochs digits_conv_l1]
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

from actreg_cli.versions import machine_info  # noqa: E402

TARGET_MB = 1024.0

#: Runs the command as its own child and prints that child's peak RSS (KiB on Linux).
WRAPPER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": done.returncode, "peak_kib": peak, "tail": done.stdout[-400:]
                  + done.stderr[-400:]}))
"""


def measure(config: Path, epochs: int | None) -> dict:
    command = "sweep" if "grid" in (yaml.safe_load(config.read_text()) or {}) else "run"
    with tempfile.TemporaryDirectory() as runs:
        argv = [sys.executable, "-m", "actreg_cli", command, str(config), "--runs-dir", runs]
        if epochs is not None:
            argv += ["--epochs", str(epochs)]
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
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    configs = [
        path for path in sorted((REPO / "configs").glob("*.yaml")) if not only or path.stem in only
    ]
    print(
        f"peak RSS per shipped config, engine auto, --epochs {args.epochs}; {machine_info()['cpu']}"
    )
    print(f"| config | command | peak RSS MB | within {TARGET_MB:.0f} MB |")
    print("|---|---|---:|---|")
    rows = [(path, measure(path, args.epochs), args.epochs) for path in configs]
    for name in filter(None, args.check_epochs.split(",")):
        path = REPO / "configs" / f"{name}.yaml"
        rows.append((path, measure(path, None), None))
    for path, result, epochs in rows:
        label = path.stem + ("" if epochs is not None else " (full epochs)")
        if result["rc"] != 0:
            print(f"| {label} | {result['command']} | failed (exit {result['rc']}) | |")
            print(result["tail"], file=sys.stderr)
            continue
        mb = result["peak_kib"] / 1024
        within = "yes" if mb <= TARGET_MB else "no"
        print(f"| {label} | {result['command']} | {mb:.0f} | {within} |")


if __name__ == "__main__":
    main()
