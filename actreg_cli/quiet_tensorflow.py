"""TensorFlow's start-up chatter, silenced where it is written.

`TF_CPP_MIN_LOG_LEVEL` (read once, when TensorFlow's libraries load) filters TensorFlow's own C++
log, but not what is written before absl's logging is initialised: the "All log messages before
absl::InitializeLog() is called are written to STDERR" warning and the oneDNN and CUDA-driver
lines after it go straight to file descriptor 2, twice, while `import tensorflow` loads its
shared libraries (measured with TensorFlow 2.21: no environment variable stops them). So the
first `import tensorflow`, wherever it happens (keras imports it too), runs with descriptor 2
pointed at a temporary file, which is replayed if the import fails. The finder that arranges
this stays in place until TensorFlow is imported, whatever asks whether it is installed first
(`importlib.util.find_spec("tensorflow")`, as the KERAS_BACKEND check does).

`tf.function` retracing warnings (Python logging) say that a program is traced again for new
shapes, which a sweep does on purpose; they are dropped, other TensorFlow warnings are kept.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def native_stderr_to_file() -> Iterator[None]:
    """Point file descriptor 2 at a temporary file; replay it to stderr if the block raises."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _drop_retracing(record: logging.LogRecord) -> bool:
    return "retracing" not in record.getMessage()


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's loader with descriptor 2 silenced."""

    def __init__(self, loader: Any, finder: _QuietTensorFlowFinder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with native_stderr_to_file():
            self._loader.exec_module(module)
        # Imported: the finder has done its work (a failed import leaves it for the next try).
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._finder)
        logging.getLogger("tensorflow").addFilter(_drop_retracing)

    def __getattr__(self, name: str) -> Any:  # resource readers and the like
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the top-level `tensorflow` package until it is imported.

    It stays on sys.meta_path until TensorFlow has been executed: `importlib.util.find_spec(
    "tensorflow")` (an "is it installed?" check, e.g. for KERAS_BACKEND) also asks the finders,
    and a finder that left after that first question let the real import through unsilenced.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:  # the finders after this one, as the import system would
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader, self)
                return spec
        return None


def install() -> None:
    """Silence TensorFlow's start-up lines for the rest of this process (no-op once imported)."""
    # Only read when TensorFlow's libraries load; a value the user set is kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        logging.getLogger("tensorflow").addFilter(_drop_retracing)
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
