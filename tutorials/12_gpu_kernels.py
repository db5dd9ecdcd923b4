# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · GPU kernels: the CPU loop and its CUDA twin
#
# sparsenet's sparse products run in small kernels with one name and one signature per backend:
# `kernels/reference.py` (NumPy, the spec), `kernels/cpu` (Numba on the CPU) and `kernels/gpu`
# (Numba's CUDA target, launched on CuPy arrays). This notebook puts the CPU kernel of the CSR
# product `Y = W @ X` next to its CUDA twin. The code it explains is `kernels/cpu/csr.py`,
# `kernels/gpu/csr.py` and `kernels/gpu/launch.py`.
#
# **You will learn**
#
# 1. the two kernels side by side, and that they compute the same numbers;
# 2. two ways of giving the work to GPU threads, *thread per row* and *warp per row*, drawn
#    as which thread computes which output and which memory a warp reads in one step;
# 3. how to run CUDA kernels on a machine without a GPU: Numba's CUDA simulator;
# 4. on a GPU: both mappings timed against cuBLAS (dense) and cuSPARSE, and the density below
#    which the sparse product beats the dense one (the crossover).
#
# **Prerequisites**: tutorial 02 (what CSR stores, the CPU kernels). **Time**: about 20 minutes
# to read and try the exercises; the last line prints how long the code itself took. It runs
# anywhere: without a GPU the kernels run in the simulator (correct results, meaningless
# times) and section 4 says so instead of timing.
#
# As a script, `SPARSENET_FAST=1 python tutorials/12_gpu_kernels.py` uses smaller matrices;
# its figures go to `figures/` (the output names each file).

# %%
import glob
import inspect
import json
import os
import time
from pathlib import Path


def cuda_device_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:                          # no CuPy, or no driver / device
        return False


ON_GPU = cuda_device_present()
if not ON_GPU:
    # The simulator must be chosen before Numba is first imported (sparsenet imports it).
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402

from sparsenet.plotting import Figures  # noqa: E402  (imports Numba: after the simulator choice)

figures = Figures("12")            # inline in Jupyter; always saved to figures/12_*.png
import matplotlib.pyplot as plt  # noqa: E402
from numba import config as numba_config  # noqa: E402

import sparsenet  # noqa: E402
from sparsenet.kernels import cpu, gpu, reference  # noqa: E402
from sparsenet.kernels.cpu import csr as cpu_csr  # noqa: E402
from sparsenet.kernels.gpu import csr as gpu_csr  # noqa: E402
from sparsenet.kernels.gpu.launch import flat_launch, row_column_launch  # noqa: E402
from sparsenet.train import fast_mode  # noqa: E402

FAST = fast_mode()
SIMULATOR = bool(numba_config.ENABLE_CUDASIM)
started = time.perf_counter()
rng = np.random.default_rng(0)
print("fast mode:", FAST, "| GPU:", ON_GPU, "| CUDA simulator:", SIMULATOR)
if SIMULATOR:
    print("No GPU here: the CUDA kernels run in Numba's simulator, one Python thread per CUDA "
          "thread. Results are exact; times would say nothing about a GPU.")



# %% [markdown]
# ## 1. The CPU kernel and its CUDA twin
#
# On the CPU, each thread takes a contiguous range of rows (`work_bounds` balances the stored
# entries) and, for each stored entry of a row, adds `values[p] * X[indices[p]]` (a whole
# row of X, k numbers) into the output row: a loop the compiler vectorizes over k.
#
# On a GPU there are tens of thousands of threads, so each thread gets far less: in the
# *warp-per-row* kernel, thread `(j, r)` computes the single number `out[r, j]`. Here is the
# CPU kernel, then the two CUDA kernels.

# %%
def python_source(kernel):
    """The Python source of a Numba kernel (CPU, CUDA, or the simulator's stand-in)."""
    return inspect.getsource(getattr(kernel, "py_func", None) or getattr(kernel, "fn"))


for kernel in (cpu_csr._spmm, gpu_csr._spmm_thread_per_row, gpu_csr._spmm_warp_per_row):
    print(python_source(kernel))

