"""report.html beside report.md in run, sweep and tutorial folders: one self-contained page
(figures inline as data URIs, nothing fetched from the network), tables sortable by a header."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, run_and_report, write_yaml
from test_study_sweep import FakeExecutor, sweep_config

from actreg_cli.config import load_experiment
from actreg_cli.report.html import markdown_to_html

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a browser would load or follow: every src/href, the tags, and the table headers."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.headers: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset")]
        if tag == "th":
            self._in_th = True
            self.headers.append("")

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._in_th:
            self.headers[-1] += data.strip()


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def assert_self_contained(folder: Path) -> Page:
    """report.html of `folder`: every figure report.md shows is inlined as a PNG data URI of the
    file's bytes; no src or href leaves the page; no style sheet or script is loaded."""
    page = read_page(folder / "report.html")
    text = (folder / "report.html").read_text(encoding="utf-8")
    shown = [
        line.split("](", 1)[1].rstrip(")")
        for line in (folder / "report.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("![")
    ]
    images = [value for tag, attr, value in page.links if tag == "img"]
    assert len(images) == len(shown) >= 1
    for name, src in zip(shown, images, strict=True):
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1]) == (folder / name).read_bytes(), name
    for tag, attr, value in page.links:
        assert not value.startswith(("http:", "https:", "//", "file:")), (tag, attr, value)
    assert "<link" not in text and "@import" not in text and "<script src" not in text
    assert "table" in page.tags and "sortable" in text  # the inline sorting script is there
    return page


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A run folder (2 repeats, 3 epochs), a sweep study and a tutorial folder, each of made-up
    models (no training: the report is what is tested)."""
    tmp = tmp_path_factory.mktemp("html")
    config = write_yaml(
        tmp / "tiny.yaml",
        {
            "name": "tiny",
            "model": {"hidden_units": [8]},
            "regularizers": [{"norm": "l1", "strength": 1e-3, "placement": "before_activation"}],
            "training": {"epochs": 3, "repeats": 2, "seed": 5},
        },
    )
    run = made_up_run(load_experiment(config), tmp / "runs")
    # The sweep's models are made up too (test_study_sweep.FakeExecutor): no training.
    outcome = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp / "runs", executor=FakeExecutor()
    )
    return {"run": run, "sweep": outcome.folder, "tutorial": made_up_tutorial(tmp / "runs")}


class MadeUpEngine:
    """An engine that trains nothing: each job gets a made-up history and final metrics (seeded),
    so a tutorial folder is written in the time its figures take."""

    name = "cpu"

    def unsupported(self, config):
        return None

    def train(self, jobs, progress=None):
        from actreg_cli.engines.base import TrainResult

        results = []
        for index, job in enumerate(jobs):
            rng = np.random.default_rng(index)
            epochs = job.config.training.epochs
            history = np.column_stack(
                [
                    np.linspace(0.7, 0.3, epochs),
                    rng.uniform(0.6, 1.0, epochs),
                    np.linspace(0.7, 0.5, epochs),
                    rng.uniform(0.5, 0.9, epochs),
                ]
            )
            results.append(
                TrainResult(
                    history=history,
                    train_loss=0.3,
                    test_loss=0.5,
                    mean_activation=float(rng.uniform(0.1, 0.3)),
                    zero_fraction=float(rng.uniform(0.3, 0.6)),
                    diverged=False,
                    train_accuracy=float(history[-1, 1]),
                    test_accuracy=float(history[-1, 3]),
                )
            )
        return results


def made_up_run(config, runs_dir: Path) -> Path:
    """A complete run folder of made-up models: `actreg run` with an engine that trains
    nothing."""
    from actreg_cli.report.run import report_outcome
    from actreg_cli.study.run import run_experiment

    outcome = run_experiment(config, engine=MadeUpEngine(), runs_dir=runs_dir)
    report_outcome(outcome)
    return outcome.run_dir


def made_up_tutorial(runs_dir: Path, epochs: int = 4, repeats: int = 2) -> Path:
    """A complete tutorial folder (study.yaml, history.csv, summary.json, figures, reports) of
    made-up models: `actreg tutorial` with an engine that trains nothing."""
    from actreg_cli.report.tutorial import report_trained
    from actreg_cli.study.tutorial import run_tutorial

    run = run_tutorial(engine=MadeUpEngine(), epochs=epochs, repeats=repeats, runs_dir=runs_dir)
    return report_trained(run).out_dir


def test_a_run_folder_has_a_report_of_what_ran_and_its_final_metrics(folders) -> None:
    run = folders["run"]
    report = (run / "report.md").read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text())
    assert report.startswith("# Run `tiny`")
    for row in (
        "| data | circles data (100 samples, 30 train, noise 0.1); 30 train rows, 70 test rows, "
        "2 features |",
        "| model | MLP [8] relu |",
        "| regularizers | L1 0.001 on activity before activation (batch_mean) |",
        "| training | adam lr 0.001, batch size 32, 3 epochs |",
        f"| repeats | 2 (seeds {', '.join(str(s) for s in summary['seeds'])}) |",
    ):
        assert row in report, row
    assert f"| engine | {summary['engine']}" in report
    stats = summary["test_accuracy"]
    low, high = max(stats["ci_low"], 0.0), min(stats["ci_high"], 1.0)  # cut at 0..1
    assert (
        f"| test_accuracy | {stats['mean']:.4f} | {stats['std']:.4f} | "
        f"{low:.4f} to {high:.4f} | 2 |" in report
    )
    assert "![Train and test accuracy per epoch](accuracy.png)" in report
    page = assert_self_contained(run)
    assert page.headers[:2] == ["what ran", ""]
    assert page.headers[2:7] == ["metric", "mean", "std", "95% CI", "n"]


def test_report_redraws_a_run_folder_s_report_md_and_html(folders) -> None:
    run = folders["run"]
    drawn = (run / "report.md").read_bytes()
    for name in ("report.md", "report.html"):
        (run / name).unlink()
    result = invoke("report", run)
    assert result.exit_code == 0, result.output
    assert (run / "report.md").read_bytes() == drawn
    assert_self_contained(run)


@pytest.mark.parametrize("kind", ["sweep", "tutorial"])
def test_sweep_and_tutorial_folders_have_a_self_contained_report_html(folders, kind) -> None:
    folder = folders[kind]
    page = assert_self_contained(folder)
    if kind == "sweep":
        assert {"cell", "swept values", "n"} <= set(page.headers)
        assert len([t for t, a, v in page.links if t == "img"]) == 2  # sweep.png, sparsity.png
    else:
        assert {"variant", "reduction", "published test"} <= set(page.headers)
        assert len([t for t, a, v in page.links if t == "img"]) == 6  # every figure of FIGURES
    (folder / "report.html").unlink()
    assert invoke("report", folder).exit_code == 0
    assert_self_contained(folder)


def test_user_text_and_links_never_make_the_page_load_anything(tmp_path: Path) -> None:
    """A description is the user's words: raw HTML in it is shown as text; a link or image on
    the web becomes text; a figure missing beside the report is said in words."""
    (tmp_path / "fig.png").write_bytes(PNG + b"made up")
    text = "\n".join(
        [
            "# Sweep `x`",
            "",
            'Note <script src="https://example.org/x.js">alert(1)</script> & <b>bold</b>.',
            "",
            "See [the docs](https://example.org/docs), [a file](results.csv).",
            "",
            "| cell | test accuracy mean ± std |",
            "|---|---|",
            "| c1 | 0.900 ± 0.010 |",
            "| c2 | 0.850 ± 0.020 |",
            "",
            "![here](fig.png) ![web](https://example.org/a.png) ![gone](missing.png)",
            "![outside](../fig.png)",
        ]
    )
    page_text = markdown_to_html(text, tmp_path)
    page = Page()
    page.feed(page_text)
    assert "<title>Sweep x</title>" in page_text
    assert "&lt;script src=" in page_text and "<b>" not in page_text
    assert ("a", "href", "results.csv") in page.links  # a file beside the report stays a link
    assert all("example.org" not in value for _, _, value in page.links)
    assert "the docs" in page_text
    images = [value for tag, _, value in page.links if tag == "img"]
    assert images == ["data:image/png;base64," + base64.b64encode(PNG + b"made up").decode()]
    assert "[figure not found beside the report: missing.png]" in page_text
    assert "[figure not found beside the report: https://example.org/a.png]" in page_text
    assert "[figure not found beside the report: ../fig.png]" in page_text
    assert page.headers == ["cell", "test accuracy mean ± std"]
