"""What every gpu kernel file shares: the array module, launch shapes and two device helpers.

The kernels are Numba CUDA kernels (``numba.cuda.jit``). On a GPU they are launched on CuPy
arrays, which Numba reads through ``__cuda_array_interface__`` without a copy; under Numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, what the test suite uses on a machine without a
GPU) the same kernels run as Python threads on NumPy arrays. The glue around a launch (empty
outputs, prefix sums, sorting) is written against ``xp``, the array module of the inputs:
CuPy on a GPU, NumPy in the simulator, with the same calls.

Launch shapes: a warp is 32 threads. Kernels over (output row, output column) put the columns
on the fast thread axis (x), so the 32 threads of a warp read 32 neighbouring elements of a
row of X at once (one coalesced load) while sharing the row's index and value (a broadcast).
"""
import numpy as np
from numba import cuda

WARP = 32
THREADS_PER_BLOCK = 256
TILE = (WARP, WARP + 1)      # shared-memory tile of the dot-product kernels (a constant)
MAX_GRID_Y = 65535           # CUDA's limit on a grid's second dimension


def array_module(a):
    """``cupy`` for CuPy arrays, else ``numpy`` (NumPy arrays: the simulator)."""
    if type(a).__module__.split(".")[0] != "cupy":
        return np
    import cupy  # noqa: PLC0415 - only reached with CuPy arrays, so CuPy is installed
    return cupy


def contig(a):
    """A C-contiguous version of ``a`` (the kernels index assuming nothing, but coalescing
    and the flat views taken by some wrappers need row-major order)."""
    return a if a.flags.c_contiguous else array_module(a).ascontiguousarray(a)


def out_buffer(out):
    """``out`` itself, or a contiguous scratch array of its shape when it is strided."""
    return out if out.flags.c_contiguous else array_module(out).empty(out.shape, dtype=out.dtype)


def finish(out, buf):
    """Copy the scratch buffer back into ``out`` if one was used; return out."""
    if buf is not out:
        out[...] = buf
    return out


def zero_of(a):
    """A zero of ``a``'s dtype: the kernels start their sums from it, so a float32 product
    accumulates in float32, as on the CPU (a literal 0.0 would make the sum float64)."""
    return a.dtype.type(0)


def cdiv(n, d):
    return -(-n // d)


def lanes_for(k):
    """Threads along the columns of one row: a warp, or fewer when there are fewer columns
    (the rest of the warp then works on the next rows instead of idling)."""
    lanes = 1
    while lanes < min(k, WARP):
        lanes *= 2
    return lanes


def row_column_launch(n_rows, n_cols):
    """(blocks, threads) for a kernel with one thread per (row, column) of an output:
    threads (lanes over columns, rows), grid (column tiles, row tiles)."""
    lanes = lanes_for(n_cols)
    rows = 1
    while rows < min(n_rows, THREADS_PER_BLOCK // lanes):
        rows *= 2
    grid = (cdiv(n_cols, lanes), cdiv(n_rows, rows))
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"{n_rows} output rows need {grid[1]} row tiles, more than a CUDA grid's "
                         f"{MAX_GRID_Y}: split the product into smaller ones")
    return grid, (lanes, rows)


def flat_launch(n):
    """(blocks, threads) for one thread per item of n."""
    threads = min(THREADS_PER_BLOCK, max(WARP, 1 << max(0, (n - 1).bit_length())))
    return cdiv(n, threads), threads


@cuda.jit(device=True)
def clamped_range(ptr, r, n):
    """ptr[r]:ptr[r + 1] clipped to [0, n]: a bad pointer array gives a wrong answer, never a
    read out of bounds (the O(1) checks do not read device pointers; see checks.py)."""
    start = min(max(ptr[r], 0), n)
    stop = min(max(ptr[r + 1], start), n)
    return start, stop


@cuda.jit(device=True)
def tile_dot(partial, e, lane, A, a_row, B, b_row, zero):
    """One lane's share of dot(A[a_row], B[b_row]) into partial[e, lane]: the warp's 32 lanes
    read 32 neighbouring elements of both rows at once."""
    s = zero
    for j in range(lane, A.shape[1], WARP):
        s += A[a_row, j] * B[b_row, j]
    partial[e, lane] = s


@cuda.jit(device=True)
def tile_flush(partial, lane, out, p0, stop):
    """After a barrier: lane e adds up the 32 partial sums of entry p0 + e and writes it.

    The partials are summed in float64 in a fixed order, so a result does not depend on how
    the threads were scheduled. The (32, 33) tile is padded by one column so that lane e
    reading row e hits a different shared-memory bank than its neighbours."""
    if p0 + lane < stop:
        total = 0.0
        for other in range(WARP):
            total += partial[lane, other]
        out[p0 + lane] = total
