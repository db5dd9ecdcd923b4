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
# # 02 · Sparse formats: what is stored, what it costs, how fast it runs
#
# Tutorial 01 trained a dense network: every weight stored, every weight multiplied. A sparse
# network keeps a small fraction of them, and *how* it stores that fraction decides both the
# memory it saves and the speed it gets. sparsenet has four weight types with one interface:
#
# - `CSR`: compressed sparse rows; any pattern at all (unstructured);
# - `Block`: block-sparse rows (BSR); whole `bs x bs` tiles are kept or dropped;
# - `NM`: N:M; in every group of M consecutive inputs of a row, exactly N weights (2:4 is what
#   NVIDIA's sparse tensor cores run);
# - `Masked`: a dense matrix times a 0/1 mask, computed densely: the slow, obvious twin the
#   others are tested against.
#
# The formats live in `sparsenet/sparse/` (`csr.py`, `block.py`, `nm.py`, `masked.py`), their
# kernels in `kernels/reference.py` (the NumPy specification) and `kernels/cpu/` (Numba).
#
# **You will learn**
#
# 1. what each format stores, from a small matrix: its arrays, and its pattern drawn;
# 2. how many bytes per nonzero each costs for a 4096 x 4096 float32 weight, and where they go;
# 3. why the backward product `W.T @ G` wants a permutation (CSR -> CSC);
# 4. how the weight gradient is computed only where weights exist (SDDMM), inside `SparseLinear`;
# 5. how to read the kernel timings recorded by `benchmarks/kernels.py`;
# 6. how to time a small SpMM live on your machine.
#
# **Prerequisites**: tutorial 01 (Tensor, backward). **Time**: about 30 minutes to read and try
# the exercises; the last line prints how long the code itself took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/02_sparse_formats.py` uses smaller sizes; its
# figures go to `figures/` (the output names each file).

# %%
import json
import os
import statistics
import time
from pathlib import Path

import numba
import numpy as np

from sparsenet.plotting import Figures

figures = Figures("02")            # inline in Jupyter; always saved to figures/02_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.kernels.reference import csr_to_csc  # noqa: E402
from sparsenet.nn import SparseLinear  # noqa: E402
from sparsenet.sparse import CSR, NM, Block, Masked  # noqa: E402
from sparsenet.train import fast_mode  # noqa: E402

FAST = fast_mode()                 # SPARSENET_FAST=1: smaller matrices, fewer repeats
started = time.perf_counter()
sn.manual_seed(0)
rng = np.random.default_rng(0)
np.set_printoptions(precision=2, suppress=True, linewidth=100)
print("fast mode:", FAST)


# %% [markdown]
# ## 1. What each format stores
#
# One small 8 x 8 float32 matrix, four ways, each keeping half of the weights (the ones with
# the largest magnitude that its structure allows). Weights are `(out, in)`: a row is one
# output unit, a column one input.

# %%
A = np.round(rng.standard_normal((8, 8)), 1).astype(np.float32)
print("A =\n", A)

csr = CSR.from_dense(A, density=0.5)
print("\nCSR:", csr)
print("indptr  (int64, one per row + 1):", csr.indptr)
print("indices (int32, column of each value):", csr.indices)
print("values  (float32):", csr.values)
r = 2
print(f"row {r} holds values[{csr.indptr[r]}:{csr.indptr[r + 1]}] = "
      f"{csr.values[csr.indptr[r]:csr.indptr[r + 1]]} in columns "
      f"{csr.indices[csr.indptr[r]:csr.indptr[r + 1]]}")

# %% [markdown]
# `Block` is CSR one level up: `indptr` and `indices` run over the grid of `bs x bs` tiles,
# and every stored tile is dense. Here `bs = 2`, so the grid is 4 x 4 and each index stands
# for four weights. The tiles kept are those with the largest L2 norm.

# %%
blk = Block.from_dense(A, density=0.5, block_size=2)
print("Block:", blk, " block grid:", blk.unit_grid)
print("indptr  over block rows:", blk.indptr)
print("indices (block column of each tile):", blk.indices)
print(f"first tile (block row 0, block column {blk.indices[0]}):\n", blk.blocks[0])

