"""The gpu backend on an NVIDIA GPU: its CSR kernels against cuBLAS and cuSPARSE, training
steps of the 4096-wide MLP, one RigL epoch.

    python benchmarks/gpu.py [--quick]

Kernels: SpMM (W @ X), SpMM_T (W.T @ G) and SDDMM (G @ X.T at W's pattern) for float32 CSR
weights of 4096^2 and 16384^2 with uniformly random patterns at densities 0.5 ... 0.001 and
batch (k) 128 and 1024. Baselines: cuBLAS (CuPy's matmul on the dense weight), cuSPARSE
(cupyx.scipy.sparse; for W.T a CSR of W.T built beforehand, as a cuSPARSE user would keep it);
SDDMM has no cuSPARSE column: its dense baseline is G @ X.T (cuBLAS) plus a gather at the pattern.
Kernel times: CUDA events around each call, the median of the repeats after a warm-up (Numba
compiles a kernel on its first call). Effective GFLOP/s counts the stored weights only,
2 * nnz * k / t; GB/s the fewest bytes a call must move (values and indices once, the dense
input once, the output once) over t. Both stand next to the device's peaks measured here:
cuBLAS SGEMM on 8192^3 and a device-to-device copy.
Training: seconds per step (forward, backward, SGD with momentum; the batch already on the
GPU), and one epoch (469 steps of batch 128 on 60,000 random images) dense and RigL at 99 %.
Writes benchmarks/results/gpu-<gpu model>.json and .md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table, write_record  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet import backend  # noqa: E402

DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
SIZES = (4096, 16384)
BATCHES = (128, 1024)
MLP = "mlp:784-4096-4096-10"


def gpu_time(cp, fn, repeats=10, warmup=2) -> float:
    """Median seconds of fn() on the GPU, between CUDA events."""
    for _ in range(warmup):
        fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return float(np.median(times))


def wall_time(cp, fn, repeats=10, warmup=3) -> float:
    """Median wall seconds of fn() until the GPU has finished it (Python overhead included)."""
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def device_facts(cp) -> dict:
    """The GPU, the library versions, and its peaks measured here."""
    import numba
    n = 8192
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    sgemm = gpu_time(cp, lambda: a @ a, repeats=5)
    big = cp.empty(2 ** 29, dtype=cp.float32)                     # 2 GiB
    copy = cp.empty_like(big)
    t_copy = gpu_time(cp, lambda: copy.__setitem__(Ellipsis, big), repeats=5)
    props = cp.cuda.runtime.getDeviceProperties(0)
    try:
        from importlib.metadata import version
        numba_cuda = version("numba-cuda")
    except Exception:                                             # not installed as a package
        numba_cuda = None
    return {"gpu": backend.gpu_name(), "multiprocessors": props.get("multiProcessorCount"),
            "memory_bytes": props.get("totalGlobalMem"), "cupy": cp.__version__,
            "numba": numba.__version__, "numba_cuda": numba_cuda,
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "driver": cp.cuda.runtime.driverGetVersion(),
            "peak_sgemm_gflops": 2 * n ** 3 / sgemm / 1e9,
            "peak_copy_gbs": 2 * big.nbytes / t_copy / 1e9}


def random_csr(cp, gpu, n, density, rng_seed):
    """A float32 CSR weight of n x n with each position stored with probability `density`."""
    rs = cp.random.RandomState(rng_seed)
    keep = rs.random_sample((n, n), dtype=cp.float32) < density
    dense = cp.where(keep, rs.standard_normal((n, n), dtype=cp.float32), cp.float32(0))
    del keep
    return gpu.csr_from_dense(dense), dense


def kernel_rows(cp, gpu, sizes, batches, densities, repeats):
    import cupyx.scipy.sparse as cusparse

    from sparsenet.kernels.gpu.csr import row_of_entry
    rows = []
    for n in sizes:
        dense_w = cp.random.standard_normal((n, n), dtype=cp.float32)
        for k in batches:
            X = cp.random.standard_normal((n, k), dtype=cp.float32)
            G = cp.random.standard_normal((n, k), dtype=cp.float32)
            out = cp.empty((n, k), cp.float32)
            t_dense = gpu_time(cp, lambda: cp.matmul(dense_w, X, out=out), repeats)
            t_dense_t = gpu_time(cp, lambda: cp.matmul(dense_w.T, G, out=out), repeats)
            for density in densities:
                (indptr, indices, values), W = random_csr(cp, gpu, n, density, 0)
                del W
                nnz = int(values.shape[0])
                colptr, rowind, perm = gpu.csr_to_csc(indptr, indices, n)
                out_nnz = cp.empty(nnz, cp.float32)
                S = cusparse.csr_matrix((values, indices, indptr), shape=(n, n))
                S_t = S.T.tocsr()
                entry_rows = row_of_entry(indptr, nnz)
                timings = {
                    "spmm": (gpu_time(cp, lambda: gpu.csr_spmm(indptr, indices, values, X, out), repeats),
                             gpu_time(cp, lambda: S @ X, repeats), t_dense),
                    "spmm_t": (gpu_time(cp, lambda: gpu.csr_spmm_t(colptr, rowind, perm, values, G, out),
                                        repeats),
                               gpu_time(cp, lambda: S_t @ G, repeats), t_dense_t),
                    "sddmm": (gpu_time(cp, lambda: gpu.csr_sddmm(indptr, indices, G, X, out_nnz), repeats),
                              None, gpu_time(cp, lambda: (G @ X.T)[entry_rows, indices], repeats)),
                }
                del entry_rows
                for kernel, (ours, t_cusparse, t_cublas) in timings.items():
                    # values + indices (+ the int64 permutation for W.T), one dense in, one out
                    moved = (16 if kernel == "spmm_t" else 8) * nnz + 8 * n * k
                    rows.append({"kernel": kernel, "n": n, "k": k, "density": density, "nnz": nnz,
                                 "ours_s": ours, "cusparse_s": t_cusparse, "cublas_dense_s": t_cublas,
                                 "vs_cusparse": t_cusparse / ours if t_cusparse else None,
                                 "vs_dense": t_cublas / ours if t_cublas else None,
                                 "gflops": 2 * nnz * k / ours / 1e9, "gbs": moved / ours / 1e9})
                    print(kernel_line(rows[-1]), flush=True)
                del S, S_t, indptr, indices, values, colptr, rowind, perm, out_nnz
                cp.get_default_memory_pool().free_all_blocks()
    return rows


def kernel_line(r) -> str:
    def ms(t):
        return "-" if t is None else f"{1e3 * t:.3f}"

    def x(v):
        return "-" if v is None else f"{v:.2f}x"
    return (f"| {r['kernel']} | {r['n']} | {r['k']} | {r['density']:g} | {ms(r['ours_s'])} | "
            f"{ms(r['cusparse_s'])} | {x(r['vs_cusparse'])} | {ms(r['cublas_dense_s'])} | "
            f"{x(r['vs_dense'])} | {r['gflops']:.0f} | {r['gbs']:.0f} |")


KERNEL_HEADER = ("| kernel | n | k | density | ours ms | cuSPARSE ms | vs cuSPARSE | cuBLAS dense ms "
                 "| vs dense | GFLOP/s | GB/s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def step_rows(cp, batches, repeats):
    """Seconds per training step of the 4096-wide MLP on the GPU: dense, CSR at 90 and 99 %."""
    import sparsenet.nn.functional as F
    rows = []
    for batch in batches:
        rng = np.random.default_rng(0)
        x = sn.Tensor(cp.asarray(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)))
        y = cp.asarray(rng.integers(0, 10, batch))
        times = {}
        for name, sparsity in (("dense", 0.0), ("csr", 0.9), ("csr", 0.99)):
            sn.manual_seed(0)
            model = sn.nn.build_model(MLP)
            if sparsity:
                sn.sparsify(model, sparsity=sparsity, format="csr")
            model.to("cuda")
            opt = sn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

            def step():
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times[(name, sparsity)] = wall_time(cp, step, repeats)
        for (name, sparsity), t in times.items():
            rows.append({"model": MLP, "format": name, "sparsity": sparsity, "batch": batch,
                         "step_s": t, "dense_step_s": times[("dense", 0.0)],
                         "speedup_vs_dense": times[("dense", 0.0)] / t})
    return rows


def epoch_rows(n_train=60000, sparsity=0.99):
    """One epoch on the GPU, dense against RigL at 99 % (CSR), its topology updates included."""
    from sparsenet.train import TrainConfig, train_model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n_train)
    data = (x, y, x[:1000], y[:1000], "random images")
    rows = []
    for method in ("dense", "rigl"):
        config = TrainConfig(model=MLP, method=method, sparsity=0.0 if method == "dense" else sparsity,
                             epochs=1, progress=False, device="cuda",
                             method_options={} if method == "dense" else {"format": "csr"})
        _, record = train_model(config, log=None, data=data)
        rows.append({"model": MLP, "method": method, "sparsity": config.sparsity,
                     "epoch_s": record["history"][0]["seconds"], "steps": -(-n_train // 128),
                     "topology_updates": len(record["method_details"].get("updates", []) or [])})
    for r in rows:
        r["speedup_vs_dense"] = rows[0]["epoch_s"] / r["epoch_s"]
    return rows


def verdicts(kernels, steps) -> list:
    """The issue's two speed goals, read off this run."""
    spmm = [r for r in kernels if r["kernel"] == "spmm" and r["density"] <= 0.1]
    losing = [r for r in spmm if r["vs_cusparse"] is not None and r["vs_cusparse"] < 1]
    out = [f"CSR SpMM at least as fast as cuSPARSE at every density <= 10 %: "
           f"{'yes' if not losing else 'no'} ({len(spmm) - len(losing)} of {len(spmm)} cells"
           + (", slower at " + ", ".join(f"n={r['n']} k={r['k']} d={r['density']:g} "
                                         f"({r['vs_cusparse']:.2f}x)" for r in losing) if losing else "")
           + ")"]
    for r in steps:
        if r["format"] == "csr" and r["sparsity"] == 0.99:
            out.append(f"99 % CSR training step of {MLP} at batch {r['batch']}: "
                       f"{r['speedup_vs_dense']:.1f}x the dense cuBLAS step (goal >= 10x)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096 only, fewer densities")
    args = parser.parse_args(argv)
    cp = backend.cupy_module()
    if cp is None:
        sys.exit("benchmarks/gpu.py needs an NVIDIA GPU and CuPy (pip install 'sparsenet[gpu]')")
    from sparsenet.kernels import gpu
    facts = device_facts(cp)
    print(f"{facts['gpu']}: SGEMM {facts['peak_sgemm_gflops']:.0f} GFLOP/s, "
          f"copy {facts['peak_copy_gbs']:.0f} GB/s (measured)", flush=True)
    sizes, densities = ((4096,), (0.1, 0.01, 0.001)) if args.quick else (SIZES, DENSITIES)
    repeats = 5 if args.quick else 10
    print(KERNEL_HEADER)
    krows = kernel_rows(cp, gpu, sizes, BATCHES, densities, repeats)
    srows = step_rows(cp, BATCHES, repeats=10 if args.quick else 20)
    stable = markdown_table(
        ["model", "format", "sparsity", "batch", "ms/step", "dense ms/step", "speedup"],
        [[r["model"], r["format"], r["sparsity"], r["batch"], f"{1e3 * r['step_s']:.2f}",
          f"{1e3 * r['dense_step_s']:.2f}", f"{r['speedup_vs_dense']:.1f}x"] for r in srows])
    print(stable, flush=True)
    erows = epoch_rows()
    etable = markdown_table(
        ["model", "method", "sparsity", "steps", "topology updates", "epoch seconds", "speedup"],
        [[r["model"], r["method"], r["sparsity"], r["steps"], r["topology_updates"],
          f"{r['epoch_s']:.2f}", f"{r['speedup_vs_dense']:.1f}x"] for r in erows])
    summary = verdicts(krows, srows)
    peaks = (f"Peaks measured in this run: cuBLAS SGEMM {facts['peak_sgemm_gflops']:.0f} GFLOP/s, "
             f"device-to-device copy {facts['peak_copy_gbs']:.0f} GB/s.")
    text = "\n\n".join([peaks, KERNEL_HEADER + "\n" + "\n".join(kernel_line(r) for r in krows),
                        stable, etable, "\n".join(f"- {line}" for line in summary)])
    print(etable + "\n\n" + "\n".join(summary))
    slug = "".join(c if c.isalnum() else "-" for c in (facts["gpu"] or "gpu").lower()).strip("-")
    name = f"gpu-{slug}" + ("-quick" if args.quick else "")
    print("written", write_record(name, krows + srows + erows, text,
                                  {"device": facts, "quick": args.quick, "verdicts": summary}))


if __name__ == "__main__":
    main()
