"""cpu backend: Numba kernels with the same names and signatures as
``sparsenet.kernels.reference`` (the spec).

Index arrays are trusted by these kernels (checking every index on every call
would cost as much as a product); validate a pattern once, when it is built,
with ``check_csr`` / ``check_bsr`` / ``check_nm``.
"""

from .bsr import bsr_sddmm, bsr_spmm, bsr_spmm_t, bsr_to_bsc
from .checks import check_bsr, check_csr, check_nm
from .conv import col2im, im2col
from .convert import (bsr_from_dense, bsr_to_dense, csr_from_dense, csr_to_dense,
                      nm_from_dense, nm_to_dense)
from .csr import csr_sddmm, csr_spmm, csr_spmm_t, csr_to_csc
from .moe import moe_combine, moe_combine_weight_grad, moe_dispatch, moe_plan
from .nm import nm_sddmm, nm_spmm, nm_spmm_t
from .topk import dense_grad_topk, topk_flat, topk_per_group, topk_per_row

KERNELS = (
    "csr_spmm", "csr_to_csc", "csr_spmm_t", "csr_sddmm",
    "bsr_spmm", "bsr_to_bsc", "bsr_spmm_t", "bsr_sddmm",
    "nm_spmm", "nm_spmm_t", "nm_sddmm",
    "csr_from_dense", "csr_to_dense", "bsr_from_dense", "bsr_to_dense",
    "nm_from_dense", "nm_to_dense",
    "topk_per_row", "topk_per_group", "topk_flat", "dense_grad_topk",
    "im2col", "col2im",
    "moe_plan", "moe_dispatch", "moe_combine", "moe_combine_weight_grad",
)

__all__ = list(KERNELS) + ["check_csr", "check_bsr", "check_nm", "KERNELS"]