# %% [markdown]
# `NM` needs no pointers at all: every row holds exactly `N` weights per group of `M`
# columns, so the layout is a regular array `(rows, groups, N)`. The only index is the
# in-group offset `idx` in `[0, M)`, which fits in a uint8.

# %%
nm = NM.from_dense(A, n=2, m=4)
print("NM:", nm)
print("idx (uint8), row 0, one line per group (columns 0-3, then 4-7):\n", nm.idx[0])
print("values, row 0:\n", nm.values.reshape(nm.idx.shape)[0])
print("so row 0 keeps columns", nm.coords()[1][:4].tolist())

masked = Masked.from_dense(A, density=0.5)
print("\nMasked:", masked, "stores all", masked.values.size, "values and a bool mask:\n",
      masked.mask().astype(int))
print("Masked and CSR pick the same weights:", np.array_equal(masked.mask(), csr.mask()))

# %% [markdown]
# The same rule on a bigger matrix, drawn: every format keeps half of the weights,
# but structure restricts *which* half. Unstructured CSR takes the largest magnitudes wherever
# they are; Block must take whole tiles; 2:4 must take two of every four. The numbers in the
# titles say how much of the squared magnitude $\lVert W \rVert^2$ each one keeps: the price of
# structure, paid back in speed (section 5). Black marks a stored weight (on the left: a
# large |w|).

# %%
size = 32
W_small = rng.standard_normal((size, size)).astype(np.float32)
patterns = {
    "unstructured (CSR)": CSR.from_dense(W_small, density=0.5),
    "block 4x4 (Block)": Block.from_dense(W_small, density=0.5, block_size=4),
    "2:4 (NM)": NM.from_dense(W_small, n=2, m=4),
}
total = float((W_small ** 2).sum())
fig, axes = plt.subplots(1, 4, figsize=(13, 4), layout="constrained")
axes[0].imshow(np.abs(W_small), cmap="Greys")
axes[0].set_title("|W| (dense)")
for ax, (name, weight) in zip(axes[1:], patterns.items()):
    kept = float((weight.to_dense() ** 2).sum()) / total
    ax.imshow(weight.mask(), cmap="Greys", interpolation="nearest")
    ax.set_title(f"{name}\ndensity {weight.density:.2f}, keeps {kept:.0%} of |W|²", fontsize=10)
    print(f"{name:20s} density {weight.density:.3f}  keeps {kept:.3f} of the squared magnitude")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
figures.show(fig, "patterns")

# %% [markdown]
# **Try it**
#
# - `CSR.from_dense(A, density=0.25)`: 16 values instead of 32, and `indptr` still has 9
#   entries, one per row and one more: it grows with the rows, not with the nonzeros.
# - `NM.from_dense(A, n=1, m=4)`: one weight per group of four, so `idx` holds one offset per
#   group and the density is 0.25; `n=2, m=8` has the same density but more freedom in where
#   the kept weights go, and keeps at least as much of |A|².

# %% [markdown]
# ## 2. Bytes per nonzero
#
# A dense float32 weight costs 4 bytes per entry whatever its zeros. A sparse one costs bytes per
# *stored* weight, and the index arrays are the overhead:
#
# - **CSR**: 4 bytes of value + 4 of column index (`int32`) per nonzero, plus one `int64`
#   pointer per row. The first `W.T @ G` (the input gradient in backward, section 3) builds and
#   caches the CSC index: one more `int32` row index and one `int64` permutation entry per
#   nonzero, plus one pointer per column.
# - **Block**: the indices are per *tile*, so with 16 x 16 tiles they are shared by 256 weights;
#   values dominate.
# - **N:M**: 4 bytes of value + 1 byte (`uint8` offset) per nonzero, no pointers; but it only
#   exists at densities `n/m`.
# - **Masked**: a full dense value array plus a 1-byte mask per entry, whatever the density.
#
# Every object reports `nbytes` (values and all index arrays, caches included). Here they are
# for one weight at several densities.

