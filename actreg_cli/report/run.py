"""What a run folder shows of its stored results (study/records.py: history.csv, repeats.csv):
summary.json and a curve plot (accuracy.png for classification, mae.png for regression and
reconstruction); for a reconstruction run whose engine kept samples, reconstructions.png.

The columns follow the task (tasks.py): test_accuracy for classification; test_mse, test_mae
and test_r2 for regression; test_loss always.

Every file is written atomically. `report_run` rebuilds summary.json and accuracy.png from the
saved CSV files alone, so a run folder can be re-drawn without training again.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import (
    ExperimentConfig,
    Target,
    describe_experiment,
    saved_results_only,
    validate_mapping,
)
from actreg_cli.report.html import write_report_html
from actreg_cli.report.index import own_penalties
from actreg_cli.report.reconstructions import RECONSTRUCTIONS_FIGURE, run_reconstructions_figure
from actreg_cli.stats import CORRECTED, describe, interval_method, shown_interval
from actreg_cli.study.files import save_figure, write_json, write_text
from actreg_cli.study.records import read_history_csv, read_repeats_csv, saved_task
from actreg_cli.study.run import RunOutcome
from actreg_cli.study.samples import SAMPLES_FILE, load_samples
from actreg_cli.tasks import Task, result_fields, spec


def intervals_cover(config: ExperimentConfig) -> str:
    """What the spread over repeats (and so a confidence interval) includes, and how the
    interval is computed when the repeats' training sets overlap."""
    if not config.data.resample:
        return "initialization noise only (the same data split in every repeat)"
    text = "initialization and data noise (data.resample: a new split/sample per repeat)"
    overlap = config.data.overlapping_resamples
    if overlap:
        text += (
            f"; the repeats split the same rows, so their training sets overlap: intervals use "
            f"the {CORRECTED}, variance x (1/J + n_test/n_train = {overlap:.2f})"
        )
    return text


def summarize(
    config: ExperimentConfig, rows: Sequence[dict[str, Any]], engine: str, task: Task
) -> dict[str, Any]:
    """summary.json: each of the task's result fields over repeats as {mean, std, ci_low,
    ci_high, n, values}, the task, its main metric and what the intervals cover."""
    summary: dict[str, Any] = {
        "name": config.name,
        "description": config.description,
        "what_ran": describe_experiment(config),
        "engine": engine,
        "task": task.value,
        "main_metric": spec(task).main_metric,
        "higher_is_better": spec(task).higher_is_better,
        "intervals_cover": intervals_cover(config),
        "interval_method": interval_method(config.data.overlapping_resamples),
        "epochs": config.training.epochs,
        "repeats": len(rows),
        "seeds": [row["seed"] for row in rows],
        "activity_reductions": sorted(
            {
                reg.reduction.value
                for _, reg in config.all_regularizers
                if reg.target is Target.activity
            }
        ),
        "probe_layer": config.probe_layer,
        "probe_name": config.probe_name,
    }
    overlap = config.data.overlapping_resamples
    for key in stored_result_fields(task, rows):
        values = [row[key] for row in rows]
        if key == "stopped_epoch":  # 0 for a repeat that ran every epoch: a code, no epoch
            epochs = config.training.epochs
            summary["epochs_trained"] = describe([v or epochs for v in values], overlap=overlap)
            summary[key] = {"values": [float(v) for v in values],
                            "n_stopped": sum(1 for v in values if v)}  # fmt: skip
            continue
        summary[key] = describe(values, overlap=overlap)
    summary["diverged"] = [row["diverged"] for row in rows]
    summary["n_diverged"] = sum(summary["diverged"])
    return summary


