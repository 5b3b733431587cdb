"""The shipped layer studies through the fused and cpu engines, against the Keras engine side by
side.

Each measurement runs in its own Python process (fresh compile caches, as `actreg sweep` gets):

  fused   FusedEngine().train on every model of a study (configs/digits_*_l1.yaml as shipped:
          its cells x repeats x epochs, one call, as the sweep runner makes it): wall and process
          CPU time of the whole call (tracing and XLA compilation included; TensorFlow's import
          not, it is printed apart), and the same call again in the same process (compiled).
  cpu     CpuEngine().train on the same models, where the cpu engine trains the study (the
          Conv2D study: engines/cpu/conv_loop.py; the LSTM study: lstm_loop.py): the first
          call (which loads the compiled loop from Numba's disk cache, or compiles it once
          after an install: its first-call figure then includes about 40 s of compiling) and
          the same call again.
  keras   KerasEngine().train (the reference: model.fit on the TensorFlow backend, the engine a
          study falls back to without the fused engine) on the first --keras-models models of
          the same study (its config otherwise) at --keras-epochs epochs and at a quarter of
          them: the difference gives seconds per epoch, the rest seconds per model (building,
          compiling, final evaluation); the whole study extrapolated is models x (per model +
          its epochs x per epoch).

Run:     python3 benchmarks/bench_layers.py                    (conv study, ~3-4 min on 2 cores)
         python3 benchmarks/bench_layers.py --study all        (conv, lstm, autoencoder)
         python3 benchmarks/bench_layers.py --reps 3           (medians of 3 processes each)
         python3 benchmarks/bench_layers.py --no-keras --all-sums   (fused with all four
                  activity sums of every layer, side by side with the penalized ones only)
         python3 benchmarks/bench_layers.py --no-keras --tf-pool    (fused pooling with
                  tf.nn.max_pool2d, side by side with tiled windows as a reshape and a max)
Prints a markdown table, then each engine's CPU per model-epoch against the FLOP bound (the
FLOPs counted from the layer shapes, `flops_per_model_epoch`, at the one-thread float32 matmul
rate measured in the same run), compiled and with its first call's compilation, next to the
aims (Conv2D <= 5x, LSTM <= 2.5x), which the engine `auto` picks for the study is held to.
Timings on a shared machine vary by 20% or more between runs; process CPU time is printed next
to wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from targets import record, run_main, write  # noqa: E402

STUDIES = {
    "conv": "configs/digits_conv_l1.yaml",
    "lstm": "configs/digits_lstm_l1.yaml",
    "autoencoder": "configs/digits_autoencoder_l1.yaml",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="conv", help="conv, lstm, autoencoder or all")
    parser.add_argument("--reps", type=int, default=1, help="processes per measurement (median)")
    parser.add_argument(
        "--keras-models", type=int, default=1, help="models the keras engine trains"
    )
    parser.add_argument("--keras-epochs", type=int, default=20, help="their epochs")
    parser.add_argument("--no-keras", action="store_true", help="fused engine only")
    parser.add_argument("--json", help="also write the targets' records to this file")
    parser.add_argument(
        "--no-again", action="store_true", help="skip the second (compiled) fused call"
    )
    parser.add_argument("--chunk", type=int, default=None, help="fused models per chunk")
    parser.add_argument("--workers", type=int, default=None, help="fused worker threads")
    parser.add_argument(
        "--all-sums", action="store_true",
        help="also the fused program computing all four activity sums of every layer, as before "
        "it computed only the penalized ones (a row before the fused row)",
    )  # fmt: skip
    parser.add_argument(
        "--tf-pool", action="store_true",
        help="also the fused program pooling with tf.nn.max_pool2d (reduce-window, and "
        "select-and-scatter for its gradient), as before it pooled tiled windows as a reshape "
        "and a max (a row before the fused row)",
    )  # fmt: skip
    parser.add_argument(
        "--cpu256", action="store_true",
        help="also the cpu engine with its matrix products at AVX2's vector width "
        "(ACTREG_CPU_VECTOR_BITS=256; the same bits): on a CPU with AVX-512, what the 512-bit "
        "ones gain (a row after the cpu row)",
    )  # fmt: skip
    parser.add_argument(
        "--worker", choices=["keras", "fused", "cpu", "cpu256", *VARIANTS], help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def study_jobs(study: str):
    """(jobs of every cell x repeat of the study, its epochs)."""
    from actreg_cli.config import load_sweep
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.study.sweep.grid import expand_grid
    from actreg_cli.weights import repeat_seeds

    sweep = load_sweep(REPO / STUDIES[study])
    jobs = []
    for cell in expand_grid(sweep):
        seeds = repeat_seeds(cell.config.training.seed, cell.config.training.repeats)
        jobs += [TrainJob(cell.config, seed) for seed in seeds]
    return jobs, sweep.base.training.epochs


#: The earlier fused programs a flag measures side by side: worker name -> (flag, row label).
VARIANTS = {
    "fused-all-sums": ("all_sums", "all four activity sums"),
    "fused-tf-pool": ("tf_pool", "tf.nn.max_pool2d"),
}

#: The aims (issue: CPU per model-epoch over the FLOP bound) where one is set.
TARGETS = {"conv": 5.0, "lstm": 2.5}


def flops_per_model_epoch(job) -> int:
    """FLOPs of one model-epoch of `job`'s layer list (multiply-add = 2), counted as
    bench_cpu_mlp.py counts an MLP's. Forward, per train, test and validation row: per layer with
    weights 2 per multiply-add of its kernels (dense: kernel size; conv2d: kernel size x output
    positions; lstm: input and recurrent kernels x time steps) + 1 per bias addition, + 1 per
    output value of a layer with an activity penalty (its sum). Backward, per train row: twice
    the forward multiply-adds (kernel gradient, and the input's gradient but for the first layer
    with weights) + the bias and penalty terms again. Adam: 12 per parameter and step. Pooling,
    flatten, activations, the LSTM's gate arithmetic and the loss are left out."""
    from actreg_cli.config import Target
    from actreg_cli.data import job_dataset
    from actreg_cli.models.plan import config_plan

    config = job.config
    data = job_dataset(config, job.seed)
    forward = backward = params = 0
    first = True
    for layer in config_plan(config, data).layers:
        if not layer.weights:
            continue
        shapes = [math.prod(shape) for _, shape in layer.weights]
        params += sum(shapes)
        if layer.kind == "conv2d":
            macs = shapes[0] * math.prod(layer.output_shape[:-1])
            adds = math.prod(layer.output_shape)
        elif layer.kind == "lstm":
            steps = layer.input_shape[0]
            macs, adds = (shapes[0] + shapes[1]) * steps, shapes[2] * steps
        else:
            macs, adds = shapes[0], math.prod(layer.output_shape)
        penalty = math.prod(layer.output_shape) * any(
            reg.target is Target.activity for reg in layer.penalties
        )
        forward += 2 * macs + adds + penalty
        backward += (2 if first else 4) * macs + adds + penalty
        first = False
    batch = min(config.training.batch_size, data.n_train)
    steps = -(-data.n_train // batch)
    rows = data.n_train + data.n_test + data.n_val
    return rows * forward + data.n_train * backward + 12 * params * steps


def _timed(train) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    train()
    return time.perf_counter() - wall, time.process_time() - cpu


def _import_tensorflow() -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    import tensorflow  # noqa: F401

    import actreg_cli.quiet_tensorflow  # noqa: F401

    return time.perf_counter() - start


def fused_worker(args: argparse.Namespace, variant: str | None = None) -> dict:
    """The fused engine's calls; `variant` (a VARIANTS key): an earlier program instead."""
    import_s = _import_tensorflow()
    from actreg_cli.engines.fused.engine import FusedEngine

    if variant == "fused-all-sums":  # before it computed only the penalized activity sums
        import actreg_cli.engines.fused.layers as layers

        layers.activity_sums_used = lambda tables: None
    if variant == "fused-tf-pool":  # before tiled windows were pooled as a reshape and a max
        import actreg_cli.engines.fused.layers_net as layers_net

        layers_net.LayersNet.max_pool_tiled = False

    engine = FusedEngine(chunk=args.chunk, workers=args.workers)
    return {"import_s": import_s, **_timed_study(args, engine)}


def cpu_worker(args: argparse.Namespace) -> dict:
    """The cpu engine's calls (no TensorFlow in this process)."""
    from actreg_cli.engines.cpu.engine import CpuEngine, compile_note

    configs = [job.config for job in study_jobs(args.study)[0]]
    compiles = compile_note(configs) is not None  # before the first call loads or compiles
    return {"import_s": 0.0, "compiled_first": float(compiles), **_timed_study(args, CpuEngine())}


def _timed_study(args: argparse.Namespace, engine) -> dict:
    """An engine's first call on every model of the study (loading or compiling included) and,
    unless --no-again, the same call again: wall and process CPU seconds of each, the FLOPs of a
    model-epoch and the models' mean test accuracy (MSE for a regression study)."""
    jobs, epochs = study_jobs(args.study)
    results = []
    first = _timed(lambda: results.extend(engine.train(jobs)))
    again = (math.nan, math.nan) if args.no_again else _timed(lambda: engine.train(jobs))
    return {
        "models": len(jobs),
        "epochs": epochs,
        "flops": statistics.mean(flops_per_model_epoch(job) for job in jobs),
        "wall_s": first[0],
        "cpu_s": first[1],
        "compiled_wall_s": again[0],
        "compiled_cpu_s": again[1],
        "test_metric_mean": statistics.mean(
            r.test_accuracy if r.test_accuracy == r.test_accuracy else r.test_mse for r in results
        ),
    }


def auto_pick(study: str) -> str:
    """The engine `actreg sweep` runs the study on (engines.select_engine, `auto`)."""
    from actreg_cli.engines import select_engine

    engine, _ = select_engine("auto", [job.config for job in study_jobs(study)[0]])
    return engine.name


def cpu_trains(study: str) -> bool:
    from actreg_cli.engines.cpu.engine import unsupported_reason

    return all(unsupported_reason(job.config) is None for job in study_jobs(study)[0])


def keras_worker(args: argparse.Namespace) -> dict:
    """The first --keras-models models at --keras-epochs epochs, and again at a quarter of
    them: the difference gives the cost of an epoch, the rest the per-model cost of building,
    compiling and evaluating a Keras model (paid once per model of the study)."""
    import_s = _import_tensorflow()
    from actreg_cli.engines.keras.engine import KerasEngine

    jobs, epochs = study_jobs(args.study)

    def subset(n_epochs: int):
        return [
            type(job)(job.config.model_copy(update={"training": _epochs(job, n_epochs)}), job.seed)
            for job in jobs[: args.keras_models]
        ]

    short_epochs = max(1, args.keras_epochs // 4)
    short = _timed(lambda: KerasEngine().train(subset(short_epochs)))
    wall, cpu = _timed(lambda: KerasEngine().train(subset(args.keras_epochs)))
    n = args.keras_models
    per_epoch = [
        (t - s) / (n * (args.keras_epochs - short_epochs))
        for t, s in zip((wall, cpu), short, strict=True)
    ]
    per_model = [t / n - args.keras_epochs * e for t, e in zip((wall, cpu), per_epoch, strict=True)]
    return {
        "models": len(jobs),
        "epochs": epochs,
        "import_s": import_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_model_epoch_s": wall / (n * args.keras_epochs),
        "cpu_per_model_epoch_s": cpu / (n * args.keras_epochs),
        "epoch_s": per_epoch[0],
        "cpu_epoch_s": per_epoch[1],
        "model_s": per_model[0],
        "cpu_model_s": per_model[1],
    }


def _epochs(job, epochs: int):
    return job.config.training.model_copy(update={"epochs": epochs})


def measure(kind: str, study: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--study", study]
    for flag in ("keras_models", "keras_epochs", "chunk", "workers"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.no_again:
        command.append("--no-again")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    runs = []
    for _ in range(args.reps):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{kind} worker failed:\n{done.stderr[-4000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    args = parse_args()
    if args.worker == "fused" or args.worker in VARIANTS:
        variant = args.worker if args.worker in VARIANTS else None
        print(json.dumps(fused_worker(args, variant=variant)))
        return
    if args.worker == "keras":
        print(json.dumps(keras_worker(args)))
        return
    if args.worker in ("cpu", "cpu256"):
        if args.worker == "cpu256":
            from bench_cpu_mlp import CPU_ENGINES

            os.environ.update(CPU_ENGINES["cpu256"])
        print(json.dumps(cpu_worker(args)))
        return
    studies = list(STUDIES) if args.study == "all" else [args.study]
    print(
        f"# Layer studies on {os.cpu_count()} CPU cores (load average now "
        f"{os.getloadavg()[0]:.2f}); medians of {args.reps} process(es)\n",
        flush=True,
    )
    rows = [
        "| study | models x epochs | fused wall s (cpu s) | fused compiled wall s (cpu s) "
        "| keras per epoch + per model (cpu) | keras study, extrapolated s (cpu s) "
        "| keras / fused, wall (cpu) |",
        "|---|---|---|---|---|---|---|",
    ]
    bounds = []
    for study in studies:
        for worker, (flag, label) in VARIANTS.items():
            if not getattr(args, flag):
                continue
            before = measure(worker, study, args)
            rows.append(
                f"| {study}, {label} | {int(before['models'])} x "
                f"{int(before['epochs'])} | {before['wall_s']:.1f} ({before['cpu_s']:.1f}) | "
                f"{before['compiled_wall_s']:.1f} ({before['compiled_cpu_s']:.1f}) | - | - | - |"
            )
        fused = measure("fused", study, args)
        keras_cells = ["-", "-", "-"]
        if not args.no_keras:
            keras = measure("keras", study, args)
            models, epochs = fused["models"], fused["epochs"]
            full = models * (keras["model_s"] + epochs * keras["epoch_s"])
            full_cpu = models * (keras["cpu_model_s"] + epochs * keras["cpu_epoch_s"])
            keras_cells = [
                f"{keras['epoch_s'] * 1e3:.1f} ms + {keras['model_s']:.1f} s "
                f"({keras['cpu_epoch_s'] * 1e3:.1f} ms + {keras['cpu_model_s']:.1f} s)",
                f"{full:.0f} ({full_cpu:.0f})",
                f"{full / fused['wall_s']:.1f}x ({full_cpu / fused['cpu_s']:.1f}x)",
            ]
        rows.append(
            f"| {study} | {int(fused['models'])} x {int(fused['epochs'])} | "
            f"{fused['wall_s']:.1f} ({fused['cpu_s']:.1f}) | "
            f"{fused['compiled_wall_s']:.1f} ({fused['compiled_cpu_s']:.1f}) | "
            + " | ".join(keras_cells)
            + " |"
        )
        print(f"{study}: fused {fused}", flush=True)
        pick = auto_pick(study)
        bounds.append((study, "fused", fused, pick == "fused"))
        if cpu_trains(study):
            cpu = measure("cpu", study, args)
            rows.append(
                f"| {study}, cpu engine | {int(cpu['models'])} x {int(cpu['epochs'])} | "
                f"{cpu['wall_s']:.1f} ({cpu['cpu_s']:.1f}) | "
                f"{cpu['compiled_wall_s']:.1f} ({cpu['compiled_cpu_s']:.1f}) | - | - | - |"
            )
            print(f"{study}: cpu {cpu}", flush=True)
            bounds.append((study, "cpu", cpu, pick == "cpu"))
            if args.cpu256:
                narrow = measure("cpu256", study, args)
                print(f"{study}: cpu256 {narrow}", flush=True)
                bounds.append((study, "cpu256", narrow, False))
    print()
    print("\n".join(rows))
    write(args.json, print_bounds(bounds))


def print_bounds(bounds: list[tuple[str, str, dict, bool]]) -> list[dict]:
    """Each engine's CPU per model-epoch against the FLOP bound: the FLOPs counted from the
    shapes (`flops_per_model_epoch`) at the one-thread float32 matmul rate measured now.
    bounds: (study, engine, its worker's result, whether `auto` picks that engine). Returns
    the records (targets.record) of the studies with an aim, on the engine auto picks."""
    from bench_cpu_kernel import worker_process

    from actreg_cli.versions import machine_info

    script = str(Path(__file__).with_name("bench_cpu_kernel.py"))
    gflops = worker_process(script, "sgemm", ["--epochs", "1", "--reps", "1"])["gflops"]
    print(f"\nFLOP rate: {gflops:.0f} GFLOP/s (float32 matmul, one thread, measured now; "
          f"{machine_info()['cpu']})\n")  # fmt: skip
    print("| study | engine | kFLOP/model-epoch | bound µs | compiled µs CPU | / bound "
          "| first call µs CPU | / bound | aim (auto's pick) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    records = []
    for study, engine, result, picked in bounds:
        bound_us = result["flops"] / (gflops * 1e9) * 1e6
        n = result["models"] * result["epochs"]
        compiled, first = result["compiled_cpu_s"] / n * 1e6, result["cpu_s"] / n * 1e6
        aim = TARGETS.get(study) if picked else None
        verdict = (
            "-"
            if aim is None
            else f"<= {aim}x: {'met' if compiled / bound_us <= aim else 'not met'}"
        )
        # The cpu engine's first call loads its compiled loop from disk, or compiles it once
        # after an install (not a per-run cost): say which.
        how = ""
        if engine in ("cpu", "cpu256"):
            how = " (compiling)" if result.get("compiled_first") else " (loaded)"
        print(
            f"| {study} | {engine} | {result['flops'] / 1e3:,.0f} | {bound_us:.0f} | "
            f"{compiled:,.0f} | {compiled / bound_us:.1f}x | {first:,.0f}{how} | "
            f"{first / bound_us:.1f}x | {verdict} |"
        )
        if aim is not None:
            records.append(
                record(
                    "3",
                    f"{study} study on the {engine} engine (auto's pick), compiled",
                    compiled / bound_us,
                    aim,
                    "x FLOP bound",
                    f"{compiled:,.0f} µs CPU a model-epoch, bound {bound_us:.0f} µs; first "
                    f"call{how} {first / bound_us:.1f}x",
                )
            )
    return records


if __name__ == "__main__":
    run_main(main)
