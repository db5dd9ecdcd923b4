"""Masked: a dense weight times a boolean mask, computed densely: the easy-to-read twin.

Every other format stores only the kept weights; Masked stores all n_rows * n_cols of them
(`values` is the dense matrix flattened, exactly 0 where the mask is False) and multiplies with
ordinary dense matrix products. It is slow and big on purpose: it is the definition the sparse
formats must agree with, and the format to read first.

Its units are the True entries of the mask (in row-major order); `update` returns new_from_old
over the dense positions: identity, except -1 where a weight was dropped or grown, so the
optimizer zeroes those states.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .base import (RowGroups, SparseMatrix, apply_epilogue, check_index_array, check_mask,
                   check_operand, check_out, check_shape, check_values, owned)
from .csr import choose_elements
from .topology import check_grow_values, check_update_args, merge_pattern


class Masked(RowGroups, SparseMatrix):
    format = "masked"

    def __init__(self, values, mask, constant_fan_in=False):
        constant_fan_in = self.check_flag(constant_fan_in)
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a boolean NumPy array, got {type(mask).__name__}")
        shape = check_shape(mask.shape, "mask.shape")
        check_mask(mask, shape)
        check_values(values, mask.size)
        if (backend.to_numpy(values)[~mask.ravel()] != 0).any():
            raise ValueError("values must be exactly 0 wherever mask is False")
        row_len = mask.sum(axis=1)
        if constant_fan_in:
            self.check_fan_in(row_len, "mask")
        self.shape = shape
        self.values = values
        self.constant_fan_in = bool(constant_fan_in)
        self._mask = owned(mask)                       # private and read-only
        self._nnz = int(row_len.sum())

    # ----- facts and elements ------------------------------------------------------------
    @property
    def nnz(self):
        return self._nnz

    n_units = nnz

    def _index_arrays(self):
        return [self._mask]

    def _kernel_arrays(self):
        return (self._mask,)

    def mask(self):
        return self._mask.copy()

    def coords(self):
        """Every dense position, row-major: Masked stores all of them."""
        n_rows, n_cols = self.shape
        return (np.repeat(np.arange(n_rows, dtype=np.int64), n_cols),
                np.tile(np.arange(n_cols, dtype=np.int64), n_rows))

    def active(self):
        rows, cols = self.unit_coords()
        return rows, cols, backend.to_numpy(self.values).reshape(self.shape)[rows, cols]

    def to_dense(self):
        return backend.to_numpy(self.values).reshape(self.shape) * self._mask

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def from_dense(cls, array, density=None, mask=None, constant_fan_in=False):
        keep = choose_elements(array, density, mask, constant_fan_in)
        return cls(np.where(keep, array, 0).ravel(), keep.copy(), constant_fan_in)

    @classmethod
    def _from_coo(cls, rows, cols, values, shape, constant_fan_in=False):
        n_rows, n_cols = check_shape(shape)
        rows = check_index_array(rows, "rows").astype(np.int64)
        cols = check_index_array(cols, "cols").astype(np.int64)
        check_values(values, rows.size)
        mask = np.zeros((n_rows, n_cols), dtype=bool)
        mask[rows, cols] = True
        if mask.sum() != rows.size:
            raise ValueError("the coordinates hold a duplicate position")
        dense = np.zeros((n_rows, n_cols), dtype=values.dtype)
        dense[rows, cols] = values
        return cls(dense.ravel(), mask, constant_fan_in)

    # ----- products: dense, with the mask applied ----------------------------------------------
    def _weight(self, values):
        values = self._values_or_own(values)
        mask, = self.kernel_index(backend.device_of(values))       # uploaded once on a GPU
        return values.reshape(self.shape) * mask

    def spmm(self, X, values=None, out=None, bias=None, relu=False):
        W = self._weight(values)                                            # (n_rows, n_cols)
        X = check_operand(X, self.shape[1], W.dtype, "X")                   # (n_cols, k)
        shape = (self.shape[0], X.shape[1])
        if out is not None:
            check_out(out, shape, W.dtype)
        out = backend.array_module(X).matmul(W, X, out=out)                 # (n_rows, k)
        return apply_epilogue(out, bias, relu)

    def spmm_t(self, G, values=None, out=None):
        W = self._weight(values)
        G = check_operand(G, self.shape[0], W.dtype, "G")                   # (n_rows, k)
        shape = (self.shape[1], G.shape[1])
        if out is not None:
            check_out(out, shape, W.dtype)
        return backend.array_module(G).matmul(W.T, G, out=out)              # (n_cols, k)

    def sddmm(self, A, B, out=None):
        A = check_operand(A, self.shape[0], self.dtype, "A")                # (n_rows, k)
        B = check_operand(B, self.shape[1], self.dtype, "B")                # (n_cols, k)
        if A.shape[1] != B.shape[1]:
            raise ValueError(f"A and B must have the same k, got {A.shape} and {B.shape}")
        mask, = self.kernel_index(backend.device_of(A))
        dense = (A @ B.T) * mask                                            # (n_rows, n_cols)
        if out is None:
            return dense.ravel()
        check_out(out, (self.values.size,), self.dtype)[...] = dense.ravel()
        return out                                                          # (n_rows * n_cols,)

    # ----- topology ----------------------------------------------------------------------
    def unit_coords(self):
        rows, cols = np.nonzero(self._mask)
        return rows.astype(np.int64), cols.astype(np.int64)

    def unit_scores(self, elem_scores):
        """Scores of the mask's True entries, from dense-position scores aligned with values."""
        check_values(elem_scores, self.values.size, "elem_scores")
        return elem_scores[self._mask.ravel()]

    def update(self, drop, grow_rows, grow_cols, grow_values=None):
        n_rows, n_cols = self.shape
        grow_rows, grow_cols = check_update_args(drop, grow_rows, grow_cols, self.nnz, self.shape)
        grow_values = check_grow_values(grow_values, grow_rows.size, (), self.dtype)
        stored = np.flatnonzero(self._mask)                       # dense positions of the units
        grow_at = grow_rows * n_cols + grow_cols
        new_keys, _ = merge_pattern(stored, drop, grow_at, n_cols)    # checks grow positions
        mask = np.zeros(self._mask.size, dtype=bool)
        mask[new_keys] = True
        mask = mask.reshape(self.shape)
        row_len = mask.sum(axis=1)
        if self.constant_fan_in:
            self.check_fan_in(row_len, "update")
        values = backend.to_numpy(self.values).copy()
        values[stored[drop]] = 0                       # a dropped weight is gone, not just hidden
        values[grow_at] = grow_values
        new_from_old = np.arange(values.size, dtype=np.int64)
        new_from_old[stored[drop]] = -1
        new_from_old[grow_at] = -1
        return Masked(self._same_device(values), mask, self.constant_fan_in), new_from_old
