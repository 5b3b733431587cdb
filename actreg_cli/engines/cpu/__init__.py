"""The cpu engine: a Numba-compiled training loop, one model per thread.

Importing the package pins the CPU the loops are compiled for (`target.pin`), before any of its
modules compiles or loads a loop: one seed, the same numbers on any x86-64 CPU.
"""

from actreg_cli.engines.cpu.target import pin

pin()