# %%
N_BYTES = 1024 if FAST else 4096
W_big = rng.standard_normal((N_BYTES, N_BYTES)).astype(np.float32)
dense_bytes = W_big.nbytes
DENSITIES = (0.5, 0.25, 0.125, 0.1, 0.05, 0.01)
MiB = 2 ** 20


def nm_rule(density, n_cols, max_m=256):
    """(n, m) with n/m == density and m dividing n_cols, smallest m first; None if none."""
    for m in range(2, max_m + 1):
        n = density * m
        if n_cols % m == 0 and abs(n - round(n)) < 1e-9 and 1 <= round(n) < m:
            return int(round(n)), m
    return None


sizes = {name: [] for name in ("csr", "csr + CSC", "block16", "block16 + BSC", "nm", "masked")}
for d in DENSITIES:
    c = CSR.from_dense(W_big, density=d)
    sizes["csr"].append((c.nbytes, c.nnz))
    c.transposed_index()                          # what the first W.T @ G does
    sizes["csr + CSC"].append((c.nbytes, c.nnz))
    b = Block.from_dense(W_big, density=d, block_size=16)
    sizes["block16"].append((b.nbytes, b.nnz))
    b.transposed_index()
    sizes["block16 + BSC"].append((b.nbytes, b.nnz))
    rule = nm_rule(d, N_BYTES)
    if rule is None:
        sizes["nm"].append(None)
    else:
        w = NM.from_dense(W_big, n=rule[0], m=rule[1])
        sizes["nm"].append((w.nbytes, w.nnz))
    w = Masked.from_dense(W_big, density=d)
    sizes["masked"].append((w.nbytes, w.nnz))
    if d == 0.1:
        csr_at_01 = c                             # kept for the breakdown below
    del w

print(f"W: {N_BYTES} x {N_BYTES} float32, dense = {dense_bytes / MiB:.1f} MiB "
      f"({W_big.itemsize} B per entry). Cells: MiB (bytes per nonzero); nm '-' = no n:m rule")
print(f"{'density':>8} " + " ".join(f"{name:>17}" for name in sizes))
for i, d in enumerate(DENSITIES):
    cells = []
    for name in sizes:
        entry = sizes[name][i]
        if entry is None:
            cells.append("-")
        else:
            cells.append(f"{entry[0] / MiB:7.2f} ({entry[0] / entry[1]:5.2f})")
    print(f"{d:>8g} " + " ".join(f"{cell:>17}" for cell in cells))

# %% [markdown]
# Where the bytes of CSR go, array by array, at density 0.1 (after one transposed product):

# %%
colptr, rowind, perm = csr_at_01.transposed_index()
parts = {"values (float32)": csr_at_01.values, "indices (int32)": csr_at_01.indices,
         "indptr (int64)": csr_at_01.indptr, "CSC colptr (int64)": colptr,
         "CSC rowind (int32)": rowind, "CSC perm (int64)": perm}
for name, arr in parts.items():
    print(f"{name:20s} {arr.nbytes / MiB:8.2f} MiB  {arr.nbytes / csr_at_01.nnz:5.2f} B/nnz  "
          f"{arr.nbytes / csr_at_01.nbytes:6.1%}")
print(f"{'total':20s} {csr_at_01.nbytes / MiB:8.2f} MiB  "
      f"{csr_at_01.nbytes / csr_at_01.nnz:5.2f} B/nnz")

