"""Many Keras models in one JAX program: a prototype of a many-models path for any Keras model.

C copies of one Keras model (same architecture and penalties, C sets of initial weights, each
with its own minibatch order) are trained at once on the JAX backend (KERAS_BACKEND=jax):

  jax.jit(jax.vmap(train))   train: lax.scan over epochs of [lax.scan over the epoch's full
                             minibatches of the model's own `train_step`, then one step on the
                             last partial batch], and after each epoch the model's own
                             `test_step` on the test set and on the validation set (each one
                             batch, as the keras engine evaluates them).

`train_step` and `test_step` are Keras's own stateless steps (`JAXTrainer`, the ones `fit`
jit-compiles): the forward pass through `stateless_call`, the compiled loss plus every
penalty the layers add (activity penalties divided by the batch size as Keras does), Adam's
`stateless_apply`, BatchNormalization's moving statistics and the loss and metric trackers.
So the program computes what `model.fit` computes; `reference_check` holds one model's
history against the keras engine (actreg's `KerasEngine`, model.fit) for the same seed.

Only models of one architecture share a program: cells that differ in their penalties'
placement (a layer split in two) or in the penalties themselves are separate programs (the
strength is baked into the penalty closures); repeats of one cell are the natural batch.

Used by benchmarks/bench_own_model.py (its --worker many); run in a process with
KERAS_BACKEND=jax.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
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


@dataclass
class ModelCopies:
    """C models of one architecture, ready for the vmapped program.

    template: the compiled Keras model whose steps are traced (its own weights unused);
    state: (trainable, non_trainable, optimizer, metrics) variables, each a list of arrays
    with a leading model axis [C, ...]; data: the data set (shared: bundled data splits do
    not depend on the model seed); orders: int32 [C, E, n_train] every epoch's minibatch
    order of every model (weights.epoch_permutation); jobs: the C TrainJobs.
    """

    template: Any
    state: tuple
    data: Any
    orders: np.ndarray
    jobs: list
    batch_size: int


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
    as the engine compiles it: the task's loss and metric, the config's optimizer."""
    import keras

    from actreg_cli.data import job_dataset
    from actreg_cli.engines.keras.engine import build_model, make_optimizer, set_initial_weights
    from actreg_cli.engines.keras.own_model import build_trainable_model
    from actreg_cli.tasks import spec

    config, data = job.config, job_dataset(job.config, job.seed)
    if config.model.is_keras_model:
        model, _ = build_trainable_model(config, data, job.seed)
    else:
        model, _ = build_model(config, data)
        set_initial_weights(model, config, data, job.seed)
    task = spec(data.task)
    model.compile(optimizer=make_optimizer(config), loss=task.loss, metrics=[task.history_metric])
    keras.utils.set_random_seed(0)
    return model


def model_copies(jobs: list) -> ModelCopies:
    """Builds one Keras model per job (the job's initial weights) and stacks their variables."""
    from actreg_cli.data import job_dataset
    from actreg_cli.weights import epoch_permutation, shuffle_seed

    data = job_dataset(jobs[0].config, jobs[0].seed)
    for job in jobs[1:]:  # the vmapped program shares x across models
        other = job_dataset(job.config, job.seed)
        assert np.array_equal(other.x_train, data.x_train), "data differs between seeds"
    template = keras_model(jobs[0])
    # builds the compiled metrics (evaluate changes no weight: BatchNormalization in inference
    # mode) and the optimizer's slots; both start equal in every model (zeros), so they are
    # read from the first model and copied
    template.evaluate(data.shaped(data.x_train[:2]), data.y_train[:2], verbose=0)
    template.optimizer.build(template.trainable_variables)
    for metric in template.metrics:
        metric.reset_state()
    trainable, non_trainable = [], []
    for job in jobs:  # each model's initial weights, drawn as the keras engine draws them
        model = template if job is jobs[0] else keras_model(job)
        trainable.append([np.asarray(v.value) for v in model.trainable_variables])
        non_trainable.append([np.asarray(v.value) for v in model.non_trainable_variables])
    optimizer = [[np.asarray(v.value) for v in template.optimizer.variables]] * len(jobs)
    metrics = [[np.asarray(v.value) for v in template.metrics_variables]] * len(jobs)
    state = tuple(
        [np.stack(values) for values in zip(*group, strict=True)]
        for group in (trainable, non_trainable, optimizer, metrics)
    )
    epochs = jobs[0].config.training.epochs
    orders = np.stack(
        [
            [epoch_permutation(shuffle_seed(job.seed), e, data.n_train) for e in range(epochs)]
            for job in jobs
        ]
    ).astype(np.int32)
    return ModelCopies(template, state, data, orders, jobs, jobs[0].config.training.batch_size)


