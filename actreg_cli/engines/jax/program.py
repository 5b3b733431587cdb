"""The jax engine's program: C Keras models of one architecture (C seeds: their own initial
weights, minibatch orders and Dropout generators) trained at once on Keras's JAX backend.

  jax.jit(over_models(segment)) segment: lax.scan over a segment's epochs of [lax.scan over the
                               epoch's full minibatches of the model's own `train_step`, then
                               one step on the last partial batch], and after each epoch the
                               model's own `test_step` on the test set and on the validation
                               set (each as one batch, as the keras engine evaluates them);
                               with early stopping, Keras's callback per model (stopping.py).

`train_step` and `test_step` are Keras's own stateless steps (`JAXTrainer`, the ones `fit`
jit-compiles): the forward pass through `stateless_call`, the compiled loss plus every penalty
the layers add (an activity penalty divided by the batch size as Keras divides it), the
optimizer's `stateless_apply`, BatchNormalization's moving statistics, Dropout's seed generator
state, and the loss and metric trackers. So the program computes what `model.fit` computes, for
every model the keras engine builds (a Keras model of your own, YAML layer lists and MLPs).

A model's variables are in four lists (trainable, non-trainable, optimizer, metrics), each array
with a leading model axis [C, ...]. Penalty strengths are baked into the layers' closures, so only
models of one config (all but the seed) share a program; the group's repeats are the batch. The
data sets are the program's constants, shared by its models; with `data.resample` each repeat
has its own split (of the same shapes), so they are arguments with a model axis instead, and a
cell's repeats still share one program (compiling one per repeat cost ~2 s of CPU each:
sweep_breast_cancer's 250 models took 496 s at 3 epochs).

`over_models` runs the models one after another inside the compiled program (`lax.map`), not
vectorized (`jax.vmap`): vmapped, XLA picks other kernels for another number of models, so a
model's last bits depended on its group (measured: 6e-8 on a loss after 3 epochs, grown to
1e-4 relative after 30 epochs in 1 of the own-model study's 15 models, chaotic as training
is), while mapped, a model trains to the same bits alone and in any group. The price, measured
on the own-model study (2,209 weights, C = 5, 30 epochs, shared 2-core EPYC): 0.30 ms instead
of 0.21 ms CPU a compiled model-epoch, next to ~18-35 ms a model-epoch of fixed costs
(building the Keras models, compiling, the final evaluation). VECTORIZED switches back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from actreg_cli.config import EarlyStoppingConfig
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.jax import stopping
from actreg_cli.models.keras_on_jax import set_random_seed
from actreg_cli.tasks import spec
from actreg_cli.weights import epoch_permutation, shuffle_seed

#: Vectorize over models (jax.vmap) instead of mapping (lax.map); see the module docstring.
VECTORIZED = False


def over_models(one_model, shared: int = 0):
    """`one_model` applied to every model: its arguments but the last `shared` carry a leading
    model axis [C, ...] (pytrees), the last `shared` are the same for every model; so are its
    results. lax.map (models in turn, each to the bits it gets alone) unless VECTORIZED."""
    import jax

    if VECTORIZED:
        n = one_model.__code__.co_argcount
        return jax.vmap(one_model, in_axes=(0,) * (n - shared) + (None,) * shared)

    def mapped(*args):
        per_model, common = args[: len(args) - shared], args[len(args) - shared :]
        return jax.lax.map(lambda a: one_model(*a, *common), per_model)

    return mapped


def keras_engine_model(job: TrainJob, data: Dataset) -> tuple[Any, Any]:
    """(model, probe) for `job`, built, seeded and compiled with the very calls the keras engine
    makes in the same order (engines/keras/engine.py `_train_one`): a Keras model of your own
    from `build_trainable_model` (Keras's initializers under the job's seed), then
    `set_random_seed(shuffle_seed(seed))` (models/keras_on_jax.py); a YAML model after that
    seeding (its Dropout layers draw their generator's seed from it), with
    `weights.initial_weights`."""

    from actreg_cli.engines.keras.engine import build_model, make_optimizer, set_initial_weights
    from actreg_cli.engines.keras.own_model import build_trainable_model

    config = job.config
    if config.model.is_keras_model:
        model, probe = build_trainable_model(config, data, job.seed)
    set_random_seed(shuffle_seed(job.seed))
    if not config.model.is_keras_model:
        model, probe = build_model(config, data)
        set_initial_weights(model, config, data, job.seed)
    task = spec(data.task)
    model.compile(optimizer=make_optimizer(config), loss=task.loss, metrics=[task.history_metric])
    return model, probe


@dataclass
class ModelCopies:
    """C models of one config, ready for the program.

    template: the first job's compiled Keras model, whose steps are traced (the program passes
      every model's variables in); probe: its probe model (the probed layer's output);
    state: (trainable, non_trainable, optimizer, metrics), lists of numpy arrays [C, ...];
    data: the first job's data set (its shapes, task and sizes are every job's); datasets: each
    job's own (the same object for all without `data.resample`: a split that does not depend
    on the seed); jobs: the C TrainJobs; batch: the batch size (at most n_train).
    """

    template: Any
    probe: Any
    state: tuple
    data: Dataset
    datasets: list[Dataset]
    jobs: list[TrainJob]
    batch: int

    @property
    def per_model_data(self) -> bool:
        """Whether the models train on data sets of their own (`data.resample`)."""
        return self.jobs[0].config.data.resample

    @cached_property
    def data_sets(self) -> tuple:
        """(x_train, y_train, x_test, y_test[, x_val, y_val]) as JAX arrays (x `shaped`): the
        shared data set's [n, ...], or with `per_model_data` each job's stacked [C, n, ...];
        made once for the group's programs."""
        import jax.numpy as jnp

        def arrays(d: Dataset) -> list[np.ndarray]:
            found = [d.shaped(d.x_train), d.y_train, d.shaped(d.x_test), d.y_test]
            if d.has_validation:
                found += [d.shaped(d.x_val), d.y_val]
            return found

        if not self.per_model_data:
            return tuple(jnp.asarray(a) for a in arrays(self.data))
        per_job = [arrays(d) for d in self.datasets]
        return tuple(jnp.asarray(np.stack(column)) for column in zip(*per_job, strict=True))

    @property
    def shuffled(self) -> bool:
        """The keras engine's rule: epoch_permutation order when shuffling with more than one
        batch, else the rows in order."""
        return self.jobs[0].config.training.shuffle and self.batch < self.data.n_train

    def orders(self, start: int, stop: int) -> np.ndarray:
        """int32 [C, stop - start, n_train]: epochs start..stop-1's minibatch order of every
        model (weights.epoch_permutation of its shuffle seed, or the rows in order)."""
        n = self.data.n_train
        if not self.shuffled:
            return np.broadcast_to(
                np.arange(n, dtype=np.int32), (len(self.jobs), stop - start, n)
            ).copy()
        return np.stack(
            [
                [epoch_permutation(shuffle_seed(job.seed), e, n) for e in range(start, stop)]
                for job in self.jobs
            ]
        ).astype(np.int32)


