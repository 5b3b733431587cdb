"""The cpu engine: a Numba-compiled training loop, one model per thread.

The modules that compile with Numba pin the CPU their loops are compiled for when imported
(`target.pin`), before their first compile or cache load: one seed, the same numbers on any
x86-64 CPU. The engine itself (`engine.py`: what it supports, how it groups jobs) imports
Numba only when it trains, so choosing an engine costs no Numba import.
"""