def stored_result_fields(task: Task, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The task's result fields that the repeat rows hold (validation and early-stopping
    fields only where the run had them)."""
    return [key for key in result_fields(task, True, True) if not rows or key in rows[0]]


def target_unit_results(
    rows: Sequence[dict[str, Any]], meta: dict[str, Any], task: Task, overlap: float = 0.0
) -> dict[str, Any]:
    """A standardized regression's MSE and MAE back in the target's own units: MSE x std**2
    and MAE x std, with the std of each repeat's training target (run.yaml's
    `target_train_mean_std`, per repeat under data.resample). Empty for other tasks or when
    the target was not scaled (std 1). overlap: as for `stats.describe`."""
    if task is not Task.regression:
        return {}
    if "data_per_repeat" in meta:
        scales = [d.get("target_train_mean_std", [0.0, 1.0]) for d in meta["data_per_repeat"]]
    else:
        scales = [meta.get("data", {}).get("target_train_mean_std", [0.0, 1.0])] * len(rows)
    stds = [float(scale[1]) for scale in scales]
    if len(stds) != len(rows) or all(std == 1.0 for std in stds):
        return {}
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        out[f"{split}_mse_target_units"] = describe(
            [float(row[f"{split}_mse"]) * std**2 for row, std in zip(rows, stds, strict=True)],
            overlap=overlap,
        )
        out[f"{split}_mae_target_units"] = describe(
            [float(row[f"{split}_mae"]) * std for row, std in zip(rows, stds, strict=True)],
            overlap=overlap,
        )
    return out


def draw_mean_and_band(
    ax: Any, values: np.ndarray, label: str, color: str | None = None, alpha: float = 0.2
) -> tuple[str, int]:
    """The mean over repeats of values [repeats, epochs] (NaN after an early stop) and a +/- 1
    std band while every repeat trains; after the first early stop the mean of the repeats
    still training, dotted and without a band (theirs is not the others' curve). Returns the
    line's color and the last epoch (1-based) every repeat trained."""
    epochs = np.arange(1, values.shape[1] + 1)
    present = np.isfinite(values).all(axis=0)
    full = len(epochs) if present.all() else max(1, int(np.argmin(present)))
    with warnings.catch_warnings():  # after early stops, some epochs have one repeat left
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0, ddof=1)
    (line,) = ax.plot(epochs[:full], mean[:full], label=label, color=color, linewidth=1.2)
    color = line.get_color()
    if values.shape[0] > 1:
        ax.fill_between(epochs[:full], (mean - std)[:full], (mean + std)[:full], color=color,
                        alpha=alpha, linewidth=0)  # fmt: skip
    if full < len(epochs):
        ax.plot(epochs[full - 1 :], mean[full - 1 :], color=color, linewidth=0.9, ls=":")
    return color, full


