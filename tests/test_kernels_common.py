"""Shared helpers for the kernel tests (imported by the other test_kernels_*
files), plus the dispatch tests.

Test data is integer-valued floats (|v| <= 4): every product and sum is then
exact in float32 and float64, so the cpu kernels must match the reference
bit for bit whatever order they add in. One test per family also uses
Gaussian data with a dtype-appropriate tolerance.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sparsenet import kernels
from sparsenet.kernels import cpu, reference

# Deterministic and fast: derandomized examples, no per-example deadline (the
# first example of each kernel pays Numba compilation).
KSET = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

BACKENDS = [reference, cpu]
DTYPES = [np.float32, np.float64]
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)


def ints(rng, shape, dtype, lo=-4, hi=4):
    """Integer-valued float array: exact arithmetic in any summation order."""
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


def maybe_strided(rng, a, strided):
    """The same values as ``a``, as a non-contiguous view when ``strided``."""
    if not strided or a.ndim != 2:
        return a
    if rng.random() < 0.5:
        return np.ascontiguousarray(a.T).T  # Fortran-ordered view
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), dtype=a.dtype)
    wide[:, ::2] = a
    return wide[:, ::2]  # every other column


def random_csr(rng, n_rows, n_cols, density, dtype):
    """A CSR matrix (sorted, no duplicates) and its dense form. density may
    be 'one' for a single stored entry."""
    dense = np.zeros((n_rows, n_cols), dtype=dtype)
    if density == "one":
        if n_rows and n_cols:
            dense[rng.integers(n_rows), rng.integers(n_cols)] = rng.choice([-3.0, 2.0])
    else:
        mask = rng.random((n_rows, n_cols)) < density
        dense[mask] = ints(rng, int(mask.sum()), dtype, 1, 4) * rng.choice([-1, 1], int(mask.sum()))
    indptr, indices, values = reference.csr_from_dense(dense)
    return indptr, indices, values, dense


def random_pattern_dense(rng, n_rows, n_cols, density, dtype):
    """A CSR pattern whose stored values may be zero (a pattern, not nonzeros)."""
    mask = rng.random((n_rows, n_cols)) < density
    counts = mask.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.nonzero(mask)[1].astype(np.int32)
    values = ints(rng, indices.shape[0], dtype)
    dense = np.zeros((n_rows, n_cols), dtype=dtype)
    dense[mask] = values
    return indptr, indices, values, dense


def assert_same(a, b):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype


def tol(dtype):
    return dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


# ---- dispatch --------------------------------------------------------------

def test_get_backend_numpy_is_cpu():
    assert kernels.get_backend(np.zeros(3), np.zeros((2, 2))) is cpu
    assert kernels.reference is reference


def test_get_backend_rejects_other_types():
    with pytest.raises(TypeError, match=r"arrays\[1\]"):
        kernels.get_backend(np.zeros(3), [1.0, 2.0])
    with pytest.raises(TypeError):
        kernels.get_backend()


def test_every_kernel_exists_in_both_backends():
    for name in kernels.KERNELS:
        assert callable(getattr(reference, name)), name
        assert callable(getattr(cpu, name)), name


def test_import_does_not_need_cupy():
    code = "import sys, sparsenet.kernels; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


NO_JIT_SCRIPT = r"""
import numpy as np
from sparsenet.kernels import cpu, reference as ref
rng = np.random.default_rng(0)
W = rng.integers(-3, 4, (6, 8)).astype(np.float32) * (rng.random((6, 8)) < 0.5)
X = rng.integers(-3, 4, (8, 3)).astype(np.float32)
ip, ix, v = cpu.csr_from_dense(W)
cp, ri, pm = cpu.csr_to_csc(ip, ix, 8)
for k in (cpu, ref):
    assert np.array_equal(k.csr_spmm(ip, ix, v, X, np.empty((6, 3), np.float32)), W @ X)
    assert np.array_equal(k.csr_spmm(ip, ix, v, X[:, :1], np.empty((6, 1), np.float32)), W @ X[:, :1])
    assert np.array_equal(k.csr_spmm_t(cp, ri, pm, v, W @ X, np.empty((8, 3), np.float32)), W.T @ (W @ X))
G = W @ X
assert np.array_equal(cpu.csr_sddmm(ip, ix, G, X, np.empty(len(v), np.float32)), (G @ X.T)[W != 0])
bi, bx, bl = cpu.bsr_from_dense(W, 2, np.ones((3, 4), bool))
assert np.array_equal(cpu.bsr_spmm(bi, bx, bl, X, np.empty((6, 3), np.float32)), W @ X)
W16 = rng.integers(-3, 4, (16, 16)).astype(np.float32)
X16 = rng.integers(-3, 4, (16, 2)).astype(np.float32)
for bs in (4, 8):  # the register-blocked paths
    bi, bx, bl = cpu.bsr_from_dense(W16, bs, np.ones((16 // bs, 16 // bs), bool))
    assert np.array_equal(cpu.bsr_spmm(bi, bx, bl, X16, np.empty((16, 2), np.float32)), W16 @ X16)
    cp, ri, pm = cpu.bsr_to_bsc(bi, bx, 16 // bs)
    assert np.array_equal(cpu.bsr_spmm_t(cp, ri, pm, bl, X16, np.empty((16, 2), np.float32)), W16.T @ X16)
vals, idx = cpu.nm_from_dense(W, 2, 4)
assert np.array_equal(cpu.nm_spmm(vals, idx, 4, X, np.empty((6, 3), np.float32)),
                      ref.nm_spmm(vals, idx, 4, X, np.empty((6, 3), np.float32)))
out = cpu.topk_per_row(W, 3, np.empty((6, 3), np.int32))
assert np.array_equal(out, ref.topk_per_row(W, 3, np.empty((6, 3), np.int32)))
x = rng.random((1, 2, 5, 5))
c = cpu.im2col(x, 3, 3, 1, 1, np.empty((1, 18, 25)))
assert np.array_equal(c, ref.im2col(x, 3, 3, 1, 1, np.empty((1, 18, 25))))
print("ok")
"""


def test_cpu_kernels_run_as_plain_python_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", NO_JIT_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
