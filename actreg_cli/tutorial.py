"""The reproduction study: the tutorial's three models, repeated, under both activity reductions.

Variants (../shared/tutorial-facts.md): `overfit` (no regularization), `before_relu` and
`after_relu` (L1 1e-4 on the hidden layer's output before / after the ReLU). Each regularized
variant is trained with `batch_sum` (Keras 2.3, what the tutorial ran) and `batch_mean` (Keras >=
3.14); the overfit model has no penalty, so its reduction is `none`. All models go to the engine
in one call, so the fused engine trains the whole study as one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import ExperimentConfig, dump_yaml
from actreg_cli.data import load_dataset
from actreg_cli.engines.base import Engine, ProgressCallback, TrainJob
from actreg_cli.io import csv_text, save_figure, write_json, write_text
from actreg_cli.reporter import (
    accuracy_figure,
    history_csv_rows,
    repeat_columns,
    repeat_rows,
    summarize,
    write_csv_bytes,
)
from actreg_cli.runner import new_run_dir, run_metadata
from actreg_cli.stats import difference
from actreg_cli.tasks import Task, history_columns
from actreg_cli.weights import repeat_seeds

#: The tutorial's task: binary circles, always.
TASK = Task.binary
VARIANTS = ("overfit", "before_relu", "after_relu")
REDUCTIONS = ("batch_sum", "batch_mean")
#: The tutorial's published single-run (train, test) accuracies.
PUBLISHED = {"overfit": (1.000, 0.786), "before_relu": (0.967, 0.829), "after_relu": (1.000, 0.743)}
TITLES = {
    "overfit": "Overfit MLP (no regularization)",
    "before_relu": "L1 1e-4 activity regularization before ReLU",
    "after_relu": "L1 1e-4 activity regularization after ReLU",
}
DEFAULT_REPEATS = 10


def tutorial_config(
    variant: str,
    reduction: str = "batch_sum",
    *,
    epochs: int = 4000,
    seed: int = 0,
    repeats: int = 1,
) -> ExperimentConfig:
    """The tutorial's model for `variant` (the shipped configs/circles_*.yaml are these)."""
    regularizers = []
    if variant != "overfit":
        placement = "before_activation" if variant == "before_relu" else "after_activation"
        regularizers = [
            {
                "target": "activity",
                "norm": "l1",
                "strength": 1e-4,
                "placement": placement,
                "reduction": reduction,
            }
        ]
    return ExperimentConfig.model_validate(
        {
            "name": f"circles_{variant}" if variant == "overfit" else f"circles_l1_{variant}",
            "description": TITLES[variant],
            "data": {
                "name": "circles",
                "n_samples": 100,
                "n_train": 30,
                "noise": 0.1,
                "random_state": 1,
            },
            "model": {"hidden_units": [500], "activation": "relu"},
            "regularizers": regularizers,
            "training": {"epochs": epochs, "seed": seed, "repeats": repeats},
        }
    )


def study_arms(reductions: Sequence[str] = REDUCTIONS) -> list[tuple[str, str]]:
    """(variant, reduction) pairs trained by the study; the overfit model once, as 'none'."""
    arms = [("overfit", "none")]
    for variant in VARIANTS[1:]:
        arms.extend((variant, reduction) for reduction in reductions)
    return arms


@dataclass
class TutorialOutcome:
    out_dir: Path
    summary: dict[str, Any]  # summary.json: variant -> reduction -> stats (+ published, verdicts)
    rows: list[dict[str, Any]]  # the printed table, one row per (variant, reduction)
    verdicts: list[str]  # one sentence per (claim, reduction)


