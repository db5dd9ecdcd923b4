"""im2col / col2im against direct loops and the adjoint identity."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sparsenet.kernels import cpu, reference
from test_kernels_common import KSET, assert_same, dtypes, ints, seeds

geometry = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7),
                     st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2))


def direct_im2col(x, kh, kw, stride, padding):
    B, C, H, W = x.shape
    h_out = (H + 2 * padding - kh) // stride + 1
    w_out = (W + 2 * padding - kw) // stride + 1
    out = np.zeros((B, C * kh * kw, h_out * w_out), x.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    for oh in range(h_out):
                        for ow in range(w_out):
                            ih, iw = oh * stride - padding + i, ow * stride - padding + j
                            if 0 <= ih < H and 0 <= iw < W:
                                out[b, (c * kh + i) * kw + j, oh * w_out + ow] = x[b, c, ih, iw]
    return out


@KSET
@given(geom=geometry, dtype=dtypes, seed=seeds)
def test_im2col_col2im(geom, dtype, seed):
    B, C, H, W, kh, kw, stride, padding = geom
    if H + 2 * padding < kh or W + 2 * padding < kw:
        return
    rng = np.random.default_rng(seed)
    x = ints(rng, (B, C, H, W), dtype)
    want = direct_im2col(x, kh, kw, stride, padding)
    cols = ints(rng, want.shape, dtype)
    for backend in (reference, cpu):
        got = backend.im2col(x, kh, kw, stride, padding, np.full(want.shape, np.nan, dtype))
        assert_same(got, want)
        back = backend.col2im(cols, C, H, W, kh, kw, stride, padding, np.full(x.shape, np.nan, dtype))
        # adjoint identity <im2col(x), cols> == <x, col2im(cols)>, exact on integers
        assert np.sum(got * cols) == np.sum(x * back)
    assert_same(cpu.col2im(cols, C, H, W, kh, kw, stride, padding, np.empty(x.shape, dtype)),
                reference.col2im(cols, C, H, W, kh, kw, stride, padding, np.empty(x.shape, dtype)))


def test_im2col_accepts_a_strided_image():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 10))[:, :, :, ::2]  # (2, 3, 6, 5), non-contiguous
    want = direct_im2col(np.ascontiguousarray(x), 3, 2, 2, 1)
    for backend in (reference, cpu):
        assert_same(backend.im2col(x, 3, 2, 2, 1, np.empty(want.shape)), want)
