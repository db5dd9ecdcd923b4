"""Mixture-of-experts kernels: plan, dispatch, combine and the gate gradient, cpu against the
reference (exact on integer-valued data), the adjoint identities the backward pass relies on,
and bad arguments."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsenet.kernels import cpu, reference
from test_kernels_common import KSET, assert_same, dtypes, ints, seeds


def routing(rng, n, k, n_experts):
    """k distinct experts per token, as a router's top-k gives them."""
    rows = [rng.permutation(n_experts)[:k] for _ in range(n)]
    return np.array(rows, dtype=np.int64).reshape(n, k)


def plan(backend, expert_index, n_experts, capacity):
    position = np.full(expert_index.shape, -7, np.int64)
    offsets = np.full(n_experts + 1, -7, np.int64)
    return backend.moe_plan(expert_index, n_experts, capacity, position, offsets)


def plan_by_hand(expert_index, n_experts, capacity):
    """The rule in words: visit (token, choice) with every first choice before any second
    choice; an expert takes a pair while it holds fewer than `capacity`."""
    taken = {e: [] for e in range(n_experts)}
    for s in range(expert_index.shape[1]):
        for t in range(expert_index.shape[0]):
            e = expert_index[t, s]
            if len(taken[e]) < capacity:
                taken[e].append((t, s))
    return taken


routings = st.tuples(st.integers(0, 12), st.integers(1, 4), st.integers(1, 6))


@KSET
@given(shape=routings, capacity=st.integers(0, 30), seed=seeds)
def test_plan_groups_tokens_by_expert_first_choices_first(shape, capacity, seed):
    n, k, extra = shape
    n_experts = k + extra - 1
    expert_index = routing(np.random.default_rng(seed), n, k, n_experts)
    want = plan_by_hand(expert_index, n_experts, capacity)
    for backend in (reference, cpu):
        position, offsets = plan(backend, expert_index, n_experts, capacity)
        np.testing.assert_array_equal(np.diff(offsets), [len(want[e]) for e in range(n_experts)])
        assert offsets[0] == 0
        for e in range(n_experts):                 # expert e's rows, in priority order
            rows = [position[t, s] for t, s in want[e]]
            np.testing.assert_array_equal(rows, np.arange(offsets[e], offsets[e + 1]))
        kept = sum(len(v) for v in want.values())
        assert (position >= 0).sum() == kept


@KSET
@given(shape=routings, capacity=st.integers(0, 10), width=st.integers(0, 5), dtype=dtypes,
       seed=seeds)
def test_dispatch_combine_and_weight_grad_match_the_reference(shape, capacity, width, dtype, seed):
    n, k, extra = shape
    n_experts = k + extra - 1
    rng = np.random.default_rng(seed)
    expert_index = routing(rng, n, k, n_experts)
    position, offsets = plan(reference, expert_index, n_experts, capacity)
    rows = int(offsets[-1])
    x, weights = ints(rng, (n, width), dtype), ints(rng, (n, k), dtype)
    y, g = ints(rng, (rows, width), dtype), ints(rng, (n, width), dtype)
    outs = {}
    for backend in (reference, cpu):
        outs[backend] = (
            backend.moe_dispatch(x, position, weights, np.full((rows, width), 9, dtype)),
            backend.moe_combine(y, position, weights, np.full((n, width), 9, dtype)),
            backend.moe_combine_weight_grad(g, y, position, np.full((n, k), 9, dtype)))
    for a, b in zip(outs[reference], outs[cpu]):
        assert_same(a, b)
    dispatched, combined, weight_grad = outs[reference]
    for t in range(n):                              # the definitions, element by element
        want = np.zeros(width, dtype)
        for s in range(k):
            r = position[t, s]
            if r >= 0:
                np.testing.assert_array_equal(dispatched[r], weights[t, s] * x[t])
                want += weights[t, s] * y[r]
                assert weight_grad[t, s] == np.dot(g[t], y[r])
            else:
                assert weight_grad[t, s] == 0
        np.testing.assert_array_equal(combined[t], want)


