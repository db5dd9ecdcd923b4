"""Compile every gpu kernel to PTX for a Hopper GPU (sm_90) on a machine without a GPU.

The CUDA simulator (what the test suite uses) runs kernels as Python: it cannot catch code
that Numba's CUDA compiler rejects (a type it cannot infer, an unsupported call). This script
makes every kernel launch of the gpu backend compile through the real compiler instead of
running, with the argument types of float32 and float64 calls, and reports each kernel.

It needs NVIDIA's NVVM, which the `dev` extra does not install (it is about 600 MB):

    python -m venv --system-site-packages /tmp/ptx && /tmp/ptx/bin/pip install \\
        numba-cuda "cuda-bindings>=12.9,<13" nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12
    /tmp/ptx/bin/python scripts/compile_gpu_kernels.py --site .venv/lib/python3.11/site-packages

(--site adds the project's environment after the NVVM one, for sparsenet and its
dependencies). Without a driver, Numba asks the device for its compute capability while
compiling device functions; the script answers (9, 0). Exit status 1 if any kernel fails.
"""
import argparse
import os
import site
import sys
import types


def patch_numba_for_compile_only(compiled, failed):
    from numba import cuda
    from numba.cuda import dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))

    def compile_instead_of_launch(self, args, launch_config):
        argtypes = tuple(self.typeof_pyval(a) for a in args)
        key = (self.py_func.__qualname__, self.py_func.__module__, argtypes)
        if key in compiled or key in failed:
            return
        try:
            ptx, _ = cuda.compile_ptx(self.py_func, argtypes, cc=(9, 0))
            compiled[key] = len(ptx)
        except Exception as err:                     # report every kernel, then fail
            failed[key] = f"{type(err).__name__}: {err}".splitlines()[0][:300]

    dispatcher.CUDADispatcher.call = compile_instead_of_launch


def launch_everything(np, gpu, dtype):
    """One call of every kernel (outputs are not computed: nothing runs)."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)       # noqa: E731
    indptr = np.array([0, 2, 2, 5], np.int64)
    indices = np.array([0, 3, 1, 2, 3], np.int32)
    values, X, G = f(5), f(4, 6), f(3, 6)
    gpu.csr_spmm(indptr, indices, values, X, np.empty((3, 6), dtype))
    gpu.csr_spmm(indptr, indices, values, f(4, 1), np.empty((3, 1), dtype))
    gpu.csr_spmm_with("thread_per_row", indptr, indices, values, X, np.empty((3, 6), dtype))
    gpu.csr_spmm_t(np.array([0, 1, 2, 3, 5], np.int64), np.array([0, 2, 2, 0, 2], np.int32),
                   np.arange(5, dtype=np.int64), values, G, np.empty((4, 6), dtype))
    gpu.csr_sddmm(indptr, indices, G, X, np.empty(5, dtype))
    gpu.csr_spmm(indptr, indices, values, X, np.empty((3, 6), dtype), bias=f(3), relu=True)
    gpu.csr_spmm_t_sddmm(np.array([0, 1, 2, 3, 5], np.int64), np.array([0, 2, 2, 0, 2], np.int32),
                         np.arange(5, dtype=np.int64), values, G, f(4, 6), np.empty((4, 6), dtype),
                         np.empty(5, dtype))
    gpu.csr_to_csc(indptr, indices, 4)
    gpu.csr_to_dense(indptr, indices, values, 4, np.empty((3, 4), dtype))
    blocks = f(5, 2, 2)
    gpu.bsr_spmm(indptr, indices, blocks, f(8, 6), np.empty((6, 6), dtype))
    gpu.bsr_spmm_t(np.array([0, 1, 2, 3, 5], np.int64), np.array([0, 2, 2, 0, 2], np.int32),
                   np.arange(5, dtype=np.int64), blocks, f(6, 6), np.empty((8, 6), dtype))
    gpu.bsr_sddmm(indptr, indices, f(6, 6), f(8, 6), np.empty((5, 2, 2), dtype))
    gpu.bsr_to_dense(indptr, indices, blocks, 4, np.empty((6, 8), dtype))
    idx = np.array([[[0, 2], [1, 3]], [[0, 1], [2, 3]]], np.uint8)
    nm_values = f(2, 2, 2)
    gpu.nm_spmm(nm_values, idx, 4, f(8, 6), np.empty((2, 6), dtype))
    gpu.nm_spmm_t(nm_values, idx, 4, f(2, 6), np.empty((8, 6), dtype))
    gpu.nm_sddmm(idx, 4, f(2, 6), f(8, 6), np.empty((2, 2, 2), dtype))
    gpu.nm_to_dense(nm_values, idx, 4, np.empty((2, 8), dtype))
    x = f(2, 3, 5, 5)
    gpu.im2col(x, 3, 3, 1, 1, np.empty((2, 27, 25), dtype))
    gpu.col2im(f(2, 27, 25), 3, 5, 5, 3, 3, 1, 1, np.empty((2, 3, 5, 5), dtype))
    gpu.dense_grad_topk(G, X, indptr, indices, 3, 2)
    gpu.sgd_update(f(7), f(7), f(7), 0.1, 0.9, 1e-4, False)
    gpu.sgd_update(f(7), f(7), f(0), 0.1, 0.0, 0.0, False)
    gpu.adam_update(f(7), f(7), f(7), np.abs(f(7)), 1e-3, 0.9, 0.999, 1e-8, 0.01, True, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", action="append", default=[],
                        help="a site-packages directory to add after this environment's")
    args = parser.parse_args()
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        sys.exit("unset NUMBA_ENABLE_CUDASIM: this script uses the real CUDA compiler")
    for path in args.site:
        site.addsitedir(path)
    compiled, failed = {}, {}
    patch_numba_for_compile_only(compiled, failed)
    import numpy as np

    from sparsenet.kernels import gpu
    for dtype in (np.float32, np.float64):
        launch_everything(np, gpu, dtype)
    for (name, module, argtypes), size in sorted(compiled.items(), key=str):
        print(f"ok    {module.rsplit('.', 1)[-1]}.{name}  ({len(argtypes)} args, {size:,} bytes of PTX)")
    for (name, module, _), error in sorted(failed.items(), key=str):
        print(f"FAIL  {module.rsplit('.', 1)[-1]}.{name}: {error}")
    print(f"{len(compiled)} kernel signatures compiled for sm_90, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
