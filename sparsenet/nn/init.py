"""Weight initialization: Kaiming (He et al. 2015) and Glorot (Glorot & Bengio 2010).

Each function returns a new array drawn from the library's generator (or `rng`), shaped like
the weight; `fan_in` / `fan_out` count the connections a unit actually has. For sparse layers
that is the number of stored inputs per output, which is why the sparse layers pass it in.
"""
from __future__ import annotations

import math

import numpy as np

from .. import random


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense weight: Linear (out, in) or Conv2d (out, in, kh, kw)."""
    if len(shape) < 2:
        raise ValueError(f"fan-in and fan-out need a weight with at least 2 dimensions, got {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _rng(rng):
    return rng if rng is not None else random.generator()


def kaiming_uniform(shape, fan_in=None, gain=math.sqrt(2.0), dtype=np.float32, rng=None):
    """U(-b, b) with b = gain * sqrt(3 / fan_in): variance gain^2 / fan_in (ReLU: gain sqrt 2)."""
    fan_in = fans(shape)[0] if fan_in is None else fan_in
    bound = gain * math.sqrt(3.0 / max(fan_in, 1))
    return _rng(rng).uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_normal(shape, fan_in=None, gain=math.sqrt(2.0), dtype=np.float32, rng=None):
    """N(0, gain^2 / fan_in)."""
    fan_in = fans(shape)[0] if fan_in is None else fan_in
    std = gain / math.sqrt(max(fan_in, 1))
    return (_rng(rng).standard_normal(size=shape) * std).astype(dtype)


def glorot_uniform(shape, fan_in=None, fan_out=None, dtype=np.float32, rng=None):
    """U(-b, b) with b = sqrt(6 / (fan_in + fan_out))."""
    fi, fo = fans(shape)
    fan_in, fan_out = fan_in or fi, fan_out or fo
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return _rng(rng).uniform(-bound, bound, size=shape).astype(dtype)


def glorot_normal(shape, fan_in=None, fan_out=None, dtype=np.float32, rng=None):
    fi, fo = fans(shape)
    fan_in, fan_out = fan_in or fi, fan_out or fo
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return (_rng(rng).standard_normal(size=shape) * std).astype(dtype)


INITS = {"kaiming_uniform": kaiming_uniform, "kaiming_normal": kaiming_normal,
         "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal}


def get_init(name: str):
    if name not in INITS:
        raise ValueError(f"init must be one of {sorted(INITS)}, got {name!r}")
    return INITS[name]
