"""TensorFlow's start-up chatter, silenced where it is written; and Keras and jax kept out of its
import.

`TF_CPP_MIN_LOG_LEVEL` (read once, when TensorFlow's libraries load) filters TensorFlow's own C++
log, but not what is written before absl's logging is initialised: the "All log messages before
absl::InitializeLog() is called are written to STDERR" warning and the oneDNN and CUDA-driver
lines after it go straight to file descriptor 2, twice, while `import tensorflow` loads its
shared libraries (measured with TensorFlow 2.21: no environment variable stops them). So the
first `import tensorflow`, wherever it happens (keras imports it too), runs with descriptor 2
pointed at a temporary file, which is replayed if the import fails. The finder that arranges
this stays in place until TensorFlow is imported, whatever asks whether it is installed first
(`importlib.util.find_spec("tensorflow")`, as the KERAS_BACKEND check does).

`import tensorflow` also imports all of Keras (`keras.src.optimizers`, "so that registrations
happen at load time") and, whenever it is installed, jax (`tensorflow.lite.python.util`, for
converting JAX functions to TensorFlow Lite; `keras.src.callbacks.orbax_checkpoint`, a patch for
old JAX versions), each in a try/except ImportError. The fused engine needs none of them: they
cost 290 MB of memory and 1.8 s of CPU in every process that imports TensorFlow (TensorFlow 2.21,
Keras 3.15, jax 0.10 on an AMD EPYC: `import tensorflow` 826 -> 536 MB peak, 3.9 -> 2.1 s CPU).
`_OPTIONAL_IMPORTS` lists those importers; they alone find no such module. Every other importer
(the keras engine, Keras's JAX backend, the jax engine, a user's code) finds it as usual, and
Keras then registers itself with TensorFlow as it does when imported first.

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


#: (top-level module, importer): imports in a try/except ImportError for nothing this tool
#: uses (see the module's docstring). TensorFlow's package `__init__` imports Keras through
#: importlib.import_module; its `importlib.util.find_spec("keras")` calls (from
#: tensorflow.python.tools.module_util) still find it.
_OPTIONAL_IMPORTS = frozenset(
    {
        ("keras", "tensorflow"),
        ("jax", "tensorflow.lite.python.util"),
        ("jax", "keras.src.callbacks.orbax_checkpoint"),
    }
)


class _SkipOptionalImports(importlib.abc.MetaPathFinder):
    """Refuses the imports of `_OPTIONAL_IMPORTS` to their importers alone; anything else
    falls through to the usual finders. Only a module's first import asks the finders."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in ("keras", "jax") and (fullname, _importer()) in _OPTIONAL_IMPORTS:
            raise ModuleNotFoundError(f"{fullname} is not loaded for this importer", name=fullname)
        return None


def _importer() -> str | None:
    """The module whose `import` statement the import system is serving: the innermost frame
    outside importlib's and this module's own."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != __name__ and not name.startswith("importlib"):
            return name
        frame = frame.f_back
    return None


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
    if not any(isinstance(f, _SkipOptionalImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipOptionalImports())
