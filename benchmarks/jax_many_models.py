"""Many Keras models in one JAX program: the jax engine's program (actreg_cli/engines/jax/),
measured on its own and as the whole engine.

C copies of one Keras model (same architecture and penalties, C sets of initial weights, each
with its own minibatch order) are trained at once on the JAX backend (KERAS_BACKEND=jax):

  jax.jit(map(train))        map: over the models (lax.map; engines/jax/program.py
                             `over_models`, `VECTORIZED` for jax.vmap); train: lax.scan over
                             epochs of [lax.scan over the epoch's full
                             minibatches of the model's own `train_step`, then one step on the
                             last partial batch], and after each epoch the model's own
                             `test_step` on the test set and on the validation set (each one
                             batch, as the keras engine evaluates them).

The program is the engine's (`engines/jax/program.py`: `model_copies`, `segment_program`),
here called once for all epochs (one segment) so that a compiled call can be timed alone;
`many_worker` also times `JaxEngine.train` as actreg runs it (building the C models, compiling,
segments of epochs with progress, the final evaluation). `reference_check` holds one model's
history against the keras engine (`model.fit` on JAX) for the same seed.

Used by benchmarks/bench_own_model.py (its --worker many); run in a process with
KERAS_BACKEND=jax.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: the studies the prototype trains, each its first cell that is not the baseline: L1 before
#: the ReLU on the residual MLP with BatchNormalization (own model), and on the digits Conv2D
STUDIES = {
    "own_model": "configs/own_model_example.yaml",
    "digits_conv": "configs/digits_conv_l1.yaml",
}

#: history columns of a run with a validation set (engines/base.py, history_from_totals)
HISTORY_COLUMNS = ("loss", "metric", "test_loss", "test_metric", "val_loss", "val_metric")


def study_jobs(study: str, models: int, epochs: int) -> list:
    """`models` TrainJobs of the study's first cell at `epochs` epochs: its repeats' seeds
    (repeat_seeds from training.seed), as many repeats as models."""
    from actreg_cli.config import load_sweep
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.study.sweep.grid import expand_grid
    from actreg_cli.weights import repeat_seeds

    sweep = load_sweep(REPO / STUDIES[study])
    cell = next(c for c in expand_grid(sweep) if not c.baseline)
    training = cell.config.training.model_copy(update={"epochs": epochs})
    config = cell.config.model_copy(update={"training": training})
    return [TrainJob(config, seed) for seed in repeat_seeds(training.seed, models)]


def keras_model(job) -> Any:
    """The model the keras engine trains for `job` (its weights for the job's seed), compiled
    as the engine compiles it (the jax engine builds its models with the same function)."""
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.jax.program import keras_engine_model

    return keras_engine_model(job, job_dataset(job.config, job.seed))[0]


def many_models_program(jobs: list):
    """(copies, a function () -> (state, history float32 [C, E, 6])) training every model for
    all E epochs in one call of the engine's segment program."""
    import jax.numpy as jnp

    from actreg_cli.engines.jax.engine import jax_tree
    from actreg_cli.engines.jax.program import model_copies, segment_program

    copies = model_copies(jobs)
    program = segment_program(copies, None)
    epochs = jobs[0].config.training.epochs
    state = jax_tree(copies.state)
    orders = jnp.asarray(copies.orders(0, epochs))
    span = jnp.arange(epochs, dtype=jnp.int32)

    def run():
        new_state, _, _, rows = program(state, None, None, orders, span)
        return new_state, rows

    return copies, run


def timed(fn) -> tuple[Any, float, float]:
    """(fn's value, wall s, process CPU s), blocking on JAX's asynchronous results."""
    import jax

    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - wall, time.process_time() - cpu


def reference_check(job, history: np.ndarray) -> dict:
    """One model's history from the program against the keras engine (model.fit on the JAX backend) for
    the same job: the largest relative difference in the first epoch and over all epochs, per
    column; history float [E, 6] in HISTORY_COLUMNS order."""
    from actreg_cli.engines.keras.engine import KerasEngine

    (result,) = KerasEngine().train([job])
    ref = np.asarray(result.history, dtype=np.float64)
    got = np.asarray(history, dtype=np.float64)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)
    return {
        "first_epoch_loss_fit": float(ref[0, 0]),
        "first_epoch_loss_vmap": float(got[0, 0]),
        "first_epoch_max_rel": float(rel[0].max()),
        "all_epochs_max_rel": float(rel.max()),
        "all_epochs_max_rel_by_column": dict(
            zip(HISTORY_COLUMNS, rel.max(0).tolist(), strict=True)
        ),
    }


def many_worker(study: str, models: int, epochs: int, check_epochs: int) -> dict:
    """Trains `models` copies of the study's first cell for `epochs` epochs twice in one call of
    the engine's program (the first call traces and compiles; building the models is timed
    after a first model is built), checks model 0 against the keras engine over `check_epochs`
    epochs, then times the whole engine (`JaxEngine.train`: building, compiling, segments,
    final evaluation) on the same jobs; returns the timings per model-epoch (wall, process CPU)."""
    import keras

    from actreg_cli.engines.jax.engine import JaxEngine

    assert keras.config.backend() == "jax", "run with KERAS_BACKEND=jax"
    jobs = study_jobs(study, models, epochs)
    # the first Keras model in a process pays one-time costs (imports, backend start-up), as
    # the keras engine's first model does: left out of both sides' timings
    keras_model(jobs[0])
    setup_cpu = time.process_time()
    copies, program = many_models_program(jobs)
    setup_cpu = time.process_time() - setup_cpu
    (_, history), first_wall, first_cpu = timed(program)
    _, again_wall, again_cpu = timed(program)
    history = np.asarray(history)
    check_job = study_jobs(study, 1, check_epochs)[0]
    check = reference_check(check_job, history[0, :check_epochs])
    model_epochs = models * epochs
    results, engine_wall, engine_cpu = timed(lambda: JaxEngine().train(jobs))
    engine_history = np.stack([r.history for r in results])
    return {
        "study": study,
        "models": models,
        "epochs": epochs,
        "parameters": int(copies.template.count_params()),
        "setup_cpu_s": setup_cpu,
        "first_wall_s": first_wall,
        "first_cpu_s": first_cpu,
        "compiled_wall_s": again_wall,
        "compiled_cpu_s": again_cpu,
        "cpu_per_model_epoch_s": again_cpu / model_epochs,
        "wall_per_model_epoch_s": again_wall / model_epochs,
        "first_cpu_per_model_epoch_s": first_cpu / model_epochs,
        "engine_wall_s": engine_wall,
        "engine_cpu_s": engine_cpu,
        "engine_cpu_per_model_epoch_s": engine_cpu / model_epochs,
        "engine_same_history": bool(np.array_equal(engine_history, history)),
        "final_test_metric_mean": float(history[:, -1, 3].mean()),
        "finite": bool(np.isfinite(history).all()),
        "check_epochs": check_epochs,
        **check,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batches_per_epoch": math.ceil(copies.data.n_train / copies.batch),
    }
