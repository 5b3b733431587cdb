"""Shared fixtures: tiny configs that train in well under a second an epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def run_and_report(sweep, **options):
    """What `actreg sweep` does: train and store the cells (study.sweep.run_sweep), then write
    the tables, figures and report (report.sweep.write_outputs)."""
    from actreg_cli.report.sweep import write_outputs
    from actreg_cli.study.sweep.run import run_sweep

    outcome = run_sweep(sweep, **options)
    outcome.files = write_outputs(outcome)
    return outcome


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_config_data() -> dict:
    """A fast experiment: the tutorial's data, 16 hidden units, 3 epochs, 2 repeats."""
    return {
        "name": "tiny",
        "model": {"hidden_units": [16]},
        "regularizers": [
            {"target": "activity", "norm": "l1", "strength": 1e-3, "placement": "before_activation"}
        ],
        "training": {"epochs": 3, "repeats": 2, "seed": 7},
    }


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_config_data: dict) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_config_data)