# Break-even: the density below which a format takes fewer bytes than the dense matrix.
for name in ("csr", "csr + CSC", "block16", "nm"):
    per_nnz = [e[0] / e[1] for e in sizes[name] if e is not None]
    print(f"{name:14s} beats dense below density ~{W_big.itemsize / np.mean(per_nnz):.2f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
colors = {"csr": "C0", "block16": "C1", "nm": "C2", "masked": "C3"}
for name, entries in sizes.items():
    xs = [d for d, e in zip(DENSITIES, entries) if e is not None]
    ys = [e[0] / MiB for e in entries if e is not None]
    cached = "+" in name                          # the same format with its transposed index
    ax.plot(xs, ys, marker="x" if cached else "o", linestyle=":" if cached else "-",
            color=colors[name.split()[0]], label=name)
ax.axhline(dense_bytes / MiB, color="black", linestyle="--", label="dense float32")
ax.set(xscale="log", yscale="log", xlabel="density (stored / total)", ylabel="MiB",
       title=f"bytes of a {N_BYTES}x{N_BYTES} float32 weight")
ax.legend(fontsize=8)
fig.tight_layout()
figures.show(fig, "bytes")

# %% [markdown]
# **Try it**
#
# - Work out CSR's bytes at density 0.01 by hand: 8 bytes per nonzero (value and index) plus
#   8 per row pointer; the `csr` column of the table should match your number.
# - Where CSR's bytes per nonzero pass the 4 of a dense entry, the sparse weight is the larger
#   one: read the break-even densities printed above, and note how much lower the CSC index
#   (which training needs) pushes CSR's.
#
# ## 3. Why the transposed product wants a permutation
#
# Backward through a layer needs `W.T @ G` (the gradient for the layer's input). CSR stores `W`
# by rows. Walking those rows for `W.T @ G` means: for every stored `(r, c, v)`,
# `out[c] += v * G[r]`. That is a **scatter**: many rows write into the same `out[c]`. Split the
# rows over threads and two threads can read `out[c]`, each add its part, and each write back;
# the second write erases the first. Here are two simulated threads doing exactly that:

# %%
k = 3
G = np.round(rng.standard_normal((8, k)), 1).astype(np.float32)
rows_of, cols_of = csr.coords()
thread_of_row = (np.arange(8) >= 4).astype(int)          # thread 0: rows 0-3, thread 1: rows 4-7
shared = [c for c in range(8) if len(set(thread_of_row[rows_of[cols_of == c]])) == 2]
print("output rows written by both threads:", shared)

c = shared[0]
out = np.zeros((8, k), dtype=np.float32)
partial = {}
for t in (0, 1):                   # each thread sums its own contributions to out[c]...
    mine = (cols_of == c) & (thread_of_row[rows_of] == t)
    partial[t] = out[c] + (csr.values[mine][:, None] * G[rows_of[mine]]).sum(axis=0)
for t in (0, 1):                   # ...having both read out[c] before either wrote it back
    out[c] = partial[t]
truth = (csr.to_dense().T @ G)[c]
print(f"out[{c}] after the race: {out[c]}   correct: {truth}   (thread 0's part is lost)")

# %% [markdown]
# The cure is to **gather** instead: let each output row `c` be computed by one thread that reads
# every stored weight of column `c`. That needs the weights grouped by column: the CSC index of
# the same pattern. `csr_to_csc` (here the plain-NumPy reference kernel) returns it:
#
# - `colptr`: column `c`'s entries are CSC positions `colptr[c]:colptr[c+1]`;
# - `rowind`: the row of each CSC entry;
# - `perm`: CSC position `j` holds `values[perm[j]]`.

# %%
colptr, rowind, perm = csr_to_csc(csr.indptr, csr.indices, csr.shape[1])
print("colptr:", colptr)
print("rowind:", rowind)
print("perm:  ", perm)

out = np.zeros((8, k), dtype=np.float32)
for c in range(8):                                  # one output row per (imagined) thread
    for j in range(colptr[c], colptr[c + 1]):
        out[c] += csr.values[perm[j]] * G[rowind[j]]
expected = csr.to_dense().T @ G
print("gather loop == W.T @ G:", np.allclose(out, expected, atol=1e-5))
print("csr.spmm_t(G) == W.T @ G:", np.allclose(csr.spmm_t(G), expected, atol=1e-5),
      " max difference:", np.abs(csr.spmm_t(G) - expected).max())
print("the Numba kernel's CSC index equals the reference's:",
      all(np.array_equal(a, b) for a, b in zip(csr.transposed_index(), (colptr, rowind, perm))))

# %% [markdown]
# `values[perm]` *is* the transpose's value array: `(colptr, rowind, values[perm])` is `W.T` in
# CSR form. But during training the values change at every optimizer step while the pattern
# stays fixed, so we never copy them into CSC order: the index `(colptr, rowind, perm)` is built
# once per topology and cached in the object, and the kernel reads `values[perm[j]]` in place.
# After an in-place update, the product is still right and the cached index is the very same
# object.

# %%
WT = CSR(colptr, rowind, csr.values[perm], shape=(8, 8))
print("CSR(colptr, rowind, values[perm]) == W.T:", np.array_equal(WT.to_dense(), csr.to_dense().T))

index_before = csr.transposed_index()
csr.values -= 0.1 * np.sign(csr.values)             # an "optimizer step", in place
print("after the step, spmm_t == W.T @ G:",
      np.allclose(csr.spmm_t(G), csr.to_dense().T @ G, atol=1e-5))
print("CSC index rebuilt?", csr.transposed_index() is not index_before)

# %% [markdown]
# ## 4. SDDMM: the weight gradient only where weights exist
#
# For `Y = W @ X` with `X` of shape `(in, batch)` and upstream gradient `G = dL/dY`, the dense
# weight gradient is `G @ X.T`, an `(out, in)` matrix. A sparse layer only trains its stored
# weights, so it needs that product at the stored positions only: a *sampled* dense-dense matrix
# product, `sddmm(G, X)[p] = G[row_p] . X[col_p]`, one dot product per nonzero.

# %%
X = np.round(rng.standard_normal((8, k)), 1).astype(np.float32)
rows_of, cols_of = csr.coords()
sampled = csr.sddmm(G, X)
print("sddmm(G, X):        ", sampled[:6], "... (", sampled.size, "entries = nnz )")
print("(G @ X.T)[rows, cols]:", (G @ X.T)[rows_of, cols_of][:6], "...")
print("equal:", np.allclose(sampled, (G @ X.T)[rows_of, cols_of], atol=1e-5))

# %% [markdown]
# `SparseLinear` puts the three products together: forward `W @ X` (SpMM), backward `W.T @ G`
# (SpMM through the CSC permutation) for the input and SDDMM for the weights. Its only trainable
# weight tensor is `layer.values`, one entry per stored weight, so its gradient has `nnz`
# entries; the dense `(out, in)` gradient is never built. Below, the gradient is checked against
# a dense computation of the same layer.

# %%
layer = SparseLinear(784, 300, sparsity=0.9, format="csr")
batch = 32 if FAST else 128
x = sn.Tensor(rng.standard_normal((batch, 784)).astype(np.float32))
y = layer(x)
loss = (y * y).mean()
loss.backward()
print(layer)
print("values:", layer.values.shape, " values.grad:", layer.values.grad.shape,
      " nnz:", layer.weight.nnz, " dense weight entries:", 784 * 300)

W_dense = layer.weight.to_dense()
y_dense = x.data @ W_dense.T + layer.bias.data
dW = (2 * y_dense / y_dense.size).T @ x.data            # dense dL/dW, (300, 784)
rows_of, cols_of = layer.weight.coords()
print("values.grad == dense dL/dW at the stored positions:",
      np.allclose(layer.values.grad, dW[rows_of, cols_of], rtol=1e-4, atol=1e-6))

# %% [markdown]
# The same layer in the other formats (Block needs a block size dividing 784 and 300; N:M has
# its own density). Masked trains a full dense value array, so its gradient is dense-sized.

# %%
for fmt, options in (("csr", dict(sparsity=0.9)), ("block", dict(sparsity=0.9, block_size=4)),
                     ("nm", dict(n=2, m=4)), ("masked", dict(sparsity=0.9))):
    other = SparseLinear(784, 300, format=fmt, **options)
    (other(x) ** 2).mean().backward()
    print(f"{fmt:7s} density {other.weight.density:.3f}  nnz {other.weight.nnz:7d}  "
          f"values.grad entries {other.values.grad.size:7d}  nbytes {other.weight.nbytes:8d}")

# %% [markdown]
# ## 5. Kernel timings from the benchmark records
#
# `benchmarks/kernels.py` times our Numba kernels against dense BLAS (NumPy `@`), scipy.sparse
# and torch.sparse at the same thread count, on a 4096 x 4096 weight with a batch of 128, and
# writes `benchmarks/results/kernels-<host>-<date>.json`. Below we read the newest record and
# plot speedup (baseline time / our time) against density. Nothing here is typed in by hand:
# if the record changes, the table and plot change with it.


# %%
def repository_root():
    """The directory holding `benchmarks/`: next to this script, or above the current
    directory (Jupyter has no __file__), or next to the installed sparsenet package."""
    starts = [Path.cwd()]
    if "__file__" in globals():
        starts.insert(0, Path(__file__).resolve().parent)
    starts.append(Path(sn.__file__).resolve().parent)
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "benchmarks" / "results").is_dir():
                return folder
    return None


