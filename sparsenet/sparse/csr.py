"""CSR: compressed sparse rows, the general element-level format.

Row r's weights sit at values[indptr[r]:indptr[r+1]], in the columns indices[same range]
(sorted, unique). `spmm_t` needs columns grouped instead of rows; the CSC permutation that does
that is built on first use and cached: the topology of an object never changes.

With `constant_fan_in=True` every non-empty row holds the same number of weights (every output
unit sees as many inputs; an empty row is an ablated unit), and `update` keeps it so: the
constraint group of a weight is its row.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .base import (RowGroups, SparseMatrix, check_dense, check_index_array, check_mask,
                   check_operand, check_shape, check_values, frozen, kernels_for, output, owned,
                   top_k_mask, top_k_per_row_mask, trusted_kernels, units_for_density)
from .topology import check_grow_values, check_update_args, gather_values, merge_pattern


def check_compressed(indptr, indices, n_rows, n_cols):
    """Validate a compressed-row index (CSR, or Block over its block grid), vectorized.

    Returns (indptr as int64, indices as int32, row lengths): the kernels' index dtypes.
    """
    indptr = check_index_array(indptr, "indptr")
    indices = check_index_array(indices, "indices")
    if indptr.shape != (n_rows + 1,):
        raise ValueError(f"indptr must have n_rows + 1 = {n_rows + 1} entries, got {indptr.shape}")
    nnz = indices.size
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(f"indptr must start at 0 and end at len(indices) = {nnz}, "
                         f"got {indptr[0]} and {indptr[-1]}")
    row_len = np.diff(indptr)
    if (row_len < 0).any():
        raise ValueError("indptr must be non-decreasing")
    if n_cols >= 2 ** 31:
        raise ValueError(f"shape: {n_cols} columns do not fit int32 column indices")
    if nnz and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(f"indices must lie in [0, {n_cols}), got values in "
                         f"[{indices.min()}, {indices.max()}]")
    if nnz > 1:
        step = np.diff(indices.astype(np.int64))
        row_start = np.zeros(nnz, dtype=bool)
        row_start[indptr[:-1][row_len > 0]] = True
        inside = ~row_start[1:]                        # consecutive entries of the same row
        if (inside & (step == 0)).any():
            raise ValueError("indices has a duplicate column within a row")
        if (inside & (step < 0)).any():
            raise ValueError("indices must be sorted (increasing) within each row")
    return indptr.astype(np.int64, copy=False), indices.astype(np.int32, copy=False), row_len


def choose_elements(array, density=None, mask=None, constant_fan_in=False):
    """Boolean mask of the elements `from_dense` keeps (shared by CSR and Masked, so both pick
    the same ones): the largest |.| at `density` (per row with constant fan-in), the True
    entries of `mask`, or else the nonzeros."""
    check_dense(array)
    RowGroups.check_flag(constant_fan_in)
    if density is not None and mask is not None:
        raise ValueError("give density or mask, not both")
    if mask is not None:
        return check_mask(mask, array.shape)
    if density is None:
        return array != 0
    if constant_fan_in:
        return top_k_per_row_mask(np.abs(array), units_for_density(density, array.shape[1]))
    return top_k_mask(np.abs(array), units_for_density(density, array.size))


class CSR(RowGroups, SparseMatrix):
    format = "csr"

    def __init__(self, indptr, indices, values, shape, constant_fan_in=False):
        constant_fan_in = self.check_flag(constant_fan_in)
        n_rows, n_cols = check_shape(shape)
        # checked on private copies, which stay read-only (see `owned`)
        indptr, indices, row_len = check_compressed(owned(check_index_array(indptr, "indptr")),
                                                    owned(check_index_array(indices, "indices")),
                                                    n_rows, n_cols)
        indptr, indices = frozen(indptr), frozen(indices)
        check_values(values, indices.size)
        if constant_fan_in:
            self.check_fan_in(row_len, "indptr")
        self.shape = (n_rows, n_cols)
        self.indptr, self.indices = indptr, indices              # int64 and int32
        self.values = values
        self.constant_fan_in = bool(constant_fan_in)
        self._transposed = None                         # (colptr, rowind, perm) once built

    # ----- facts and elements ------------------------------------------------------------
    @property
    def nnz(self):
        return int(self.indices.size)

    n_units = nnz

    def _index_arrays(self):
        transposed = self._transposed or self._device_copies().get("transposed", ())
        return [self.indptr, self.indices, *transposed]

    def _kernel_arrays(self):
        return self.indptr, self.indices

    def row_lengths(self):
        return np.diff(self.indptr)

    def coords(self):
        rows = np.repeat(np.arange(self.shape[0], dtype=np.int64), self.row_lengths())
        return rows, self.indices.astype(np.int64)

    def to_dense(self):
        out = np.zeros(self.shape, dtype=self.dtype)
        rows, cols = self.coords()
        out[rows, cols] = backend.to_numpy(self.values)
        return out

    def to_scipy(self):
        import scipy.sparse
        return scipy.sparse.csr_array((backend.to_numpy(self.values), self.indices, self.indptr),
                                      shape=self.shape)

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def from_dense(cls, array, density=None, mask=None, constant_fan_in=False):
        keep = choose_elements(array, density, mask, constant_fan_in)
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
        cols = np.nonzero(keep)[1]                               # row-major: sorted per row
        return cls(indptr, cols.astype(np.int32), array[keep], array.shape, constant_fan_in)

    @classmethod
    def _from_coo(cls, rows, cols, values, shape, constant_fan_in=False):
        n_rows, n_cols = check_shape(shape)
        rows = check_index_array(rows, "rows").astype(np.int64)
        cols = check_index_array(cols, "cols").astype(np.int64)
        check_values(values, rows.size)
        if cols.shape != rows.shape:
            raise ValueError(f"rows and cols differ in length: {rows.shape} and {cols.shape}")
        for arr, size, name in ((rows, n_rows, "rows"), (cols, n_cols, "cols")):
            if arr.size and (arr.min() < 0 or arr.max() >= size):
                raise ValueError(f"{name} must lie in [0, {size})")
        keys = rows * n_cols + cols
        order = np.argsort(keys, kind="stable")
        if keys.size > 1 and (np.diff(keys[order]) == 0).any():
            raise ValueError("the coordinates hold a duplicate position")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
        return cls(indptr, cols[order].astype(np.int32), values[order], (n_rows, n_cols),
                   constant_fan_in)

    # ----- products ----------------------------------------------------------------------
    def transposed_index(self, device="cpu"):
        """(colptr, rowind, perm): CSC position j holds values[perm[j]]. Built once per
        device, by that device's kernel (read-only on the host: see `owned`)."""
        if device == "cpu":
            if self._transposed is None:
                k = kernels_for(self.indptr)
                self._transposed = tuple(owned(a) for a in
                                         k.csr_to_csc(self.indptr, self.indices, self.shape[1]))
            return self._transposed
        copies = self._device_copies()
        if "transposed" not in copies:
            indptr, indices = self.kernel_index(device)
            copies["transposed"] = kernels_for(indptr).csr_to_csc(indptr, indices, self.shape[1])
        return copies["transposed"]

    def upload(self):
        self.transposed_index("cuda")

    def spmm(self, X, values=None, out=None, bias=None, relu=False):
        values = self._values_or_own(values)
        X = check_operand(X, self.shape[1], values.dtype, "X")              # (n_cols, k)
        shape = (self.shape[0], X.shape[1])
        out = output(out, shape, values.dtype, like=X)
        trusted_kernels(values, X).csr_spmm(*self.kernel_index(backend.device_of(X)), values, X,
                                            out, bias, relu)
        return out                                                          # (n_rows, k)

    def spmm_t(self, G, values=None, out=None):
        values = self._values_or_own(values)
        G = check_operand(G, self.shape[0], values.dtype, "G")              # (n_rows, k)
        shape = (self.shape[1], G.shape[1])
        out = output(out, shape, values.dtype, like=G)
        colptr, rowind, perm = self.transposed_index(backend.device_of(G))
        trusted_kernels(values, G).csr_spmm_t(colptr, rowind, perm, values, G, out)
        return out                                                          # (n_cols, k)

    def sddmm(self, A, B, out=None):
        A = check_operand(A, self.shape[0], self.dtype, "A")                # (n_rows, k)
        B = check_operand(B, self.shape[1], self.dtype, "B")                # (n_cols, k)
        if A.shape[1] != B.shape[1]:
            raise ValueError(f"A and B must have the same k, got {A.shape} and {B.shape}")
        out = output(out, (self.nnz,), self.dtype, like=A)
        trusted_kernels(A, B).csr_sddmm(*self.kernel_index(backend.device_of(A)), A, B, out)
        return out                                                          # (nnz,)

    def spmm_t_sddmm(self, G, X, values=None):
        values = self._values_or_own(values)
        G = check_operand(G, self.shape[0], values.dtype, "G")              # (n_rows, k)
        X = check_operand(X, self.shape[1], values.dtype, "X")              # (n_cols, k)
        if G.shape[1] != X.shape[1]:
            raise ValueError(f"G and X must have the same k, got {G.shape} and {X.shape}")
        gx = output(None, (self.shape[1], G.shape[1]), values.dtype, like=G)
        gv = output(None, (self.nnz,), values.dtype, like=G)
        colptr, rowind, perm = self.transposed_index(backend.device_of(G))
        trusted_kernels(values, G).csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx, gv)
        return gx, gv                                           # (n_cols, k), (nnz,)

    # ----- topology ----------------------------------------------------------------------
    unit_coords = coords

    def update(self, drop, grow_rows, grow_cols, grow_values=None):
        n_rows, n_cols = self.shape
        grow_rows, grow_cols = check_update_args(drop, grow_rows, grow_cols, self.nnz, self.shape)
        grow_values = check_grow_values(grow_values, grow_rows.size, (), self.dtype)
        rows, cols = self.coords()
        new_keys, source = merge_pattern(rows * n_cols + cols, drop, grow_rows * n_cols + grow_cols,
                                         n_cols)
        counts = np.bincount(new_keys // n_cols, minlength=n_rows)
        if self.constant_fan_in:
            self.check_fan_in(counts, "update")
        values, new_from_old = gather_values(backend.to_numpy(self.values), source, grow_values)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        new = CSR(indptr, (new_keys % n_cols).astype(np.int32), self._same_device(values),
                  self.shape, self.constant_fan_in)
        return new, new_from_old