def accuracy_figure(
    histories: np.ndarray,
    title: str,
    ax: Any = None,
    diverged: Sequence[bool] | None = None,
    task: Task = Task.binary,
    ylabel: str | None = None,
) -> Any:
    """Train and test accuracy (regression: MAE) per epoch; with repeats, the mean and a
    +/- 1 std band.

    histories: [repeats, epochs, 4 or 6] (NaN after an early stop); diverged: one flag per
    repeat (engines.base.has_diverged). With a validation set (6 columns) its curve is drawn too.
    Diverged repeats are left out of the mean and drawn one by one as red dashed lines, with a
    red note saying how many diverged, so that a diverged run never looks like a normal one.
    Draws on `ax` when given, else on a new figure. `ylabel`: the y axis's label (default:
    the metric's name). Returns the figure.
    """
    from matplotlib.figure import Figure  # no pyplot: nothing to close, no global state
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    n = histories.shape[0]
    flags = np.zeros(n, dtype=bool) if diverged is None else np.asarray(diverged, dtype=bool)
    ok = histories[~flags]
    epochs = np.arange(1, histories.shape[1] + 1)
    curves = [(1, "train", "tab:blue"), (3, "test", "tab:orange")]
    if histories.shape[2] > 4:
        curves.append((5, "validation", "tab:green"))
    full = len(epochs)
    for column, label, color in curves:
        if not len(ok):
            break
        _, full = draw_mean_and_band(ax, ok[:, :, column], label, color)
    if len(ok) > 1 and full < len(epochs):
        left = int(np.isfinite(ok[:, -1, 1]).sum())
        late = f"after epoch {full}: the repeats not stopped yet ({left} at the end)"
        ax.plot([], [], color="gray", ls=":", lw=0.9, label=late)
    n_bad = int(flags.sum())
    for k, history in enumerate(histories[flags]):
        label = f"test, diverged repeat{'s' if n_bad > 1 else ''}" if k == 0 else None
        ax.plot(epochs, history[:, 3], color="tab:red", ls="--", lw=0.9, alpha=0.8, label=label)
    if n_bad:
        ax.text(
            0.5,
            0.5,
            f"{n_bad} of {n} repeat{'s' if n > 1 else ''} DIVERGED\n"
            "(loss non-finite or > 1000x its start)"
            + ("\nleft out of the mean" if len(ok) else ""),
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="tab:red",
            fontsize=11,
            fontweight="bold",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "tab:red"},
        )
    if n == 1:
        note = "(DIVERGED)" if n_bad else ""
    elif not len(ok):
        note = f"(all {n} repeats DIVERGED)"
    else:
        note = f"(mean +/- std of {len(ok)} repeats" + (f"; {n_bad} diverged)" if n_bad else ")")
    # The note goes on the title's last line while that stays short enough to fit a panel
    # (about 60 characters at 10 pt in 4.5 inches), else on a line of its own.
    last = title.rsplit("\n", 1)[-1]
    if not note:
        shown = title
    elif len(last) + len(note) < 60:
        shown = f"{title} {note}"
    else:
        shown = f"{title}\n{note}"
    ax.set_title(shown, fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    metric = spec(task).history_metric
    ax.set_ylabel(ylabel or metric)
    if metric == "accuracy":
        ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
    return fig


def curve_label(config: ExperimentConfig, task: Task) -> str | None:
    """The curve plot's y label naming a table's target column, e.g. 'accuracy predicting
    species' or 'mae of body_mass_g (in training std units)'; None for other sources."""
    target = getattr(config.data, "target", None)
    metric = spec(task).history_metric
    if target is None:
        return None
    if metric == "accuracy":
        return f"accuracy predicting {target}"
    scaled = config.data.standardize and task is Task.regression
    return f"{metric} of {target}" + (" (in training std units)" if scaled else "")


def curve_plot_name(task: Task) -> str:
    """accuracy.png (classification) or mae.png (regression)."""
    return f"{spec(task).history_metric}.png"


def own_model_words(record: Any) -> str:
    """A Keras model of your own as run.yaml's `own_model` recorded it (the report never
    imports it): '; 849 parameters: stem (Dense relu), ...; its own penalties: ...'."""
    if not isinstance(record, dict):
        return ""
    layers = [row for row in record.get("layers", []) if isinstance(row, dict)]
    words = [
        f"{row.get('name')} ({row.get('kind')}"
        + (f" {row['activation']}" if row.get("activation") else "")
        + ")"
        for row in layers
    ]
    text = f"; {record.get('parameters', '?')} parameters: {', '.join(words)}"
    kept = own_penalties(record)
    if kept:
        text += f"; the model's own penalties, kept: {', '.join(kept)}"
    return text


def run_markdown(
    config: ExperimentConfig,
    summary: dict[str, Any],
    meta: dict[str, Any],
    figures: Sequence[tuple[str, str]],
) -> str:
    """report.md of a run folder: what ran (data, model, regularizers, training, engine,
    repeats), the final metrics over repeats (mean, std, 95% CI, n) from summary.json, and the
    figures. figures: (file name, caption) of each figure in the folder, in the order shown."""
    import textwrap

    # describe_experiment ends with '; network; penalties; optimizer; epochs'; the data part
    # (a file name may hold '; ') is whatever comes before.
    data_words, network, penalties, optimizer, epochs = describe_experiment(config).rsplit("; ", 4)
    data_meta = meta.get("data") or {}
    if "data_per_repeat" in meta:  # data.resample: a split per repeat; the first one's sizes
        data_meta = (meta["data_per_repeat"] or [{}])[0]
    sizes = ", ".join(
        f"{data_meta[key]} {words}"
        for key, words in (
            ("n_train", "train rows"),
            ("n_val", "validation rows"),
            ("n_test", "test rows"),
            ("n_features", "features"),
        )
        if data_meta.get(key)
    )
    engine = str(summary.get("engine", meta.get("engine", "unknown")))
    if meta.get("backend"):
        engine += f" ({meta['backend']})"
    seeds = ", ".join(str(seed) for seed in summary.get("seeds", []))
    task = summary.get("task", "?")
    facts = {
        "data": data_words + (f"; {sizes}" if sizes else ""),
        "task": f"{task}; main metric {summary.get('main_metric', '?')} ("
        + ("higher" if summary.get("higher_is_better", True) else "lower")
        + " is better)",
        "model": network + own_model_words(meta.get("own_model")),
        "regularizers": penalties,
        "training": f"{optimizer}, batch size {config.training.batch_size}, {epochs}",
        "engine": engine,
        "repeats": f"{summary.get('repeats', '?')} (seeds {seeds})",
        "95% CIs cover": str(summary.get("intervals_cover", "")),
    }
    lines = [f"# Run `{config.name}`", ""]
    if config.description:
        lines += [textwrap.dedent(config.description).strip(), ""]
    lines += [
        "| what ran | |",
        "|---|---|",
        *[f"| {key} | {markdown_cell(value)} |" for key, value in facts.items()],
        "",
        "## Final metrics",
        "",
        f"Over {summary.get('repeats', '?')} repeat(s), "
        + (
            "with the weights early stopping kept (`training.early_stopping`; "
            "`epochs_trained`: the epochs a repeat trained, all of them where early stopping "
            "did not stop it; `stopped_epoch` in repeats.csv is then 0)"
            if "stopped_epoch" in summary
            else "after the last epoch"
        )
        + "; mean, sample std and the 95% CI of the mean (t interval).",
        "",
        "| metric | mean | std | 95% CI | n |",
        "|---|---|---|---|---|",
    ]
    cut = False
    for key, stats in summary.items():
        if not (isinstance(stats, dict) and {"mean", "std", "ci_low", "ci_high"} <= set(stats)):
            continue
        digits = ".4g" if key.endswith("_target_units") else ".4f"
        low, high = shown_interval(stats["ci_low"], stats["ci_high"], key)
        cut = cut or low > stats["ci_low"] or high < stats["ci_high"]  # (False for NaN)
        lines.append(
            f"| {key} | {report_number(stats['mean'], digits)} | "
            f"{report_number(stats['std'], digits)} | "
            f"{report_number(low, digits)} to {report_number(high, digits)} "
            f"| {stats.get('n', '?')} |"
        )
    if cut:
        lines += [
            "",
            "Some intervals are cut at their metric's range (accuracy at 0 and 1, losses at 0): "
            "the t interval of few repeats, or of values near a bound, runs past it. "
            "`summary.json` keeps its own ends.",
        ]
    n_diverged = int(summary.get("n_diverged", 0) or 0)
    if n_diverged:
        lines += [
            "",
            f"**{n_diverged} of {summary.get('repeats', '?')} repeat(s) diverged** (loss "
            "non-finite or over 1000x its start): their metrics are NaN and left out of the means.",
        ]
    lines += [
        "",
        "Files: `config.yaml` (the resolved config), `run.yaml` (seeds, engine, versions), "
        "`history.csv` (per epoch and repeat), `repeats.csv` (final metrics per repeat), "
        "`summary.json` (these statistics).",
        "",
        "## Figures",
        "",
    ]
    for name, caption in figures:
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(lines)


def report_number(value: Any, digits: str = ".4f") -> str:
    """A statistic for report.md; 'n/a' for a missing or non-finite one (every repeat
    diverged, or a single repeat's std and CI)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:{digits}}" if math.isfinite(number) else "n/a"


def markdown_cell(text: str) -> str:
    """Text inside a markdown table cell: a '|' would end the cell, a newline the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def write_run_report(
    run_dir: Path,
    config: ExperimentConfig,
    histories: np.ndarray,
    rows: list,
    engine: str,
    task: Task,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write summary.json, the curve plot, reconstructions.png (reconstruction runs whose
    engine kept samples), report.md and report.html (the same report, self-contained) into
    `run_dir`; return the summary. meta: run.yaml (read from the folder when None)."""
    import matplotlib.pyplot as plt

    from actreg_cli.config.yaml_io import load_saved_mapping

    if meta is None:
        meta = load_saved_mapping(run_dir / "run.yaml")
    summary = summarize(config, rows, engine, task)
    summary.update(target_unit_results(rows, meta, task, config.data.overlapping_resamples))
    write_json(run_dir / "summary.json", summary)
    fig = accuracy_figure(
        histories,
        run_title(config),
        diverged=[row["diverged"] for row in rows],
        task=task,
        ylabel=curve_label(config, task),
    )
    save_figure(run_dir / curve_plot_name(task), fig)
    plt.close(fig)
    metric = spec(task).history_metric
    sets = "Train, validation and test" if histories.shape[2] > 4 else "Train and test"
    figures = [(curve_plot_name(task), f"{sets} {metric} per epoch")]
    if task is Task.reconstruction:
        samples = load_samples(run_dir / SAMPLES_FILE)
        if samples is not None:
            fig = run_reconstructions_figure(samples, run_title(config), config.probe_name)
            save_figure(run_dir / RECONSTRUCTIONS_FIGURE, fig)
            figures.append((RECONSTRUCTIONS_FIGURE, "Test samples and their reconstructions"))
    markdown = write_text(run_dir / "report.md", run_markdown(config, summary, meta, figures))
    write_report_html(markdown)
    return summary


def run_title(config: ExperimentConfig, width: int = 80) -> str:
    """A plot title that says what ran: the name, then the resolved config in words (wrapped)."""
    import textwrap

    return "\n".join([config.name, *textwrap.wrap(describe_experiment(config), width)])


@saved_results_only()
def load_run_config(run_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config saved in a run folder (config.yaml) and the metadata beside it (run.yaml).
    A custom `function:` in it is never imported: the folder is data (`saved_results_only`)."""
    from actreg_cli.config import load_experiment, read_yaml_mapping
    from actreg_cli.config.yaml_io import load_saved_mapping

    meta_path = run_dir / "run.yaml"
    if not meta_path.is_file():
        saved = read_yaml_mapping(run_dir / "config.yaml")
        if "config" in saved and "seeds" in saved:  # a folder from before run.yaml existed
            config = validate_mapping(
                saved["config"], ExperimentConfig, str(run_dir / "config.yaml")
            )
            return config, saved
    config = load_experiment(run_dir / "config.yaml")
    meta = load_saved_mapping(meta_path) if meta_path.is_file() else {}
    return config, meta or {}


def report_outcome(outcome: RunOutcome) -> dict[str, Any]:
    """Write summary.json and the figures of a run just trained (`study.run.run_experiment`);
    return the summary. The same files `report_run` re-draws from the folder alone."""
    return write_run_report(
        outcome.run_dir, outcome.config, outcome.histories, outcome.rows, outcome.engine,
        outcome.task,
    )  # fmt: skip


def report_run(run_dir: Path) -> dict[str, Any]:
    """Re-draw the curve plot and rewrite summary.json from the run folder's saved files."""
    config, meta = load_run_config(run_dir)
    histories = read_history_csv(run_dir / "history.csv")
    rows = read_repeats_csv(run_dir / "repeats.csv")
    engine = meta.get("engine", "unknown")
    return write_run_report(run_dir, config, histories, rows, engine, saved_task(meta), meta)


def format_mean_std(stats: dict[str, Any], spec_: str = ".3f") -> str:
    """'0.829' for one value, '0.829 +/- 0.021' for several, 'nan' when every repeat diverged;
    `spec_` the number format (".4g" for values in a target's own units)."""
    mean, n = stats["mean"], stats["n"]
    if n == 0 or not math.isfinite(mean):
        return "nan"
    return f"{mean:{spec_}}" if n == 1 else f"{mean:{spec_}} +/- {stats['std']:{spec_}}"


def _span(values: list[int]) -> str:
    """'53-56', or '53' when every value is the same."""
    return f"{min(values)}-{max(values)}" if min(values) != max(values) else f"{values[0]}"


def validation_line(summary: dict[str, Any], epochs: int) -> str | None:
    """What the validation set and early stopping did, one line, e.g. 'Validation: accuracy
    0.952 +/- 0.000; early stopping: 2 of 2 repeats stopped, after 53-56 of 80 epochs, best
    epochs 48-51'; None for a run without a validation set."""
    name = "accuracy" if "val_accuracy" in summary else "mae"
    if f"val_{name}" not in summary:
        return None
    line = f"Validation: {name} {format_mean_std(summary[f'val_{name}'])}"
    if "stopped_epoch" in summary:
        stopped = [int(v) for v in summary["stopped_epoch"]["values"] if v]
        best = [int(v) for v in summary["best_epoch"]["values"]]
        line += f"; early stopping: {len(stopped)} of {len(best)} repeats stopped"
        line += f", after {_span(stopped)} of {epochs} epochs" if stopped else f" before {epochs}"
        line += f", best epoch{'s' if len(set(best)) > 1 else ''} {_span(best)}"
    return line


def tutorial_line(summary: dict[str, Any]) -> str:
    """The tutorial's printout: 'Train: 0.967, Test: 0.829' (with repeats: mean +/- std);
    for regression 'Train: MSE 0.41, Test: MSE 0.52, MAE 0.57, R^2 0.48'; for reconstruction
    'Train: MSE 0.41, Test: MSE 0.52, MAE 0.57'."""
    if summary.get("task") == Task.reconstruction.value:
        return (
            f"Train: MSE {format_mean_std(summary['train_mse'])}, "
            f"Test: MSE {format_mean_std(summary['test_mse'])}, "
            f"MAE {format_mean_std(summary['test_mae'])}"
        )
    if summary.get("task") == Task.regression.value:
        return (
            f"Train: MSE {format_mean_std(summary['train_mse'])}, "
            f"Test: MSE {format_mean_std(summary['test_mse'])}, "
            f"MAE {format_mean_std(summary['test_mae'])}, "
            f"R^2 {format_mean_std(summary['test_r2'])}"
            + (
                f" (in the target's units: test MSE "
                f"{format_mean_std(summary['test_mse_target_units'], '.4g')}, MAE "
                f"{format_mean_std(summary['test_mae_target_units'], '.4g')})"
                if "test_mse_target_units" in summary
                else ""
            )
        )
    return (
        f"Train: {format_mean_std(summary['train_accuracy'])}, "
        f"Test: {format_mean_std(summary['test_accuracy'])}"
    )
