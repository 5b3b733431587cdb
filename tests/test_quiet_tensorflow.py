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
