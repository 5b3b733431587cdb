"""Engines give the memory a group's training freed back to the system (`engines.base.
return_freed_memory`, after each group): glibc keeps freed heap blocks resident, and the next
group's compile or the report's imports would come on top of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from actreg_cli.engines.base import _glibc

CODE = """
import ctypes
from actreg_cli.engines.base import return_freed_memory

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def resident_mb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

# 200 MB in 64 KB blocks (below glibc's mmap threshold: heap blocks, as a compiler's are),
# each touched, then all freed but the last (it keeps the heap's top where it is).
blocks = [libc.malloc(64 * 1024) for _ in range(3200)]
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)
for block in blocks[:-1]:
    libc.free(block)
freed = resident_mb()
return_freed_memory()
print(round(freed), round(resident_mb()))
"""


@pytest.mark.skipif(_glibc() is None, reason="malloc_trim is glibc's")
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    freed, after = map(int, out.stdout.split())
    assert freed - after > 150, out.stdout  # of the 200 MB freed, resident before the call
