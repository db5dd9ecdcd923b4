"""Small Numba building blocks shared by the cpu kernels.

Why these shapes:
- ``add_rows8`` is the inner loop of every product: o += sum_i v_i * x_i over
  contiguous k-vectors. Eight rows per pass means one load/store of ``o`` per
  eight products instead of one per product, and summing the eight products
  as a balanced tree (a fixed order, so results stay deterministic) gives the
  CPU independent additions to overlap. LLVM vectorizes the j loop.
- ``dot`` is the only place that opts into ``fastmath={'reassoc',
  'contract'}``: without reassociation LLVM cannot vectorize a sum reduction,
  and a scalar dot product is ~5x slower. The order it picks is fixed at
  compile time, so results are still deterministic on a given machine and do
  not depend on the thread count; they differ from a sequential sum only by
  rounding.
- ``work_bounds`` splits rows into one contiguous range per thread with about
  equal work (stored entries + rows), so skewed patterns still balance and
  every output row is written by exactly one thread (no atomics).

Caching caveat: Numba's on-disk cache (cache=True) is keyed on the file of
the cached function, so editing a helper here does not invalidate kernels in
other files that inlined it. After editing this file (or panel.py), delete
kernels/cpu/__pycache__.
"""

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

# Larger rows per parallel part only pay off when the part is this much work.
MIN_WORK_PER_THREAD = 2048

# A product whose gathered operand (X in W @ X) is larger than this cannot keep it in cache:
# its rows come from memory, and the kernels prefetch the rows they will gather next.
FAR_BYTES = 8 << 20
PREFETCH_AHEAD = 16          # stored entries between the prefetch of a row and its use


