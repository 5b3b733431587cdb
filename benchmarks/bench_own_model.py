"""A Keras model of your own: the shipped study's cost on the keras engine (1 and 2 workers, each
Keras backend) and on the jax engine, model.fit per epoch on each Keras backend, and many models
in one JAX program (the jax engine's), side by side in one run.

Each measurement runs in its own Python process:

  sweep   `actreg sweep configs/own_model_example.yaml --engine keras --workers N` (N = 1, 2;
          on each Keras backend, KERAS_BACKEND=tensorflow and jax), and `--engine jax` (from a
          process on TensorFlow: its chunk trains in one worker process on JAX; and from a
          process on JAX: in that process); a fresh --runs-dir in a temporary folder, so
          nothing is reused: wall, CPU (user + sys of the
          sweep and every process it waited for, from os.wait4) and peak RSS (the largest one
          process, from wait4; and the whole process tree's total, sampled from /proc every
          0.2 s). The two runs' results.csv are compared (the same numbers for any N).
  fit     the shipped study's model (its first cell: L1 before the ReLU on 'hidden'), built
          and compiled as the keras engine builds it, trained by model.fit as the engine calls
          it (minibatches in weights.epoch_permutation order, the validation set, the test set
          after every epoch): per epoch after a warm-up epoch. And the keras engine's whole
          cost per model-epoch (building, compiling or tracing, fit, final evaluation) at the
          study's epochs, for a second model in the process (the first pays one-time costs).
          On each backend (KERAS_BACKEND=tensorflow, jax), one process alone, and on JAX two
          processes at once (what `--workers 2` runs: process-parallel model.fit).
  many    C models of the same cell (C seeds) trained in one jit(map(scan)) program of the
          model's own Keras train_step (the jax engine's program, benchmarks/jax_many_models.py):
          CPU per model-epoch of a compiled call, of the first call (tracing and compiling),
          and one model's history against the keras engine's (model.fit on JAX) for the same
          seed; then the jax engine's whole path (`JaxEngine.train`: building the models,
          compiling, segments of epochs, final evaluation) on the same jobs. Also for the
          digits Conv2D study (configs/digits_conv_l1.yaml's model built as a Keras model).

Run:     python3 benchmarks/bench_own_model.py            (about 15 minutes on 2 busy cores)
         python3 benchmarks/bench_own_model.py --quick    (about 7 minutes: 2 epochs x 2 repeats
                                                           sweeps, 5-epoch fits, C = 4)
Prints markdown tables. Timings on a shared machine vary by 20% or more between runs; CPU time
is printed next to wall time (less sensitive to other load). The issue's bar: the many-models
path is worth an engine if its CPU per model-epoch beats process-parallel model.fit on JAX
by 3x or more.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CONFIG = "configs/own_model_example.yaml"
#: the 3x bar of issue 20: many models in one program against process-parallel model.fit on JAX
ADOPT_RATIO = 3.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sweeps and fits, C = 4")
    parser.add_argument(
        "--models", default=None, help="C values, models per program, comma-separated (5,10)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model (30)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep rows")
    parser.add_argument("--no-digits", action="store_true", help="own-model study only")
    parser.add_argument("--worker", choices=["fit", "many"], help=argparse.SUPPRESS)
    parser.add_argument("--study", default="own_model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = "4" if args.quick else "5,10"
    if args.epochs is None:
        args.epochs = 5 if args.quick else 30
    return args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(fn) -> tuple[float, float]:
    """(wall s, process CPU s) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------------------------------------
# Workers (each in a fresh process; print one JSON line)


def fit_worker(args: argparse.Namespace) -> dict:
    """model.fit per epoch after a warm-up epoch, and the keras engine's cost per model-epoch."""
    import keras
    from jax_many_models import keras_model, study_jobs

    from actreg_cli.data import job_dataset
    from actreg_cli.engines.keras.engine import (
        KerasEngine,
        TestSetHistory,
        epoch_shuffled_batches,
    )

    jobs = study_jobs(args.study, 2, args.epochs)
    KerasEngine().train(jobs[:1])  # the first model in a process pays one-time costs
    engine_wall, engine_cpu = timed(lambda: KerasEngine().train(jobs[1:]))

    job = jobs[0]
    data = job_dataset(job.config, job.seed)
    model = keras_model(job)
    batches = epoch_shuffled_batches(
        data.shaped(data.x_train), data.y_train, job.config.training.batch_size, job.seed
    )
    test = TestSetHistory(data.shaped(data.x_test), data.y_test)
    x_val, y_val = data.shaped(data.x_val), data.y_val

    def fit(epochs: int) -> None:
        model.fit(
            batches,
            validation_data=(x_val, y_val),
            epochs=epochs,
            validation_batch_size=len(y_val),
            shuffle=False,
            verbose=0,
            callbacks=[test.callback(), batches.epoch_callback()],
        )

    fit(1)  # warm-up: tracing the train and test steps
    wall, cpu = timed(lambda: fit(args.epochs))
    return {
        "backend": keras.config.backend(),
        "study": args.study,
        "epochs": args.epochs,
        "fit_wall_per_epoch_s": wall / args.epochs,
        "fit_cpu_per_epoch_s": cpu / args.epochs,
        "engine_wall_per_model_epoch_s": engine_wall / args.epochs,
        "engine_cpu_per_model_epoch_s": engine_cpu / args.epochs,
        "rss_mb": peak_rss_mb(),
    }


