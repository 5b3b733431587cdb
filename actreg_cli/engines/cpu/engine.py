"""The cpu engine: MLPs, Conv2D networks and LSTM networks trained by hand-fused loops compiled
with Numba, one model per thread.

It computes what `fused.FusedEngine` computes (the same Keras semantics, the same per-epoch
totals turned into a TrainResult by `base.result_from_totals`), but as plain loops compiled
ahead of the first call and cached on disk (`kernel.py`): a model's parameters and Adam
state stay in cache for all its epochs, nothing of shape [batch, units] is stored (the tutorial
family's rows are SIMD lanes; other MLPs run blocks of 16 rows), and there is no per-kernel
dispatch. Threads split models (prange over the models of a group), never epochs; a lone model
is trained alone (no padding copy). Neither TensorFlow nor Keras is imported.

Compiled code: Numba's `cache=True` writes it beside the modules here (`__pycache__`), or, when
the installed package's folder is read-only, under the user's cache folder (Numba's own
fallback); `NUMBA_CACHE_DIR` chooses another place. A second process compiles nothing.

Covers: dense layers of any widths, relu/tanh/sigmoid/elu, adam/sgd, every built-in penalty
(kernel, bias, activity before/after the activation, batch_mean/batch_sum, L1/L2/L1_L2), full
batch and minibatches (shuffled every epoch by `weights.epoch_permutation`, compiled as it is
written, so the batches are the keras and fused engines' batches), the binary, multiclass and
regression tasks (tasks.py), on any flat data set `actreg_cli.data` loads (generated, bundled,
CSV, NPZ; any split; `resample: true` trains each repeat on its own data, one kernel call per
data set), with a validation set (its val_* history columns, evaluated as the test set is) and
early stopping (Keras's EarlyStopping, per model inside the loop: stopping.py; a stopped model
ends its own loop, not the others'). What the fused MLP program trains, the cpu engine trains.
Of layer lists (network_plan.py; the same tasks, penalties, batches, validation and early
stopping), a Conv2D network (conv2d, an optional max_pool2d, flatten: kernel.train_conv_models,
conv_loop.py) and an LSTM network (one lstm layer: kernel.train_lstm_models, lstm_loop.py),
each in its own compiled entry. Not: custom regularizers (any Python function; Numba cannot
compile it), dropout, reconstruction, and other layer lists (`unsupported_reason`).
The tutorial's circles and moons load without scikit-learn (data/generated.py restates them).

Float rounding: sums run in another order than TensorFlow's or XLA's kernels (over units or
rows in SIMD lanes), and exp, log1p, tanh are polynomials within 1-3 ulp, so losses agree with
the other engines to ~1e-6 relative after one step and drift to ~1e-4 after a few hundred Adam
steps, as the fused engine does. Subnormal numbers flush to 0, as in TensorFlow.
A model's numbers do not depend on the other models of the call or on the thread count.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from actreg_cli.config import EarlyStoppingConfig, ExperimentConfig, Norm
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import (
    PROBE_SAMPLE_ROWS,
    ProgressCallback,
    Stop,
    TrainJob,
    TrainResult,
    checked_stop,
    layers_result,
    mlp_shape_key,
    monitored_column,
    result_from_totals,
    train_grouped,
    worker_count,
)
from actreg_cli.engines.cpu import codes
from actreg_cli.engines.cpu.codes import ACTIVATIONS, OPTIMIZERS, TASKS
from actreg_cli.engines.cpu.network_plan import (
    WINDOW_BUDGET,
    conv_geometry,
    lstm_geometry,
    network_kind,
    network_reason,
    window_floats,
)
from actreg_cli.engines.cpu.target import choice as target_choice
from actreg_cli.engines.cpu.target import vector_choice
from actreg_cli.engines.penalties import coefficients, penalty_table
from actreg_cli.models.plan import config_plan
from actreg_cli.tasks import output_units
from actreg_cli.weights import initial_weights, layer_initial_weights, layer_sizes, shuffle_seed

T = TypeVar("T")


def unsupported_reason(config: ExperimentConfig) -> str | None:
    """Why the cpu engine cannot train `config` (one line), or None."""
    if importlib.util.find_spec("numba") is None:  # a declared dependency, but say so if absent
        return "numba is not installed (pip install numba)"
    if (reason := config.mlp_shorthand_reason) is not None:
        if config.model.layers is None or config.model.is_keras_model:
            return reason
        if (reason := network_reason(config)) is not None:
            return reason
    for _, reg in config.all_regularizers:
        if reg.norm is Norm.custom:
            return f"custom regularizer '{reg.function}' cannot be compiled by the cpu engine"
    return None


def compile_note(configs: Sequence[ExperimentConfig] = ()) -> str | None:
    """One line for the command line to show before training when Numba's disk cache holds no
    compiled loop for this version of the loops that `configs` need (the MLP loops of
    kernel.train_models, the Conv2D loop of kernel.train_conv_models, the LSTM loop of
    train_lstm_models, each compiled on its first use; no configs: the MLP loops): after an install or an update, the first call then
    compiles for about a minute, which a progress bar would show as a stall. None when they
    are cached, or when Numba's cache internals cannot be read (then nothing is guessed). A
    cached entry holds every function it calls, from every module of the loops: loaded, it
    compiles nothing else."""
    from actreg_cli.engines.cpu import kernel as cpu_kernel

    kinds = {network_kind(config) for config in configs}
    mlp = not configs or None in kinds
    entries = [cpu_kernel.train_models] * mlp + [
        {"conv": cpu_kernel.train_conv_models, "lstm": cpu_kernel.train_lstm_models}[kind]
        for kind in sorted(kinds - {None})
    ]
    try:  # Numba's own check: an index written for the module's stamp, with an entry compiled
        # for this target (engines/cpu/target.py; an index key is (signature, target, ...))
        from numba.core.registry import cpu_target

        target = cpu_target.target_context.codegen().magic_tuple()
        cached = [entry._cache._cache_file._load_index() for entry in entries]
        if all(any(isinstance(key, tuple) and target in key for key in index) for index in cached):
            return None
    except Exception:  # noqa: BLE001 (private API of another package; a note is not worth a crash)
        return None
    names = {"conv": "Conv2D", "lstm": "LSTM"}
    network = " and ".join(names[kind] for kind in sorted(kinds - {None}))
    what, them = ("training loops", "them") if mlp else (f"{network} loop", "it")
    return (
        f"the cpu engine compiles its {what} first (up to about a minute, once after an "
        f"install or update; later runs load {them} from disk)"
    )


def flat_initial_weights(config: ExperimentConfig, seed: int, data: Dataset) -> np.ndarray:
    """float32 [P]: weights.initial_weights in the kernel's layout (per hidden layer kernel
    [fan_in, units] row-major then bias; then the output kernel transposed, [n_out,
    units_last], and bias [n_out]), for a network on `data` (its features and task)."""
    n_out = output_units(data.task, data.n_classes)
    sizes = layer_sizes(data.n_features, list(config.model.hidden_units), n_out)
    *hidden, (out_kernel, out_bias) = initial_weights(sizes, seed)
    parts = [part.ravel() for pair in hidden for part in pair]
    return np.concatenate([*parts, out_kernel.T.ravel(), out_bias]).astype(np.float32)


def group_key(job: TrainJob) -> tuple:
    """Jobs with equal keys train in one compiled call: an MLP's `mlp_shape_key`, or a layer
    list's data, layers (without their penalties: those are per-model factors), optimizer,
    epochs, effective batch size and shuffling."""
    config = job.config
    if config.model.layers is None:
        return ("mlp", *mlp_shape_key(job))
    t = config.training
    n_train = job_dataset(config, job.seed).n_train
    batch = min(t.batch_size, n_train)
    layers = [
        layer.model_dump(mode="json", exclude={"regularizers"}) for layer in config.model.layers
    ]
    return (
        "layers",
        config.data.model_dump_json(),
        job.seed if config.data.resample else None,
        repr(layers),
        t.optimizer,
        t.epochs,
        batch,
        t.shuffle and batch < n_train,
    )


def model_stopping(
    config: EarlyStoppingConfig | None, rows: np.ndarray, trained: np.ndarray, data: Dataset
) -> Stop | None:
    """One model's early stopping as its loop ended it (`base.checked_stop`); None when it was
    not watched."""
    if config is None:
        return None
    return checked_stop("cpu", config, rows, trained, (data.n_train, data.n_test, data.n_val))


def stopping_settings(config: EarlyStoppingConfig | None) -> np.ndarray:
    """float64 [codes.STOP_SETTINGS]: one model's early stopping as the kernel reads it
    (stopping.py); all 0 (not watched) for None."""
    settings = np.zeros(codes.STOP_SETTINGS, np.float64)
    if config is None:
        return settings
    settings[codes.STOP_ON] = 1
    settings[codes.STOP_COLUMN] = monitored_column(config)
    settings[codes.STOP_HIGHER] = config.higher_is_better
    settings[codes.STOP_MIN_DELTA] = config.min_delta
    settings[codes.STOP_PATIENCE] = config.patience
    settings[codes.STOP_RESTORE] = config.restore_best_weights
    settings[codes.STOP_START] = config.start_from_epoch
    return settings


#: Seconds Ctrl-C waits for the compiled loops to see the stop flag (each model checks it
#: before every epoch and minibatch) before it is raised anyway.
STOP_WAIT_S = 1.0


class _KernelThread:
    """The one thread every compiled call of this process runs in (`run_stoppable`).

    The compiled loops run their models on an OpenMP team, and OpenMP keeps a team per calling
    thread: a new thread a call gave every call a new team, while the last call's workers still
    spun for their next task (OpenMP's wait policy) on the same two cores. Measured on 30
    [64,32] models in 4 calls (benchmarks/bench_cpu_mlp.py's circles64x32): 0.09-0.10 s wall
    and 0.15 s CPU with a thread a call, 0.058 s and 0.114 s with this one thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._pid = -1

    def submit(self, call: Callable[[], Any]) -> tuple[threading.Event, dict[str, Any]]:
        """Queue `call`; the event is set once outcome holds its "value" or "error"."""
        with self._lock:
            if self._pid != os.getpid():  # first call, or a forked child: no thread here yet
                self._tasks = queue.SimpleQueue()
                threading.Thread(target=self._serve, name="actreg-cpu-kernel", daemon=True).start()
                self._pid = os.getpid()
        done = threading.Event()
        outcome: dict[str, Any] = {}
        self._tasks.put((call, done, outcome))
        return done, outcome

    def _serve(self) -> None:
        tasks = self._tasks
        while True:
            call, done, outcome = tasks.get()
            try:
                outcome["value"] = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc
            done.set()


_KERNEL_THREAD = _KernelThread()


#: The exit status of a process that ends while an interrupted call still runs (Ctrl-C's).
INTERRUPTED_EXIT = 130


def _exit_now_if_still_running(done: threading.Event) -> None:
    """At interpreter exit (atexit): if the interrupted call has not ended, end the process
    at once with INTERRUPTED_EXIT, its output flushed. That call is Numba compiling the loops
    (up to a minute; the stop flag is read only once they run): the interpreter's finalization
    beside a thread inside LLVM aborted the process ("Assertion ... failed", exit 134) after
    the interrupt's message."""
    if done.is_set():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or gone: nothing to lose
            stream.flush()
    os._exit(INTERRUPTED_EXIT)


def run_stoppable(call: Callable[[], T], stop: np.ndarray) -> T:
    """`call()` (a compiled call that releases the GIL and reads `stop` between epochs) in the
    kernel thread (`_KernelThread`), while this thread waits: Ctrl-C sets stop[0] = 1, waits up
    to STOP_WAIT_S for the loops to end, and raises KeyboardInterrupt at once. A call still
    running then (compiling: it reads no flag yet) ends with the process, if the process ends
    first (`_exit_now_if_still_running`).

    Called in this thread, the compiled call would hold Ctrl-C back to its end (minutes) and
    then come out as "SystemError: ... returned a result with an exception set"."""
    done, outcome = _KERNEL_THREAD.submit(call)
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        stop[0] = 1
        if not done.wait(STOP_WAIT_S):
            atexit.register(_exit_now_if_still_running, done)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@dataclasses.dataclass(frozen=True)
class _CallSettings:
    """Per call: learning rates float32 [C], the effective batch size, whether batches are
    shuffled and each model's shuffle seed int64 [C], threads, the stop flag int64 [1], each
    model's watched early stopping (or None) and its settings float64 [C, STOP_SETTINGS]."""

    lr: np.ndarray
    batch_size: int
    shuffle: bool
    shuffle_seeds: np.ndarray
    threads: int
    stop: np.ndarray
    watched: list[EarlyStoppingConfig | None]
    stopping: np.ndarray


class CpuEngine:
    """Trains MLP jobs with the Numba kernel, groups of compatible jobs per kernel call."""

    name = "cpu"

    def __init__(self, workers: int | None = None, models_per_call: int | None = None):
        target_choice()  # a bad ACTREG_CPU_TARGET is bad input now, before any run folder
        vector_choice()  # and a bad ACTREG_CPU_VECTOR_BITS
        self.workers = workers or worker_count()
        # Calls of a few models per thread keep the progress bar moving; the per-call cost
        # (~0.1 ms) is nothing next to a model's training.
        self.models_per_call = models_per_call or 4 * self.workers

    def unsupported(self, config: ExperimentConfig) -> str | None:
        return unsupported_reason(config)

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        def train_group(group: list[TrainJob]) -> list[TrainResult]:
            results = []
            for start in range(0, len(group), self.models_per_call):
                part = group[start : start + self.models_per_call]
                if part[0].config.model.layers is None:
                    results += self._train_call(part)
                else:
                    results += self._train_network_call(part)
                # Model-epochs as configured: a model early stopping ended counts in full.
                if progress is not None:
                    progress(len(part) * part[0].config.training.epochs)
            return results

        return train_grouped(self, jobs, group_key, train_group)

    def _call_settings(self, jobs: Sequence[TrainJob], data: Dataset) -> _CallSettings:
        """What a compiled call takes besides the data, the network and the weights."""
        import numba

        config = jobs[0].config
        batch_size = min(config.training.batch_size, data.n_train)
        # Early stopping watches the validation set; without one (the config refuses that) a
        # model trains every epoch.
        watched = [
            job.config.training.early_stopping if data.has_validation else None for job in jobs
        ]
        return _CallSettings(
            lr=np.array([job.config.training.learning_rate for job in jobs], dtype=np.float32),
            batch_size=batch_size,
            # One batch holds every sample: its order is irrelevant (as in the fused engine).
            shuffle=config.training.shuffle and batch_size < data.n_train,
            shuffle_seeds=np.array([shuffle_seed(job.seed) for job in jobs], dtype=np.int64),
            threads=max(1, min(self.workers, len(jobs), numba.config.NUMBA_NUM_THREADS)),
            stop=np.zeros(1, np.int64),
            watched=watched,
            stopping=np.stack([stopping_settings(config) for config in watched]),
        )

    def _train_call(self, jobs: Sequence[TrainJob]) -> list[TrainResult]:
        """One kernel call for jobs of one group (one data set)."""
        import numba

        from actreg_cli.engines.cpu import kernel as cpu_kernel

        config = jobs[0].config
        data = job_dataset(config, jobs[0].seed)
        n_train = data.n_train
        n_out = output_units(data.task, data.n_classes)
        params = np.stack([flat_initial_weights(job.config, job.seed, data) for job in jobs])
        coef = np.stack([coefficients(job.config) for job in jobs]).astype(np.float32)
        call_ = self._call_settings(jobs, data)
        threads, stop, watched = call_.threads, call_.stop, call_.watched

        def call() -> tuple[np.ndarray, ...]:
            numba.set_num_threads(threads)  # per calling thread
            return cpu_kernel.train_models(*arguments, stop)

        arguments = (
            # Writable copies: one compiled signature, whatever flags the cached data carries.
            np.array(data.x_train, dtype=np.float32),
            np.array(data.y_train[:, 0], dtype=np.float32),
            np.array(data.x_test, dtype=np.float32),
            np.array(data.y_test[:, 0], dtype=np.float32),
            # No rows without a validation set: the loops then compute nothing of it.
            np.array(data.x_val, dtype=np.float32).reshape(data.n_val, data.n_features),
            np.array(data.y_val[:, 0], dtype=np.float32),
            params,
            coef,
            call_.lr,
            np.array(config.model.hidden_units, dtype=np.int64),
            n_out,
            TASKS[data.task.value],
            ACTIVATIONS[config.model.activation],
            OPTIMIZERS[config.training.optimizer],
            config.training.epochs,
            call_.batch_size,
            call_.shuffle_seeds,
            call_.shuffle,
            call_.stopping,
        )
        rows, probe, outputs, _, final_rows, trained = run_stoppable(call, stop)
        results = []
        for c, job in enumerate(jobs):
            model_stop = model_stopping(watched[c], rows[c], trained[c], data)
            result = result_from_totals(
                job.config, rows[c], probe[c], n_train, data.n_test,
                (data.task, data, outputs[c]), n_val=data.n_val, stop=model_stop,
                final_row=final_rows[c],
            )  # fmt: skip
            results.append(result)
        return results

    def _train_network_call(self, jobs: Sequence[TrainJob]) -> list[TrainResult]:
        """One compiled call for layer-list jobs of one group: Conv2D networks (conv_loop.py)
        or LSTM networks (lstm_loop.py)."""
        import numba

        from actreg_cli.engines.cpu import kernel as cpu_kernel

        config = jobs[0].config
        data = job_dataset(config, jobs[0].seed)
        plans = [config_plan(job.config, data) for job in jobs]
        n_out = output_units(data.task, data.n_classes)
        conv = network_kind(config) == "conv"
        params = np.stack(
            [
                _network_parameters(layer_initial_weights(plan.layers, job.seed))
                for plan, job in zip(plans, jobs, strict=True)
            ]
        )
        # The first layer's row of each model's penalty table (the output layer has none).
        coef = np.stack([penalty_table(plan)[:1] for plan in plans]).astype(np.float32)
        call_ = self._call_settings(jobs, data)
        threads, stop, watched = call_.threads, call_.stop, call_.watched
        n_features = int(np.prod(data.input_shape))

        def flat(x: np.ndarray, n: int) -> np.ndarray:
            return np.array(x, dtype=np.float32).reshape(n, n_features)

        def call() -> tuple[np.ndarray, ...]:
            numba.set_num_threads(threads)
            entry = cpu_kernel.train_conv_models if conv else cpu_kernel.train_lstm_models
            return entry(*arguments, stop)

        n_sample = min(data.n_test, PROBE_SAMPLE_ROWS)
        arguments = (
            flat(data.x_train, data.n_train),
            np.array(data.y_train[:, 0], dtype=np.float32),
            flat(data.x_test, data.n_test),
            np.array(data.y_test[:, 0], dtype=np.float32),
            flat(data.x_val, data.n_val),
            np.array(data.y_val[:, 0], dtype=np.float32),
            params,
            coef,
            call_.lr,
            conv_geometry(plans[0]) if conv else lstm_geometry(plans[0]),
            n_out,
            TASKS[data.task.value],
            *([ACTIVATIONS[config.model.layers[0].activation]] if conv else []),
            OPTIMIZERS[config.training.optimizer],
            config.training.epochs,
            call_.batch_size,
            call_.shuffle_seeds,
            call_.shuffle,
            call_.stopping,
            *([self._shared_windows(plans[0], data)] if conv else []),
            n_sample,
        )
        rows, probe, outputs, _, final_rows, trained, sample = run_stoppable(call, stop)
        return [
            layers_result(
                rows[c],
                final_rows[c],
                outputs[c],
                probe[c],
                sample[c],
                data,
                config.training.epochs,
                model_stopping(watched[c], rows[c], trained[c], data),
            )  # fmt: skip
            for c in range(len(jobs))
        ]

    @staticmethod
    def _shared_windows(plan, data: Dataset) -> bool:
        """Whether a Conv2D call builds every set's windows once (`WINDOW_BUDGET`)."""
        rows_all = data.n_train + data.n_test + data.n_val
        return window_floats(plan, rows_all) <= WINDOW_BUDGET


def _network_parameters(weights: list[list[np.ndarray]]) -> np.ndarray:
    """float32 [P]: a layer list's initial weights (weights.layer_initial_weights: the first
    layer's, then the output layer's kernel and bias) in its loop's layout: a Conv2D layer's
    kernel and bias (conv_loop.py), or an LSTM's bias, kernel and recurrent kernel, their
    gates' columns in the loop's order (lstm_loop.py); then the output kernel transposed and
    its bias."""
    first, (out_kernel, out_bias) = weights
    if len(first) == 3:  # lstm: kernel, recurrent kernel, bias; gates i, f, c, o -> i, f, o, c
        kernel, recurrent, bias = first
        units = recurrent.shape[0]
        order = np.concatenate([np.arange(units) + g * units for g in (0, 1, 3, 2)])
        parts = [bias[order], kernel[:, order].ravel(), recurrent[:, order].ravel()]
    else:
        parts = [part.ravel() for part in first]
    return np.concatenate([*parts, out_kernel.T.ravel(), out_bias]).astype(np.float32)
