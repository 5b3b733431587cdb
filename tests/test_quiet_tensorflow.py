"""TensorFlow imported through actreg_cli prints none of its start-up lines and no retracing
warnings (actreg_cli/quiet_tensorflow.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from conftest import REPO


def test_importing_tensorflow_prints_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    code = "import actreg_cli, keras, tensorflow as tf; print(tf.constant(2.0).numpy())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2.0"
    assert out.stderr == ""  # no absl::InitializeLog warning, oneDNN or CUDA lines


def test_a_failing_import_still_shows_its_error_output() -> None:

    code = (
        "import os, sys\n"
        "from actreg_cli.quiet_tensorflow import native_stderr_to_file\n"
        "try:\n"
        "    with native_stderr_to_file():\n"
        "        os.write(2, b'hidden unless it fails\\n')\n"
        "        raise ImportError('boom')\n"
        "except ImportError:\n"
        "    pass\n"
        "with native_stderr_to_file():\n"
        "    os.write(2, b'never shown\\n')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == "hidden unless it fails\n"


def test_retracing_warnings_are_dropped_and_others_kept() -> None:
    import tensorflow as tf

    import actreg_cli  # noqa: F401

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("tensorflow")
    handler = Collect()
    logger.addHandler(handler)
    try:

        @tf.function
        def square(x):
            return x * x

        for n in range(8):  # a new Python value each call: traced every time
            square(float(n))
            square(tf.constant([1.0] * (n + 1)))
        logger.warning("a warning that matters")
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "retracing" in m]
    assert "a warning that matters" in seen


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tensorflow_imports_without_keras_or_jax_and_both_load_later() -> None:
    # What TensorFlow's own import pulls in for nothing this tool does (290 MB, 1.8 s CPU);
    # importing either afterwards must work as usual, Keras registered with TensorFlow.
    code = (
        "import sys, actreg_cli, tensorflow as tf\n"
        "print(sorted(m for m in ('keras', 'jax') if m in sys.modules))\n"
        "import keras\n"
        "print(keras.backend.backend(), tf.keras.optimizers.Adam is keras.optimizers.Adam)\n"
        "print(keras.layers.Dense(3)(tf.ones((2, 4))).shape)\n"
        "try:\n"
        "    import jax\n"
        "except ImportError:\n"
        "    print('no jax installed')\n"
        "else:\n"
        "    print(float(jax.numpy.ones(2).sum()))\n"
    )
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["[]", "tensorflow True", "(2, 3)"]
    assert lines[3] in ("2.0", "no jax installed")


def test_the_fused_engine_trains_without_importing_keras_or_jax() -> None:
    code = (
        "import sys, tempfile\n"
        "from typer.testing import CliRunner\n"
        "from actreg_cli.cli import app\n"
        "with tempfile.TemporaryDirectory() as runs:\n"
        "    result = CliRunner().invoke(app, ['run', 'configs/circles_l1_before_relu.yaml',\n"
        "        '--engine', 'fused', '--epochs', '2', '--repeats', '1', '--runs-dir', runs])\n"
        "print(result.exit_code, 'tensorflow' in sys.modules,\n"
        "      sorted(m for m in ('keras', 'jax') if m in sys.modules))\n"
    )
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 True []"
