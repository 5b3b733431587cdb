"""cpu engine (Numba) vs fused engine (XLA) on MLPs of several shapes, against the FLOP bound.

For each shape below, 30 models (a sweep-like mix: L1 activity before / after the activation and
L1 kernel penalties at 8 strengths, own seeds) train in one `engine.train` call per engine, each
engine in its own Python process; the first call (loading the cpu engine's compiled loops, or
the fused engine's XLA compile) is not timed, the timed calls after it give medians of --reps.
Before any shape, a process of its own compiles the cpu engine's loops if Numba's disk cache
holds none (once after an install or update: about a minute of CPU), so that no shape's job
pays it. Reported per model-epoch: process CPU time, wall time, the FLOPs of a model-epoch
counted from the shapes (`flops_per_model_epoch`: forward and backward of the train rows,
forward of the test and validation rows, the optimizer steps) and CPU time over the FLOP
bound: those FLOPs at the single-thread float32 matmul rate measured in the same run (numpy
sgemm 1024^3, one BLAS thread; bench_cpu_kernel.py's sgemm worker).
Next to it the bound at OpenBLAS's AVX2 rate (its Haswell kernels): the cpu engine's loops are
compiled for AVX2 and FMA on every CPU, so that a seed gives the same numbers everywhere
(engines/cpu/target.py). On an AMD EPYC (Zen 4) the two rates are about equal; on an Intel
Xeon with 512-bit FMA units it was 95-99 GFLOP/s against 134-151 (2026-12-04).
The target: the cpu engine at <= 2x its FLOP bound on every shape.

Run:   python3 benchmarks/bench_cpu_mlp.py                 (~3 minutes on 2 cores)
       python3 benchmarks/bench_cpu_mlp.py --engines cpu   (the cpu engine alone)
       python3 benchmarks/bench_cpu_mlp.py --engines cpu,fused,xjax   (and an expert's JAX
           program for the same models, expert_jax.py: the issue's "expert JAX" column)
       python3 benchmarks/bench_cpu_mlp.py --engines cpu,cpu256   (its matrix products with
           512-bit vectors, where the CPU has AVX-512, against 256-bit ones: the same bits)
       python3 benchmarks/bench_cpu_mlp.py --shapes deep,digits --scale 0.5
A shared machine inflates wall times (CPU times less so): compare columns of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from targets import peak_rss_mb, record, run_main, write  # noqa: E402

#: The aim: cpu engine CPU time per model-epoch over the FLOP bound, 1.4x for the tutorial
#: family (issue 23, item 1).
TARGET_RATIO = 2.0
TARGET_RATIOS = {"tutorial": 1.4}
#: The cpu engine as measured (its default), and with its matrix products at AVX2's vector
#: width on any CPU (the same bits; on a CPU with AVX-512 the two differ in speed only).
#: cpu256 keeps its compiled loops in a cache folder of its own: Numba keeps one cache entry
#: of a function per source stamp, so the two widths would replace each other's, and every
#: worker would compile.
CPU_ENGINES = {
    "cpu": {},
    "cpu256": {
        "ACTREG_CPU_VECTOR_BITS": "256",
        "NUMBA_CACHE_DIR": str(Path(tempfile.gettempdir()) / "actreg-bench-numba-256"),
    },
}
#: Engines beside the cpu engine: the fused engine (XLA through TensorFlow), and xjax, an
#: expert's JAX program for the same models (expert_jax.py: vmap or lax.map over the models,
#: jit, lax.scan over epochs and minibatches; the same weights, orders and penalties), a
#: baseline no actreg command runs.
OTHER_ENGINES = ("fused", "xjax")
STRENGTHS = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
MODELS = 30

#: name -> (what it is, config overrides, epochs).
SHAPES: dict[str, tuple[str, dict, int]] = {
    "tutorial": ("[500] relu, circles 30/70, full batch", {}, 2000),
    "circles64x32": (
        "[64,32] relu, circles 30/70, full batch",
        {"model": {"hidden_units": [64, 32]}},
        300,
    ),
    "breast_cancer": (
        "[500] relu, breast_cancer, batch 32",
        {
            "data": {"name": "breast_cancer", "test_fraction": 0.3, "validation_fraction": 0},
            "training": {"batch_size": 32},
        },
        30,
    ),
    "deep": (
        "[128,128,128] tanh, moons 200/200, batch 50",
        {
            "data": {"name": "moons", "n_samples": 400, "n_train": 200},
            "model": {"hidden_units": [128, 128, 128], "activation": "tanh"},
            "training": {"batch_size": 50},
        },
        40,
    ),
    "digits": (
        "[128] relu, digits 10 classes, batch 32, validation 0.2",
        {
            "data": {"name": "digits", "test_fraction": 0.3},
            "model": {"hidden_units": [128]},
            "training": {"batch_size": 32},
        },
        20,
    ),
    "diabetes": (
        "[64] relu, diabetes regression, batch 32",
        {
            "data": {"name": "diabetes", "test_fraction": 0.3, "validation_fraction": 0},
            "model": {"hidden_units": [64]},
            "training": {"batch_size": 32},
        },
        200,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="shapes, comma-separated")
    parser.add_argument("--engines", default="cpu,fused", help="engines, comma-separated")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="epochs times this")
    parser.add_argument("--json", help="also write the targets' records to this file")
    parser.add_argument("--worker", choices=["train", "sgemm", "compile"], help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="tutorial", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def epochs_of(shape: str, scale: float) -> int:
    return max(1, round(SHAPES[shape][2] * scale))


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def jobs_of(shape: str, epochs: int) -> list:
    """MODELS TrainJobs of `shape`: the sweep-like mix of penalties and strengths."""
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.weights import repeat_seeds

    variants = (
        {"target": "activity", "norm": "l1", "placement": "before_activation"},
        {"target": "activity", "norm": "l1", "placement": "after_activation"},
        {"target": "kernel", "norm": "l1"},
    )
    configs = [{"regularizers": [{**v, "strength": s}]} for v in variants for s in STRENGTHS]
    base = merged(SHAPES[shape][1], {"training": {"epochs": epochs}})
    seeds = repeat_seeds(0, MODELS)
    return [
        TrainJob(ExperimentConfig.model_validate(merged(base, configs[i % len(configs)])), seeds[i])
        for i in range(MODELS)
    ]


def flops_per_model_epoch(job) -> int:
    """FLOPs of one model-epoch of `job` (multiply-add = 2), as bench_cpu_kernel.py counts them,
    for any depth, input width, output width and batch size.

    Forward, per train, test and validation row: per hidden layer 2*fan_in + 1 (bias) per unit,
    1 per unit of a layer with an activity penalty (its sum), the output layer 2*units_last + 1
    per output unit. Backward, per train row: per hidden layer 2*fan_in (kernel gradient) + 2
    (bias, activation derivative) per unit, + 1 per unit with an activity penalty, 2*fan_in per
    unit for the previous layer's dL/da (layers after the first), 4 per last-layer unit and
    output unit (dL/da and the output kernel's gradient). The optimizer: 12 per parameter and
    step (one step per minibatch). Activations' own cost and the loss are left out.
    """
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.penalties import coefficients
    from actreg_cli.tasks import output_units

    config = job.config
    data = job_dataset(config, job.seed)
    units = list(config.model.hidden_units)
    n_out = output_units(data.task, data.n_classes)
    fan_ins = [data.n_features, *units[:-1]]
    pairs = list(zip(fan_ins, units, strict=True))
    coef = coefficients(config)  # [L, 12]: columns 4-11 the activity penalty factors
    activity = [o for (_, o), row in zip(pairs, coef, strict=True) if any(row[4:] != 0)]
    params = sum((i + 1) * o for i, o in pairs) + (units[-1] + 1) * n_out
    forward = sum((2 * i + 1) * o for i, o in pairs) + (2 * units[-1] + 1) * n_out
    forward += sum(activity)
    backward = sum((2 * i + 2) * o for i, o in pairs) + sum(activity) + 4 * units[-1] * n_out
    backward += sum(2 * i * o for i, o in pairs[1:])
    batch = min(config.training.batch_size, data.n_train)
    steps = -(-data.n_train // batch)
    rows = data.n_train + data.n_test + data.n_val
    return rows * forward + data.n_train * backward + 12 * params * steps


# ---------------------------------------------------------------------------------------------
# Workers (each in a fresh process; print one JSON line)


def timed_trainings(engine, jobs: list, epochs: int, reps: int):
    """(wall s, process CPU s) of a first `engine.train(jobs)` (load or compile included), then
    of `reps` more; each call is checked to give `epochs` history rows a model."""

    def train() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        results = engine.train(jobs)
        assert all(r.history.shape[0] == epochs for r in results)
        return time.perf_counter() - t, time.process_time() - c

    first = train()
    job_cpu = time.process_time()  # the process so far: imports, loading or compiling, one job
    return first, job_cpu, [train() for _ in range(reps)]


class ExpertJax:
    """expert_jax.py's program for `jobs` as an engine: `train(jobs)` runs the compiled call
    and gives each model's history. The first call compiles both of its forms (over the models
    with vmap and with lax.map) and keeps the faster on a second call of each, as an expert
    would (`chosen`)."""

    def __init__(self, jobs: list, epochs: int) -> None:
        import expert_jax

        self.run = expert_jax.train
        self.prepared = expert_jax.prepare(jobs, epochs)
        self.programs = {
            form: expert_jax.build(self.prepared, form) for form in expert_jax.OVER_MODELS
        }
        self.chosen: str | None = None

    def train(self, jobs: list) -> list:
        from types import SimpleNamespace

        if self.chosen is None:
            cpu = {}
            for form, program in self.programs.items():
                self.run(self.prepared, program)  # compiles
                start = time.process_time()
                self.run(self.prepared, program)
                cpu[form] = time.process_time() - start
            self.chosen = min(cpu, key=cpu.get)
        histories = self.run(self.prepared, self.programs[self.chosen])
        return [SimpleNamespace(history=h) for h in histories]


def train_worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    epochs = epochs_of(args.shape, args.scale)
    jobs = jobs_of(args.shape, epochs)
    if args.engine in CPU_ENGINES:
        os.environ.update(CPU_ENGINES[args.engine])
        from actreg_cli.engines.cpu.engine import CpuEngine

        engine = CpuEngine()
    elif args.engine == "xjax":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        # One core, before XLA sizes its thread pool: its pool's threads spin between the small
        # ops of these programs, which cost 1.5-3x the CPU time of one thread (the tutorial
        # 91 against 33 us a model-epoch, Intel Xeon, 2026-12-05); a second core would run a
        # second process of half the models.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        engine = ExpertJax(jobs, epochs)
    else:
        import tensorflow  # noqa: F401

        from actreg_cli.engines.fused.engine import FusedEngine

        engine = FusedEngine()
    flops = statistics.mean(flops_per_model_epoch(j) for j in jobs)
    (first, _), job_cpu, runs = timed_trainings(engine, jobs, epochs, args.reps)
    model_epochs = len(jobs) * epochs
    return {
        "rss_mb": peak_rss_mb(),
        "first_s": first,
        "job_cpu_s": job_cpu,
        "wall_us": statistics.median(w for w, _ in runs) / model_epochs * 1e6,
        "cpu_us": statistics.median(c for _, c in runs) / model_epochs * 1e6,
        "flops": flops,
        "epochs": epochs,
        "form": getattr(engine, "chosen", None),  # xjax: over the models with vmap or map
    }


def compile_worker(args: argparse.Namespace) -> dict:
    """Compile the cpu engine's loops if Numba's disk cache holds none for this source and
    target (once after an install or update), so that no shape's job below pays for it (which
    shape came first would decide which one did; one signature serves every shape): {compiled:
    whether this process compiled, cpu_s: its CPU}. Where Numba cannot write its cache folder,
    every process compiles anyway."""
    os.environ.update(CPU_ENGINES[args.engine])
    from actreg_cli.engines.cpu import kernel
    from actreg_cli.engines.cpu.engine import CpuEngine

    CpuEngine().train(jobs_of("tutorial", 2)[:1])
    compiled = sum(kernel.train_models.stats.cache_misses.values()) > 0
    return {"compiled": compiled, "cpu_s": time.process_time()}


def sgemm_worker(args: argparse.Namespace) -> dict:
    from bench_cpu_kernel import sgemm_worker as measure

    return measure(args)


# ---------------------------------------------------------------------------------------------
# Driver


def worker(kind: str, args: argparse.Namespace, coretype: str | None = None, **extra) -> dict:
    from bench_cpu_kernel import worker_process

    options = ["--reps", str(args.reps), "--scale", str(args.scale)]
    return worker_process(__file__, kind, options, coretype, **extra)


def main() -> None:
    args = parse_args()
    if args.worker == "train":
        print(json.dumps(train_worker(args)))
        return
    if args.worker == "sgemm":
        print(json.dumps(sgemm_worker(args)))
        return
    if args.worker == "compile":
        print(json.dumps(compile_worker(args)))
        return

    from actreg_cli.engines.base import worker_count
    from actreg_cli.versions import machine_info

    cpu = machine_info()

    engines = args.engines.split(",")
    shapes = args.shapes.split(",")
    unknown = [name for name in shapes if name not in SHAPES]
    unknown += [name for name in engines if name not in (*CPU_ENGINES, *OTHER_ENGINES)]
    if unknown:
        sys.exit(
            f"error: unknown {', '.join(unknown)}; shapes: {', '.join(SHAPES)}; engines: "
            f"{', '.join([*CPU_ENGINES, *OTHER_ENGINES])}"
        )
    start = time.perf_counter()
    print(
        f"# cpu vs fused engine on MLP shapes: {cpu['cpu']}, {worker_count()} workers, "
        f"load average {os.getloadavg()[0]:.2f} at start; {MODELS} models a shape, medians of "
        f"{args.reps} timed calls\n",
        flush=True,
    )
    gflops = worker("sgemm", args)["gflops"]
    # The cpu engine's loops are compiled for AVX2 and FMA on every CPU (engines/cpu/target.py),
    # all but its matrix products where the CPU has AVX-512: the bound of AVX2 code.
    avx2 = worker("sgemm", args, coretype="Haswell")
    avx2_gflops = avx2["gflops"]
    print(
        f"FLOP rate: {gflops:.0f} GFLOP/s (float32 matmul, one thread, measured now); "
        f"{avx2_gflops:.0f} GFLOP/s with AVX2 and FMA alone (OpenBLAS's Haswell kernels: "
        f"the vector width of the cpu engine's loops, and of its matrix products on a CPU "
        f"without AVX-512 or as cpu256; BLAS kernels used: {avx2['architecture']})\n",
        flush=True,
    )
    for engine in (e for e in engines if e in CPU_ENGINES):
        compiled = worker("compile", args, engine=engine)
        print(
            f"{engine} engine's loops: {'compiled' if compiled['compiled'] else 'loaded from disk'}"
            f" first ({compiled['cpu_s']:.1f} s CPU in that process; a compile comes once after "
            "an install or update, and no job below pays for it)\n",
            flush=True,
        )
    header = "| shape | epochs | kFLOP/model-epoch | bound µs | AVX2 bound µs |"
    for engine in engines:
        header += f" {engine} µs CPU | {engine} µs wall | {engine} CPU/bound | {engine} peak MiB |"
    header += " auto picks |"
    rows = [header, "|" + "---|" * (6 + 4 * len(engines))]
    records = []
    for shape in shapes:
        results = {e: worker("train", args, engine=e, shape=shape) for e in engines}
        first = next(iter(results.values()))
        bound_us = first["flops"] / (gflops * 1e9) * 1e6
        aim = TARGET_RATIOS.get(shape, TARGET_RATIO)
        avx2_bound_us = first["flops"] / (avx2_gflops * 1e9) * 1e6
        row = (
            f"| {shape}: {SHAPES[shape][0]} | {first['epochs']} | {first['flops'] / 1e3:,.0f} "
            f"| {bound_us:.2f} | {avx2_bound_us:.2f} |"
        )
        for engine in engines:
            r = results[engine]
            ratio = r["cpu_us"] / bound_us
            verdict = "" if engine not in CPU_ENGINES else (" ok" if ratio <= aim else " over")
            form = f" ({r['form']})" if r.get("form") else ""
            row += (
                f" {r['cpu_us']:,.1f}{form} | {r['wall_us']:,.1f} | {ratio:.1f}x{verdict} "
                f"| {r['rss_mb']:,.0f} |"
            )
        chosen = auto_choice(shape, first["epochs"])
        # What `auto` weighs: the whole job's CPU (start-up, loading or compiling, training),
        # of the engines `auto` can pick (cpu256 is the cpu engine under a setting).
        pickable = [e for e in results if e in ("cpu", "fused")]
        cheaper = min(pickable, key=lambda e: results[e]["job_cpu_s"], default=chosen)
        row += f" {chosen}{'' if chosen == cheaper or len(pickable) < 2 else ' (slower)'} |"
        rows.append(row)
        print(row, flush=True)
        if "cpu" in results:
            others = ", ".join(f"{e} {results[e]['cpu_us']:,.1f} µs" for e in results if e != "cpu")
            records.append(
                record(
                    "1",
                    f"cpu engine, {shape} ({SHAPES[shape][0]})",
                    results["cpu"]["cpu_us"] / bound_us,
                    aim,
                    "x FLOP bound",
                    f"{results['cpu']['cpu_us']:,.1f} µs CPU a model-epoch, bound "
                    f"{bound_us:.2f} µs ({results['cpu']['cpu_us'] / avx2_bound_us:.2f}x the "
                    f"AVX2 bound); {others or 'no other engine measured'}; peak "
                    f"{results['cpu']['rss_mb']:,.0f} MiB",
                )
            )
        if len(pickable) > 1:
            records.append(
                record(
                    "2",
                    f"auto on {shape}: picks {chosen}, measured cheaper for the job {cheaper}",
                    float(chosen != cheaper),
                    0,
                    "slower picks",
                    "the job's process CPU (imports, first call): "
                    + ", ".join(f"{e} {results[e]['job_cpu_s']:.1f} s" for e in pickable),
                )
            )
    print("\n" + "\n".join(rows))
    print(
        f"\ncpu target: CPU / bound <= {TARGET_RATIO:g}x, the tutorial family "
        f"<= {TARGET_RATIOS['tutorial']:g}x (ok / over); auto picks: what `--engine auto` "
        f"chooses for the shape's 30 models (engines/costs.py), '(slower)' where the other "
        f"engine's process took less CPU for the job (imports, loading the cpu engine's loops "
        f"or XLA's compile, the 30 models' first training). "
        f"{time.perf_counter() - start:.0f} s in all."
    )
    write(args.json, records)


def auto_choice(shape: str, epochs: int) -> str:
    """The engine `--engine auto` picks for the shape's models (engines.select_engine)."""
    from actreg_cli.engines import select_engine

    engine, _ = select_engine("auto", [job.config for job in jobs_of(shape, epochs)])
    return engine.name


if __name__ == "__main__":
    run_main(main)
