"""Sparse weight types and the topology operations that algorithms use.

- `CSR`, `Block`, `NM`, `Masked`: one interface (`SparseMatrix`): construction and
  conversion, products for the layers (`spmm`, `spmm_t`, `sddmm`), and the topology interface
  (`unit_coords`, `unit_scores`, `unit_groups`, `update`).
- `topology`: random initial patterns and growth (`dense_grad_topk`, `random_empty_units`).
- `convert`: `sparsify(model, ...)` swaps dense layers for sparse twins; `apply_sparse_layout`
  does it from saved configs (used by `sparsenet.load`).
"""
from .base import SparseMatrix
from .block import Block
from .convert import FORMATS, apply_sparse_layout, sparsify
from .csr import CSR
from .masked import Masked
from .nm import NM
from .topology import dense_grad_topk, random_empty_units, random_pattern, topk_empty_units

__all__ = ["SparseMatrix", "CSR", "Block", "NM", "Masked", "FORMATS", "sparsify",
           "apply_sparse_layout", "dense_grad_topk", "random_empty_units", "random_pattern",
           "topk_empty_units"]
