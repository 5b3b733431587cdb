"""The cpu engine's 512-bit code (where the CPU has AVX-512F: the matrix products, a multiclass
output layer's included, the tutorial family's forward and backward, the LSTM's gate passes,
the general loop's activations and dL/dz) gives the same bits as AVX2's: trained
with ACTREG_CPU_VECTOR_BITS=256 and without it, every history, metric and sample of an MLP of
each loop, a Conv2D and an LSTM network hashes the same. Slow (each width compiles the three
loops once, ~2-3 minutes); the products alone are compared on every shape in
test_engines_cpu_tiles.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from llvmlite import binding

#: Trains a few models of every loop and prints one hash of everything they return.
SCRIPT = """
import hashlib
import numpy as np
from actreg_cli.config import ExperimentConfig, load_sweep
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.cpu.engine import CpuEngine
from actreg_cli.study.sweep.grid import expand_grid

def mlp(**sections):
    base = {"data": {"name": "circles", "n_samples": 100, "n_train": 30},
            "model": {"hidden_units": [500]},
            "training": {"epochs": 60, "learning_rate": 0.01}}
    for key, value in sections.items():
        merge = isinstance(value, dict) and "name" not in value  # another data set: its own
        base[key] = {**base[key], **value} if merge else value
    return ExperimentConfig.model_validate(base)

def l1(placement, strength=1e-3, norm="l1"):
    return {"target": "activity", "norm": norm, "strength": strength, "placement": placement}

configs = [
    mlp(regularizers=[l1("before_activation")]),
    mlp(regularizers=[l1("after_activation", norm="l2")], training={"batch_size": 8}),
    mlp(data={"validation_fraction": 0.2}, regularizers=[l1("after_activation")]),
    mlp(model={"hidden_units": [64, 32]}, regularizers=[l1("before_activation")]),
    mlp(data={"name": "breast_cancer", "test_fraction": 0.3},
        model={"hidden_units": [128], "activation": "tanh"},
        training={"epochs": 5, "batch_size": 32}),
    mlp(model={"hidden_units": [48, 24], "activation": "sigmoid"},
        regularizers=[l1("before_activation")], training={"epochs": 20}),
    mlp(model={"hidden_units": [40], "activation": "elu"}, regularizers=[l1("after_activation")],
        training={"epochs": 20}),
    mlp(data={"name": "digits", "test_fraction": 0.3}, model={"hidden_units": [32]},
        regularizers=[l1("after_activation")], training={"epochs": 3, "batch_size": 32}),
]
for study in ("digits_conv_l1", "digits_lstm_l1"):
    cell = expand_grid(load_sweep("configs/" + study + ".yaml"))[-1].config
    configs.append(cell.model_copy(update={"training": cell.training.model_copy(
        update={"epochs": 3})}))
digest = hashlib.sha256()
for result in CpuEngine().train([TrainJob(c, s) for c in configs for s in (1, 2)]):
    for key, value in sorted(vars(result).items()):
        if isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
        elif isinstance(value, (int, float, bool)):
            digest.update(f"{key}={float(value)!r}".encode())
print(digest.hexdigest())
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not binding.get_host_cpu_features().get("avx512f", False),
    reason="the 512-bit code needs a CPU with AVX-512F",
)
def test_512_bit_code_trains_the_same_bits_as_256_bit_code(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "ACTREG_CPU"))}
    env["PYTHONPATH"] = str(REPO)
    hashes = {}
    for bits in ("auto", "256"):
        # A cache folder of each width's own: one would replace the other's entries.
        extra = {"ACTREG_CPU_VECTOR_BITS": bits, "NUMBA_CACHE_DIR": str(tmp_path / bits)}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=REPO, env={**env, **extra},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        hashes[bits] = done.stdout.strip().splitlines()[-1]
    assert hashes["auto"] == hashes["256"]