def newest_kernel_record(root):
    """(path, record) of the kernels*.json with the latest machine.date, or (None, None)."""
    if root is None:
        return None, None
    found = []
    for path in (root / "benchmarks" / "results").glob("kernels*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue                              # unreadable or half-written: skip it
        if isinstance(record, dict) and isinstance(record.get("rows"), list):
            date = str((record.get("machine") or {}).get("date", ""))
            found.append((date, path.name, path, record))
    if not found:
        return None, None
    date, _, path, record = max(found, key=lambda item: item[:2])   # ISO dates sort as text
    return path, record


def fmt(value, spec, suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


root = repository_root()
record_path, record = newest_kernel_record(root)
if record is None:
    print("No kernel benchmark record found under benchmarks/results/.\n"
          "Produce one from the repository root with:  python benchmarks/kernels.py\n"
          "(or `python benchmarks/kernels.py --quick` for a shorter run), then rerun this cell.")
else:
    machine = record.get("machine") or {}
    print(f"record: {record_path.name}  date {machine.get('date', '?')}  host "
          f"{machine.get('host', '?')}  cores {machine.get('cpu_count', '?')}  numba threads "
          f"{machine.get('numba_threads', '?')}  W {record.get('W', '?')}  k {record.get('k', '?')}"
          f"  repeats {record.get('repeats', '?')}")
    rows = [r for r in record["rows"] if isinstance(r, dict)]
    header = (f"{'kernel':>18} {'format':>7} {'density':>8} {'ours ms':>9} {'GFLOP/s':>8} "
              f"{'vs dense':>9} {'vs scipy':>9} {'vs torch':>9}  note")
    print(header)
    for r in rows:
        ours_ms = None if r.get("ours_s") is None else r["ours_s"] * 1e3
        print(f"{str(r.get('kernel', '?')):>18} {str(r.get('format', '?')):>7} "
              f"{fmt(r.get('density'), 'g'):>8} {fmt(ours_ms, '.3f'):>9} "
              f"{fmt(r.get('gflops'), '.1f'):>8} {fmt(r.get('speedup_vs_dense'), '.2f', 'x'):>9} "
              f"{fmt(r.get('speedup_vs_scipy'), '.2f', 'x'):>9} "
              f"{fmt(r.get('speedup_vs_torch'), '.2f', 'x'):>9}  {r.get('note', '')}")

# %% [markdown]
# Left: our CSR SpMM against each baseline. Right: SpMM speedup over dense BLAS for every format
# in the record. Above the dashed line the sparse kernel is faster. Dense BLAS does the same
# work at any density, so the sparse kernel must make up in skipped multiplications what it
# loses to irregular memory access; blocks lose much less (each index brings a whole tile),
# which is why they cross over at a higher density.

# %%
if record is not None:
    def series(fmt_name, key):
        """(densities, values) of the main SpMM rows of one format, sorted by density."""
        points = sorted((r["density"], r[key]) for r in rows
                        if r.get("kernel") == "spmm" and r.get("format") == fmt_name
                        and r.get("density") is not None and r.get(key) is not None)
        return [p[0] for p in points], [p[1] for p in points]

    fig, (ax_csr, ax_fmt) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for key, label in (("speedup_vs_dense", "vs dense BLAS"), ("speedup_vs_scipy", "vs scipy"),
                       ("speedup_vs_torch", "vs torch")):
        xs, ys = series("csr", key)
        if xs:
            ax_csr.plot(xs, ys, marker="o", label=label)
    ax_csr.set(title="CSR SpMM speedup", xlabel="density", ylabel="speedup (baseline / ours)")
    formats = sorted({r.get("format") for r in rows if r.get("kernel") == "spmm"} - {None})
    for fmt_name in formats:
        xs, ys = series(fmt_name, "speedup_vs_dense")
        if xs:
            ax_fmt.plot(xs, ys, marker="o", label=fmt_name)
    ax_fmt.set(title="SpMM speedup over dense BLAS, by format", xlabel="density")
    for ax in (ax_csr, ax_fmt):
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
    fig.suptitle(f"{record_path.name}: W {record.get('W', '?')}, k = {record.get('k', '?')}")
    fig.tight_layout()
    figures.show(fig, "kernel_speedups")

    # The crossover, read from the record: the densest point where each format still wins.
    for fmt_name in formats:
        xs, ys = series(fmt_name, "speedup_vs_dense")
        wins = [d for d, s in zip(xs, ys) if s >= 1]
        verdict = f"up to density {max(wins)}" if wins else "at none of them"
        print(f"{fmt_name:7s} SpMM beats dense BLAS {verdict} (densities measured: {xs})")

# %% [markdown]
# ## 6. A small live timing
#
# The benchmark above ran with many repeats on cores nothing else was using. For a feel of it on
# *this* machine, here is one CSR SpMM against the dense product of the same (mostly zero)
# matrix. Both run on **one thread**: on shared cores, threaded kernels wait for each other at
# every barrier while other processes hold the cores, and the timings turn into noise. It is
# illustrative only: at this size call overhead weighs a lot; the measurement to trust is
# `python benchmarks/kernels.py`.

# %%
try:
    from threadpoolctl import threadpool_limits      # caps the BLAS threads behind `@`
except ImportError:                                  # without it BLAS keeps its own threads
    threadpool_limits = None

n_live, k_live, repeats = (512, 64, 20) if FAST else (2048, 128, 30)
X_live = rng.standard_normal((n_live, k_live)).astype(np.float32)
W_live = rng.standard_normal((n_live, n_live)).astype(np.float32)


def median_seconds(fn):
    fn()                                                  # warm-up (and Numba's first call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


numba_threads = numba.get_num_threads()
numba.set_num_threads(1)
blas_limit = threadpool_limits(1) if threadpool_limits is not None else None
try:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"W {n_live}x{n_live} float32, X {n_live}x{k_live}, median of {repeats} calls, "
          f"1 Numba thread, BLAS threads {'1' if blas_limit else 'default'}, "
          f"load average {load:.2f} on {os.cpu_count()} cores")
    for d in (0.5, 0.1, 0.01):
        sparse_w = CSR.from_dense(W_live, density=d)
        dense_w = sparse_w.to_dense()                     # the same weights, zeros stored
        out = np.empty((n_live, k_live), dtype=np.float32)
        t_sparse = median_seconds(lambda: sparse_w.spmm(X_live, out=out))
        t_dense = median_seconds(lambda: np.matmul(dense_w, X_live, out=out))
        print(f"density {d:5g}: CSR SpMM {t_sparse * 1e3:8.3f} ms   dense {t_dense * 1e3:8.3f} ms"
              f"   speedup {t_dense / t_sparse:6.2f}x")
finally:                                                  # give the threads back
    numba.set_num_threads(numba_threads)
    if blas_limit is not None:
        blas_limit.unregister()
if FAST:
    print("(fast mode: a small matrix and few repeats; these timings say little, and on a busy "
          "machine nothing at all)")

# %% [markdown]
# **Try it**
#
# - Add density 0.001 to the loop: the sparse product does a tenth of the work of 0.01; whether
#   it gets ten times faster shows how much of its time is per-call overhead, not arithmetic.
# - Time `sparse_w.spmm_t(X_live, out=...)` (the transposed product of section 3, with an
#   `out` of shape `(n_live, k_live)`) against `dense_w.T @ X_live`: the first call builds the
#   CSC index, so the warm-up in `median_seconds` matters here.

# %% [markdown]
# ## What's next
#
# The formats are the containers; the algorithms decide what goes in them. The next tutorials
# prune dense networks into these formats and grow and drop weights while training sparse
# from the start, with the same code for every format: the format enforces the structure.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
