"""cpu engine (Numba kernel) vs fused engine (XLA), side by side, against the targets below.

Every measurement runs in its own Python process (own peak RSS, own compile caches), started
one after the other from this driver:

  kernel   CpuEngine().train / FusedEngine().train on N models x --epochs epochs (full history
           and final metrics). The first call includes loading (cpu: from Numba's disk cache;
           fused: tracing + XLA compilation); the timed calls after it are medians of --reps.
           N = 1: the tutorial model (Dense(500) ReLU, L1 1e-4 activity before ReLU).
           N > 1: bench_engines' sweep-like mix (L1 activity before/after ReLU, L1 kernel, 8
           strengths, own seeds). Reported: wall and process CPU time per model-epoch, and the
           CPU time over the FLOP bound (FLOPs of one model-epoch, counted from the shapes in
           `flops_per_model_epoch`, at the single-core float32 matmul rate measured here).
  sgemm    numpy float32 matmul (1024^3, one BLAS thread): the machine's FLOP rate per core.
  process  whole `python -m actreg_cli run/tutorial ...` processes (wall, CPU of the process
           tree from getrusage, peak RSS of the largest process); median of --reps.

Run:   python3 benchmarks/bench_cpu_kernel.py           (~6-8 minutes on 2 quiet cores)
       python3 benchmarks/bench_cpu_kernel.py --quick   (1000 epochs, 1 repetition)
A shared machine inflates wall times (and CPU times less so): compare columns of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: The targets: (label, limit, unit).
TARGETS = {
    "cpu_us_per_model_epoch": 10.0,
    "flop_bound_ratio": 2.5,
    "one_model_4000_epochs_s": 0.06,
    "run_1_s": 2.5,
    "run_240_s": 15.0,
    "tutorial_s": 5.0,
    "rss_mb": 400.0,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 epochs, 1 repetition")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 4000)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    parser.add_argument("--models", default="1,30,240", help="N values, comma-separated")
    parser.add_argument("--engines", default="cpu,fused", help="engines, comma-separated")
    parser.add_argument("--skip-processes", action="store_true", help="no whole-process runs")
    parser.add_argument("--worker", choices=["kernel", "sgemm"], help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1000 if args.quick else 4000
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    return args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def flops_per_model_epoch(units, n_train: int, n_test: int, activity_layers: int) -> int:
    """FLOPs of one full-batch epoch (multiply-add = 2), as the kernel must do them at least.

    Forward, per row of train + test: per hidden layer 2*fan_in + 1 (bias) per unit, the
    activity sum 1 per unit on each penalised layer, the output dot 2 per last-layer unit.
    Backward, per train row: per layer 2*fan_in (kernel grads) + 1 (bias) + 1 (activation
    derivative) + 1 (activity gradient, penalised layers) per unit, 2*fan_in per unit for
    the previous layer's dL/da (layers after the first), 4 per last-layer unit (dL/da and the
    output kernel's gradient). Adam: 12 per parameter. Activations' own cost (ReLU: none) and
    the loss on the logits (a few per row) are left out.
    """
    fan_ins = [2, *units[:-1]]
    params = sum((i + 1) * o for i, o in zip(fan_ins, units, strict=True)) + units[-1] + 1
    forward = sum((2 * i + 1) * o for i, o in zip(fan_ins, units, strict=True)) + 2 * units[-1]
    forward += sum(units[:activity_layers])
    backward = sum((2 * i + 2) * o for i, o in zip(fan_ins, units, strict=True))
    backward += sum(units[:activity_layers]) + 4 * units[-1]
    backward += sum(2 * i * o for i, o in list(zip(fan_ins, units, strict=True))[1:])
    return (n_train + n_test) * forward + n_train * backward + 12 * params


# ---------------------------------------------------------------------------------------------
# Workers (each in a fresh process; print one JSON line)


def kernel_worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench_engines import fused_jobs, timed_trainings

    start = time.perf_counter()
    if args.engine == "cpu":
        from actreg_cli.engines.cpu.engine import CpuEngine

        engine = CpuEngine()
    else:
        import tensorflow  # noqa: F401

        from actreg_cli.engines.fused.engine import FusedEngine

        engine = FusedEngine()
    import_s = time.perf_counter() - start
    jobs = fused_jobs(args.n, args.epochs)

    (first, first_cpu), runs = timed_trainings(engine, jobs, args.epochs, args.reps)
    wall = statistics.median(w for w, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    model_epochs = args.n * args.epochs
    return {
        "engine": args.engine,
        "n": args.n,
        "import_s": import_s,
        "first_s": first,
        "first_cpu_s": first_cpu,
        "run_s": wall,
        "run_cpu_s": cpu,
        "all_run_s": [w for w, _ in runs],
        "us_per_model_epoch": wall / model_epochs * 1e6,
        "cpu_us_per_model_epoch": cpu / model_epochs * 1e6,
        "rss_mb": peak_rss_mb(),
    }


def sgemm_worker(args: argparse.Namespace) -> dict:
    import numpy as np

    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    a @ a
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t)
    # Which kernels the BLAS chose (OPENBLAS_CORETYPE, when the caller set it, shows here).
    from threadpoolctl import threadpool_info

    kernels = [i.get("architecture") or i.get("internal_api") for i in threadpool_info()]
    return {
        "gflops": 2 * 1024**3 / min(times) / 1e9,
        "architecture": ", ".join(k for k in kernels if k) or "unknown",
    }


# ---------------------------------------------------------------------------------------------
# Driver


def worker(kind: str, args: argparse.Namespace, **extra) -> dict:
    options = ["--epochs", str(args.epochs), "--reps", str(args.reps)]
    return worker_process(__file__, kind, options, **extra)


def worker_process(
    script: str, kind: str, options: list[str], coretype: str | None = None, **extra
) -> dict:
    """Run `script --worker KIND OPTIONS --key value ...` in a fresh process (the sgemm worker on
    one BLAS thread: one core's rate; with `coretype`, OpenBLAS's kernels for that CPU, e.g.
    "Haswell": AVX2 and FMA alone) and return the JSON of its last line of output; exit with
    its error output if it fails."""
    command = [sys.executable, script, "--worker", kind, *options]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if kind == "sgemm":  # one core's rate
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def whole_process(argv: list[str], reps: int) -> dict:
    """Median wall, CPU (user + sys of the process tree) and peak RSS of `python -m actreg_cli
    ARGV`, each run measured by a small wrapper process so that getrusage(RUSAGE_CHILDREN)
    covers that one run only."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "if done.returncode: sys.exit(done.stderr[-3000:])\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'wall': wall, 'cpu': u.ru_utime + u.ru_stime, "
        "'rss_mb': u.ru_maxrss / 1024}))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "actreg_cli", *argv, "--runs-dir", tmp]
        for _ in range(reps + 1):  # the first one warms caches (compiled code, files)
            done = subprocess.run(
                [sys.executable, "-c", wrapper, *command], env=env, capture_output=True, text=True
            )
            if done.returncode:
                sys.exit(f"actreg {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout))
    timed = runs[1:]
    return {key: statistics.median(r[key] for r in timed) for key in ("wall", "cpu", "rss_mb")} | {
        "first_wall": runs[0]["wall"]
    }


def mark(value: float, key: str) -> str:
    limit = TARGETS[key]
    return f"{'meets' if value <= limit else 'misses'} <= {limit:g}"


def main() -> None:
    args = parse_args()
    if args.worker == "kernel":
        print(json.dumps(kernel_worker(args)))
        return
    if args.worker == "sgemm":
        print(json.dumps(sgemm_worker(args)))
        return

    from actreg_cli.engines.base import worker_count

    load = os.getloadavg()[0]
    print(
        f"# cpu vs fused engine on {worker_count()} cores (load average {load:.2f} at start); "
        f"{args.epochs} epochs, medians of {args.reps} timed run(s)\n",
        flush=True,
    )
    gflops = worker("sgemm", args)["gflops"]
    flops = flops_per_model_epoch([500], 30, 70, activity_layers=1)
    bound_us = flops / (gflops * 1e9) * 1e6
    print(
        f"FLOP bound: {flops / 1e3:.0f} kFLOP per model-epoch (tutorial MLP, counted from its "
        f"shapes) at {gflops:.0f} GFLOP/s (float32 matmul, one core, measured now) = "
        f"{bound_us:.2f} µs CPU per model-epoch\n"
    )
    engines = args.engines.split(",")
    rows = [
        "| engine | N | first call s (load/compile + train) | run s wall | run s CPU "
        "| µs/model-epoch wall | µs/model-epoch CPU | CPU / FLOP bound | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for n in (int(v) for v in args.models.split(",")):
        for engine in engines:
            r = worker("kernel", args, engine=engine, n=n)
            results[engine, n] = r
            rows.append(
                f"| {engine} | {n} | {r['first_s']:.2f} | {r['run_s']:.3f} | "
                f"{r['run_cpu_s']:.3f} | {r['us_per_model_epoch']:.1f} | "
                f"{r['cpu_us_per_model_epoch']:.1f} | "
                f"{r['cpu_us_per_model_epoch'] / bound_us:.1f}x | {r['rss_mb']:.0f} |"
            )
            print(f"  measured {engine} N={n}", flush=True)
    print("\n" + "\n".join(rows) + "\n")

    targets = []
    for engine in engines:
        for n in (30, 240):
            if (engine, n) in results:
                value = results[engine, n]["cpu_us_per_model_epoch"]
                targets.append(
                    (f"{engine}: CPU per model-epoch, N={n}", f"{value:.1f} µs",
                     mark(value, "cpu_us_per_model_epoch")),
                )  # fmt: skip
                targets.append(
                    (f"{engine}: CPU / FLOP bound, N={n}", f"{value / bound_us:.1f}x",
                     mark(value / bound_us, "flop_bound_ratio")),
                )  # fmt: skip
        if (engine, 1) in results:
            r = results[engine, 1]
            scaled = r["run_s"] * 4000 / args.epochs
            targets.append(
                (f"{engine}: one model x 4000 epochs after compile",
                 f"{scaled:.3f} s wall ({r['run_cpu_s'] * 4000 / args.epochs:.3f} s CPU)",
                 mark(scaled, "one_model_4000_epochs_s")),
            )  # fmt: skip
    if not args.skip_processes:
        config = str(REPO / "configs" / "circles_l1_before_relu.yaml")
        epochs = ["--epochs", str(args.epochs)]
        for engine in engines:
            for label, argv, key in (
                ("actreg run, 1 model", ["run", config, *epochs], "run_1_s"),
                ("actreg run --repeats 240", ["run", config, *epochs, "--repeats", "240"],
                 "run_240_s"),
                ("actreg tutorial (50 models)", ["tutorial", *epochs],
                 "tutorial_s"),
            ):  # fmt: skip
                r = whole_process([*argv, "--engine", engine], args.reps)
                targets.append(
                    (f"{engine}: {label}, whole process",
                     f"{r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, {r['rss_mb']:.0f} MB peak "
                     f"(first run {r['first_wall']:.2f} s)", mark(r["wall"], key)),
                )  # fmt: skip
                print(f"  measured {targets[-1][0]}: {targets[-1][1]}", flush=True)
                if key != "tutorial_s":
                    targets.append(
                        (f"{engine}: peak RSS, {label}", f"{r['rss_mb']:.0f} MB",
                         mark(r["rss_mb"], "rss_mb")),
                    )  # fmt: skip
    print("\n| target | measured | aim |\n|---|---|---|")
    for label, value, verdict in targets:
        print(f"| {label} | {value} | {verdict} |")
    if args.epochs != 4000:
        print(f"\n(--epochs {args.epochs}: process and one-model figures are for that many epochs)")


if __name__ == "__main__":
    main()
