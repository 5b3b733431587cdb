"""Keras engine vs fused engine: seconds per epoch, compile time and peak memory, side by side.

Each measurement runs in its own Python process (so each has its own peak RSS, read from
getrusage ru_maxrss, TensorFlow's baseline included, and its own compile caches):

  keras   the tutorial model (Dense(500) ReLU, L1 1e-4 activity before ReLU) trained by
          model.fit exactly as the Keras engine calls it; after a 5-epoch warm-up fit, `fit`
          for --keras-epochs epochs is timed (median over --reps), giving seconds per epoch.
          Once per Keras backend of --keras-backends (KERAS_BACKEND set for the worker):
          tensorflow (the reference) and jax (when jax is installed: pip install jax).
  fused   FusedEngine().train on N models for --epochs epochs (full per-epoch history and
          final metrics, as `actreg` uses it). The first call includes tracing and XLA
          compilation; later calls reuse the compiled program. compile = first - median(rest).
          N = 1: the tutorial model. N > 1: a sweep-like mix of L1 activity before ReLU,
          L1 activity after ReLU and L1 kernel penalties at 8 strengths, each with its own seed.

Run:     python3 benchmarks/bench_engines.py            (about 3-4 minutes on 2 cores)
         python3 benchmarks/bench_engines.py --quick    (about a minute: 1000 epochs, 1 rep)
         python3 benchmarks/bench_engines.py --chunk-sweep 4,8,16,32,64
                                                        (adds models/chunk vs speed at N=240)
Prints a markdown table. Timings on a shared machine vary by 20% or more between runs; the
"cpu" column (process CPU time per model-epoch) is less sensitive to other load than wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STRENGTHS = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
TUTORIAL_REG = {
    "target": "activity",
    "norm": "l1",
    "strength": 1e-4,
    "placement": "before_activation",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 epochs, 1 repetition")
    parser.add_argument("--epochs", type=int, default=None, help="fused epochs (default 4000)")
    parser.add_argument("--keras-epochs", type=int, default=None, help="timed fit epochs")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    parser.add_argument("--models", default="1,30,240", help="fused N values, comma-separated")
    parser.add_argument(
        "--chunk-sweep", default="", help="chunk sizes to time at N=240 (e.g. 4,8,16,32,64)"
    )
    parser.add_argument(
        "--keras-backends",
        default="tensorflow,jax",
        help="Keras backends to time the keras engine on (jax is skipped if not installed)",
    )
    parser.add_argument("--worker", choices=["keras", "fused"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1000 if args.quick else 4000
    if args.keras_epochs is None:
        args.keras_epochs = 30 if args.quick else 100
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    return args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------------
# Workers (each in a fresh process; print one JSON line)


def keras_worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    import keras  # (timed: the import itself)

    import_s = time.perf_counter() - start
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.data import load_dataset
    from actreg_cli.engines.keras.engine import build_model, make_optimizer, set_initial_weights

    config = ExperimentConfig.model_validate({"regularizers": [TUTORIAL_REG]})
    data = load_dataset(config.data)
    model, _ = build_model(config, data)
    set_initial_weights(model, config, data, 0)
    model.compile(
        optimizer=make_optimizer(config), loss="binary_crossentropy", metrics=["accuracy"]
    )

    def fit(epochs: int) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_test, data.y_test),
            epochs=epochs,
            batch_size=config.training.batch_size,
            validation_batch_size=data.n_test,
            verbose=0,
        )
        return time.perf_counter() - t, time.process_time() - c

    fit(5)  # warm-up: tracing of train and test steps
    timed = [fit(args.keras_epochs) for _ in range(args.reps)]
    times = [w / args.keras_epochs for w, _ in timed]
    return {
        "backend": keras.config.backend(),
        "s_per_epoch": statistics.median(times),
        "cpu_s_per_epoch": statistics.median(c / args.keras_epochs for _, c in timed),
        "all": times,
        "import_s": import_s,
        "rss_mb": peak_rss_mb(),
    }


def fused_jobs(n: int, epochs: int):
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.weights import repeat_seeds

    if n == 1:
        configs = [{"regularizers": [TUTORIAL_REG]}]
    else:
        configs = [
            {"regularizers": [{**TUTORIAL_REG, **variant, "strength": s}]}
            for variant in (
                {},
                {"placement": "after_activation"},
                {"target": "kernel", "placement": None, "reduction": None},
            )
            for s in STRENGTHS
        ]
    seeds = repeat_seeds(0, n)
    jobs = []
    for i in range(n):
        raw = configs[i % len(configs)]
        raw = {**raw, "training": {"epochs": epochs}}
        raw["regularizers"] = [
            {k: v for k, v in r.items() if v is not None} for r in raw["regularizers"]
        ]
        jobs.append(TrainJob(ExperimentConfig.model_validate(raw), seeds[i]))
    return jobs


def timed_trainings(
    engine, jobs: list, epochs: int, reps: int
) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    """(wall s, process CPU s) of a first `engine.train(jobs)` (load or compile included), then
    of `reps` more. jobs: TrainJobs; each call is checked to give `epochs` history rows a model."""

    def train() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        results = engine.train(jobs)
        assert all(r.history.shape == (epochs, 4) for r in results)
        return time.perf_counter() - t, time.process_time() - c

    first = train()
    return first, [train() for _ in range(reps)]


def fused_worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    import tensorflow  # noqa: F401  (timed separately: every TF user pays it once)

    import_s = time.perf_counter() - start
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.fused.engine import FusedEngine
    from actreg_cli.engines.fused.mlp import make_spec
    from actreg_cli.engines.penalties import coefficients

    jobs = fused_jobs(args.n, args.epochs)
    engine = FusedEngine(chunk=args.chunk)
    tables = [coefficients(j.config) for j in jobs]
    data = job_dataset(jobs[0].config, jobs[0].seed)
    chunk = make_spec(jobs, tables, args.chunk, engine.workers, data).chunk

    (first, _), runs = timed_trainings(engine, jobs, args.epochs, args.reps)
    wall = statistics.median(w for w, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    model_epochs = args.n * args.epochs
    return {
        "n": args.n,
        "chunk": chunk,
        "workers": engine.workers,
        "first_s": first,
        "run_s": wall,
        "all_run_s": [w for w, _ in runs],
        "compile_s": max(first - wall, 0.0),
        "s_per_model_epoch": wall / model_epochs,
        "cpu_s_per_model_epoch": cpu / model_epochs,
        "import_s": import_s,
        "rss_mb": peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------------------
# Driver


def measure(kind: str, args: argparse.Namespace, **extra) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--epochs",
        str(args.epochs),
        "--keras-epochs",
        str(args.keras_epochs),
        "--reps",
        str(args.reps),
    ]
    backend = extra.pop("backend", None)
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def main() -> None:
    args = parse_args()
    if args.worker == "keras":
        print(json.dumps(keras_worker(args)))
        return
    if args.worker == "fused":
        print(json.dumps(fused_worker(args)))
        return

    print(
        f"# Engines on {os.cpu_count()} CPU cores (load average now "
        f"{os.getloadavg()[0]:.2f}); fused epochs {args.epochs}, "
        f"{args.reps} timed repetition(s) each\n",
        flush=True,
    )
    backends = [b for b in args.keras_backends.split(",") if b]
    if "jax" in backends and importlib.util.find_spec("jax") is None:
        print("(jax is not installed: the keras engine is timed on tensorflow only)\n")
        backends.remove("jax")
    kerases = [measure("keras", args, backend=b) for b in backends]
    keras = kerases[0]  # the reference: the first backend (tensorflow by default)
    keras_epoch = keras["s_per_epoch"]
    rows = [
        "| engine | models N | epochs | models/chunk | compile s | run s (median) "
        "| per model-epoch (wall) | per model-epoch (cpu) | vs Keras | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in kerases:
        rows.append(
            f"| keras (model.fit, {k['backend']}) | 1 | {args.keras_epochs} timed | - | - | "
            f"{k['s_per_epoch'] * args.keras_epochs:.2f} | {fmt_us(k['s_per_epoch'])} | "
            f"{fmt_us(k['cpu_s_per_epoch'])} | {keras_epoch / k['s_per_epoch']:,.1f}x | "
            f"{k['rss_mb']:.0f} |"
        )
    fused_results = []
    for n in (int(v) for v in args.models.split(",")):
        r = measure("fused", args, n=n)
        fused_results.append(r)
        rows.append(
            f"| fused | {n} | {args.epochs} | {r['chunk']} x {r['workers']} threads | "
            f"{r['compile_s']:.2f} | {r['run_s']:.2f} | {fmt_us(r['s_per_model_epoch'])} | "
            f"{fmt_us(r['cpu_s_per_model_epoch'])} | "
            f"{keras_epoch / r['s_per_model_epoch']:,.0f}x | {r['rss_mb']:.0f} |"
        )
    print("\n".join(rows))
    for k in kerases:
        print(
            f"\nKeras ({k['backend']}) per-epoch times: "
            f"{', '.join(f'{t * 1e3:.1f} ms' for t in k['all'])}; "
            f"Keras import: {k['import_s']:.1f} s (not in any number above)."
        )
    for r in fused_results:
        total = r["first_s"]
        keras_total = keras_epoch * args.epochs * r["n"]
        print(
            f"N={r['n']}: first call (trace + compile + train) {total:.2f} s vs Keras "
            f"~{keras_total:,.0f} s for the same {r['n']} x {args.epochs} epochs "
            f"({keras_total / total:,.0f}x); timed runs "
            f"{', '.join(f'{t:.2f}' for t in r['all_run_s'])} s"
        )

    if args.chunk_sweep:
        print(
            "\n| models/chunk (N=240) | run s | per model-epoch (wall) | per model-epoch (cpu) "
            "| compile s | peak RSS MB |\n|---|---|---|---|---|---|"
        )
        for chunk in (int(v) for v in args.chunk_sweep.split(",")):
            r = measure("fused", args, n=240, chunk=chunk)
            print(
                f"| {chunk} | {r['run_s']:.2f} | {fmt_us(r['s_per_model_epoch'])} | "
                f"{fmt_us(r['cpu_s_per_model_epoch'])} | {r['compile_s']:.2f} | "
                f"{r['rss_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