def model_copies(jobs: list[TrainJob]) -> ModelCopies:
    """Build one Keras model per job (`keras_engine_model`) and stack their variables. The
    optimizer's slots and the metric trackers start equal in every model (zeros, the config's
    learning rate), so they are read from the first model."""
    data = job_dataset(jobs[0].config, jobs[0].seed)
    datasets = [data] * len(jobs)
    if jobs[0].config.data.resample:  # each repeat its own split
        datasets = [job_dataset(job.config, job.seed) for job in jobs]
    template, probe = keras_engine_model(jobs[0], data)
    # builds the compiled metrics' variables; evaluation changes no weight (BatchNormalization
    # in inference mode, Dropout off)
    template.evaluate(data.shaped(data.x_train[:2]), data.y_train[:2], verbose=0)
    template.optimizer.build(template.trainable_variables)
    for metric in template.metrics:
        metric.reset_state()
    trainable, non_trainable = [], []
    for job, own in zip(jobs, datasets, strict=True):
        model = template if job is jobs[0] else keras_engine_model(job, own)[0]
        trainable.append([np.asarray(v.value) for v in model.trainable_variables])
        non_trainable.append([np.asarray(v.value) for v in model.non_trainable_variables])
    optimizer = [[np.asarray(v.value) for v in template.optimizer.variables]] * len(jobs)
    metrics = [[np.asarray(v.value) for v in template.metrics_variables]] * len(jobs)
    state = tuple(
        [np.stack(values) for values in zip(*group, strict=True)]
        for group in (trainable, non_trainable, optimizer, metrics)
    )
    batch = min(jobs[0].config.training.batch_size, data.n_train)
    return ModelCopies(template, probe, state, data, datasets, list(jobs), batch)


def metric_logs(logs: dict) -> list:
    """[loss, the compiled metric] of a step's logs (the metric: the one key but 'loss')."""
    names = sorted(k for k in logs if k != "loss")
    if len(names) != 1:
        raise AssertionError(f"expected one compiled metric in Keras's logs, got {names}")
    return [logs["loss"], logs[names[0]]]


