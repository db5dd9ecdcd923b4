"""gpu backend: CUDA kernels written with Numba's CUDA target, same names and signatures as
``sparsenet.kernels.reference`` (the spec) and the cpu backend.

On an NVIDIA GPU the kernels are launched on CuPy arrays (Numba reads them through
``__cuda_array_interface__``, no copy), and CuPy does the rest: allocation, prefix sums,
sorting, and cuBLAS for the dense product inside the chunked dense-gradient top-k. Without a
GPU, Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before Numba is imported) runs
the very same kernels as Python threads on NumPy arrays: that is how the test suite checks
them on every machine. Importing this package imports ``numba.cuda`` (about a second), which
is why ``sparsenet.kernels`` imports it only when CuPy arrays arrive.

As on the cpu backend, index arrays are trusted (validate a pattern once with check_csr /
check_bsr / check_nm); on a device the O(1) checks also skip reading indptr's ends (a read
would wait for the GPU), and every kernel clamps the pointer ranges it reads instead.

Beyond these there are the fused steps of a training step (``sgd_update``, ``adam_update``,
``relu_backward``, ``csr_spmm``'s bias and ReLU, ``csr_spmm_t_sddmm``) and, for tutorial 12,
``csr_spmm_with`` to pick the thread mapping of the CSR product.
"""
from ..cpu import KERNELS, check_bsr, check_csr, check_nm
from .bsr import bsr_sddmm, bsr_spmm, bsr_spmm_t, bsr_to_bsc
from .conv import col2im, im2col
from .convert import (bsr_from_dense, bsr_to_dense, csr_from_dense, csr_to_dense,
                      nm_from_dense, nm_to_dense)
from .csr import (SPMM_STRATEGIES, csr_sddmm, csr_spmm, csr_spmm_t, csr_spmm_t_sddmm, csr_spmm_with,
                  csr_to_csc)
from .nm import nm_sddmm, nm_spmm, nm_spmm_t
from .optim import adam_update, relu_backward, sgd_update
from .topk import dense_grad_topk, topk_flat, topk_per_group, topk_per_row

OPTIMIZER_KERNELS = ("sgd_update", "adam_update")
# Kernels of the cpu backend on main newer than this package's tests' reference (fused layer
# steps): csr_spmm's bias= and relu=, csr_spmm_t_sddmm, relu_backward.
FUSED_KERNELS = ("csr_spmm_t_sddmm", "relu_backward")

__all__ = list(KERNELS) + list(OPTIMIZER_KERNELS) + [
    "check_csr", "check_bsr", "check_nm", "KERNELS", "OPTIMIZER_KERNELS", "csr_spmm_with",
    "SPMM_STRATEGIES"]