@KSET
@given(shape=routings, capacity=st.integers(1, 10), seed=seeds)
def test_dispatch_is_the_adjoint_of_combine(shape, capacity, seed):
    # <combine(y, w), g> = <y, dispatch(g, w)>: what makes one the other's backward
    n, k, extra = shape
    n_experts = k + extra - 1
    rng = np.random.default_rng(seed)
    position, offsets = plan(cpu, routing(rng, n, k, n_experts), n_experts, capacity)
    rows = int(offsets[-1])
    y, g, w = ints(rng, (rows, 3), np.float64), ints(rng, (n, 3), np.float64), \
        ints(rng, (n, k), np.float64)
    combined = cpu.moe_combine(y, position, w, np.empty((n, 3)))
    dispatched = cpu.moe_dispatch(g, position, w, np.empty((rows, 3)))
    assert np.sum(combined * g) == np.sum(y * dispatched)


def test_gaussian_data_within_rounding():
    rng = np.random.default_rng(0)
    expert_index = routing(rng, 200, 2, 8)
    position, offsets = plan(cpu, expert_index, 8, 60)
    y, g = rng.standard_normal((int(offsets[-1]), 33)).astype(np.float32), \
        rng.standard_normal((200, 33)).astype(np.float32)
    a = cpu.moe_combine_weight_grad(g, y, position, np.empty((200, 2), np.float32))
    b = reference.moe_combine_weight_grad(g, y, position, np.empty((200, 2), np.float32))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", [reference, cpu])
def test_bad_arguments_are_rejected_with_their_names(backend):
    idx = np.array([[0, 1], [2, 0]], np.int64)
    pos, off = np.empty((2, 2), np.int64), np.empty(4, np.int64)
    with pytest.raises(ValueError, match="expert_index"):
        backend.moe_plan(np.array([[0, 3]], np.int64), 3, 4, np.empty((1, 2), np.int64), off)
    with pytest.raises(TypeError, match="expert_index"):
        backend.moe_plan(idx.astype(np.int32), 3, 4, pos, off)
    with pytest.raises(ValueError, match="capacity"):
        backend.moe_plan(idx, 3, -1, pos, off)
    with pytest.raises(ValueError, match="offsets"):
        backend.moe_plan(idx, 3, 4, pos, np.empty(3, np.int64))
    position, offsets = backend.moe_plan(idx, 3, 4, pos, off)
    x, w = np.ones((2, 5)), np.ones((2, 2))
    with pytest.raises(ValueError, match="position"):
        backend.moe_dispatch(x, position, w, np.empty((3, 5)))      # 4 rows are named
    with pytest.raises(TypeError, match="weights"):
        backend.moe_dispatch(x, position, w.astype(np.float32), np.empty((4, 5)))
    with pytest.raises(ValueError, match="out"):
        backend.moe_combine(np.ones((4, 5)), position, w, np.empty((2, 4)))
    with pytest.raises(ValueError, match="y"):
        backend.moe_combine_weight_grad(x, np.ones((4, 4)), position, np.empty((2, 2)))


def test_the_parallel_path_gives_the_serial_results(monkeypatch):
    from sparsenet.kernels.cpu import moe
    rng = np.random.default_rng(1)
    expert_index = routing(rng, 50, 2, 5)
    position, offsets = plan(cpu, expert_index, 5, 15)
    rows = int(offsets[-1])
    x, w = ints(rng, (50, 7), np.float64), ints(rng, (50, 2), np.float64)
    y, g = ints(rng, (rows, 7), np.float64), ints(rng, (50, 7), np.float64)

    def all_three():
        return (cpu.moe_dispatch(x, position, w, np.empty((rows, 7))),
                cpu.moe_combine(y, position, w, np.empty((50, 7))),
                cpu.moe_combine_weight_grad(g, y, position, np.empty((50, 2))))
    serial = all_three()
    monkeypatch.setattr(moe, "PARALLEL_MIN_WORK", 0)
    for a, b in zip(serial, all_three()):
        assert_same(a, b)


NO_JIT = r"""
import numpy as np
from sparsenet.kernels import cpu, reference as ref
idx = np.array([[0, 1], [1, 2], [1, 0]], np.int64)
p, o = cpu.moe_plan(idx, 3, 2, np.empty((3, 2), np.int64), np.empty(4, np.int64))
x, w = np.arange(6.0).reshape(3, 2), np.ones((3, 2))
d = cpu.moe_dispatch(x, p, w, np.empty((int(o[-1]), 2)))
assert np.array_equal(d, ref.moe_dispatch(x, p, w, np.empty((int(o[-1]), 2))))
assert np.array_equal(cpu.moe_combine(d, p, w, np.empty((3, 2))), ref.moe_combine(d, p, w, np.empty((3, 2))))
print("ok")
"""


def test_moe_kernels_run_as_plain_python_without_jit():
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", NO_JIT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