def many_models_program(copies: ModelCopies):
    """A jitted function (state, orders) -> (state, history float32 [C, E, 6]) training every
    model for E epochs (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    model, data, batch = copies.template, copies.data, copies.batch_size
    x = jnp.asarray(data.shaped(data.x_train))
    y = jnp.asarray(data.y_train)
    evaluations = [
        (jnp.asarray(data.shaped(data.x_test)), jnp.asarray(data.y_test)),
        (jnp.asarray(data.shaped(data.x_val)), jnp.asarray(data.y_val)),
    ]
    n_full = data.n_train // batch
    initial_metrics = [jnp.asarray(v) for v in copies.state[3]]

    def evaluate(trainable, non_trainable, metrics, xs, ys):
        # test_step on the whole set as one batch, from reset trackers
        logs, _ = model.test_step((trainable, non_trainable, metrics), (xs, ys))
        return [logs[k] for k in ("loss", *metric_names(logs))]

    def one_model(state, orders, reset_metrics):
        def epoch(state, order):
            trainable, non_trainable, optimizer, _ = state
            state = (trainable, non_trainable, optimizer, reset_metrics)

            def step(state, rows):
                logs, state = model.train_step(state, (x[rows], y[rows]))
                return state, logs

            state, logs = jax.lax.scan(step, state, order[: n_full * batch].reshape(n_full, -1))
            logs = jax.tree.map(lambda v: v[-1], logs)
            if n_full * batch < data.n_train:  # the last partial batch, as fit keeps it
                rows = order[n_full * batch :]
                logs, state = model.train_step(state, (x[rows], y[rows]))
            row = [logs["loss"], *[logs[k] for k in metric_names(logs)]]
            for xs, ys in evaluations:
                row += evaluate(state[0], state[1], reset_metrics, xs, ys)
            return state, jnp.stack(row)

        return jax.lax.scan(epoch, state, orders)

    def program(state, orders):
        resets = [v[0] for v in initial_metrics]
        return jax.vmap(lambda s, o: one_model(s, o, resets))(state, orders)

    return jax.jit(program)


def metric_names(logs: dict) -> list[str]:
    """The compiled metric's key in a step's logs (every key but 'loss')."""
    return sorted(k for k in logs if k != "loss")


def timed(fn) -> tuple[Any, float, float]:
    """(fn's value, wall s, process CPU s), blocking on JAX's asynchronous results."""
    import jax

    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - wall, time.process_time() - cpu


def reference_check(job, history: np.ndarray) -> dict:
    """One model's vmapped history against the keras engine (model.fit on the JAX backend) for
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
    """Trains `models` copies of the study's first cell for `epochs` epochs twice (the first
    call traces and compiles; building the models is timed after a first model is built), checks model 0 against the keras engine over `check_epochs`
    epochs, and returns the timings per model-epoch (wall and process CPU)."""
    import keras

    assert keras.config.backend() == "jax", "run with KERAS_BACKEND=jax"
    jobs = study_jobs(study, models, epochs)
    # the first Keras model in a process pays one-time costs (imports, backend start-up), as
    # the keras engine's first model does: left out of both sides' timings
    keras_model(jobs[0])
    setup_cpu = time.process_time()
    copies = model_copies(jobs)
    setup_cpu = time.process_time() - setup_cpu
    program = many_models_program(copies)
    (_, history), first_wall, first_cpu = timed(lambda: program(copies.state, copies.orders))
    _, again_wall, again_cpu = timed(lambda: program(copies.state, copies.orders))
    history = np.asarray(history)
    check_job = study_jobs(study, 1, check_epochs)[0]
    check = reference_check(check_job, history[0, :check_epochs])
    model_epochs = models * epochs
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
        "final_test_metric_mean": float(history[:, -1, 3].mean()),
        "finite": bool(np.isfinite(history).all()),
        "check_epochs": check_epochs,
        **check,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batches_per_epoch": math.ceil(copies.data.n_train / copies.batch_size),
    }
