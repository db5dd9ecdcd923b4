"""The cpu kernels without their O(nnz) index checks, for callers that own valid indices.

Every public kernel in this package checks each index of its pattern before the product, so no
input can make it read or write outside its arrays. That pass costs a little next to a product
with a batch of 128, but as much as the product itself for one sample. The sparse types
(sparsenet.sparse) validate their index arrays once, when they are built, and keep them
read-only afterwards; they call these functions, which check only the arguments' shapes and
dtypes. A caller that passes an index out of range here gets undefined behaviour, possibly a
crash: nothing else should call them.
"""

from .bsr import sddmm_trusted as bsr_sddmm
from .bsr import spmm_t_trusted as bsr_spmm_t
from .bsr import spmm_trusted as bsr_spmm
from .csr import sddmm_trusted as csr_sddmm
from .csr import spmm_t_sddmm_trusted as csr_spmm_t_sddmm
from .csr import spmm_t_trusted as csr_spmm_t
from .csr import spmm_trusted as csr_spmm
from .nm import sddmm_trusted as nm_sddmm
from .nm import spmm_t_trusted as nm_spmm_t
from .nm import spmm_trusted as nm_spmm

__all__ = ["csr_spmm", "csr_spmm_t", "csr_sddmm", "csr_spmm_t_sddmm", "bsr_spmm", "bsr_spmm_t", "bsr_sddmm",
           "nm_spmm", "nm_spmm_t", "nm_sddmm"]
