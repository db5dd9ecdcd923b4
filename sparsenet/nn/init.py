"""Weight initialization: Kaiming (He et al. 2015) and Glorot (Glorot & Bengio 2010).

Each function returns a new array drawn from the library's generator (or `rng`), shaped like
the weight; `fan_in` / `fan_out` count the connections a unit actually has.

A sparse weight is initialised entry by entry with `sparse_values`, each neuron at its own
stored fan-in by default: Kaiming at the dense fan-in gives a neuron with 40 of its 20,000
inputs kept an output variance 500 times too small, and a deep sparse network then passes no
signal (Evci et al. 2022, "Gradient Flow in Sparse Neural Networks and How Lottery Tickets
Win", Section 3; SRigL's reference code does the same, `use_sparse_initialization`).
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


def sparse_values(init, rows, cols, shape, fan_in="stored", dtype=np.float32, rng=None):
    """Initial values for the stored entries (rows[i], cols[i]) of a sparse (n_out, n_in)
    weight, one per entry, in the order given.

    fan_in="stored": each entry is drawn for its own neuron, with that neuron's stored inputs
    (its row's count) as fan-in, and for Glorot its column's stored count as fan-out;
    fan_in="dense": every entry as the dense layer would draw it (fan-in n_in). O(nnz).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")
    if fan_in not in ("stored", "dense"):
        raise ValueError(f"fan_in must be 'stored' or 'dense', got {fan_in!r}")
    rows, cols = np.asarray(rows), np.asarray(cols)
    n_out, n_in = shape
    if fan_in == "stored":
        fi = np.bincount(rows, minlength=n_out)[rows].astype(np.float64)
        fo = np.bincount(cols, minlength=n_in)[cols].astype(np.float64)
    else:
        fi, fo = np.full(rows.size, float(n_in)), np.full(rows.size, float(n_out))
    fi, fo = np.maximum(fi, 1), np.maximum(fo, 1)
    rng = _rng(rng)
    if init == "kaiming_uniform":
        drawn = rng.uniform(-1.0, 1.0, rows.size) * (math.sqrt(2.0) * np.sqrt(3.0 / fi))
    elif init == "kaiming_normal":
        drawn = rng.standard_normal(rows.size) * (math.sqrt(2.0) / np.sqrt(fi))
    elif init == "glorot_uniform":
        drawn = rng.uniform(-1.0, 1.0, rows.size) * np.sqrt(6.0 / (fi + fo))
    else:
        drawn = rng.standard_normal(rows.size) * np.sqrt(2.0 / (fi + fo))
    return drawn.astype(dtype)
