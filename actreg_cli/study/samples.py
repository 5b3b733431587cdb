"""Output and activation samples kept from training (report/reconstructions.py draws them).

The keras engine keeps, per trained model, its outputs on the first 8 test samples and the
probe layer's outputs on the first 100 (engines.base.TrainResult.output_sample/probe_sample).
For a reconstruction (autoencoder) task, a run folder stores them in `samples.npz` and a sweep's
cell store in its pack of cells (study/sweep/store.py), both as `Samples`, and a run draws
`reconstructions.png` from them:
the original test samples, repeat 0's reconstructions, and a histogram of the code (probe)
layer's activations pooled over repeats with its fraction of exact zeros. A reconstruction
sweep draws one such figure comparing its cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.engines.base import TrainResult
from actreg_cli.study.files import write_npz
from actreg_cli.tasks import Task

SAMPLES_FILE = "samples.npz"


@dataclass(frozen=True)
class Samples:
    """originals: float32 [rows, features], the test samples the outputs belong to (repeat 0's
    split); outputs: float32 [repeats, rows, units]; probe: float32 [repeats, 100, values], the
    probe layer's outputs after its activation; input_shape: one sample as the model saw it."""

    originals: np.ndarray
    outputs: np.ndarray
    probe: np.ndarray
    input_shape: tuple[int, ...]

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "originals": self.originals,
            "outputs": self.outputs,
            "probe": self.probe,
            "input_shape": np.asarray(self.input_shape, dtype=np.int64),
        }


def collect_samples(
    results: Sequence[TrainResult], originals: np.ndarray, input_shape: Sequence[int]
) -> Samples | None:
    """The samples of `results` (None when the engine kept none). originals: the test inputs
    [n_test, features] of repeat 0; the first rows (as many as the outputs) are kept."""
    if not results or any(r.output_sample is None or r.probe_sample is None for r in results):
        return None
    outputs = np.stack([np.asarray(r.output_sample, dtype=np.float32) for r in results])
    probe = np.stack([np.asarray(r.probe_sample, dtype=np.float32) for r in results])
    rows = outputs.shape[1]
    return Samples(
        np.asarray(originals[:rows], dtype=np.float32), outputs, probe, tuple(input_shape)
    )


def kept_samples(results: Sequence[TrainResult], data: Any) -> Samples | None:
    """What a run folder or a sweep cell stores of `results`: their samples for a
    reconstruction task (the reconstructions figure uses them), None otherwise (nothing draws
    a classifier's samples yet, and a Conv2D probe's 100 x h x w x filters values a repeat
    would cost megabytes a cell). data: the Dataset of repeat 0."""
    if data.task is not Task.reconstruction:
        return None
    return collect_samples(results, data.x_test, data.input_shape)


def save_samples(path: Path, samples: Samples) -> Path:
    return write_npz(path, samples.arrays())


def load_samples(path: Path, prefix: str = "") -> Samples | None:
    """The samples saved at `path` (their arrays named `prefix` + Samples.arrays()'s names: a
    pack of stored cells holds several), or None when there are none (or the file is
    unreadable)."""
    try:
        with np.load(path) as data:
            return Samples(
                data[f"{prefix}originals"],
                data[f"{prefix}outputs"],
                data[f"{prefix}probe"],
                tuple(int(n) for n in data[f"{prefix}input_shape"]),
            )
    except (OSError, KeyError, ValueError):
        return None
