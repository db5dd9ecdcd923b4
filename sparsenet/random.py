"""The library's random state: one NumPy Generator, reseeded by `sparsenet.manual_seed`.

Everything random in sparsenet (initialization, dropout, random topologies) draws from
`generator()` unless it is handed a Generator of its own, so one seed fixes a whole run.
"""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the library's generator; returns it."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator() -> np.random.Generator:
    return _generator
