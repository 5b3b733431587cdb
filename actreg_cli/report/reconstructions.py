"""The reconstructions figure: original test samples, a model's reconstructions of them, and a
histogram of the code (probe) layer's activations with its fraction of exact zeros, drawn from
kept samples (study/samples.py) in a run folder or a sweep's cell store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from actreg_cli.study.samples import Samples

RECONSTRUCTIONS_FIGURE = "reconstructions.png"
#: A flat sample of n values is drawn as an a x b image (a * b == n, a <= b) when b / a is at
#: most this; otherwise as a line of values.
MAX_IMAGE_ASPECT = 4.0


def zero_fraction(values: np.ndarray) -> float:
    """Fraction of exact zeros (what `zero_fraction` measures on the whole test set)."""
    return float(np.mean(np.asarray(values) == 0.0)) if np.size(values) else math.nan


def image_shape(input_shape: Sequence[int], n_values: int) -> tuple[int, int] | None:
    """How to draw one sample of `n_values` as a grey image: the input shape's rows x columns
    when it is [h, w] or [h, w, 1]; else the square-ish a x b with a * b == n_values (aspect at
    most MAX_IMAGE_ASPECT); None (draw a line) otherwise."""
    shape = tuple(input_shape)
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) == 2 and math.prod(shape) == n_values:
        return shape[0], shape[1]
    a = math.isqrt(n_values)
    while a > 1 and n_values % a:
        a -= 1
    b = n_values // max(a, 1)
    if a >= 2 and b / a <= MAX_IMAGE_ASPECT:
        return a, b
    return None


def _draw_sample(ax: Any, values: np.ndarray, shape, vmin: float, vmax: float) -> None:
    if shape is None:
        ax.plot(np.arange(len(values)), values, lw=0.8)
        ax.set_ylim(vmin, vmax)
        ax.tick_params(labelsize=5)
        return
    ax.imshow(values.reshape(shape), cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_histogram(ax: Any, values: np.ndarray, label: str) -> None:
    flat = np.asarray(values, dtype=np.float64).ravel()
    finite = flat[np.isfinite(flat)]  # a diverged repeat's activations may be NaN or inf
    if not len(finite):
        ax.axis("off")
        ax.text(0.0, 0.5, f"{label}: no finite activations (diverged)", fontsize=7)
        return
    ax.hist(finite, bins=40, color="tab:blue", alpha=0.8)
    ax.set_yscale("log")
    ax.tick_params(labelsize=6)
    ax.set_title(label, fontsize=7)
    ax.text(
        0.97,
        0.93,
        f"zero fraction {zero_fraction(flat):.3f}",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7,
        color="tab:red",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )


def reconstructions_figure(
    originals: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray | None, np.ndarray | None, str]],
    input_shape: Sequence[int],
    title: str,
    probe_name: str,
) -> Any:
    """Originals on top, then one row per (label, reconstructions [k, features] or None,
    probe activations (any shape) or None, histogram title): its reconstructions beside a
    histogram of its activations, with the fraction of exact zeros written on it. Returns the
    figure."""
    from matplotlib.figure import Figure  # no pyplot: nothing to close, no global state

    k, n_values = originals.shape
    shape = image_shape(input_shape, n_values)
    shown = [originals] + [r for _, r, _, _ in rows if r is not None]
    finite = np.concatenate([np.ravel(a)[np.isfinite(np.ravel(a))] for a in shown])
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    n_rows = 1 + len(rows)
    fig = Figure(figsize=(1.1 * k + 3.2, 1.25 * n_rows + 0.9))
    grid = fig.add_gridspec(n_rows, k + 1, width_ratios=[1.0] * k + [3.0], wspace=0.15, hspace=0.55)
    for j in range(k):
        ax = fig.add_subplot(grid[0, j])
        _draw_sample(ax, originals[j], shape, vmin, vmax)
        if j == 0:
            ax.set_ylabel("original", fontsize=7)
    note = fig.add_subplot(grid[0, k])
    note.axis("off")
    note.text(
        0.0,
        0.5,
        f"right: {probe_name} activations\n(first test samples, pooled over repeats;\n"
        "log count)\nimages: repeat 0's reconstructions",
        fontsize=7,
        va="center",
    )
    for i, (label, recon, probe, hist_title) in enumerate(rows, start=1):
        for j in range(k):
            ax = fig.add_subplot(grid[i, j])
            if recon is None:
                ax.axis("off")
                continue
            _draw_sample(ax, recon[j], shape, vmin, vmax)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
        ax = fig.add_subplot(grid[i, k])
        if probe is None:
            ax.axis("off")
            ax.text(0.0, 0.5, f"{label}: no samples", fontsize=7)
        else:
            _draw_histogram(ax, probe, hist_title)
    fig.suptitle(title, fontsize=9)
    return fig


def run_reconstructions_figure(samples: Samples, title: str, probe_name: str) -> Any:
    """A run's figure: originals, repeat 0's reconstructions, the code histogram of all
    repeats."""
    repeats = samples.outputs.shape[0]
    return reconstructions_figure(
        samples.originals,
        [
            (
                "reconstructed",
                samples.outputs[0],
                samples.probe,
                f"{repeats} repeat{'s' if repeats > 1 else ''}",
            )
        ],
        samples.input_shape,
        title,
        probe_name,
    )
