"""The tutorial study's outputs: summary.json, repeats.csv, the figures and report.md with the
verdict on each of the tutorial's claims, made from a trained study (study/tutorial.py) or
re-drawn from its folder's saved files alone (`report_tutorial`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import ExperimentConfig, saved_results_only
from actreg_cli.data import load_dataset
from actreg_cli.engines.base import TrainResult
from actreg_cli.report.html import write_report_html
from actreg_cli.report.run import accuracy_figure, summarize
from actreg_cli.stats import difference, is_degenerate, paired_difference
from actreg_cli.study.files import csv_text, save_figure, write_json, write_text
from actreg_cli.study.records import repeat_columns, repeat_rows
from actreg_cli.study.tutorial import (
    PUBLISHED,
    STUDY_FILE,
    TASK,
    TITLES,
    VARIANTS,
    TutorialRun,
    published_numbers,
)
from actreg_cli.tasks import history_columns, legacy_history_names, result_fields

#: The tutorial trains for 4000 epochs; a verdict at other epochs is about another training.
PUBLISHED_EPOCHS = 4000
#: Fewer repeats than this give no verdict: a t interval from 2-4 values is too unstable to
#: confirm or contradict a published single-run number.
MIN_REPEATS_FOR_VERDICT = 5


@dataclass
class TutorialOutcome:
    out_dir: Path
    summary: dict[str, Any]  # summary.json: variant -> reduction -> stats (+ published, verdicts)
    rows: list[dict[str, Any]]  # the printed table, one row per (variant, reduction)
    verdicts: list[str]  # one sentence per (claim, reduction)


def write_study(
    out_dir: Path,
    configs: dict[tuple[str, str], ExperimentConfig],
    by_arm: dict[tuple[str, str], Sequence[TrainResult]],
    seeds: Sequence[int],
    engine_name: str,
    reductions: Sequence[str],
) -> TutorialOutcome:
    """Write everything made from the results: summary.json, repeats.csv, figures, report.md."""
    first = next(iter(configs.values()))
    epochs, repeats = first.training.epochs, len(seeds)
    plot_circles(out_dir / "circles.png", first)
    summary, rows, verdicts, repeat_table = _summarize(
        configs, by_arm, seeds, engine_name, reductions
    )
    write_json(out_dir / "summary.json", summary)
    write_text(
        out_dir / "repeats.csv",
        csv_text(("variant", "reduction", *repeat_columns(TASK)), repeat_table),
    )
    for variant in VARIANTS:
        _plot_variant(out_dir / f"{variant}.png", variant, by_arm)
    _plot_overlay(out_dir / OVERLAY_PNG, by_arm, reductions, epochs)
    _plot_final(out_dir / FINAL_PNG, summary, list(by_arm), epochs)
    write_text(out_dir / "report.md", report_markdown(rows, verdicts, epochs, repeats, engine_name))
    write_report_html(out_dir / "report.md")
    return TutorialOutcome(out_dir, summary, rows, verdicts)


def report_trained(run: TutorialRun) -> TutorialOutcome:
    """The outputs of a study just trained (`study.tutorial.run_tutorial`)."""
    return write_study(run.out_dir, run.configs, run.by_arm, run.seeds, run.engine, run.reductions)


@saved_results_only()
def report_tutorial(out_dir: Path) -> TutorialOutcome:
    """Re-draw a tutorial folder (figures, summary.json, report.md) from its saved files alone:
    study.yaml, history.csv and repeats.csv."""
    import csv

    from actreg_cli.config import validate_mapping
    from actreg_cli.config.yaml_io import load_saved_mapping
    from actreg_cli.study.records import read_repeats_csv

    meta = load_saved_mapping(out_dir / STUDY_FILE)
    configs = {
        tuple(key.split("/", 1)): validate_mapping(data, ExperimentConfig, f"{STUDY_FILE} {key}")
        for key, data in meta["config"].items()
    }
    rows_by_arm: dict[tuple[str, str], list[dict[str, Any]]] = {arm: [] for arm in configs}
    for row in read_repeats_csv(out_dir / "repeats.csv"):
        rows_by_arm[(row["variant"], row["reduction"])].append(row)
    histories: dict[tuple[str, str], dict[int, list[list[float]]]] = {arm: {} for arm in configs}
    with open(out_dir / "history.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = legacy_history_names(list(reader.fieldnames or []))
        for line in reader:
            arm = (line["variant"], line["reduction"])
            values = [float(line[c]) for c in history_columns(TASK)]
            histories[arm].setdefault(int(line["repeat"]), []).append(values)
    by_arm = {}
    for arm, rows in rows_by_arm.items():
        if len(rows) != len(meta["seeds"]):
            raise ValueError(
                f"{out_dir / 'repeats.csv'}: {len(rows)} rows for {arm[0]}/{arm[1]}, "
                f"expected {len(meta['seeds'])} (one per repeat)"
            )
        by_arm[arm] = [
            TrainResult(
                history=np.asarray(histories[arm][row["repeat"]], dtype=np.float64),
                diverged=row["diverged"],
                **{name: row[name] for name in result_fields(TASK)},
            )
            for row in sorted(rows, key=lambda r: r["repeat"])
        ]
    return write_study(
        out_dir, configs, by_arm, meta["seeds"], meta.get("engine", "unknown"), meta["reductions"]
    )


def circles_figure(config: ExperimentConfig) -> Any:
    """The tutorial's circles data: class by colour; the training points (the few the model
    learns from) large and filled, the test points small and hollow."""
    from matplotlib.figure import Figure  # no pyplot: nothing to close, no global state

    data = load_dataset(config.data)
    fig = Figure(figsize=(5.2, 5.6), layout="constrained")
    ax = fig.add_subplot()
    for label, color in ((0, "tab:blue"), (1, "tab:orange")):
        test = data.x_test[data.y_test.ravel() == label]
        ax.scatter(
            test[:, 0],
            test[:, 1],
            s=22,
            facecolors="none",
            edgecolors=color,
            linewidths=1.0,
            label=f"class {label}, test ({len(test)})",
        )
    for label, color in ((0, "tab:blue"), (1, "tab:orange")):
        train = data.x_train[data.y_train.ravel() == label]
        ax.scatter(
            train[:, 0],
            train[:, 1],
            s=70,
            color=color,
            edgecolors="black",
            linewidths=0.8,
            zorder=3,
            label=f"class {label}, train ({len(train)})",
        )
    ax.set_title(
        f"circles: {data.n_train} train (filled) + {data.n_test} test (hollow) samples",
        fontsize=10,
    )
    ax.set_aspect("equal")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def plot_circles(path: Path, config: ExperimentConfig) -> None:
    """circles.png (`circles_figure`)."""
    save_figure(path, circles_figure(config))


def _plot_variant(path: Path, variant: str, by_arm: dict) -> None:
    """<variant>.png: train and test accuracy per epoch, one panel per reduction."""
    from matplotlib.figure import Figure

    arms = [arm for arm in by_arm if arm[0] == variant]
    fig = Figure(figsize=(6.4 * len(arms), 4.4), layout="constrained")
    axes = fig.subplots(1, len(arms), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        histories = np.stack([res.history for res in by_arm[arm]])
        # The variant on one line, reduction and epochs on the next: a panel's title then
        # fits its own panel, whatever accuracy_figure adds about the repeats.
        title = TITLES[variant] + "\n" + ("" if arm[1] == "none" else f"{arm[1]}, ")
        title += f"{histories.shape[1]} epochs"
        accuracy_figure(histories, title, ax=ax, diverged=[res.diverged for res in by_arm[arm]])
    save_figure(path, fig)


OVERLAY_PNG = "test_accuracy_overlay.png"
FINAL_PNG = "final_test_accuracy.png"
#: Every figure of the study folder, in the order report.md shows them, with a caption.
FIGURES = {
    OVERLAY_PNG: "Test accuracy per epoch of the three variants, one panel per reduction",
    FINAL_PNG: "Final test accuracy per arm (mean, 95% CI) with the published single runs",
    "overfit.png": "Overfit MLP: train and test accuracy per epoch",
    "before_relu.png": "L1 before ReLU: train and test accuracy per epoch",
    "after_relu.png": "L1 after ReLU: train and test accuracy per epoch",
    "circles.png": "The circles data",
}
COLORS = {"overfit": "0.25", "before_relu": "tab:green", "after_relu": "tab:purple"}


def _plot_overlay(path: Path, by_arm: dict, reductions: Sequence[str], epochs: int) -> None:
    """Test accuracy per epoch: the three variants overlaid (mean over the finite repeats and a
    +/- 1 std band), one panel per reduction; the overfit model (no penalty) is in every panel."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4 * len(reductions), 4.4), layout="constrained")
    axes = fig.subplots(1, len(reductions), squeeze=False, sharey=True)
    for ax, reduction in zip(axes[0], reductions, strict=True):
        for variant in VARIANTS:
            arm = (variant, "none" if variant == "overfit" else reduction)
            ok = [res.history[:, 3] for res in by_arm[arm] if not res.diverged]
            label = TITLES[variant]
            n_bad = len(by_arm[arm]) - len(ok)
            if n_bad:
                label += f" ({n_bad} diverged, left out)"
            if not ok:
                continue
            values = np.stack(ok)
            x = np.arange(1, values.shape[1] + 1)
            mean = values.mean(axis=0)
            ax.plot(x, mean, color=COLORS[variant], lw=1.3, label=label)
            if len(ok) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(x, mean - std, mean + std, color=COLORS[variant], alpha=0.15, lw=0)
        n = len(next(iter(by_arm.values())))
        ax.set_title(
            f"activity reduction {reduction}\n"
            f"test accuracy, mean +/- std of {n} repeats, {epochs} epochs",
            fontsize=9,
        )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    save_figure(path, fig)


