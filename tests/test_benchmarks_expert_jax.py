"""The expert JAX baseline of benchmarks/bench_cpu_mlp.py (`--engines xjax`, expert_jax.py)
trains what the cpu engine trains: the same models, initial weights, minibatch orders,
penalties and Adam, so that the benchmark compares the same work. Its histories agree with the
cpu engine's to float rounding (2e-7 to 3e-7 after 3 epochs on every shape of the benchmark,
measured 2026-12-05)."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

pytest.importorskip("jax")
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.parametrize("shape", ["circles64x32", "digits", "diabetes"])
def test_expert_jax_trains_what_the_cpu_engine_trains(shape: str) -> None:
    import bench_cpu_mlp
    import expert_jax

    epochs = 2
    mix = bench_cpu_mlp.jobs_of(shape, epochs)
    jobs = [mix[6], mix[14], mix[22]]  # L1 1e-3: activity before, after the activation; kernel
    history = expert_jax.train(expert_jax.prepare(jobs, epochs))
    # binary, multiclass with a validation set, regression
    assert history.shape == (3, epochs, 6 if shape == "digits" else 4)
    assert expert_jax.check(jobs, epochs, history) < 1e-5
