"""Every figure the tool draws is readable at its saved size: no two text labels (tick labels,
titles, axis labels, legend entries, notes) overlap, and no text leaves the figure.

`text_problems` is the check; it takes any matplotlib Figure. The figures are captured where
report/ hands them to `save_figure` (nothing is written), from results made without training
(test_study_sweep.FakeExecutor, synthetic TrainResults), so the whole module costs seconds.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import CONFIGS
from test_study_sweep import FakeExecutor, sweep_config

from actreg_cli.config import ExperimentConfig, SweepConfig
from actreg_cli.engines.base import TrainResult
from actreg_cli.report import sweep_figures, sweep_rows, tutorial
from actreg_cli.report.reconstructions import reconstructions_figure, run_reconstructions_figure
from actreg_cli.report.run import accuracy_figure, run_title
from actreg_cli.report.sweep import write_outputs
from actreg_cli.report.sweep_tables import summary_rows
from actreg_cli.study.samples import Samples
from actreg_cli.study.sweep.run import run_sweep
from actreg_cli.study.tutorial import VARIANTS, study_arms, tutorial_config

#: study/files.save_figure's resolution (dots per inch).
SAVE_DPI = 110
#: Boxes that overlap by less than this (pixels at SAVE_DPI) in either direction touch, at most.
TOUCH_PX = 1.0


# ---------------------------------------------------------------------------------------------
# The check


def _tick_in_view(axis: Any, loc: float) -> bool:
    """Whether matplotlib draws the tick at `loc` (it draws only those inside the view)."""
    scale = axis.get_transform()
    lo, hi, at = scale.transform(np.array([*axis.get_view_interval(), loc])[:, None]).ravel()
    lo, hi = min(lo, hi), max(lo, hi)
    slack = 1e-9 * (hi - lo)
    return bool(lo - slack <= at <= hi + slack)


def drawn_texts(fig: Any) -> list[tuple[str, Any]]:
    """(description, window extent in pixels) of every text the figure draws at SAVE_DPI:
    figure texts (suptitle), legends, axes titles and notes, axis labels, offset texts and
    the tick labels inside each axis's view."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(SAVE_DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    found: list[tuple[str, Any]] = []

    def add(text: Any, where: str) -> None:
        if text.get_visible() and text.get_text().strip():
            found.append((f"{where} {text.get_text()!r}", text.get_window_extent(renderer)))

    def add_legend(legend: Any, where: str) -> None:
        if legend is not None and legend.get_visible():
            add(legend.get_title(), f"{where} legend title")
            for text in legend.get_texts():
                add(text, f"{where} legend entry")

    for text in fig.texts:
        add(text, "figure text")
    for legend in fig.legends:
        add_legend(legend, "figure")
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        add(ax.title, f"axes {i} title")
        for text in ax.texts:
            add(text, f"axes {i} text")
        add_legend(ax.get_legend(), f"axes {i}")
        if not ax.axison:
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if not axis.get_visible():
                continue
            add(axis.label, f"axes {i} {name} label")
            add(axis.get_offset_text(), f"axes {i} {name} offset")
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if _tick_in_view(axis, tick.get_loc()):
                    add(tick.label1, f"axes {i} {name} tick")
                    add(tick.label2, f"axes {i} {name} tick")
    return found


def text_problems(fig: Any) -> list[str]:
    """What makes `fig` hard to read at its saved size: each pair of texts whose boxes
    overlap, and each text that reaches outside the figure. Empty when it is readable."""
    texts = drawn_texts(fig)
    width, height = fig.bbox.width, fig.bbox.height
    problems = []
    for what, box in texts:
        if (
            box.x0 < -TOUCH_PX
            or box.y0 < -TOUCH_PX
            or box.x1 > width + TOUCH_PX
            or box.y1 > height + TOUCH_PX
        ):
            problems.append(f"{what} leaves the figure ({width:.0f} x {height:.0f} px)")
    for (a, box_a), (b, box_b) in combinations(texts, 2):
        overlap_x = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        overlap_y = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        if overlap_x > TOUCH_PX and overlap_y > TOUCH_PX:
            problems.append(f"{a} overlaps {b}")
    return problems


def assert_readable(fig: Any, name: str) -> None:
    problems = text_problems(fig)
    assert not problems, f"{name}: {len(problems)} text problem(s):\n" + "\n".join(problems[:20])


