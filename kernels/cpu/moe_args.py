"""Argument contracts of the mixture-of-experts kernels, shared by the reference and cpu
backends (the MoE twin of ``args.py``): both reject the same inputs with the same messages.

The routing arrays are O(tokens * k), as small as the kernels' own work, so unlike the sparse
products these checks do read every expert index and position: an index out of range would
make the cpu kernels write out of bounds.
"""

import numpy as np

from . import checks as c

INDEX_DTYPE = np.dtype(np.int64)


def _routing(name, arr, n_tokens=None):
    c.int_array(name, arr, INDEX_DTYPE, ndim=2)
    if n_tokens is not None and arr.shape[0] != n_tokens:
        raise ValueError(f"{name}: expected shape ({n_tokens}, k) (one row per token), "
                         f"got {arr.shape}")
    return arr.shape


def _positions(position, n_rows):
    if position.size and (position.min() < -1 or position.max() >= n_rows):
        raise ValueError(f"position: expected values in [-1, {n_rows}) (a row of the expert "
                         f"buffer, or -1 for a dropped token), got range "
                         f"[{position.min()}, {position.max()}]")


def _plan_output(name, arr, expected, why, inputs):
    c.int_array(name, arr, INDEX_DTYPE, ndim=len(expected))
    c.shape(name, arr, expected, why)
    if not arr.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array")
    for other_name, other in inputs:
        if np.may_share_memory(arr, other):
            raise ValueError(f"{name}: must not overlap {other_name}")


def moe_plan(expert_index, n_experts, capacity, position, offsets):
    n_tokens, k = _routing("expert_index", expert_index)
    n_experts = c.positive_int("n_experts", n_experts)
    capacity = c.positive_int("capacity", capacity, minimum=0)
    if expert_index.size and (expert_index.min() < 0 or expert_index.max() >= n_experts):
        raise ValueError(f"expert_index: expected values in [0, n_experts = {n_experts}), got "
                         f"range [{expert_index.min()}, {expert_index.max()}]")
    _plan_output("position", position, (n_tokens, k), "the shape of expert_index",
                 [("expert_index", expert_index)])
    _plan_output("offsets", offsets, (n_experts + 1,), "n_experts + 1",
                 [("expert_index", expert_index), ("position", position)])
    return n_tokens, k, n_experts, capacity


def moe_dispatch(x, position, weights, out):
    dtype = c.float_array("x", x, ndim=2)
    n_tokens, k = _routing("position", position, x.shape[0])
    c.float_array("weights", weights, ndim=2)
    c.same_dtype("weights", weights, dtype, "x")
    c.shape("weights", weights, (n_tokens, k), "the shape of position")
    c.float_array("out", out, ndim=2)
    c.out_array(out, (out.shape[0], x.shape[1]), dtype, f"(rows, {x.shape[1]}): x's width",
                [("x", x), ("weights", weights)])
    _positions(position, out.shape[0])
    return n_tokens, k, x.shape[1]


def moe_combine(y, position, weights, out):
    dtype = c.float_array("y", y, ndim=2)
    c.int_array("position", position, INDEX_DTYPE, ndim=2)
    n_tokens, k = position.shape
    c.float_array("weights", weights, ndim=2)
    c.same_dtype("weights", weights, dtype, "y")
    c.shape("weights", weights, (n_tokens, k), "the shape of position")
    c.out_array(out, (n_tokens, y.shape[1]), dtype, "one row per token, y's width",
                [("y", y), ("weights", weights)])
    _positions(position, y.shape[0])
    return n_tokens, k, y.shape[1]


def moe_combine_weight_grad(g, y, position, out):
    dtype = c.float_array("g", g, ndim=2)
    n_tokens, k = _routing("position", position, g.shape[0])
    c.float_array("y", y, ndim=2)
    c.same_dtype("y", y, dtype, "g")
    if y.shape[1] != g.shape[1]:
        raise ValueError(f"y: expected width {g.shape[1]} (g's), got shape {y.shape}")
    c.out_array(out, (n_tokens, k), dtype, "the shape of position", [("g", g), ("y", y)])
    _positions(position, y.shape[0])
    return n_tokens, k, g.shape[1]
