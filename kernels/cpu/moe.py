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
the reference); the others split tokens across threads, and every output row is written by one
thread (positions are distinct), so results do not depend on the thread count.
"""

import numpy as np
from numba import njit, prange

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


@njit(parallel=True, cache=True)
def _dispatch(x, position, weights, out):
    for r in prange(out.shape[0]):
        out[r, :] = 0
    for t in prange(x.shape[0]):
        for s in range(position.shape[1]):
            r = position[t, s]
            if r >= 0:
                w = weights[t, s]
                for j in range(x.shape[1]):
                    out[r, j] = w * x[t, j]


@njit(parallel=True, cache=True)
def _combine(y, position, weights, out):
    for t in prange(out.shape[0]):
        o = out[t]
        o[:] = 0
        for s in range(position.shape[1]):
            r = position[t, s]
            if r >= 0:
                w = weights[t, s]
                for j in range(o.shape[0]):
                    o[j] += w * y[r, j]


@njit(parallel=True, cache=True)
def _weight_grad(g, y, position, out):
    for t in prange(g.shape[0]):
        for s in range(position.shape[1]):
            r = position[t, s]
            out[t, s] = dot(g[t], y[r]) if r >= 0 else 0


def moe_plan(expert_index, n_experts, capacity, position, offsets):
    """Buffer rows of every (token, choice), first choices first; -1 past an expert's
    capacity. Fills position (n, k) and offsets (n_experts + 1,); returns them."""
    _, _, n_experts, capacity = args.moe_plan(expert_index, n_experts, capacity, position, offsets)
    pos_buf, off_buf = out_buffer(position), out_buffer(offsets)
    _plan(contig(expert_index), n_experts, capacity, pos_buf, off_buf)
    return finish(position, pos_buf), finish(offsets, off_buf)


def moe_dispatch(x, position, weights, out):
    """out[position[t, s]] = weights[t, s] * x[t]; rows no position names are 0."""
    args.moe_dispatch(x, position, weights, out)
    buf = out_buffer(out)
    _dispatch(contig(x), contig(position), contig(weights), buf)
    return finish(out, buf)


def moe_combine(y, position, weights, out):
    """out[t] = sum over choices s kept (position >= 0) of weights[t, s] * y[position[t, s]]."""
    args.moe_combine(y, position, weights, out)
    buf = out_buffer(out)
    _combine(contig(y), contig(position), contig(weights), buf)
    return finish(out, buf)


def moe_combine_weight_grad(g, y, position, out):
    """out[t, s] = dot(g[t], y[position[t, s]]), 0 for a dropped choice."""
    args.moe_combine_weight_grad(g, y, position, out)
    buf = out_buffer(out)
    _weight_grad(contig(g), contig(y), contig(position), buf)
    return finish(out, buf)