@pytest.fixture
def figures(monkeypatch) -> dict[str, Any]:
    """The figures report/ saves, by file name, captured instead of written."""
    captured: dict[str, Any] = {}

    def capture(path: Path, figure: Any) -> Path:
        captured[Path(path).name] = figure
        return Path(path)

    for module in (sweep_figures, tutorial):
        monkeypatch.setattr(module, "save_figure", capture)
    return captured


def test_the_check_finds_overlapping_labels_and_text_outside_the_figure():
    from matplotlib.figure import Figure

    # What sweep.png drew before: 24 long category labels on one x axis.
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    labels = [f"{{target: activity, norm: l1, strength: 0.0{k}}}" for k in range(24)]
    ax.plot(range(24), np.linspace(0.9, 1.0, 24))
    ax.set_xticks(range(24), labels)
    problems = text_problems(fig)
    assert any("x tick" in p and "overlaps" in p for p in problems)
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.text(1.3, 0.5, "far to the right", transform=ax.transAxes)
    ax.set_title("fine")
    assert text_problems(fig) == ["axes 0 text 'far to the right' leaves the figure (440 x 330 px)"]


# ---------------------------------------------------------------------------------------------
# Run curves


def test_run_curves_are_readable(tiny_config_data: dict):
    config = ExperimentConfig.model_validate(tiny_config_data)
    rng = np.random.default_rng(0)
    histories = rng.random((3, 40, 4))
    for flags in ([False, False, False], [False, True, False], [True, True, True]):
        fig = accuracy_figure(histories, run_title(config), diverged=flags)
        assert_readable(fig, f"accuracy.png, diverged {flags}")
    fig = accuracy_figure(histories[:1], run_title(config))
    assert_readable(fig, "accuracy.png, one repeat")
    assert fig.axes[0].get_title().startswith("tiny\n")


def test_reconstructions_are_readable():
    rng = np.random.default_rng(0)
    samples = Samples(
        originals=rng.random((8, 64), dtype=np.float32),
        outputs=rng.random((3, 8, 64), dtype=np.float32),
        probe=rng.random((3, 100, 16), dtype=np.float32),
        input_shape=(8, 8),
    )
    title = "autoencoder\nmnist-like data; MLP [16] relu; L1 0.0001 on activity before activation"
    assert_readable(run_reconstructions_figure(samples, title, "hidden layer 0"), "run")
    # A sweep's: one row per cell, with long histogram titles.
    rows = [
        (f"c{k}", samples.outputs[0], samples.probe, f"c{k}: strength=0.001, placement=after")
        for k in range(4)
    ]
    rows.append(("c4", None, None, "c4: no samples"))
    fig = reconstructions_figure(samples.originals, rows, (8, 8), title, "hidden layer 0")
    assert_readable(fig, "sweep reconstructions")


# ---------------------------------------------------------------------------------------------
# Sweeps


def _fake_sweep(sweep: SweepConfig, runs: Path, figures: dict[str, Any]) -> Any:
    outcome = run_sweep(sweep, engine="keras", runs_dir=runs, executor=FakeExecutor())
    write_outputs(outcome)
    assert {"sweep.png", "sparsity.png"} <= set(figures)
    return outcome


def _tick_labels(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels() if t.get_text()]


def test_a_sweep_of_whole_regularizers_draws_one_labelled_row_per_cell(tmp_path, figures):
    # The grid of the shipped breast_cancer study (24 whole regularizers) on the default data:
    # the plan reads a data set once per cell, and the circles are the quickest to read.
    shipped = yaml.safe_load((CONFIGS / "sweep_breast_cancer.yaml").read_text(encoding="utf-8"))
    sweep = sweep_config(grid=shipped["grid"])
    sweep.base.training.repeats = 6  # verdicts need at least 5 paired repeats
    outcome = _fake_sweep(sweep, tmp_path, figures)
    assert len(outcome.cells) == 25
    for name in ("sweep.png", "sparsity.png"):
        fig = figures[name]
        assert_readable(fig, name)
        ax = fig.axes[0]
        labels = _tick_labels(ax)
        # One row per cell, the baseline on top, in grid order; rows named by their strength.
        assert labels[0] == "baseline"
        assert labels[1:4] == ["c01: strength=0.01", "c02: strength=0.001", "c03: strength=0.0001"]
        assert len(labels) == 25
        headings = [t.get_text() for t in ax.texts]
        assert headings[0] == "target=kernel, norm=l1"
        assert "target=activity, norm=l2, placement=after_activation" in headings
        assert len(headings) == 8
        # 25 rows and 8 headings: the figure grows with them instead of squeezing them.
        assert fig.get_figheight() >= 33 * sweep_rows.ROW_HEIGHT_IN
    # sweep.png colours each dot by its verdict: FakeExecutor's strength 1e-4 is about 0.1
    # better than the baseline, far beyond its noise; on the right, each cell's difference
    # from the baseline with its paired 95% CI, as in summary.csv.
    legend = [t.get_text() for t in figures["sweep.png"].legends[0].get_texts()]
    assert any(text.startswith("clearly better than its baseline") for text in legend)
    assert any(text.startswith("baseline: mean (dashed), 95% CI (band)") for text in legend)
    summary = {row["cell"]: row for row in summary_rows(outcome)}
    c03 = summary["c03"]
    assert c03["diff_clear"] and c03["diff_vs_baseline"] > 0.05
    right = figures["sweep.png"].axes[1].get_yticklabels()
    assert len(right) == 24  # every cell but the baseline
    assert right[2].get_text() == (
        f"{c03['diff_vs_baseline']:+.3f} "
        f"[{c03['paired_diff_ci_low']:+.3f}, {c03['paired_diff_ci_high']:+.3f}]"
    )
    assert right[2].get_color() == sweep_rows.VERDICT_COLORS["better"]
    assert len(figures["sparsity.png"].axes) == 2