# %% [markdown]
# Both backends check their arguments with the same code (`kernels/cpu/args.py`) and give the
# same answer as the reference. Integer-valued data make every sum exact, so the comparison is
# equality, not closeness:

# %%
n_rows, n_cols, k = (24, 40, 8) if FAST else (64, 96, 40)
W = rng.integers(-3, 4, (n_rows, n_cols)).astype(np.float32) * (rng.random((n_rows, n_cols)) < 0.2)
X = rng.integers(-3, 4, (n_cols, k)).astype(np.float32)
indptr, indices, values = reference.csr_from_dense(W)
if ON_GPU:
    import cupy
    device_arrays = [cupy.asarray(a) for a in (indptr, indices, values, X)]
else:
    device_arrays = [indptr, indices, values, X]            # the simulator reads NumPy arrays
results = {"cpu": cpu.csr_spmm(indptr, indices, values, X, np.empty((n_rows, k), np.float32))}
for strategy in ("thread_per_row", "warp_per_row"):
    out = gpu.csr_spmm_with(strategy, *device_arrays, (cupy if ON_GPU else np).empty(
        (n_rows, k), np.float32))
    results[strategy] = cupy.asnumpy(out) if ON_GPU else out
for name, got in results.items():
    print(f"{name:>15}: equal to W @ X: {np.array_equal(got, W @ X)}")

# %% [markdown]
# **Try it**
#
# - Print `indptr`, `indices` and `values` for `W[:3]`: the kernels loop over exactly these
#   arrays, and row r's entries are `indices[indptr[r]:indptr[r + 1]]`.
# - Make `W` a float matrix (`rng.standard_normal`) instead of integers: the two GPU
#   strategies add in a different order from the CPU loop, so `np.array_equal` may turn False
#   while `np.allclose(got, W @ X, atol=1e-5)` stays True.

# %% [markdown]
# ## 2. Thread per row, warp per row
#
# A GPU runs threads in *warps* of 32 that execute each instruction together. When the 32
# threads of a warp load 32 neighbouring floats, the hardware serves them with one memory
# transaction (a *coalesced* load); 32 scattered floats cost up to 32.
#
# - **thread per row** (the CPU loop moved as is): thread r owns output row r. At one step the
#   32 threads of a warp read `X[indices[p], j]` for 32 *different* rows r, so 32 different
#   places of X, and each its own `indices[p]` and `values[p]`.
# - **warp per row**: the 32 lanes of a warp own 32 neighbouring columns j of one row r. At one
#   step they all read the same `indices[p]` and `values[p]` (one broadcast) and a 32-wide piece
#   of one row of X: one coalesced load.
#
# The picture shows, for the first rows of a 4096 x 4096 weight with k = 128, which warp computes
# each output element under each mapping (the launch shapes come from the kernels' own code).

