"""Benchmark of the cpu sparse kernels against dense NumPy, scipy.sparse and
(when importable) torch.sparse, all at the same thread count.

    python benchmarks/kernels.py            # full run (a few minutes)
    python benchmarks/kernels.py --quick    # fewer densities and repeats, into results/quick/

Times are medians of repeated calls after a warm-up (time.perf_counter);
speedups are computed within this run. GFLOP/s counts only the nonzeros:
2 * nnz * k / t. Writes benchmarks/results/kernels-<host>-<date>.json and
benchmarks/results/kernels.md.
"""

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import scipy
import scipy.sparse as sp

from sparsenet.kernels import cpu

try:
    import torch
except ImportError:  # torch is optional: its columns are left empty
    torch = None
try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

RESULTS = Path(__file__).parent / "results"
N = 4096  # W is N x N
K = 128  # batch size


def median_time(fn, repeats):
    fn()  # warm-up (and Numba compilation on the first call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_csr(rng, n_rows, n_cols, density):
    mask = rng.random((n_rows, n_cols), dtype=np.float32) < density
    dense = np.where(mask, rng.standard_normal((n_rows, n_cols), dtype=np.float32), np.float32(0))
    return dense, cpu.csr_from_dense(dense)


def torch_csr(indptr, indices, values, shape):
    return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices.astype(np.int64)),
                                   torch.from_numpy(values), size=shape)


def try_time(fn, repeats):
    """Median time of fn, or None when the baseline is not supported."""
    try:
        return median_time(fn, repeats)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None


