"""Seeded tie-break random numbers shared by the reference MCTS and the numba engine.

One stream per root: `seed_states(seed, batch)` derives a (batch,) uint64 xorshift64 state from
(seed, root index) with splitmix64 mixing, and `draw_below(state, i, n)` advances stream `i` and
returns an integer in [0, n). `draw_below` is plain Python on a numpy uint64 array, so the reference
calls it directly and the engine compiles the very same function with numba: both break ties
identically. Only shifts and xors touch scalars (no wrap-around arithmetic that numpy would warn about).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_NONZERO = np.uint64(0x2545F4914F6CDD1D)  # xorshift64 must never hold 0
_S7 = np.uint64(7)
_S11 = np.uint64(11)
_S13 = np.uint64(13)
_S17 = np.uint64(17)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (array arithmetic wraps silently)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def seed_states(seed: int, batch: int) -> np.ndarray:
    """Return (batch,) uint64 xorshift64 states, one independent stream per root index.

    `seed` is any non-negative int (taken modulo 2**64); equal (seed, index) give equal streams.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if batch < 0:
        raise ValueError(f"batch must be non-negative, got {batch}")
    base = _splitmix64(np.array([seed % (1 << 64)], dtype=np.uint64) + _GOLDEN)
    index = np.arange(1, batch + 1, dtype=np.uint64)
    states = _splitmix64(base + index * _GOLDEN)
    states[states == 0] = _NONZERO
    return states


def draw_below(state: np.ndarray, i: int, n: int) -> int:
    """Advance stream `i` of the uint64 `state` array (xorshift64) and return an int in [0, n).

    `n` must be >= 1. The same function runs as plain Python (reference) and under numba (engine).
    """
    x = state[i]
    x ^= x << _S13
    x ^= x >> _S7
    x ^= x << _S17
    state[i] = x
    return int((x >> _S11) % np.uint64(n))