def worker_command(kind: str, args: argparse.Namespace, study: str, models: str) -> list[str]:
    return [
        sys.executable, __file__, "--worker", kind, "--study", study,
        "--models", models, "--epochs", str(args.epochs),
    ]  # fmt: skip


def worker_env(backend: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_workers(
    kind: str, args: argparse.Namespace, study: str, backend: str, n: int = 1, models: str = "1"
):
    """n worker processes at once; (their JSON results, wall s of all of them)."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            worker_command(kind, args, study, models),
            env=worker_env(backend),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            sys.exit(f"{kind} worker ({study}, {backend}) failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results, wall


# ---------------------------------------------------------------------------------------------
# The shipped sweep


def has_workers_option() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "sweep", "--help"],
        capture_output=True, text=True, cwd=REPO, env=worker_env("tensorflow"),
    )  # fmt: skip
    return "--workers" in done.stdout


def tree_rss_mb(root: int) -> float:
    """Total resident memory (MB) of process `root` and its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21])  # pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_sweep(
    workers: int, backend: str, args: argparse.Namespace, runs_dir: Path, engine: str = "keras"
) -> dict:
    """One `actreg sweep` of the shipped study on `engine` in a fresh process on a Keras
    backend; wall, CPU, peak RSS."""
    command = [sys.executable, "-m", "actreg_cli", "sweep", CONFIG, "--runs-dir", str(runs_dir)]
    command += ["--workers", str(workers), "--engine", engine]
    if args.quick:
        command += ["--epochs", "2", "--repeats", "2"]
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=REPO, env=worker_env(backend), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    peak_tree = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak_tree[0] = max(peak_tree[0], tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # the pipes are drained by threads, so a full pipe cannot block the sweep
    drained: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda k=k, s=s: drained.__setitem__(k, s.read()))
        for k, s in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    for thread in (*readers, sampler):
        thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"sweep --workers {workers} ({backend}) failed:\n{drained['err'][-4000:]}")
    folder = Path(drained["out"].strip().splitlines()[-1])
    return {
        "workers": workers,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_process_rss_mb": usage.ru_maxrss / 1024,
        "tree_rss_mb": peak_tree[0],
        "folder": folder,
    }


def results_numbers(folder: Path) -> list[dict[str, str]]:
    """results.csv's rows without the columns that differ between runs by design (times)."""
    rows = list(csv.DictReader(io.StringIO((folder / "results.csv").read_text())))
    return [{k: v for k, v in row.items() if "time" not in k and "second" not in k} for row in rows]


def close_results(a: Path, b: Path, rtol: float = 1e-4) -> bool:
    """results.csv of two folders equal in every number to `rtol` (other text equal)."""
    rows_a, rows_b = results_numbers(a), results_numbers(b)
    if len(rows_a) != len(rows_b):
        return False
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for key, value in row_a.items():
            other = row_b.get(key)
            try:
                x, y = float(value), float(other)
            except (TypeError, ValueError):
                if value != other and key not in ("engine", "backend", "hash"):
                    return False
                continue
            if not (abs(x - y) <= rtol * max(abs(x), abs(y)) or x == y or (x != x and y != y)):
                return False
    return True