@intrinsic
def prefetch_at(typingctx, array, i, j):
    """Ask the CPU to start loading array[i, j] (a 2-D C-contiguous array) into cache: a hint,
    with no effect on results. LLVM's llvm.prefetch (read, keep in all levels), which Numba
    does not expose; the address is computed directly, without making an array view."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i64, i32 = ir.IntType(64), ir.IntType(32)

        def as64(v):
            return builder.sext(v, i64) if v.type.width < 64 else v
        offset = builder.add(builder.mul(as64(args[1]), builder.extract_value(ary.shape, 1)),
                             as64(args[2]))
        address = builder.bitcast(builder.gep(ary.data, [offset]), ir.IntType(8).as_pointer())
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]))
        builder.call(fn, [address, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, i, j), codegen


if config.DISABLE_JIT:                 # plain Python (debugging): a hint has nothing to do
    def prefetch_at(array, i, j):  # noqa: F811
        pass


@njit(cache=True)
def prefetch_row(X, i):
    """Prefetch every 64-byte line of row i of X (n, k)."""
    for j in range(0, X.shape[1], 64 // X.itemsize):
        prefetch_at(X, i, j)


def is_far(X) -> bool:
    """True when X is too large for the caches (see FAR_BYTES)."""
    return X.nbytes > FAR_BYTES


@njit(cache=True)
def add_rows8(o, v0, x0, v1, x1, v2, x2, v3, x3, v4, x4, v5, x5, v6, x6, v7, x7):
    for j in range(o.shape[0]):
        o[j] = o[j] + (((v0 * x0[j] + v1 * x1[j]) + (v2 * x2[j] + v3 * x3[j]))
                       + ((v4 * x4[j] + v5 * x5[j]) + (v6 * x6[j] + v7 * x7[j])))


@njit(cache=True)
def add_rows4(o, v0, x0, v1, x1, v2, x2, v3, x3):
    for j in range(o.shape[0]):
        o[j] = o[j] + ((v0 * x0[j] + v1 * x1[j]) + (v2 * x2[j] + v3 * x3[j]))


@njit(cache=True)
def add_row(o, v, x):
    for j in range(o.shape[0]):
        o[j] += v * x[j]


@njit(cache=True, fastmath={"reassoc", "contract"})
def dot(a, b):
    s = a.dtype.type(0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@njit(cache=True)
def work_bounds(ptr, k, n_threads):
    """Split rows 0..n of a pointer array ptr (n + 1,) into contiguous parts.

    The work of row r is taken as (ptr[r + 1] - ptr[r] + 1) * max(k, 1): its
    stored entries plus writing the row. Returns bounds (n_parts + 1,) int64;
    part t is rows bounds[t]:bounds[t + 1]. Small problems get one part so they
    do not pay for waking threads they cannot keep busy. ``n_threads`` comes
    from the caller (numba.get_num_threads() inside a cached function would
    stop it from being cached).
    """
    n = ptr.shape[0] - 1
    total = (ptr[n] + n) * max(k, 1)
    n_parts = min(n_threads, max(1, total // MIN_WORK_PER_THREAD), max(n, 1))
    bounds = np.empty(n_parts + 1, dtype=np.int64)
    bounds[0] = 0
    bounds[n_parts] = n
    for t in range(1, n_parts):
        # first row r with cumulative work ptr[r] + r >= t/n_parts of the total
        target = (ptr[n] + n) * t // n_parts
        lo, hi = bounds[t - 1], n
        while lo < hi:
            mid = (lo + hi) // 2
            if ptr[mid] + mid < target:
                lo = mid + 1
            else:
                hi = mid
        bounds[t] = lo
    return bounds


@njit(cache=True)
def even_bounds(n, n_parts):
    """Split 0..n into n_parts nearly equal contiguous ranges."""
    n_parts = max(1, min(n_parts, n))
    bounds = np.empty(n_parts + 1, dtype=np.int64)
    for t in range(n_parts + 1):
        bounds[t] = n * t // n_parts
    return bounds


# The three "o += sum of scaled rows" loops below differ only in where the
# scalars and rows come from; each sends groups of 8, then 4, then 1 rows to
# the add_rows kernels above.

@njit(cache=True)
def add_indexed_rows_far(o, vals, X, rows, start, stop, prefetch_end):
    """`add_indexed_rows` for an X too large for the caches: every group of eight entries first
    prefetches the rows PREFETCH_AHEAD entries ahead (up to entry prefetch_end, exclusive: the
    end of the caller's range, so the next rows' first entries are fetched as well)."""
    q = start
    last = prefetch_end - 1
    while q + 8 <= stop:
        for d in range(8):
            prefetch_row(X, rows[min(q + PREFETCH_AHEAD + d, last)])
        add_rows8(o, vals[q], X[rows[q]], vals[q + 1], X[rows[q + 1]],
                  vals[q + 2], X[rows[q + 2]], vals[q + 3], X[rows[q + 3]],
                  vals[q + 4], X[rows[q + 4]], vals[q + 5], X[rows[q + 5]],
                  vals[q + 6], X[rows[q + 6]], vals[q + 7], X[rows[q + 7]])
        q += 8
    add_indexed_rows(o, vals, X, rows, q, stop)


@njit(cache=True)
def add_indexed_rows(o, vals, X, rows, start, stop):
    """o += sum over q in [start, stop) of vals[q] * X[rows[q]]  (CSR order)."""
    q = start
    while q + 8 <= stop:
        add_rows8(o, vals[q], X[rows[q]], vals[q + 1], X[rows[q + 1]],
                  vals[q + 2], X[rows[q + 2]], vals[q + 3], X[rows[q + 3]],
                  vals[q + 4], X[rows[q + 4]], vals[q + 5], X[rows[q + 5]],
                  vals[q + 6], X[rows[q + 6]], vals[q + 7], X[rows[q + 7]])
        q += 8
    if q + 4 <= stop:
        add_rows4(o, vals[q], X[rows[q]], vals[q + 1], X[rows[q + 1]],
                  vals[q + 2], X[rows[q + 2]], vals[q + 3], X[rows[q + 3]])
        q += 4
    while q < stop:
        add_row(o, vals[q], X[rows[q]])
        q += 1


@njit(cache=True)
def add_permuted_rows(o, vals, perm, X, rows, start, stop):
    """o += sum over q in [start, stop) of vals[perm[q]] * X[rows[q]]  (CSC order)."""
    q = start
    while q + 8 <= stop:
        add_rows8(o, vals[perm[q]], X[rows[q]], vals[perm[q + 1]], X[rows[q + 1]],
                  vals[perm[q + 2]], X[rows[q + 2]], vals[perm[q + 3]], X[rows[q + 3]],
                  vals[perm[q + 4]], X[rows[q + 4]], vals[perm[q + 5]], X[rows[q + 5]],
                  vals[perm[q + 6]], X[rows[q + 6]], vals[perm[q + 7]], X[rows[q + 7]])
        q += 8
    if q + 4 <= stop:
        add_rows4(o, vals[perm[q]], X[rows[q]], vals[perm[q + 1]], X[rows[q + 1]],
                  vals[perm[q + 2]], X[rows[q + 2]], vals[perm[q + 3]], X[rows[q + 3]])
        q += 4
    while q < stop:
        add_row(o, vals[perm[q]], X[rows[q]])
        q += 1


@njit(cache=True)
def add_block_rows(o, vals, X, base):
    """o += sum over q < len(vals) of vals[q] * X[base + q]  (one block row/column)."""
    n = vals.shape[0]
    q = 0
    while q + 8 <= n:
        b = base + q
        add_rows8(o, vals[q], X[b], vals[q + 1], X[b + 1], vals[q + 2], X[b + 2],
                  vals[q + 3], X[b + 3], vals[q + 4], X[b + 4], vals[q + 5], X[b + 5],
                  vals[q + 6], X[b + 6], vals[q + 7], X[b + 7])
        q += 8
    if q + 4 <= n:
        b = base + q
        add_rows4(o, vals[q], X[b], vals[q + 1], X[b + 1], vals[q + 2], X[b + 2], vals[q + 3], X[b + 3])
        q += 4
    while q < n:
        add_row(o, vals[q], X[base + q])
        q += 1


@njit(cache=True)
def gather_dot(vals, x, rows, start, stop):
    """sum over q in [start, stop) of vals[q] * x[rows[q]] (the k = 1 case).

    Eight products per step summed as a tree: independent multiplies and
    gathers overlap, where a single running sum would wait on each addition.
    The uint32 casts drop Numba's negative-index wraparound code (indices are
    never negative), a measurable cost when each product is only a few
    instructions.
    """
    s = x.dtype.type(0)
    q = start
    while q + 8 <= stop:
        s += (((vals[q] * x[np.uint32(rows[q])] + vals[q + 1] * x[np.uint32(rows[q + 1])])
               + (vals[q + 2] * x[np.uint32(rows[q + 2])] + vals[q + 3] * x[np.uint32(rows[q + 3])]))
              + ((vals[q + 4] * x[np.uint32(rows[q + 4])] + vals[q + 5] * x[np.uint32(rows[q + 5])])
                 + (vals[q + 6] * x[np.uint32(rows[q + 6])] + vals[q + 7] * x[np.uint32(rows[q + 7])])))
        q += 8
    while q < stop:
        s += vals[q] * x[np.uint32(rows[q])]
        q += 1
    return s