def test_a_sweep_of_categories_without_a_strength_draws_rows(tmp_path, figures):
    sweep = sweep_config(
        grid={"regularizers.0.norm": ["l1", "l2"], "regularizers.0.target": ["kernel", "bias"]}
    )
    _fake_sweep(sweep, tmp_path, figures)
    ax = figures["sweep.png"].axes[0]
    assert _tick_labels(ax) == [
        "baseline",
        "c1: target=kernel",
        "c2: target=bias",
        "c3: target=kernel",
        "c4: target=bias",
    ]
    assert [t.get_text() for t in ax.texts] == ["norm=l1", "norm=l2"]
    assert_readable(figures["sweep.png"], "sweep.png")
    assert_readable(figures["sparsity.png"], "sparsity.png")


def test_a_sweep_of_whole_regularizer_lists_is_labelled_by_their_fields(tmp_path, figures):
    """grid: {regularizers: [[...], [...]]} (a whole list per cell): rows and headings name the
    fields that differ, never the lists' JSON; an accuracy axis stays within [0, 1] however
    wide two repeats' intervals are."""
    sweep = sweep_config(
        grid={
            "regularizers": [
                [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
                [{"target": "activity", "norm": "l1", "strength": 1e-3}],
            ]
        }
    )
    _fake_sweep(sweep, tmp_path, figures)
    ax = figures["sweep.png"].axes[0]
    assert _tick_labels(ax) == ["baseline", "c1: norm=l2", "c2: norm=l1"]
    assert [t.get_text() for t in ax.texts] == ["target=kernel", "target=activity"]
    left, right = ax.get_xlim()
    assert left >= -0.02 and right <= 1.02
    assert_readable(figures["sweep.png"], "sweep.png")
    assert_readable(figures["sparsity.png"], "sparsity.png")


class SomeDiverge(FakeExecutor):
    """Strength 1e-2 diverges: 2 repeats at learning rate 0.001, every repeat at 0.01."""

    def run(self, chunks, engine, on_done, on_failed):
        def done(index, results):
            config = chunks[index][0].config
            if config.regularizers and config.regularizers[0].strength == 1e-2:
                lost = len(results) if config.training.learning_rate == 0.01 else 2
                for result in results[:lost]:
                    result.diverged = True
                    result.test_accuracy = result.train_accuracy = math.nan
                    result.mean_activation = result.zero_fraction = math.nan
            on_done(index, results)

        super().run(chunks, engine, done, on_failed)


def test_rows_with_two_baselines_lost_cells_and_long_headings_stay_readable(tmp_path, figures):
    regularizers = [
        {"target": "kernel", "norm": "l1", "strength": 1e-2},
        {"target": "activity", "norm": "l1", "strength": 1e-3, "placement": "before_activation"},
        {"target": "activity", "norm": "l2", "strength": 1e-4, "placement": "after_activation"},
    ]
    sweep = sweep_config(
        grid={
            "regularizers.0": regularizers,
            "training.learning_rate": [0.001, 0.01],
            "training.optimizer": ["adam", "sgd"],
        }
    )
    outcome = run_sweep(sweep, engine="keras", runs_dir=tmp_path, executor=SomeDiverge(fail={5}))
    write_outputs(outcome)
    (failed,) = outcome.failures  # the cell of chunk 5, whichever that is
    for name in ("sweep.png", "sparsity.png"):
        assert_readable(figures[name], name)
    ax = figures["sweep.png"].axes[0]
    labels = _tick_labels(ax)
    assert labels[:4] == [
        "baseline, learning_rate=0.001, optimizer=adam",
        "baseline, learning_rate=0.001, optimizer=sgd",
        "baseline, learning_rate=0.01, optimizer=adam",
        "baseline, learning_rate=0.01, optimizer=sgd",
    ]
    assert "c01: strength=0.01 (2 of 3 diverged)" in labels
    assert "c03: strength=0.01 (every repeat diverged)" in labels
    assert any(label.startswith(f"{failed}: ") for label in labels)
    assert sum(label.endswith(" (failed)") for label in labels) == 1
    # A heading longer than a line wraps onto rows of its own.
    long = [t.get_text() for t in ax.texts if "\n" in t.get_text()]
    assert long and long[0].startswith("target=activity, norm=l1, placement=before_activation,")
    legend = [t.get_text() for t in figures["sweep.png"].legends[0].get_texts()]
    assert "every repeat diverged" in legend
    assert "no verdict: it needs at least 5 repeats with some spread" in legend  # 3 repeats
    assert sum(text.startswith("baseline (learning_rate=") for text in legend) == 4


def test_a_strength_sweep_keeps_its_line_plot(tmp_path, figures):
    outcome = _fake_sweep(sweep_config(), tmp_path, figures)
    assert sweep_figures.numeric_axis(outcome) == "regularizers.0.strength"
    for name in ("sweep.png", "sparsity.png"):
        fig = figures[name]
        assert_readable(fig, name)
        assert fig.axes[0].get_xscale() == "log"
        # One line with error bars per placement, each through the three strengths.
        bars = fig.axes[0].containers
        assert [len(bar.lines[0].get_xdata()) for bar in bars] == [3, 3]


# ---------------------------------------------------------------------------------------------
# The tutorial


def _result(rng: np.random.Generator, epochs: int, diverged: bool = False) -> TrainResult:
    history = np.column_stack(
        [rng.random(epochs), np.linspace(0.5, 1.0, epochs), rng.random(epochs), rng.random(epochs)]
    )
    accuracy = math.nan if diverged else float(rng.uniform(0.7, 0.85))
    return TrainResult(
        history=history,
        train_loss=0.1,
        test_loss=0.5,
        mean_activation=0.2,
        zero_fraction=0.5,
        diverged=diverged,
        train_accuracy=1.0,
        test_accuracy=accuracy,
    )


def test_tutorial_figures_are_readable_and_circles_tell_train_from_test(tmp_path, figures):
    epochs, seeds = 30, [1, 2, 3]
    rng = np.random.default_rng(3)
    arms = study_arms()
    configs = {arm: tutorial_config(*arm, epochs=epochs) for arm in arms}
    by_arm = {
        arm: [_result(rng, epochs, diverged=(arm == arms[-1] and r == 0)) for r in range(3)]
        for arm in arms
    }
    tutorial.write_study(tmp_path, configs, by_arm, seeds, "cpu", ("batch_sum", "batch_mean"))
    assert set(figures) == set(tutorial.FIGURES)
    for name, fig in figures.items():
        assert_readable(fig, name)
    for variant in VARIANTS[1:]:  # two panels, titled each within its own
        assert len(figures[f"{variant}.png"].axes) == 2
    ax = figures["circles.png"].axes[0]
    test, train = ax.collections[:2], ax.collections[2:]
    assert sum(len(c.get_offsets()) for c in train) == 30
    assert sum(len(c.get_offsets()) for c in test) == 70
    # Training points are large and filled, test points small and hollow.
    assert all(c.get_sizes()[0] > 2 * t.get_sizes()[0] for c in train for t in test)
    assert all(len(c.get_facecolors()) == 0 or c.get_facecolors()[0][3] == 0 for c in test)
    assert all(c.get_facecolors()[0][3] == 1 for c in train)
    entries = [t.get_text() for t in figures["circles.png"].legends[0].get_texts()]
    # The legend names each kind of marker with its count, e.g. "class 0, train (14)".
    kinds = [entry.split(" (")[0] for entry in entries]
    assert kinds == ["class 0, test", "class 1, test", "class 0, train", "class 1, train"]
    counts = [int(entry.split(" (")[1].rstrip(")")) for entry in entries]
    assert sum(counts[:2]) == 70 and sum(counts[2:]) == 30