def published_text(value: float | None) -> str:
    """A published accuracy in a table; '-' for an arm the tutorial published nothing for."""
    return "-" if value is None else f"{value:.3f}"


def _plot_final(path: Path, summary: dict, arms: Sequence[tuple[str, str]], epochs: int) -> None:
    """Final test accuracy per arm: mean and 95% CI over the repeats, the tutorial's published
    single-run value as a red star beside it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for k, (variant, reduction) in enumerate(arms):
        stats = summary[variant][reduction]["test_accuracy"]
        mean, lo, hi = stats["mean"], stats["ci_low"], stats["ci_high"]
        if math.isfinite(mean):
            yerr = [[mean - lo], [hi - mean]] if math.isfinite(lo) else None
            ax.errorbar(
                [k],
                [mean],
                yerr=yerr,
                fmt="o",
                color=COLORS[variant],
                capsize=5,
                ms=6,
                label="this study: mean, 95% CI" if k == 0 else None,
            )
        published = published_numbers(variant, reduction)
        if published is not None:  # (a batch_mean arm has none: Keras 2.3 ran batch_sum)
            ax.plot(
                [k + 0.18],
                [published[1]],
                marker="*",
                ms=12,
                color="tab:red",
                ls="none",
                label=f"published single run (Keras 2.3, batch_sum; {PUBLISHED_EPOCHS} epochs)"
                if k == 0
                else None,
            )
    ax.set_xticks(range(len(arms)), [f"{v}\n{r}" for v, r in arms], fontsize=8)
    n = summary[arms[0][0]][arms[0][1]]["repeats"]
    ax.set_title(f"Final test accuracy per arm ({n} repeats, {epochs} epochs)", fontsize=10)
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: inside, it would hide a star or an interval wherever the numbers fall.
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    save_figure(path, fig)


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
        diff = paired = None
        if variant != "overfit":
            # Repeat i of every arm starts from the same seed, so the differences pair up.
            diff = difference(stats["test_accuracy"]["values"], overfit_test)
            paired = paired_difference(stats["test_accuracy"]["values"], overfit_test)
            stats["test_accuracy_minus_overfit"] = diff
            stats["test_accuracy_minus_overfit_paired"] = paired
        # (None, None) where the tutorial published nothing comparable (batch_mean)
        published_train, published_test = published_numbers(variant, reduction) or (None, None)
        table.append(
            {
                "variant": variant,
                "reduction": reduction,
                "train": stats["train_accuracy"],
                "test": stats["test_accuracy"],
                "published_train": published_train,
                "published_test": published_test,
                "diff": diff,
                "paired": paired,
                "n_diverged": stats["n_diverged"],
            }
        )
    for reduction in reductions:
        for variant in VARIANTS[1:]:
            arm = summary[variant][reduction]
            sentence = claim_verdict(
                variant,
                reduction,
                arm["test_accuracy_minus_overfit"],
                arm["test_accuracy_minus_overfit_paired"],
                epochs=arm["epochs"],
            )
            summary[variant][reduction]["verdict"] = sentence
            verdicts.append(sentence)
    return summary, table, verdicts, all_rows


def claim_verdict(
    variant: str,
    reduction: str,
    welch: dict[str, float],
    paired: dict[str, float],
    *,
    epochs: int = PUBLISHED_EPOCHS,
) -> str:
    """One sentence: does the tutorial's claim for `variant` hold under `reduction`?

    The tutorial claims L1 before the ReLU improves test accuracy over the overfit model and L1
    after the ReLU does not. The verdict uses the paired 95% CI (repeats share seeds across
    arms); "clearly" means it excludes zero. No verdict from fewer than MIN_REPEATS_FOR_VERDICT
    finite pairs or from a degenerate interval (no spread: nothing to tell noise from effect).
    At epochs other than the published 4000 the sentence says so.
    """
    d, lo, hi, n = paired["diff"], paired["ci_low"], paired["ci_high"], paired["n"]
    where = "before" if variant == "before_relu" else "after"
    at = "" if epochs == PUBLISHED_EPOCHS else f" (at {epochs} epochs, not the published 4000)"
    numbers = (
        f"test accuracy {d:+.3f} vs overfit (paired 95% CI {lo:+.3f} to {hi:+.3f}, n = {n}; "
        f"Welch {welch['ci_low']:+.3f} to {welch['ci_high']:+.3f})"
    )
    if not math.isfinite(d):
        return f"{reduction}: L1 {where} ReLU: no finite result (every repeat diverged){at}."
    if n < MIN_REPEATS_FOR_VERDICT:
        return (
            f"{reduction}: L1 {where} ReLU: NO VERDICT: test accuracy {d:+.3f} vs overfit from "
            f"{n} paired repeat(s); a verdict needs at least {MIN_REPEATS_FOR_VERDICT} "
            f"(use --repeats 10){at}."
        )
    if is_degenerate(paired) or is_degenerate(welch):
        return (
            f"{reduction}: L1 {where} ReLU: NO VERDICT: test accuracy {d:+.3f} vs overfit with no "
            f"spread over {n} repeats (degenerate interval {lo:+.3f} to {hi:+.3f}): identical "
            f"repeats cannot tell an effect from noise (too few epochs to train?){at}."
        )
    if variant == "before_relu":
        if lo > 0:
            return f"{reduction}: the claim that L1 before ReLU helps HOLDS: {numbers}{at}."
        if hi < 0:
            return (
                f"{reduction}: the claim that L1 before ReLU helps is CONTRADICTED: it hurts, "
                f"{numbers}{at}."
            )
        return (
            f"{reduction}: the claim that L1 before ReLU helps is NOT SUPPORTED: {numbers} "
            f"includes 0{at}."
        )
    if lo > 0:
        return (
            f"{reduction}: the claim that L1 after ReLU does not help FAILS: it helps, "
            f"{numbers}{at}."
        )
    if hi < 0:
        return (
            f"{reduction}: the claim that L1 after ReLU does not help HOLDS (it hurts): "
            f"{numbers}{at}."
        )
    return (
        f"{reduction}: the claim that L1 after ReLU does not help HOLDS (no clear gain): "
        f"{numbers}{at}."
    )


def format_diff(diff: dict[str, float] | None) -> str:
    if diff is None:
        return "-"
    if not math.isfinite(diff["ci_low"]):
        return f"{diff['diff']:+.3f}"
    return f"{diff['diff']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"


def epochs_note(epochs: int) -> str | None:
    """A warning when the study did not train for the published 4000 epochs."""
    if epochs == PUBLISHED_EPOCHS:
        return None
    return (
        f"These models trained {epochs} epochs, not the published {PUBLISHED_EPOCHS}: the "
        "comparison with the published numbers and the verdicts are about a different training."
    )


def report_markdown(rows, verdicts, epochs: int, repeats: int, engine: str) -> str:
    from actreg_cli.report.run import format_mean_std

    lines = [
        "# Reproduction of the activity-regularization tutorial",
        "",
        f"{repeats} repeat(s) per arm, {epochs} epochs, engine `{engine}`. "
        "Test accuracy difference vs the overfit model: paired 95% CI (repeat i of every arm "
        "shares its seed) and Welch 95% CI. Verdicts use the paired interval and need at least "
        f"{MIN_REPEATS_FOR_VERDICT} repeats and a non-degenerate interval. The published "
        "numbers are the tutorial's single runs on Keras 2.3, whose activity penalty is "
        "`batch_sum`'s: the `batch_mean` arms have none to compare with.",
        "",
    ]
    note = epochs_note(epochs)
    if note:
        lines += [f"**Note:** {note}", ""]
    lines += [
        "| variant | reduction | train | test | published train | published test "
        "| test - overfit, paired [95% CI] | Welch [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['reduction']} | {format_mean_std(row['train'])} | "
            f"{format_mean_std(row['test'])} | {published_text(row['published_train'])} | "
            f"{published_text(row['published_test'])} | {format_diff(row['paired'])} | "
            f"{format_diff(row['diff'])} |"
        )
    lines += ["", "## Do the tutorial's claims hold?", ""] + [f"- {v}" for v in verdicts] + [""]
    lines += ["## Figures", ""]
    for name, caption in FIGURES.items():
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(lines)