def tree_where(condition, new, old):
    """`new` where the (scalar) condition holds, else `old`, leaf by leaf."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def segment_program(copies: ModelCopies, early_stopping: EarlyStoppingConfig | None):
    """A jitted function (state, stop, kept, orders, epochs) -> (state, stop, kept, rows).

    state: the four variable lists [C, ...]; stop: stopping.StopState [C] (None without early
    stopping); kept: (trainable, non_trainable) [C, ...], each model's best weights so far
    (None unless restore_best_weights); orders int32 [C, S, n_train]; epochs int32 [S], the
    segment's epoch numbers. rows float32 [C, S, 4 or 6]: per epoch (loss, metric) as Keras's
    running means over the epoch's batches, then the test set's (loss, metric) and, with a
    validation set, the validation set's, on the end-of-epoch weights (tasks.history_columns).
    One compiled program per segment length. The data sets are constants, or with
    `copies.per_model_data` each model's own, passed in (`ModelCopies.data_sets`).
    """
    import jax
    import jax.numpy as jnp

    model, data, batch = copies.template, copies.data, copies.batch
    sets = copies.data_sets
    n_full = data.n_train // batch  # >= 1: batch <= n_train
    resets = [jnp.asarray(v[0]) for v in copies.state[3]]  # the trackers from zero
    restore = early_stopping is not None and early_stopping.restore_best_weights

    def one_model(state, stop, kept, orders, epochs, sets):
        x, y, *rest = sets
        evaluations = [tuple(rest[i : i + 2]) for i in range(0, len(rest), 2)]

        def epoch(carry, inputs):
            state, stop, kept = carry
            order, at = inputs
            trainable, non_trainable, optimizer, _ = state
            new = (trainable, non_trainable, optimizer, resets)  # fit resets them every epoch

            def step(state, rows):
                logs, state = model.train_step(state, (x[rows], y[rows]))
                return state, logs

            full = order[: n_full * batch].reshape(n_full, batch)
            new, logs = jax.lax.scan(step, new, full)
            logs = jax.tree.map(lambda v: v[-1], logs)
            if n_full * batch < data.n_train:  # the last partial batch, as fit keeps it
                rows = order[n_full * batch :]
                logs, new = model.train_step(new, (x[rows], y[rows]))
            row = metric_logs(logs)
            for xs, ys in evaluations:  # each set as one batch, from reset trackers
                logs, _ = model.test_step((new[0], new[1], resets), (xs, ys))
                row += metric_logs(logs)
            if early_stopping is not None:
                column = 4 if early_stopping.monitor == "val_loss" else 5
                stop, improved, running = stopping.watch(early_stopping, stop, row[column], at)
                state = tree_where(running, new, state)  # a stopped model keeps its weights
                if restore:
                    kept = tree_where(improved, (new[0], new[1]), kept)
            else:
                state = new
            return (state, stop, kept), jnp.stack(row)

        (state, stop, kept), rows = jax.lax.scan(epoch, (state, stop, kept), (orders, epochs))
        return state, stop, kept, rows

    if not copies.per_model_data:  # the data sets as constants of the program

        def shared_data(state, stop, kept, orders, epochs):
            return one_model(state, stop, kept, orders, epochs, sets)

        return jax.jit(over_models(shared_data, shared=1))

    def own_data(state, stop, kept, orders, sets, epochs):
        return one_model(state, stop, kept, orders, epochs, sets)

    program = jax.jit(over_models(own_data, shared=1))
    return lambda state, stop, kept, orders, epochs: program(
        state, stop, kept, orders, sets, epochs
    )


@dataclass
class FinalEvaluation:
    """What the keras engine computes on the final weights, for C models (numpy).

    train_loss, test_loss float32 [C]: `model.evaluate` with each set as one batch (penalties
    included); outputs_train [C, n_train, K], outputs_test [C, n_test, K]: `model(x,
    training=False)`; hidden [C, n_test, ...]: the probe model's output on the test set.
    """

    train_loss: np.ndarray
    test_loss: np.ndarray
    outputs_train: np.ndarray
    outputs_test: np.ndarray
    hidden: np.ndarray


def final_evaluation(copies: ModelCopies, trainable: list, non_trainable: list) -> FinalEvaluation:
    """Evaluate every model's final weights (lists of arrays [C, ...]) in one jitted program:
    Keras's own `test_step` (the loss `evaluate` reports) and `stateless_call` in inference
    mode (the outputs and the probed layer's output)."""
    import jax
    import jax.numpy as jnp

    model, probe = copies.template, copies.probe
    sets = copies.data_sets[:4]  # train and test (the validation set's results: the history)
    resets = [jnp.asarray(v[0]) for v in copies.state[3]]
    # the probe model's variables are the model's own (the same objects): found by identity
    trainable_at = variable_positions(probe.trainable_variables, model.trainable_variables)
    non_trainable_at = variable_positions(
        probe.non_trainable_variables, model.non_trainable_variables
    )

    def one_model(trainable, non_trainable, sets):
        x_train, y_train, x_test, y_test = sets
        losses = [
            model.test_step((trainable, non_trainable, resets), (xs, ys))[0]["loss"]
            for xs, ys in ((x_train, y_train), (x_test, y_test))
        ]
        outputs = [
            model.stateless_call(trainable, non_trainable, xs, training=False)[0]
            for xs in (x_train, x_test)
        ]
        hidden, _ = probe.stateless_call(
            [trainable[i] for i in trainable_at],
            [non_trainable[i] for i in non_trainable_at],
            x_test,
            training=False,
        )
        return (*losses, *outputs, hidden)

    if copies.per_model_data:
        values = jax.jit(over_models(one_model))(trainable, non_trainable, sets)
    else:

        def shared_data(trainable, non_trainable):
            return one_model(trainable, non_trainable, sets)

        values = jax.jit(over_models(shared_data))(trainable, non_trainable)
    return FinalEvaluation(*(np.asarray(v) for v in values))


def variable_positions(wanted: list, among: list) -> list[int]:
    """Index in `among` of each variable of `wanted` (by identity)."""
    where = {id(v): i for i, v in enumerate(among)}
    return [where[id(v)] for v in wanted]
