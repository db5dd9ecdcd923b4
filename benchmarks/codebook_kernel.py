"""Inference from the compressed form: CSR of one-byte codes + codebook against float32 CSR and
dense, at batch 1 and 128, with the bytes each form holds in memory.

    python benchmarks/codebook_kernel.py [--file model.sndc] [--threads 1]

Layers: the largest layer of a compressed file (the Huffman streams decoded once, at load, to
one-byte codes; default the lenet300 record of benchmarks/compression.py when it exists) and a
synthetic 4096 x 4096 layer at 8 % density with 32 shared values (a 5-bit fc codebook). The
products: `codebook_spmm` (sparsenet.kernels), the float32 CSR product `csr_spmm` on the same
weights expanded, and dense float32 BLAS (NumPy @). Times are medians over repeats in one run;
the speed ratios are measured within it. Writes benchmarks/results/codebook_kernel.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table, median_time, threads, write_record  # noqa: E402

from sparsenet.compressed_io import read_compressed  # noqa: E402
from sparsenet.sparse import CSR  # noqa: E402
from sparsenet.sparse.codebook import CodebookCSR  # noqa: E402



def default_file():
    """The seed-0 lenet300 file of benchmarks/compression.py, if it was run."""
    import compression
    name = compression.name_of(compression.SETTINGS["lenet300"], 0) + ".sndc"
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "compression",
                        "lenet300", name)


def synthetic(rng, n=4096, density=0.08, shared=32) -> tuple:
    mask = rng.random((n, n), dtype=np.float32) < density
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(mask)[1].astype(np.int32)
    codebook = np.sort(rng.standard_normal(shared).astype(np.float32) * 0.05)
    codes = rng.integers(0, shared, indices.size).astype(np.uint8)
    return f"synthetic {n}x{n}, 8 %, {shared} shared", CodebookCSR(indptr, indices, codes,
                                                                   codebook, (n, n))


def from_file(path) -> tuple:
    layers = read_compressed(path).layers
    layer = max(layers, key=lambda l: l.codes.size)
    weight = CodebookCSR(layer.indptr, layer.indices, layer.codes, layer.codebook, layer.shape)
    return (f"{os.path.basename(path)} layer {layer.name} {layer.shape[0]}x{layer.shape[1]}, "
            f"{100 * weight.density:.1f} %, {layer.codebook.size} shared"), weight


def measure(name, weight: CodebookCSR, batches, repeats, rng) -> list:
    csr = weight.to_csr()
    dense = csr.to_dense()
    rows = []
    for k in batches:
        X = rng.standard_normal((weight.shape[1], k)).astype(np.float32)
        want = dense @ X
        np.testing.assert_allclose(weight.spmm(X), want, rtol=1e-4, atol=1e-4)
        t_code = median_time(lambda: weight.spmm(X), repeats)
        t_csr = median_time(lambda: csr.spmm(X), repeats)
        t_dense = median_time(lambda: dense @ X, repeats)
        rows.append({"layer": name, "batch": k, "nnz": weight.nnz,
                     "codebook_s": t_code, "csr_s": t_csr, "dense_s": t_dense,
                     "codebook_vs_csr": t_csr / t_code, "codebook_vs_dense": t_dense / t_code,
                     "codebook_bytes": weight.nbytes, "csr_bytes": csr.nbytes,
                     "dense_bytes": dense.nbytes,
                     "codebook_gflops": 2 * weight.nnz * k / t_code / 1e9})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", default=default_file(), help="a compressed model file")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None,
                   help="Numba and BLAS threads (default: the engine's default)")
    args = p.parse_args(argv)
    if args.threads:
        import numba
        from threadpoolctl import threadpool_limits
        numba.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    rng = np.random.default_rng(0)
    layers = [synthetic(rng)]
    if os.path.exists(args.file):
        layers.insert(0, from_file(args.file))
    rows = []
    for name, weight in layers:
        rows += measure(name, weight, (1, 128), args.repeats, rng)
    table = markdown_table(
        ["layer", "batch", "codebook (ms)", "float32 CSR (ms)", "dense (ms)", "CSR / codebook",
         "dense / codebook", "bytes: codebook", "CSR", "dense"],
        [[r["layer"], r["batch"], f"{1e3 * r['codebook_s']:.3f}", f"{1e3 * r['csr_s']:.3f}",
          f"{1e3 * r['dense_s']:.3f}", f"{r['codebook_vs_csr']:.2f}x",
          f"{r['codebook_vs_dense']:.2f}x", f"{r['codebook_bytes']:,}", f"{r['csr_bytes']:,}",
          f"{r['dense_bytes']:,}"] for r in rows])
    table += (f"\n\nMedians of {args.repeats} calls after a warm-up, {threads()} Numba thread(s) "
              f"and {'as many' if args.threads else 'the default'} BLAS threads; 'CSR / codebook' > 1 means the codebook product is "
              "faster. Bytes: what each form holds for the weight (row pointers, column "
              "indices and values; or codes and codebook instead of values).")
    print(table)
    write_record("codebook_kernel", rows, table)


if __name__ == "__main__":
    main()
