"""Mixture-of-experts kernels (cpu backend): group tokens by expert, scatter them back.
The spec of each is in ``kernels.reference``.

A routing of n tokens to k experts each is an (n, k) array of expert indices. ``moe_plan``
turns it into a compact buffer layout: expert e owns rows offsets[e] .. offsets[e + 1] of one
(rows, width) buffer, so every expert's tokens are contiguous and one dense product per expert
does its work. ``position[t, s]`` is the buffer row of token t's s-th choice, or -1 when that
expert was already full (capacity) and the token is dropped for that choice.

The other three kernels are the data movement around the experts' products, and each other's
adjoints (what the backward pass needs):
    moe_dispatch(x, position, w)        buffer[position[t, s]] = w[t, s] * x[t]
    moe_combine(y, position, w)         out[t] = sum_s w[t, s] * y[position[t, s]]
    moe_combine_weight_grad(g, y, p)    out[t, s] = g[t] . y[position[t, s]]
Dispatch with w = 1 is the forward gather; its gradient is combine with w = 1. Combine is the
forward scatter-back with the gate weights; its gradients are dispatch (for y, weighted by the
gates) and combine_weight_grad (for the gates).

Parallel strategy: the plan is one sequential pass (its order is the routing priority, see
the reference); the others split tokens into one contiguous range per thread when the work is
large enough (PARALLEL_MIN_WORK), and every output row is written by one thread (positions are
distinct), so results do not depend on the thread count.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import moe_args as args
from .micro import dot
from .wrap import contig, finish, out_buffer


@njit(cache=True)
def _plan(expert_index, n_experts, capacity, position, offsets):
    n, k = expert_index.shape
    wanted = np.zeros(n_experts, dtype=np.int64)
    for s in range(k):                                   # pass 1: demand per expert
        for t in range(n):
            wanted[expert_index[t, s]] += 1
    offsets[0] = 0
    for e in range(n_experts):
        offsets[e + 1] = offsets[e] + min(wanted[e], capacity)
    fill = np.zeros(n_experts, dtype=np.int64)
    for s in range(k):                                   # pass 2: first choices first
        for t in range(n):
            e = expert_index[t, s]
            if fill[e] < capacity:
                position[t, s] = offsets[e] + fill[e]
                fill[e] += 1
            else:
                position[t, s] = -1


# Each kernel is a serial loop over a range of tokens, and a parallel driver that hands one
# range to each thread. The data moved per token is small (k rows of `width` numbers), so below
# PARALLEL_MIN_WORK numbers the serial loop runs alone: handing microseconds of copying to
# threads costs more than it saves, and on a shared machine a descheduled thread stalls all.
PARALLEL_MIN_WORK = 1 << 20


@njit(cache=True)
def _dispatch_range(x, position, weights, out, t0, t1):
    for t in range(t0, t1):
        for s in range(position.shape[1]):
            r = position[t, s]
            if r >= 0:
                w = weights[t, s]
                for j in range(x.shape[1]):
                    out[r, j] = w * x[t, j]


@njit(cache=True)
def _combine_range(y, position, weights, out, t0, t1):
    for t in range(t0, t1):
        o = out[t]
        o[:] = 0
        for s in range(position.shape[1]):
            r = position[t, s]
            if r >= 0:
                w = weights[t, s]
                for j in range(o.shape[0]):
                    o[j] += w * y[r, j]


@njit(cache=True)
def _weight_grad_range(g, y, position, out, t0, t1):
    for t in range(t0, t1):
        for s in range(position.shape[1]):
            r = position[t, s]
            out[t, s] = dot(g[t], y[r]) if r >= 0 else 0


@njit(parallel=True, cache=True)
def _dispatch_parallel(x, position, weights, out, n_parts):
    bounds = np.linspace(0, x.shape[0], n_parts + 1).astype(np.int64)
    for p in prange(n_parts):
        _dispatch_range(x, position, weights, out, bounds[p], bounds[p + 1])


@njit(parallel=True, cache=True)
def _combine_parallel(y, position, weights, out, n_parts):
    bounds = np.linspace(0, out.shape[0], n_parts + 1).astype(np.int64)
    for p in prange(n_parts):
        _combine_range(y, position, weights, out, bounds[p], bounds[p + 1])


@njit(parallel=True, cache=True)
def _weight_grad_parallel(g, y, position, out, n_parts):
    bounds = np.linspace(0, g.shape[0], n_parts + 1).astype(np.int64)
    for p in prange(n_parts):
        _weight_grad_range(g, y, position, out, bounds[p], bounds[p + 1])


def _parts(n_tokens, k, width):
    """How many ranges to split the tokens into: 1 (serial) for small work."""
    return get_num_threads() if n_tokens * k * width >= PARALLEL_MIN_WORK else 1


def moe_plan(expert_index, n_experts, capacity, position, offsets):
    """Buffer rows of every (token, choice), first choices first; -1 past an expert's
    capacity. Fills position (n, k) and offsets (n_experts + 1,); returns them."""
    _, _, n_experts, capacity = args.moe_plan(expert_index, n_experts, capacity, position, offsets)
    pos_buf, off_buf = out_buffer(position), out_buffer(offsets)
    _plan(contig(expert_index), n_experts, capacity, pos_buf, off_buf)
    return finish(position, pos_buf), finish(offsets, off_buf)


def moe_dispatch(x, position, weights, out):
    """out[position[t, s]] = weights[t, s] * x[t]; rows no position names are 0."""
    n, k, width = args.moe_dispatch(x, position, weights, out)
    buf = out_buffer(out)
    buf[...] = 0
    x, position, weights = contig(x), contig(position), contig(weights)
    parts = _parts(n, k, width)
    if parts == 1:
        _dispatch_range(x, position, weights, buf, 0, n)
    else:
        _dispatch_parallel(x, position, weights, buf, parts)
    return finish(out, buf)


def moe_combine(y, position, weights, out):
    """out[t] = sum over choices s kept (position >= 0) of weights[t, s] * y[position[t, s]]."""
    n, k, width = args.moe_combine(y, position, weights, out)
    buf = out_buffer(out)
    y, position, weights = contig(y), contig(position), contig(weights)
    parts = _parts(n, k, width)
    if parts == 1:
        _combine_range(y, position, weights, buf, 0, n)
    else:
        _combine_parallel(y, position, weights, buf, parts)
    return finish(out, buf)


def moe_combine_weight_grad(g, y, position, out):
    """out[t, s] = dot(g[t], y[position[t, s]]), 0 for a dropped choice."""
    n, k, width = args.moe_combine_weight_grad(g, y, position, out)
    buf = out_buffer(out)
    g, y, position = contig(g), contig(y), contig(position)
    parts = _parts(n, k, width)
    if parts == 1:
        _weight_grad_range(g, y, position, buf, 0, n)
    else:
        _weight_grad_parallel(g, y, position, buf, parts)
    return finish(out, buf)
