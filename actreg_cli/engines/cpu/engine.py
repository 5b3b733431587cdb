"""The cpu engine: MLPs trained by a hand-fused loop compiled with Numba, one model per thread.

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
ends its own loop, not the others'). What the fused MLP program trains, the cpu engine trains. Not: custom regularizers
(any Python function; Numba cannot compile it), and what is not an MLP
(`config.mlp_shorthand_reason`: model.layers, dropout, image-shaped input, reconstruction).
The tutorial's circles and moons load without scikit-learn (data/generated.py restates them).

Float rounding: sums run in another order than TensorFlow's or XLA's kernels (over units or
rows in SIMD lanes), and exp, log1p, tanh are polynomials within 1-3 ulp, so losses agree with
the other engines to ~1e-6 relative after one step and drift to ~1e-4 after a few hundred Adam
steps, as the fused engine does. Subnormal numbers flush to 0, as in TensorFlow.
A model's numbers do not depend on the other models of the call or on the thread count.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from actreg_cli.config import EarlyStoppingConfig, ExperimentConfig, Norm
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import (
    ProgressCallback,
    TrainJob,
    TrainResult,
    checked_stop,
    mlp_shape_key,
    monitored_column,
    result_from_totals,
    train_grouped,
    worker_count,
)
from actreg_cli.engines.cpu import codes
from actreg_cli.engines.cpu.codes import ACTIVATIONS, OPTIMIZERS, TASKS
from actreg_cli.engines.cpu.target import choice as target_choice
from actreg_cli.engines.penalties import coefficients
from actreg_cli.tasks import output_units
from actreg_cli.weights import initial_weights, layer_sizes, shuffle_seed

T = TypeVar("T")


def unsupported_reason(config: ExperimentConfig) -> str | None:
    """Why the cpu engine cannot train `config` (one line), or None."""
    if importlib.util.find_spec("numba") is None:  # a declared dependency, but say so if absent
        return "numba is not installed (pip install numba)"
    if (reason := config.mlp_shorthand_reason) is not None:
        return reason
    for reg in config.regularizers:
        if reg.norm is Norm.custom:
            return f"custom regularizer '{reg.function}' cannot be compiled by the cpu engine"
    return None


def compile_note() -> str | None:
    """One line for the command line to show before training when Numba's disk cache holds no
    compiled loop for this version of kernel.py (after an install or an update: the first
    call then compiles for about a minute, which a progress bar would show as a stall); None
    when it does, or when Numba's cache internals cannot be read (then nothing is guessed).
    The cached train_models holds every function it calls, from every module of the loops:
    loaded, it compiles nothing else."""
    from actreg_cli.engines.cpu import kernel as cpu_kernel

    try:  # Numba's own check: an index written for kernel.py's stamp, with an entry compiled
        # for this target (engines/cpu/target.py; an index key is (signature, target, ...))
        from numba.core.registry import cpu_target

        cached = cpu_kernel.train_models._cache._cache_file._load_index()
        target = cpu_target.target_context.codegen().magic_tuple()
        if any(isinstance(key, tuple) and target in key for key in cached):
            return None
    except Exception:  # noqa: BLE001 (private API of another package; a note is not worth a crash)
        return None
    return (
        "the cpu engine compiles its training loops first (up to about a minute, once after an "
        "install or update; later runs load them from disk)"
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


def run_stoppable(call: Callable[[], T], stop: np.ndarray) -> T:
    """`call()` (a compiled call that releases the GIL and reads `stop` between epochs) in the
    kernel thread (`_KernelThread`), while this thread waits: Ctrl-C sets stop[0] = 1, waits up
    to STOP_WAIT_S for the loops to end, and raises KeyboardInterrupt at once.

    Called in this thread, the compiled call would hold Ctrl-C back to its end (minutes) and
    then come out as "SystemError: ... returned a result with an exception set"."""
    done, outcome = _KERNEL_THREAD.submit(call)
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        stop[0] = 1
        done.wait(STOP_WAIT_S)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class CpuEngine:
    """Trains MLP jobs with the Numba kernel, groups of compatible jobs per kernel call."""

    name = "cpu"

    def __init__(self, workers: int | None = None, models_per_call: int | None = None):
        target_choice()  # a bad ACTREG_CPU_TARGET is bad input now, before any run folder
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
                results += self._train_call(part)
                # Model-epochs as configured: a model early stopping ended counts in full.
                if progress is not None:
                    progress(len(part) * part[0].config.training.epochs)
            return results

        return train_grouped(self, jobs, mlp_shape_key, train_group)

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
        lr = np.array([job.config.training.learning_rate for job in jobs], dtype=np.float32)
        batch_size = min(config.training.batch_size, n_train)
        # One batch holds every sample: its order is irrelevant (as in the fused engine).
        shuffle = config.training.shuffle and batch_size < n_train
        shuffle_seeds = np.array([shuffle_seed(job.seed) for job in jobs], dtype=np.int64)
        threads = max(1, min(self.workers, len(jobs), numba.config.NUMBA_NUM_THREADS))
        stop = np.zeros(1, np.int64)
        # Early stopping watches the validation set; without one (the config refuses that) a
        # model trains every epoch.
        watched = [
            job.config.training.early_stopping if data.has_validation else None for job in jobs
        ]
        stopping = np.stack([stopping_settings(config) for config in watched])

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
            lr,
            np.array(config.model.hidden_units, dtype=np.int64),
            n_out,
            TASKS[data.task.value],
            ACTIVATIONS[config.model.activation],
            OPTIMIZERS[config.training.optimizer],
            config.training.epochs,
            batch_size,
            shuffle_seeds,
            shuffle,
            stopping,
        )
        rows, probe, outputs, _, final_rows, trained = run_stoppable(call, stop)
        results = []
        for c, job in enumerate(jobs):
            stopping_config = watched[c]
            model_stop = None
            if stopping_config is not None:
                sizes = (n_train, data.n_test, data.n_val)
                model_stop = checked_stop("cpu", stopping_config, rows[c], trained[c], sizes)
            result = result_from_totals(
                job.config, rows[c], probe[c], n_train, data.n_test,
                (data.task, data, outputs[c]), n_val=data.n_val, stop=model_stop,
                final_row=final_rows[c],
            )  # fmt: skip
            results.append(result)
        return results