def study_result(folder: Path) -> str:
    """Each cell's mean test accuracy and mean activation of the probed layer (summary.csv)."""
    rows = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    swept = "regularizers.0.placement"
    parts = []
    for row in rows:
        label = "no penalty" if row["baseline"].lower() == "true" else row.get(swept, row["cell"])
        numbers = [
            f"{name} {float(row[column]):.3f}"
            for name, column in (
                ("test accuracy", "test_accuracy_mean"),
                ("mean activation", "mean_activation_mean"),
            )
            if row.get(column)
        ]
        parts.append(f"{label}: {', '.join(numbers)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Driver


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def main() -> None:
    args = parse_args()
    if args.worker == "fit":
        print(json.dumps(fit_worker(args)))
        return
    if args.worker == "many":
        from jax_many_models import many_worker

        print(json.dumps(many_worker(args.study, int(args.models), args.epochs, args.epochs)))
        return

    from actreg_cli.versions import machine_info

    cpu_model = machine_info()["cpu"]
    print(
        f"# Own Keras model on {os.cpu_count()} CPU cores ({cpu_model}; load average now "
        f"{os.getloadavg()[0]:.2f}); {args.epochs} epochs per model, C = {args.models}"
        f"{' (--quick)' if args.quick else ''}\n",
        flush=True,
    )
    if not args.no_sweep:
        sweep_table(args)
    fit_and_many_tables(args)


def sweep_table(args: argparse.Namespace) -> None:
    print(
        f"## `actreg sweep {CONFIG}`{' --epochs 2 --repeats 2' if args.quick else ''}\n\n"
        "| engine | KERAS_BACKEND | --workers | wall s | CPU s (all processes) "
        "| peak RSS MB, largest process | peak RSS MB, all processes |\n"
        "|---|---|---|---|---|---|---|",
        flush=True,
    )
    if not has_workers_option():
        print("| - | - | 1, 2 | not available: `actreg sweep` has no --workers option | | | |\n")
        return
    with tempfile.TemporaryDirectory(prefix="bench_own_model_") as tmp:
        runs = []
        # the jax engine: from TensorFlow (one worker process on JAX), and from JAX (here)
        cases = [("keras", b, w) for b in ("tensorflow", "jax") for w in (1, 2)]
        cases += [("jax", "tensorflow", 1), ("jax", "jax", 1)]
        for engine, backend, workers in cases:
            folder = Path(tmp) / f"{engine}-{backend}{workers}"
            r = run_sweep(workers, backend, args, folder, engine)
            runs.append(r)
            print(
                f"| {engine} | {backend} | {workers} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                f"{r['max_process_rss_mb']:.0f} | {r['tree_rss_mb']:.0f} |",
                flush=True,
            )
        same = [
            results_numbers(runs[k]["folder"]) == results_numbers(runs[k + 1]["folder"])
            for k in (0, 2)
        ]
        print(
            "\nresults.csv (times left out) the same on 1 and 2 workers: tensorflow "
            f"{'yes' if same[0] else 'NO'}, jax {'yes' if same[1] else 'NO'}.\n"
            f"Result, tensorflow: {study_result(runs[0]['folder'])}.\n"
            f"Result, jax (other initial weights): {study_result(runs[2]['folder'])}.\n"
            f"Result, jax engine: {study_result(runs[4]['folder'])}; results.csv the same as "
            f"the keras engine's on JAX to float rounding: "
            f"{'yes' if close_results(runs[2]['folder'], runs[4]['folder']) else 'NO'}; the "
            f"jax engine's from TensorFlow (a worker) and from JAX (here) the same: "
            f"{'yes' if results_numbers(runs[4]['folder']) == results_numbers(runs[5]['folder']) else 'NO'}.\n",
            flush=True,
        )


def fit_and_many_tables(args: argparse.Namespace) -> None:
    studies = ["own_model"] if args.no_digits else ["own_model", "digits_conv"]
    print(
        "## Per model-epoch, CPU (wall)\n\n"
        "| study | how | processes | model.fit epoch, after warm-up | keras engine, "
        "per model-epoch at "
        f"{args.epochs} epochs (build, compile, fit, evaluate) | peak RSS MB |\n"
        "|---|---|---|---|---|---|",
        flush=True,
    )
    parallel: dict[str, dict] = {}
    for study in studies:
        backends = ["tensorflow", "jax"] if study == "own_model" else ["jax"]
        for backend in backends:
            (r,), _ = run_workers("fit", args, study, backend)
            print(fit_row(study, f"model.fit, {backend}", "1", r), flush=True)
        pair, wall = run_workers("fit", args, study, "jax", n=2)
        for key in ("fit_cpu_per_epoch_s", "engine_cpu_per_model_epoch_s"):
            parallel.setdefault(study, {})[key] = sum(r[key] for r in pair) / 2
        mean = {k: sum(r[k] for r in pair) / 2 for k in pair[0] if k.endswith("_s")}
        mean["rss_mb"] = max(r["rss_mb"] for r in pair)
        print(fit_row(study, "model.fit, jax", f"2 at once ({wall:.0f} s)", mean), flush=True)

    print(
        "\n## Many models in one JAX program (jit(map(scan)) of the model's train_step)\n\n"
        "| study | params | C x epochs | CPU per model-epoch, compiled (wall) "
        "| first call CPU s (trace + compile + train) | building C Keras models, CPU s "
        "| vs model.fit jax x2 epoch (CPU) | vs keras engine jax x2 (CPU, incl. first call) "
        "| jax engine, whole path, CPU per model-epoch | jax engine vs keras engine jax x2 (CPU) "
        "| peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    checks = []
    for study, models in ((s, c) for s in studies for c in args.models.split(",")):
        (m,), _ = run_workers("many", args, study, "jax", models=models)
        model_epochs = m["models"] * m["epochs"]
        whole = (m["first_cpu_s"] + m["setup_cpu_s"]) / model_epochs
        fit_ratio = parallel[study]["fit_cpu_per_epoch_s"] / m["cpu_per_model_epoch_s"]
        engine_ratio = parallel[study]["engine_cpu_per_model_epoch_s"] / whole
        jax_engine = m["engine_cpu_per_model_epoch_s"]
        jax_ratio = parallel[study]["engine_cpu_per_model_epoch_s"] / jax_engine
        print(
            f"| {study} | {m['parameters']} | {m['models']} x {m['epochs']} | "
            f"{ms(m['cpu_per_model_epoch_s'])} ({ms(m['wall_per_model_epoch_s'])}) | "
            f"{m['first_cpu_s']:.1f} | {m['setup_cpu_s']:.1f} | {fit_ratio:.1f}x | "
            f"{engine_ratio:.1f}x | {ms(jax_engine)} | {jax_ratio:.1f}x | {m['rss_mb']:.0f} |",
            flush=True,
        )
        checks.append((study, m, fit_ratio, engine_ratio))
    print()
    for study, m, fit_ratio, engine_ratio in checks:
        columns = ", ".join(f"{k} {v:.1e}" for k, v in m["all_epochs_max_rel_by_column"].items())
        print(
            f"{study}, C = {m['models']}: model 0 against the keras engine (model.fit on JAX, same seed): first-"
            f"epoch loss {m['first_epoch_loss_vmap']:.7f} vs {m['first_epoch_loss_fit']:.7f} "
            f"(relative difference {m['first_epoch_max_rel']:.1e} over the 6 history columns; "
            f"over {m['check_epochs']} epochs: {columns}); history finite: {m['finite']}; "
            f"the engine's (in segments of epochs) bit-identical to one call's: "
            f"{m['engine_same_history']}."
        )
        bar = f"the {ADOPT_RATIO:.0f}x bar"
        verdict = f"meets {bar}" if min(fit_ratio, engine_ratio) >= ADOPT_RATIO else ""
        if max(fit_ratio, engine_ratio) >= ADOPT_RATIO > min(fit_ratio, engine_ratio):
            verdict = f"meets {bar} only in part"
        verdict = verdict or f"does not meet {bar}"
        shipped = shipped_epochs(study)
        at_shipped = whole_ratio(parallel[study], m, args.epochs, shipped)
        print(
            f"{study}, C = {m['models']}: {fit_ratio:.1f}x (epochs alone) and {engine_ratio:.1f}x (whole training, "
            f"first call and model building included) less CPU than process-parallel "
            f"model.fit on JAX: {verdict}. At the study's own "
            f"{shipped} epochs (per-model and per-program costs spread over them, "
            f"extrapolated): {at_shipped:.1f}x."
        )


def shipped_epochs(study: str) -> int:
    """training.epochs of the study's config as shipped."""
    from jax_many_models import STUDIES

    from actreg_cli.config import load_sweep

    return load_sweep(REPO / STUDIES[study]).base.training.epochs


def whole_ratio(fit: dict, many: dict, epochs: int, at_epochs: int) -> float:
    """CPU per model-epoch of the keras engine on JAX over that of the many-models program,
    for models of `at_epochs` epochs: each side's fixed costs (the engine's per model: building,
    tracing, evaluating; the program's: building C models, tracing and compiling) measured at
    `epochs` and spread over `at_epochs` instead."""
    fit_epoch = fit["fit_cpu_per_epoch_s"]
    per_model = (fit["engine_cpu_per_model_epoch_s"] - fit_epoch) * epochs
    engine = fit_epoch + per_model / at_epochs
    models = many["models"]
    compiled = many["cpu_per_model_epoch_s"]
    fixed = many["first_cpu_s"] + many["setup_cpu_s"] - many["compiled_cpu_s"]
    return engine / (compiled + fixed / (models * at_epochs))


def fit_row(study: str, how: str, processes: str, r: dict) -> str:
    return (
        f"| {study} | {how} | {processes} | {ms(r['fit_cpu_per_epoch_s'])} "
        f"({ms(r['fit_wall_per_epoch_s'])}) | {ms(r['engine_cpu_per_model_epoch_s'])} "
        f"({ms(r['engine_wall_per_model_epoch_s'])}) | {r['rss_mb']:.0f} |"
    )


if __name__ == "__main__":
    main()