def run_tutorial(
    *,
    engine: Engine,
    engine_note: str | None = None,
    epochs: int = 4000,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    reductions: Sequence[str] = REDUCTIONS,
    runs_dir: Path = Path("runs"),
    progress: ProgressCallback | None = None,
    on_folder: Callable[[Path], None] | None = None,
) -> TutorialOutcome:
    """Train every arm `repeats` times from the same seeds and write the study folder."""
    arms = study_arms(reductions)
    configs = {
        arm: tutorial_config(*arm_args(arm), epochs=epochs, seed=seed, repeats=repeats)
        for arm in arms
    }
    seeds = repeat_seeds(seed, repeats)
    jobs = [TrainJob(configs[arm], s) for arm in arms for s in seeds]
    out_dir = new_run_dir(Path(runs_dir), "tutorial")
    if on_folder is not None:  # the CLI names it if training is interrupted
        on_folder(out_dir)
    metadata = run_metadata(configs[arms[0]], seeds, engine.name, engine_note)
    metadata["config"] = {f"{v}/{r}": configs[(v, r)].resolved() for v, r in arms}
    write_text(out_dir / "config.yaml", dump_yaml(metadata))
    plot_circles(out_dir / "circles.png", configs[arms[0]])

    results = engine.train(jobs, progress)
    by_arm = {arm: results[i * repeats : (i + 1) * repeats] for i, arm in enumerate(arms)}
    _write_histories(out_dir, by_arm)
    summary, rows, verdicts, repeat_table = _summarize(
        configs, by_arm, seeds, engine.name, reductions
    )
    write_json(out_dir / "summary.json", summary)
    write_text(
        out_dir / "repeats.csv",
        csv_text(("variant", "reduction", *repeat_columns(TASK)), repeat_table),
    )
    for variant in VARIANTS:
        _plot_variant(out_dir / f"{variant}.png", variant, by_arm)
    write_text(out_dir / "report.md", report_markdown(rows, verdicts, epochs, repeats, engine.name))
    return TutorialOutcome(out_dir, summary, rows, verdicts)


def arm_args(arm: tuple[str, str]) -> tuple[str, str]:
    variant, reduction = arm
    return variant, (reduction if reduction != "none" else "batch_sum")


