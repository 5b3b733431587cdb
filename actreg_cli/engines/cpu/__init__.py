"""The cpu engine: a Numba-compiled training loop, one model per thread."""