class Table:
    def __init__(self):
        self.rows = []

    def add(self, kernel, fmt, density, nnz, k, ours, dense=None, scipy_t=None, torch_t=None, note=""):
        row = dict(kernel=kernel, format=fmt, density=density, nnz=int(nnz), k=k, ours_s=ours,
                   dense_s=dense, scipy_s=scipy_t, torch_s=torch_t, note=note,
                   gflops=2 * nnz * k / ours / 1e9)
        for name in ("dense", "scipy", "torch"):
            base = row[f"{name}_s"]
            row[f"speedup_vs_{name}"] = None if base is None else base / ours
        self.rows.append(row)
        print(self.format_row(row), flush=True)

    @staticmethod
    def format_row(r):
        def ms(t):
            return "-" if t is None else f"{t * 1e3:.3f}"

        def x(s):
            return "-" if s is None else f"{s:.2f}x"

        return (f"| {r['kernel']} | {r['format']} | {r['density']:g} | {r['k']} | {ms(r['ours_s'])} "
                f"| {r['gflops']:.1f} | {ms(r['dense_s'])} | {x(r['speedup_vs_dense'])} "
                f"| {ms(r['scipy_s'])} | {x(r['speedup_vs_scipy'])} | {ms(r['torch_s'])} "
                f"| {x(r['speedup_vs_torch'])} | {r['note']} |")

    HEADER = ("| kernel | format | density | k | ours ms | GFLOP/s | dense ms | vs dense | scipy ms "
              "| vs scipy | torch ms | vs torch | note |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def bench_csr(table, rng, densities, repeats):
    X = rng.standard_normal((N, K), dtype=np.float32)
    G = rng.standard_normal((N, K), dtype=np.float32)
    Wd = rng.standard_normal((N, N), dtype=np.float32)
    dense_fwd = median_time(lambda: Wd @ X, repeats)
    dense_t = median_time(lambda: Wd.T @ G, repeats)
    for d in densities:
        W, (indptr, indices, values) = random_csr(rng, N, N, d)
        nnz = values.shape[0]
        colptr, rowind, perm = cpu.csr_to_csc(indptr, indices, N)
        rows = np.repeat(np.arange(N), np.diff(indptr))
        S = sp.csr_array((values, indices, indptr), shape=(N, N))
        out = np.empty((N, K), np.float32)
        out_nnz = np.empty(nnz, np.float32)
        ours = median_time(lambda: cpu.csr_spmm(indptr, indices, values, X, out), repeats)
        t_fwd = t_t = t_sd = None
        if torch is not None:
            St = torch_csr(indptr, indices, values, (N, N))
            Xt, Gt = torch.from_numpy(X), torch.from_numpy(G)
            t_fwd = try_time(lambda: St @ Xt, repeats)
            STt = torch_csr(*cpu.csr_from_dense(np.ascontiguousarray(W.T)), (N, N))
            t_t = try_time(lambda: STt @ Gt, repeats)
            t_sd = try_time(lambda: torch.sparse.sampled_addmm(St, Gt, Xt.T, beta=0.0), repeats)
        table.add("spmm", "csr", d, nnz, K, ours, dense_fwd, median_time(lambda: S @ X, repeats), t_fwd)
        ours_t = median_time(lambda: cpu.csr_spmm_t(colptr, rowind, perm, values, G, out), repeats)
        table.add("spmm_t", "csr", d, nnz, K, ours_t, dense_t, median_time(lambda: S.T @ G, repeats), t_t,
                  note=f"{ours_t / ours:.2f}x fwd; torch uses a pre-transposed CSR")
        ours_sd = median_time(lambda: cpu.csr_sddmm(indptr, indices, G, X, out_nnz), repeats)
        dense_sd = median_time(lambda: (G @ X.T)[rows, indices], repeats)
        table.add("sddmm", "csr", d, nnz, K, ours_sd, dense_sd, None, t_sd,
                  note=f"{ours_sd / ours:.2f}x fwd; dense = G@X.T + gather; scipy has none")


def bench_bsr(table, rng, densities, repeats):
    X = rng.standard_normal((N, K), dtype=np.float32)
    G = rng.standard_normal((N, K), dtype=np.float32)
    Wd = rng.standard_normal((N, N), dtype=np.float32)
    dense_fwd = median_time(lambda: Wd @ X, repeats)
    for bs in (16, 32):
        nb = N // bs
        for d in densities:
            mask = rng.random((nb, nb)) < d
            indptr, indices, blocks = cpu.bsr_from_dense(Wd, bs, mask)
            nnz = blocks.size
            out = np.empty((N, K), np.float32)
            ours = median_time(lambda: cpu.bsr_spmm(indptr, indices, blocks, X, out), repeats)
            S = sp.bsr_array((blocks, indices, indptr), shape=(N, N))
            t_torch = None
            if torch is not None:
                Sb = torch.sparse_bsr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices.astype(np.int64)),
                                             torch.from_numpy(blocks), size=(N, N))
                t_torch = try_time(lambda: Sb @ torch.from_numpy(X), repeats)
            table.add("spmm", f"bsr{bs}", d, nnz, K, ours, dense_fwd, median_time(lambda: S @ X, repeats), t_torch)
            colptr, rowind, perm = cpu.bsr_to_bsc(indptr, indices, nb)
            ours_t = median_time(lambda: cpu.bsr_spmm_t(colptr, rowind, perm, blocks, G, out), repeats)
            table.add("spmm_t", f"bsr{bs}", d, nnz, K, ours_t, note=f"{ours_t / ours:.2f}x fwd")
            out_b = np.empty_like(blocks)
            ours_sd = median_time(lambda: cpu.bsr_sddmm(indptr, indices, G, X, out_b), repeats)
            table.add("sddmm", f"bsr{bs}", d, nnz, K, ours_sd, note=f"{ours_sd / ours:.2f}x fwd")


def bench_nm(table, rng, repeats):
    X = rng.standard_normal((N, K), dtype=np.float32)
    G = rng.standard_normal((N, K), dtype=np.float32)
    Wd = rng.standard_normal((N, N), dtype=np.float32)
    dense_fwd = median_time(lambda: Wd @ X, repeats)
    for n_keep, M in ((2, 4), (1, 4)):
        values, idx = cpu.nm_from_dense(Wd, n_keep, M)
        W = cpu.nm_to_dense(values, idx, M, np.empty((N, N), np.float32))
        S = sp.csr_array(W)
        nnz = values.size
        out = np.empty((N, K), np.float32)
        ours = median_time(lambda: cpu.nm_spmm(values, idx, M, X, out), repeats)
        table.add("spmm", f"nm{n_keep}:{M}", n_keep / M, nnz, K, ours, dense_fwd,
                  median_time(lambda: S @ X, repeats), note="scipy = same pattern as CSR")
        ours_t = median_time(lambda: cpu.nm_spmm_t(values, idx, M, G, out), repeats)
        table.add("spmm_t", f"nm{n_keep}:{M}", n_keep / M, nnz, K, ours_t,
                  note=f"{ours_t / ours:.2f}x fwd")
        out_v = np.empty_like(values)
        ours_sd = median_time(lambda: cpu.nm_sddmm(idx, M, G, X, out_v), repeats)
        table.add("sddmm", f"nm{n_keep}:{M}", n_keep / M, nnz, K, ours_sd, note=f"{ours_sd / ours:.2f}x fwd")


