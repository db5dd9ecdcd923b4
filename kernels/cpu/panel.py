"""Register-blocked block x panel products for the BSR kernels.

``rows (bs, k) += w (bs, bs) @ X[b:b + bs]`` computed four output rows at a
time: each loaded element of X then feeds four multiply-adds instead of one,
which roughly halves the time of a block product compared with one output row
at a time (the loads, not the arithmetic, were the limit). The block weights
are read into tuples first, so they live in registers for the whole k loop.

Each output row still receives, per group of 8 (or 4) block columns, one
balanced-tree sum added to it in block-column order: the same order as the
one-row-at-a-time ``add_block_rows``, so both paths give identical results.
"""

from numba import njit

from .micro import add_block_rows


@njit(cache=True)
def take8(v, s):
    return (v[s], v[s + 1], v[s + 2], v[s + 3], v[s + 4], v[s + 5], v[s + 6], v[s + 7])


@njit(cache=True)
def take4(v, s):
    return (v[s], v[s + 1], v[s + 2], v[s + 3])


@njit(cache=True)
def tree8(w, y0, y1, y2, y3, y4, y5, y6, y7):
    return ((w[0] * y0 + w[1] * y1) + (w[2] * y2 + w[3] * y3)) + ((w[4] * y4 + w[5] * y5) + (w[6] * y6 + w[7] * y7))


@njit(cache=True)
def tree4(w, y0, y1, y2, y3):
    return (w[0] * y0 + w[1] * y1) + (w[2] * y2 + w[3] * y3)


@njit(cache=True)
def add_rows8x4(o0, o1, o2, o3, w0, w1, w2, w3, X, b):
    """o_a += sum_l w_a[l] * X[b + l] for a < 4, l < 8."""
    x0, x1, x2, x3 = X[b], X[b + 1], X[b + 2], X[b + 3]
    x4, x5, x6, x7 = X[b + 4], X[b + 5], X[b + 6], X[b + 7]
    for j in range(o0.shape[0]):
        y0, y1, y2, y3 = x0[j], x1[j], x2[j], x3[j]
        y4, y5, y6, y7 = x4[j], x5[j], x6[j], x7[j]
        o0[j] = o0[j] + tree8(w0, y0, y1, y2, y3, y4, y5, y6, y7)
        o1[j] = o1[j] + tree8(w1, y0, y1, y2, y3, y4, y5, y6, y7)
        o2[j] = o2[j] + tree8(w2, y0, y1, y2, y3, y4, y5, y6, y7)
        o3[j] = o3[j] + tree8(w3, y0, y1, y2, y3, y4, y5, y6, y7)


@njit(cache=True)
def add_rows4x4(o0, o1, o2, o3, w0, w1, w2, w3, X, b):
    """o_a += sum_l w_a[l] * X[b + l] for a < 4, l < 4."""
    x0, x1, x2, x3 = X[b], X[b + 1], X[b + 2], X[b + 3]
    for j in range(o0.shape[0]):
        y0, y1, y2, y3 = x0[j], x1[j], x2[j], x3[j]
        o0[j] = o0[j] + tree4(w0, y0, y1, y2, y3)
        o1[j] = o1[j] + tree4(w1, y0, y1, y2, y3)
        o2[j] = o2[j] + tree4(w2, y0, y1, y2, y3)
        o3[j] = o3[j] + tree4(w3, y0, y1, y2, y3)


@njit(cache=True)
def block_times_panel(rows, w, X, b):
    """rows (bs, k) += w (bs, bs) @ X[b:b + bs]. ``w`` may be a transposed view."""
    bs = w.shape[0]
    if bs % 8 == 0:
        for i in range(0, bs, 4):
            for q in range(0, bs, 8):
                add_rows8x4(rows[i], rows[i + 1], rows[i + 2], rows[i + 3],
                            take8(w[i], q), take8(w[i + 1], q), take8(w[i + 2], q), take8(w[i + 3], q),
                            X, b + q)
    elif bs % 4 == 0:
        for i in range(0, bs, 4):
            for q in range(0, bs, 4):
                add_rows4x4(rows[i], rows[i + 1], rows[i + 2], rows[i + 3],
                            take4(w[i], q), take4(w[i + 1], q), take4(w[i + 2], q), take4(w[i + 3], q),
                            X, b + q)
    else:
        for i in range(bs):
            add_block_rows(rows[i], w[i], X, b)
