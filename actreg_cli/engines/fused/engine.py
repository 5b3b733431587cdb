"""The fused engine: many models trained at once, all epochs inside one XLA-compiled program.

Two programs: the MLP shorthand (`hidden_units`, flat input, no dropout; `config.
mlp_shorthand_reason` is None) trains in the hand-written MLP program of engines/fused/mlp.py;
every other model (`model.layers` with dense, conv2d, max_pool2d, flatten, lstm, dropout,
activation layers; the reconstruction task) in engines/fused/layers.py (autodiff).
`FusedEngine.train` groups jobs by program and dispatches; both share the chunking, worker
threads, segments, Adam step, minibatch order and early stopping (Keras's EarlyStopping per
model, in the program) of engines/fused/common.py. Custom regularizer functions are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import (
    ProgressCallback,
    TrainJob,
    TrainResult,
    train_grouped,
    worker_count,
)
from actreg_cli.engines.fused import layers as fused_layers
from actreg_cli.engines.fused import mlp as fused_mlp


class FusedEngine:
    """Trains groups of compatible jobs as stacked models in one XLA program per group.

    MLP shorthand jobs are grouped by data, hidden_units, activation, optimizer, epochs,
    effective batch size, shuffle and penalty kinds; layer-list jobs by data, architecture,
    optimizer, epochs, batch size and shuffle (layers.group_key). Learning rates, like
    penalties and seeds, are per-model numbers. Each group is cut into equal chunks run by one
    thread per core (`common.run_chunks`).
    """

    name = "fused"

    def __init__(self, chunk: int | None = None, workers: int | None = None):
        self.chunk = chunk  # None: choose_chunk decides
        self.workers = workers or worker_count()

    def unsupported(self, config: ExperimentConfig) -> str | None:
        if (reason := config.keras_model_reason) is not None:
            return reason
        return fused_layers.unsupported_reason(config)

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        def key(job: TrainJob) -> tuple:
            if job.config.mlp_shorthand_reason is None:
                return ("mlp", *fused_mlp.group_key(job))
            return fused_layers.group_key(job)

        def train_group(group: list[TrainJob]) -> list[TrainResult]:
            if group[0].config.mlp_shorthand_reason is None:
                return fused_mlp.train_group(group, progress, self.chunk, self.workers)
            return fused_layers.train_group(group, progress, self.chunk, self.workers)

        return train_grouped(self, jobs, key, train_group)
