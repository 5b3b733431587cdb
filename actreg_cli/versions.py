"""Library versions recorded next to every result (read from package metadata: no TF import)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = (
    "actreg",
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "matplotlib",
    "pydantic",
    "numba",
)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