# %%
def warp_of_each_output(strategy, n_rows, k):
    """(n_rows, k) array: the warp (linear thread id // 32) that writes out[r, j]."""
    if strategy == "thread_per_row":
        (_, threads) = flat_launch(n_rows)
        thread = np.repeat(np.arange(n_rows)[:, None], k, axis=1)        # thread r, all j
        return thread // 32
    (grid_x, _), (lanes, rows_per_block) = row_column_launch(n_rows, k)
    r, j = np.meshgrid(np.arange(n_rows), np.arange(k), indexing="ij")
    block = (r // rows_per_block) * grid_x + j // lanes
    inside = (r % rows_per_block) * lanes + j % lanes
    return (block * lanes * rows_per_block + inside) // 32


fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, strategy in zip(axes, ("thread_per_row", "warp_per_row")):
    warps = warp_of_each_output(strategy, 4096, 128)[:16, :128]
    ax.imshow(warps % 7, cmap="tab10", aspect="auto", interpolation="nearest")
    ax.set_title(f"{strategy.replace('_', ' ')}: colour = warp")
    ax.set_xlabel("output column j (batch)")
    ax.set_ylabel("output row r")
fig.tight_layout()
figures.show(fig, "thread_mapping")
for strategy in ("thread_per_row", "warp_per_row"):
    warps = warp_of_each_output(strategy, 4096, 128)
    rows_per_warp = len(np.unique(np.nonzero(warps == 0)[0]))
    # one step reads, for each row the warp works on, the X row of that row's next entry
    print(f"{strategy}: warp 0 computes {np.count_nonzero(warps == 0)} outputs in "
          f"{rows_per_warp} row(s) of out, so one step of its loop reads {rows_per_warp} "
          f"different row(s) of X")

# %% [markdown]
# For k = 1 (a matrix-vector product) warp per row would leave 31 of 32 lanes idle, so
# `gpu.csr_spmm` uses thread per row there and warp per row otherwise.
#
# **Try it**
#
# - Draw the mapping for k = 8 instead of 128 (`warp_of_each_output(strategy, 4096, 8)`):
#   warp per row now puts 4 rows in a warp (`lanes_for(8)` is 8 lanes). You should see each
#   warp's colour cover four short rows instead of one long one.
# - Print `row_column_launch(4096, 128)` and `flat_launch(4096)`: the grid and block shapes
#   behind the two pictures; their product of threads is what the GPU schedules.
#
# The transposed product `W.T @ G` is the same warp-per-row loop over the CSC permutation (a
# gather: no two threads add into one output, so no atomics, and a fixed order of addition).
# SDDMM, the weight gradient `(G @ X.T)` at the stored positions, gives each row one warp that
# computes 32 dot products per round: each lane sums a share of each dot product, and the 32
# partial sums meet in shared memory.
#
# ## 3. CUDA without a GPU: the simulator
#
# With `NUMBA_ENABLE_CUDASIM=1` set before Numba is imported, `numba.cuda.jit` kernels run as
# Python: every CUDA thread a Python thread, shared memory and barriers emulated. That is how the
# test suite checks every gpu kernel against the reference on machines without a GPU
# (`tests/test_kernels_gpu.py`). It catches wrong indices and races on barriers, not speed, and
# it runs the kernel body as Python, so code the real CUDA compiler would reject still runs:
# `scripts/compile_gpu_kernels.py` compiles every kernel to GPU code without a GPU for that.

# %%
print("simulator on:", SIMULATOR)
print("kernel object:", type(gpu_csr._spmm_warp_per_row).__module__)

# %% [markdown]
# **Try it**
#
# - Change `_spmm_warp_per_row` so that it skips the last stored entry of each row
#   (`range(start, stop - 1)`) and run `pytest tests/test_kernels_gpu.py -k csr_products`: the
#   simulator run fails on the first matrix with a stored entry, without a GPU.
# - `print(python_source(gpu_csr._sddmm_warp_per_row))`: the weight gradient's kernel, the one
#   that meets its 32 partial sums in shared memory; the simulator runs that barrier too, so
#   the tests check it without a GPU.

# %% [markdown]
# ## 4. Timings and the crossover (needs a GPU)
#
# On a GPU this section times, for a 4096 x 4096 float32 weight and a batch of 128, both
# mappings, cuSPARSE (`cupyx.scipy.sparse`) and the dense product (cuBLAS) over densities, with
# CUDA events (median of repeats). The crossover is the largest density at which the sparse
# product is faster than the dense one. Without a GPU nothing is timed; if
# `benchmarks/gpu.py` has left a record (`benchmarks/results/gpu-*.json`), its crossover is
# shown instead, labelled with the GPU it was measured on.

# %%
def crossover(rows, key):
    """Largest density where the sparse time `key` beats the dense time (None if never)."""
    faster = [r["density"] for r in rows if r[key] is not None and r[key] < r["dense_s"]]
    return max(faster) if faster else None


if ON_GPU:
    import cupyx.scipy.sparse as cusparse
    n, k_live = 4096, 128
    densities = (0.2, 0.05, 0.01, 0.002) if FAST else (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001)
    repeats = 5 if FAST else 20

    def gpu_seconds(fn):
        for _ in range(2):
            fn()
        start, end, times = cupy.cuda.Event(), cupy.cuda.Event(), []
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
        return float(np.median(times))

    X_live = cupy.random.standard_normal((n, k_live), dtype=cupy.float32)
    out = cupy.empty((n, k_live), cupy.float32)
    dense_w = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    t_dense = gpu_seconds(lambda: cupy.matmul(dense_w, X_live, out=out))
    timing_rows = []
    for d in densities:
        keep = cupy.random.random((n, n), dtype=cupy.float32) < d
        ip, ix, v = gpu.csr_from_dense(cupy.where(keep, dense_w, cupy.float32(0)))
        S = cusparse.csr_matrix((v, ix, ip), shape=(n, n))
        row = {"density": d, "dense_s": t_dense, "cusparse_s": gpu_seconds(lambda: S @ X_live)}
        for strategy in ("thread_per_row", "warp_per_row"):
            row[f"{strategy}_s"] = gpu_seconds(
                lambda: gpu.csr_spmm_with(strategy, ip, ix, v, X_live, out))
        timing_rows.append(row)
        print(f"density {d:6g}: thread/row {1e3 * row['thread_per_row_s']:8.3f} ms  warp/row "
              f"{1e3 * row['warp_per_row_s']:8.3f} ms  cuSPARSE {1e3 * row['cusparse_s']:8.3f} ms"
              f"  cuBLAS dense {1e3 * t_dense:8.3f} ms")
    for key in ("thread_per_row_s", "warp_per_row_s", "cusparse_s"):
        print(f"crossover ({key[:-2]}): sparse beats dense below density {crossover(timing_rows, key)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    ds = [r["density"] for r in timing_rows]
    for key, label in (("thread_per_row_s", "thread per row"), ("warp_per_row_s", "warp per row"),
                       ("cusparse_s", "cuSPARSE")):
        ax.loglog(ds, [1e3 * r[key] for r in timing_rows], "o-", label=label)
    ax.axhline(1e3 * t_dense, color="k", ls="--", label="cuBLAS dense")
    ax.set_xlabel("density")
    ax.set_ylabel("ms per product (4096², k = 128)")
    ax.legend()
    figures.show(fig, "crossover")
    if FAST:
        print("(fast mode: four densities and 5 repeats; the crossover is coarse, the full run "
              "measures eight)")
else:
    print("Timings need a GPU: none here, so nothing is timed (the simulator's times would be "
          "those of Python threads).")
    results_dir = Path(sparsenet.__file__).resolve().parent.parent / "benchmarks" / "results"
    records = sorted(p for p in glob.glob(str(results_dir / "gpu-*.json"))
                     if not p.endswith("-quick.json"))
    if not records:
        print("No record of benchmarks/gpu.py yet: run `bash benchmarks/gpu_check.sh` on a "
              "machine with an NVIDIA GPU to measure the crossover.")
    for path in records:
        record = json.load(open(path))
        spmm = [r for r in record["rows"] if r.get("kernel") == "spmm" and r["n"] == 4096
                and r["k"] == 128]
        rows = [{"density": r["density"], "dense_s": r["cublas_dense_s"], "ours_s": r["ours_s"],
                 "cusparse_s": r["cusparse_s"]} for r in spmm]
        print(f"recorded by benchmarks/gpu.py on {record['device']['gpu']} "
              f"({record['machine']['date']}): CSR SpMM 4096², k = 128 beats cuBLAS dense below "
              f"density {crossover(rows, 'ours_s')} (cuSPARSE: below {crossover(rows, 'cusparse_s')})")

# %% [markdown]
# **Try it**
#
# - On a GPU, set `k_live = 1024` in section 4: the sparse products do 8 times the work, and the
#   crossover density should move, since cuBLAS gets closer to its peak with a bigger batch.
# - On a GPU, add `thread_per_row` at k = 1 to the loop (an `X_live` of shape `(n, 1)`): there
#   it is the mapping `gpu.csr_spmm` picks, and warp per row leaves 31 lanes of 32 idle.
#
# ## What's next
#
# `benchmarks/gpu.py` measures every CSR kernel at 4096² and 16384², batch 128 and 1024,
# against cuSPARSE and cuBLAS, and the training step of a 4096-wide MLP; `sparsenet train
# --device cuda` trains any model and method on the GPU with the same results as on the CPU.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
