"""Library versions recorded next to every result (read from package metadata: no TF import)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = (
    "actreg",
    "tensorflow",
    "keras",
    "jax",  # the jax engine's, and the keras engine's on KERAS_BACKEND=jax
    "jaxlib",
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


#: The instruction-set features that change how float sums are ordered (vector width, fused
#: multiply-add): the same seed can give other last digits where these differ.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16")


def machine_info() -> dict[str, object]:
    """The CPU a result was computed on: model name, logical cores and its vector features (from
    /proc/cpuinfo on Linux; `platform` elsewhere). Recorded beside every result, since the cpu
    engine's last digits can depend on the CPU."""
    import os

    info: dict[str, object] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count() or 1,
        "isa": [],
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 16)  # the first processor's block is enough
    except OSError:
        return info
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.split("\n\n")[0].splitlines())
    )
    info["cpu"] = fields.get("model name", info["cpu"])
    flags = set(fields.get("flags", "").split())
    info["isa"] = [flag for flag in ISA_FLAGS if flag in flags]
    return info