def bench_batch1(table, rng, repeats):
    n_out, n_in = 3072, 768
    W, (indptr, indices, values) = random_csr(rng, n_out, n_in, 0.1)
    Wd = rng.standard_normal((n_out, n_in), dtype=np.float32)
    x = rng.standard_normal((n_in, 1), dtype=np.float32)
    out = np.empty((n_out, 1), np.float32)
    reps = repeats * 20  # microsecond calls: more repeats for a stable median
    ours = median_time(lambda: cpu.csr_spmm(indptr, indices, values, x, out), reps)
    S = sp.csr_array((values, indices, indptr), shape=(n_out, n_in))
    t_torch = None
    if torch is not None:
        St = torch_csr(indptr, indices, values, (n_out, n_in))
        t_torch = try_time(lambda: St @ torch.from_numpy(x), reps)
    table.add("spmm k=1 3072x768", "csr", 0.1, values.shape[0], 1, ours, median_time(lambda: Wd @ x, reps),
              median_time(lambda: S @ x, reps), t_torch)


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(threads):
    blas = "unknown (threadpoolctl not installed)"
    if threadpoolctl is not None:
        blas = [{k: info.get(k) for k in ("internal_api", "version", "num_threads")}
                for info in threadpoolctl.threadpool_info()]
    return dict(
        host=socket.gethostname(), date=datetime.datetime.now().isoformat(timespec="seconds"),
        cpu=cpu_model(), cpu_count=os.cpu_count(),
        load_average_at_start=os.getloadavg(), numba_threads=threads,
        numba_threading_layer=numba.config.THREADING_LAYER, blas=blas,
        numpy=np.__version__, scipy=scipy.__version__, numba=numba.__version__,
        torch=None if torch is None else torch.__version__,
        torch_threads=None if torch is None else torch.get_num_threads(),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer densities and repeats; records go to results/quick/")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (median)")
    opts = parser.parse_args()
    repeats = opts.repeats or (5 if opts.quick else 9)
    threads = numba.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    limiter = threadpoolctl.threadpool_limits(threads) if threadpoolctl is not None else None
    facts = machine_facts(threads)
    print(json.dumps(facts, indent=1))
    rng = np.random.default_rng(0)
    table = Table()
    print(Table.HEADER)
    csr_d = (0.1, 0.01) if opts.quick else (0.5, 0.2, 0.1, 0.05, 0.01, 0.001)
    bsr_d = (0.1,) if opts.quick else (0.5, 0.2, 0.1, 0.05, 0.01)
    bench_csr(table, rng, csr_d, repeats)
    bench_bsr(table, rng, bsr_d, repeats)
    bench_nm(table, rng, repeats)
    bench_batch1(table, rng, repeats)
    if limiter is not None:
        limiter.restore_original_limits()
    # Other processes on a shared machine distort timings: keep the evidence.
    facts["load_average_at_end"] = os.getloadavg()

    results = RESULTS / "quick" if opts.quick else RESULTS   # never over the committed ones
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    record = dict(machine=facts, repeats=repeats, quick=opts.quick, W=[N, N], k=K, rows=table.rows)
    json_path = results / f"kernels-{socket.gethostname()}-{stamp}.json"
    json_path.write_text(json.dumps(record, indent=1))
    md = [f"# Kernel benchmark ({facts['date']}, {facts['host']})", "",
          f"W {N}x{N} float32, X {N}x{K} unless noted; median of {repeats} calls; "
          f"{threads} threads for numba, BLAS and torch; CPU {facts['cpu']} ({facts['cpu_count']} cores).",
          f"Load average at start {facts['load_average_at_start']}, at end {facts['load_average_at_end']}"
          " (other processes on the machine inflate times).",
          "", Table.HEADER] + [Table.format_row(r) for r in table.rows]
    (results / "kernels.md").write_text("\n".join(md) + "\n")
    print(f"wrote {json_path} and {results / 'kernels.md'}")


if __name__ == "__main__":
    main()
