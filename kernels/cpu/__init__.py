"""cpu backend: Numba kernels with the same names and signatures as
``sparsenet.kernels.reference`` (the spec).

Every kernel here checks the indices it is given (O(nnz) per call), so no
input can make it read outside its arrays. ``trusted`` holds the products
without that pass, for the sparse types, which validate their read-only index
arrays once when they are built.
"""

from .bsr import bsr_sddmm, bsr_spmm, bsr_spmm_t, bsr_to_bsc
from .checks import check_bsr, check_csr, check_nm
from .codebook import codebook_spmm, huffman_decode
from .conv import col2im, im2col
from .convert import (bsr_from_dense, bsr_to_dense, csr_from_dense, csr_to_dense,
                      nm_from_dense, nm_to_dense)
from .csr import csr_sddmm, csr_spmm, csr_spmm_t, csr_spmm_t_sddmm, csr_to_csc
from .elementwise import adam_update, relu_backward, sgd_update
from .moe import moe_combine, moe_combine_weight_grad, moe_dispatch, moe_plan
from .nm import nm_sddmm, nm_spmm, nm_spmm_t
from .topk import dense_grad_topk, topk_flat, topk_per_group, topk_per_row
from . import trusted  # noqa: E402  (after the kernels it re-exports)

KERNELS = (
    "csr_spmm", "csr_to_csc", "csr_spmm_t", "csr_sddmm", "csr_spmm_t_sddmm",
    "bsr_spmm", "bsr_to_bsc", "bsr_spmm_t", "bsr_sddmm",
    "nm_spmm", "nm_spmm_t", "nm_sddmm",
    "csr_from_dense", "csr_to_dense", "bsr_from_dense", "bsr_to_dense",
    "nm_from_dense", "nm_to_dense",
    "topk_per_row", "topk_per_group", "topk_flat", "dense_grad_topk",
    "im2col", "col2im",
    "relu_backward", "sgd_update", "adam_update",
    "codebook_spmm", "huffman_decode",
    "moe_plan", "moe_dispatch", "moe_combine", "moe_combine_weight_grad",
)

# kernels with no CUDA twin yet: the compressed form (Deep Compression) is decoded and run on
# the host, a GPU model keeps float CSR weights; language models (the MoE routing kernels) are
# refused on a GPU device
HOST_ONLY_KERNELS = ("codebook_spmm", "huffman_decode",
                     "moe_plan", "moe_dispatch", "moe_combine", "moe_combine_weight_grad")

__all__ = list(KERNELS) + ["check_csr", "check_bsr", "check_nm", "KERNELS", "HOST_ONLY_KERNELS",
                           "trusted"]
