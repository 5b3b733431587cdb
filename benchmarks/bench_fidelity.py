"""How far apart the engines' numbers drift with training: the tolerance statements of
docs/fidelity.md, measured.

Trains the same models (same initial weights, same minibatches) on every engine, each in a
process of its own (the Keras backend is chosen per process), and prints, per pair of engines
and per epoch count, the largest relative difference of the per-epoch training loss and of the
test loss over the models, and how many final test accuracies differ.

Models: the tutorial's MLP (Dense(500, relu) with L1 1e-4 activity before the ReLU, 30 samples
in one batch, Adam 1e-3) and, with --diabetes, [64, 32] tanh on diabetes (regression,
minibatches of 32: shuffled batches).

    python3 benchmarks/bench_fidelity.py                    # 3 seeds x 4000 epochs: ~10 min
    python3 benchmarks/bench_fidelity.py --epochs 1000 --seeds 2 --engines keras,cpu,fused

Engines: keras (TensorFlow backend), keras-jax (Keras's JAX backend, when jax is installed),
fused, cpu. Relative difference: |a - b| / max(|a|, |b|, 1e-12).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TUTORIAL = {
    "name": "tutorial_before",
    "regularizers": [
        {"target": "activity", "norm": "l1", "strength": 1e-4, "placement": "before_activation",
         "reduction": "batch_sum"}
    ],
}  # fmt: skip
DIABETES = {
    "name": "diabetes",
    "data": {"name": "diabetes", "validation_fraction": 0},
    "model": {"hidden_units": [64, 32], "activation": "tanh"},
}


def train(case: dict, engine: str, epochs: int, seeds: list[int], out: Path) -> None:
    """In this process: train `case` on `engine` and save histories and final metrics."""
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.engines.base import TrainJob

    if engine == "cpu":
        from actreg_cli.engines.cpu.engine import CpuEngine as Engine
    elif engine == "fused":
        from actreg_cli.engines.fused.engine import FusedEngine as Engine
    else:  # keras, on the backend KERAS_BACKEND names
        from actreg_cli.engines.keras.engine import KerasEngine as Engine

    data = {k: v for k, v in case.items() if k != "name"}
    data["training"] = {"epochs": epochs}
    config = ExperimentConfig.model_validate(data)
    results = Engine().train([TrainJob(config, s) for s in seeds])
    np.savez(
        out,
        history=np.stack([r.history for r in results]),
        test_accuracy=np.array([r.test_accuracy for r in results]),
    )


def run_engine(case: dict, engine: str, epochs: int, seeds: list[int], folder: Path) -> Path:
    out = folder / f"{case['name']}-{engine}.npz"
    env = dict(os.environ, KERAS_BACKEND="jax" if engine == "keras-jax" else "tensorflow")
    args = [sys.executable, __file__, "--worker", json.dumps([case, engine, epochs, seeds])]
    subprocess.run([*args, str(out)], check=True, env=env)
    return out


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--engines", default="keras,keras-jax,fused,cpu")
    parser.add_argument("--diabetes", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("out", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, engine, epochs, seeds = json.loads(args.worker)
        train(case, engine, epochs, seeds, Path(args.out))
        return

    import importlib.util

    from actreg_cli.versions import machine_info

    engines = args.engines.split(",")
    if "keras-jax" in engines and importlib.util.find_spec("jax") is None:
        engines.remove("keras-jax")
        print("(keras-jax left out: jax is not installed)")
    seeds = list(range(1, args.seeds + 1))
    cases = [TUTORIAL] + ([DIABETES] if args.diabetes else [])
    checkpoints = [e for e in (1, 10, 100, 1000, 4000) if e <= args.epochs]
    print(f"{machine_info().get('cpu')}; {args.seeds} seeds; epochs {args.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            saved = {
                e: np.load(run_engine(case, e, args.epochs, seeds, Path(tmp))) for e in engines
            }
            print(f"\n{case['name']}: largest relative difference over {len(seeds)} models")
            print("| engines | " + " | ".join(f"loss @ {e}" for e in checkpoints)
                  + " | test loss @ end | final test accuracies that differ |")  # fmt: skip
            print("|---" * (len(checkpoints) + 3) + "|")
            for i, a in enumerate(engines):
                for b in engines[i + 1 :]:
                    ha, hb = saved[a]["history"], saved[b]["history"]
                    cells = [f"{relative(ha[:, e - 1, 0], hb[:, e - 1, 0]).max():.1e}"
                             for e in checkpoints]  # fmt: skip
                    test = relative(ha[:, -1, 2], hb[:, -1, 2]).max()
                    acc = int((saved[a]["test_accuracy"] != saved[b]["test_accuracy"]).sum())
                    print(f"| {a} vs {b} | " + " | ".join(cells)
                          + f" | {test:.1e} | {acc} of {len(seeds)} |")  # fmt: skip


if __name__ == "__main__":
    main()
