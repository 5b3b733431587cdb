"""The CPU the cpu engine's loops are compiled for: the same on every machine, so that one seed
gives the same numbers on any x86-64 CPU.

LLVM compiles Numba's code for the host CPU by default, and with reassociation allowed (see
vmath.JIT) how it vectorizes a sum, and so the order of its float additions, follows the CPU's
model and features: the same seed gave other last digits on an Intel Xeon and an AMD EPYC. On
one AMD EPYC (Zen 4), the tutorial's histories after 4000 epochs came out three ways when the
loops were compiled for the host, for `skylake-avx512` and for `haswell` (x86-64-v3; the same
as for `x86-64-v3`): `benchmarks/bench_cpu_target.py` shows it. Pinning the target to one CPU
model with only its own features (`haswell`: AVX2 and FMA, which every x86-64 CPU of the last
decade has) makes every machine run the same machine code. Loops that would use 512-bit
vectors on an AVX-512 CPU pay for it (the benchmark measures how much);
`ACTREG_CPU_TARGET=native` compiles for the host instead (faster there; the last digits then
depend on the CPU). A machine without AVX2 and FMA compiles for itself (`compiled_for` says so
in run.yaml).

`pin()` must run before Numba compiles or loads anything for the CPU in the process: Numba
reads its target once, when its first compile or cache load sets up the code generator, and
ignores a later change (a history.csv written through study/csv_format.py before the cpu
engine's first loop had the loops compiled for the host's every feature). So every module of
this tool that compiles with Numba (engines/cpu/vmath.py, which each loop module imports, and
study/csv_format.py) calls it on import, before its first decorator; a NUMBA_CPU_NAME set by the
user is left alone.
"""

from __future__ import annotations

import os
import platform

#: The portable target: LLVM's CPU name and the features it implies (none added or removed).
PORTABLE = ("haswell", "")  # LLVM names x86-64-v3 "haswell" in every version
#: Host features the portable target needs.
NEEDED = ("avx2", "fma")
#: ACTREG_CPU_TARGET's values.
CHOICES = ("portable", "native")
#: ACTREG_CPU_VECTOR_BITS's values: the vector width of the loops whose bits do not depend on it
#: (`vector_bits`).
VECTOR_CHOICES = ("auto", "256")


def _setting(name: str, choices: tuple[str, ...], expected: str) -> str:
    """Environment variable `name`, checked against `choices` (the first is its default); a
    value outside them is bad input (ConfigError: the CLI exits 2 before any run folder)."""
    value = os.environ.get(name, choices[0]).strip().lower() or choices[0]
    if value not in choices:
        from actreg_cli.config import ConfigError

        raise ConfigError([f"environment variable {name}={value!r}: expected {expected}"])
    return value


def _host_has(*features: str) -> bool:
    """Whether this is an x86-64 CPU with every one of `features` (LLVM's names)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from llvmlite import binding

    host = binding.get_host_cpu_features()
    return all(host.get(name, False) for name in features)


def choice() -> str:
    return _setting(
        "ACTREG_CPU_TARGET",
        CHOICES,
        "portable (the default: the same numbers on any x86-64 CPU) or native (this CPU's "
        "fastest code)",
    )


def pin() -> None:
    """Set Numba's target CPU to PORTABLE unless the user chose otherwise or the host cannot
    run it."""
    from numba.core import config

    if os.environ.get("NUMBA_CPU_NAME") or choice() == "native" or not _host_has(*NEEDED):
        return
    config.CPU_NAME, config.CPU_FEATURES = PORTABLE


def vector_choice() -> str:
    """ACTREG_CPU_VECTOR_BITS, checked: auto (the default) or 256."""
    return _setting(
        "ACTREG_CPU_VECTOR_BITS",
        VECTOR_CHOICES,
        "auto (the default: 512-bit vectors where the CPU has AVX-512) or 256",
    )


def vector_bits() -> int:
    """The vector width of the cpu engine's loops whose values do not depend on it (the matrix
    products of tiles.py and the loops marked with vmath.avx512_vectors): 512 where the CPU has
    AVX-512F, else 256; ACTREG_CPU_VECTOR_BITS=256 keeps 256 everywhere. Either width gives the
    same bits; 512 only computes more values at once."""
    return 512 if vector_choice() == "auto" and _host_has("avx512f") else 256


def avx512_features() -> str:
    """The feature string of code compiled with AVX-512 (where `vector_bits` is 512): the code
    generator's own (the portable target's: none beyond its CPU name's) plus AVX-512F. A
    function's features replace the module's, so they must name both."""
    from numba.core.registry import cpu_target

    features = cpu_target.target_context.codegen().magic_tuple()[2]
    return ",".join(f for f in (features, "+avx512f") if f)


def mark_avx512(function) -> None:
    """Have LLVM compile `function` (an llvmlite ir.Function) with AVX-512 and 512-bit vectors;
    LLVM then inlines it into no caller compiled without AVX-512. Only on a CPU with AVX-512F
    (`vector_bits` 512)."""
    # llvmlite's attribute set knows no key="value" attributes; its text form is LLVM's.
    for attribute in (
        f'"target-features"="{avx512_features()}"',
        '"min-legal-vector-width"="512"',
        '"prefer-vector-width"="512"',
    ):
        set.add(function.attributes, attribute)


def compiled_for() -> dict[str, str]:
    """What the loops are compiled for, as run.yaml records it: {cpu, features, choice,
    vector_bits}; the features are '' when the CPU name's own are used (the portable
    target), vector_bits that of the 512-bit-capable loops (`vector_bits`)."""
    pin()  # asked before anything compiled: what the loops will be compiled for
    from numba.core.registry import cpu_target

    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return {
        "cpu": cpu,
        "features": features,
        "choice": choice(),
        "vector_bits": str(vector_bits()),
    }