def plot_circles(path: Path, config: ExperimentConfig) -> None:
    """The tutorial's scatter plot of the circles data, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_dataset(config.data)
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test]).ravel()
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, color in ((0, "tab:blue"), (1, "tab:orange")):
        pts = x[y == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=18, color=color, label=f"class {label}")
    ax.set_title(f"circles: {data.n_train} train + {data.n_test} test samples", fontsize=10)
    ax.legend(loc="upper right")
    ax.set_aspect("equal")
    save_figure(path, fig)
    plt.close(fig)


def _plot_variant(path: Path, variant: str, by_arm: dict) -> None:
    import matplotlib.pyplot as plt

    arms = [arm for arm in by_arm if arm[0] == variant]
    fig, axes = plt.subplots(1, len(arms), figsize=(6.4 * len(arms), 4.2), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        histories = np.stack([res.history for res in by_arm[arm]])
        title = TITLES[variant] if arm[1] == "none" else f"{TITLES[variant]}, {arm[1]}"
        accuracy_figure(histories, title, ax=ax)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def _write_histories(out_dir: Path, by_arm: dict) -> None:
    header = ",".join(("variant", "reduction", "repeat", "epoch", *history_columns(TASK))) + "\n"
    parts = [
        history_csv_rows(np.stack([res.history for res in results]), f"{variant},{reduction},")
        for (variant, reduction), results in by_arm.items()
    ]
    write_csv_bytes(out_dir / "history.csv", header, parts)


def _summarize(configs, by_arm, seeds, engine_name, reductions):
    summary: dict[str, Any] = {
        v: {"published": dict(zip(("train_accuracy", "test_accuracy"), PUBLISHED[v], strict=True))}
        for v in VARIANTS
    }
    all_rows = []
    for (variant, reduction), results in by_arm.items():
        repeat_table = repeat_rows(TASK, seeds, results)
        for row in repeat_table:
            all_rows.append({"variant": variant, "reduction": reduction, **row})
        summary[variant][reduction] = summarize(
            configs[(variant, reduction)], repeat_table, engine_name, TASK
        )
    overfit_test = summary["overfit"]["none"]["test_accuracy"]["values"]
    table, verdicts = [], []
    for variant, reduction in by_arm:
        stats = summary[variant][reduction]
        diff = None
        if variant != "overfit":
            diff = difference(stats["test_accuracy"]["values"], overfit_test)
            stats["test_accuracy_minus_overfit"] = diff
        table.append(
            {
                "variant": variant,
                "reduction": reduction,
                "train": stats["train_accuracy"],
                "test": stats["test_accuracy"],
                "published_train": PUBLISHED[variant][0],
                "published_test": PUBLISHED[variant][1],
                "diff": diff,
                "n_diverged": stats["n_diverged"],
            }
        )
    for reduction in reductions:
        for variant in VARIANTS[1:]:
            sentence = claim_verdict(
                variant, reduction, summary[variant][reduction]["test_accuracy_minus_overfit"]
            )
            summary[variant][reduction]["verdict"] = sentence
            verdicts.append(sentence)
    return summary, table, verdicts, all_rows


def claim_verdict(variant: str, reduction: str, diff: dict[str, float]) -> str:
    """One sentence: does the tutorial's claim for `variant` hold under `reduction`?

    The tutorial claims L1 before the ReLU improves test accuracy over the overfit model and L1
    after the ReLU does not. "Clearly" means the 95% CI of the difference excludes zero.
    """
    d, lo, hi = diff["diff"], diff["ci_low"], diff["ci_high"]
    where = "before" if variant == "before_relu" else "after"
    numbers = f"test accuracy {d:+.3f} vs overfit (95% CI {lo:+.3f} to {hi:+.3f})"
    if not math.isfinite(d):
        return f"{reduction}: L1 {where} ReLU: no finite result (every repeat diverged)."
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (
            f"{reduction}: L1 {where} ReLU: test accuracy {d:+.3f} vs overfit; one repeat cannot "
            f"tell this from noise (use --repeats 10)."
        )
    if variant == "before_relu":
        if lo > 0:
            return f"{reduction}: the claim that L1 before ReLU helps HOLDS: {numbers}."
        if hi < 0:
            return f"{reduction}: the claim that L1 before ReLU helps is CONTRADICTED: it hurts, {numbers}."
        return f"{reduction}: the claim that L1 before ReLU helps is NOT SUPPORTED: {numbers} includes 0."
    if lo > 0:
        return (
            f"{reduction}: the claim that L1 after ReLU does not help FAILS: it helps, {numbers}."
        )
    if hi < 0:
        return (
            f"{reduction}: the claim that L1 after ReLU does not help HOLDS (it hurts): {numbers}."
        )
    return (
        f"{reduction}: the claim that L1 after ReLU does not help HOLDS (no clear gain): {numbers}."
    )


def format_diff(diff: dict[str, float] | None) -> str:
    if diff is None:
        return "-"
    if not math.isfinite(diff["ci_low"]):
        return f"{diff['diff']:+.3f}"
    return f"{diff['diff']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"


def report_markdown(rows, verdicts, epochs: int, repeats: int, engine: str) -> str:
    from actreg_cli.reporter import format_mean_std

    lines = [
        "# Reproduction of the activity-regularization tutorial",
        "",
        f"{repeats} repeat(s) per arm, {epochs} epochs, engine `{engine}`. "
        "Test accuracy difference vs the overfit model with a Welch 95% CI.",
        "",
        "| variant | reduction | train | test | published train | published test | test - overfit [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['reduction']} | {format_mean_std(row['train'])} | "
            f"{format_mean_std(row['test'])} | {row['published_train']:.3f} | "
            f"{row['published_test']:.3f} | {format_diff(row['diff'])} |"
        )
    lines += ["", "## Do the tutorial's claims hold?", ""] + [f"- {v}" for v in verdicts] + [""]
    return "\n".join(lines)
