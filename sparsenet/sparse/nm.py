"""NM: N:M structured sparsity: in every group of M consecutive inputs of a row, exactly N weights.

values (n_rows, n_groups, N) and idx (n_rows, n_groups, N) uint8: the weight values[r, g, s]
sits at column g*M + idx[r, g, s], with idx strictly increasing inside a group. `values` is that
array flattened, in (row, group, slot) order, which is also row-major column order. No pointers
are needed: every row holds n_groups * N weights, which is what lets hardware (NVIDIA's 2:4
sparse tensor cores) and our kernels run it without indirection per row.

The constraint group of a weight is its (row, group): drops and grows must balance within it.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .base import (SparseMatrix, apply_epilogue, check_dense, check_index_array, check_mask,
                   check_operand, check_shape, check_values, frozen, output, owned,
                   top_k_per_row_mask, trusted_kernels)
from .topology import check_grow_values, check_update_args, gather_values, merge_pattern


def check_nm(n, m, n_cols=None):
    for value, name in ((n, "n"), (m, "m")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 1 <= n < m:
        raise ValueError(f"the N:M rule needs 1 <= n < m, got n={n}, m={m}")
    if m > 256:
        raise ValueError(f"m must be at most 256 (in-group offsets are uint8), got {m}")
    if n_cols is not None and n_cols % m:
        raise ValueError(f"n_cols = {n_cols} must be a multiple of m = {m}")
    return int(n), int(m)


class NM(SparseMatrix):
    format = "nm"

    def __init__(self, values, idx, m):
        idx = owned(check_index_array(idx, "idx", ndim=3))    # (n_rows, n_groups, N), read-only
        n_rows, n_groups, n = idx.shape
        if n_rows == 0 or n_groups == 0:
            raise ValueError(f"idx must have shape (n_rows, n_groups, n) with n_rows, n_groups "
                             f">= 1, got {idx.shape}")
        n, m = check_nm(n, m)
        if idx.min() < 0 or idx.max() >= m:
            raise ValueError(f"idx must lie in [0, m) = [0, {m}), got values in "
                             f"[{idx.min()}, {idx.max()}]")
        if (np.diff(idx.astype(np.int64), axis=-1) <= 0).any():
            raise ValueError("idx must be strictly increasing within each group")
        if getattr(values, "ndim", 1) == 3:             # (n_rows, n_groups, N) accepted, stored flat
            if values.shape != idx.shape:
                raise ValueError(f"values must have idx's shape {idx.shape}, got {values.shape}")
            values = values.reshape(-1)
        check_values(values, idx.size)
        self.shape = (n_rows, n_groups * m)
        self.n, self.m = n, m
        self.idx = frozen(idx.astype(np.uint8, copy=False))
        self.values = values

    # ----- facts and elements ------------------------------------------------------------
    @property
    def nnz(self):
        return int(self.values.size)

    n_units = nnz

    @property
    def groups_per_row(self):
        return self.shape[1] // self.m

    def _index_arrays(self):
        return [self.idx]

    def _kernel_arrays(self):
        return (self.idx,)

    def coords(self):
        n_rows, n_groups, n = self.idx.shape
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_groups * n)
        group_start = np.arange(n_groups, dtype=np.int64)[None, :, None] * self.m
        return rows, (group_start + self.idx).ravel()

    def to_dense(self):
        out = np.zeros(self.shape, dtype=self.dtype)
        groups = out.reshape(self.idx.shape[0], self.groups_per_row, self.m)   # a view of out
        np.put_along_axis(groups, self.idx.astype(np.int64),
                          backend.to_numpy(self.values).reshape(self.idx.shape), axis=-1)
        return out

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def from_dense(cls, array, density=None, mask=None, n=2, m=4):
        """Keep the n largest |.| of every group of m (or the True entries of a `mask` that has
        exactly n per group). `density`, if given, must be n / m."""
        check_dense(array)
        n, m = check_nm(n, m, array.shape[1])
        if density is not None and abs(density - n / m) > 1e-12:
            raise ValueError(f"density {density} does not match the N:M rule n/m = {n}/{m}")
        groups = array.reshape(array.shape[0], -1, m)                 # (n_rows, n_groups, M)
        if mask is not None:
            keep = check_mask(mask, array.shape).reshape(groups.shape)
            counts = keep.sum(axis=-1)
            if (counts != n).any():
                r, g = np.argwhere(counts != n)[0]
                raise ValueError(f"mask does not fit {n}:{m}: row {r}, group {g} has "
                                 f"{counts[r, g]} True entries")
        else:
            keep = top_k_per_row_mask(np.abs(groups), n)
        idx = np.nonzero(keep)[2].reshape(*groups.shape[:2], n)      # ascending within groups
        return cls(groups[keep], idx.astype(np.uint8), m)

    @classmethod
    def _from_coo(cls, rows, cols, values, shape, n=None, m=None):
        n_rows, n_cols = check_shape(shape)
        n, m = check_nm(n, m, n_cols)
        rows = check_index_array(rows, "rows").astype(np.int64)
        cols = check_index_array(cols, "cols").astype(np.int64)
        check_values(values, rows.size)
        keys = rows * n_cols + cols
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if keys.size > 1 and (np.diff(keys) == 0).any():
            raise ValueError("the coordinates hold a duplicate position")
        cls._check_group_counts(keys // m, n_rows * (n_cols // m), n, n_cols // m,
                                f"the pattern does not fit {n}:{m}")
        idx = (keys % m).reshape(n_rows, n_cols // m, n).astype(np.uint8)
        return cls(values[order], idx, m)

    @staticmethod
    def _check_group_counts(group_ids, n_total, n, groups_per_row, what):
        counts = np.bincount(group_ids, minlength=n_total)
        if (counts != n).any():
            g = int(np.flatnonzero(counts != n)[0])
            raise ValueError(f"{what}: row {g // groups_per_row}, group {g % groups_per_row} "
                             f"would hold {counts[g]} weights, not n = {n}")

    # ----- products ----------------------------------------------------------------------
    def spmm(self, X, values=None, out=None, bias=None, relu=False):
        values = self._values_or_own(values).reshape(self.idx.shape)        # (n_rows, n_groups, N)
        X = check_operand(X, self.shape[1], values.dtype, "X")              # (n_cols, k)
        shape = (self.shape[0], X.shape[1])
        out = output(out, shape, values.dtype, like=X)
        idx, = self.kernel_index(backend.device_of(X))
        trusted_kernels(values, X).nm_spmm(values, idx, self.m, X, out)
        return apply_epilogue(out, bias, relu)                              # (n_rows, k)

    def spmm_t(self, G, values=None, out=None):
        values = self._values_or_own(values).reshape(self.idx.shape)
        G = check_operand(G, self.shape[0], values.dtype, "G")              # (n_rows, k)
        shape = (self.shape[1], G.shape[1])
        out = output(out, shape, values.dtype, like=G)
        idx, = self.kernel_index(backend.device_of(G))
        trusted_kernels(values, G).nm_spmm_t(values, idx, self.m, G, out)
        return out                                                          # (n_cols, k)

    def sddmm(self, A, B, out=None):
        A = check_operand(A, self.shape[0], self.dtype, "A")                # (n_rows, k)
        B = check_operand(B, self.shape[1], self.dtype, "B")                # (n_cols, k)
        if A.shape[1] != B.shape[1]:
            raise ValueError(f"A and B must have the same k, got {A.shape} and {B.shape}")
        out = output(out, (self.nnz,), self.dtype, like=A)
        idx, = self.kernel_index(backend.device_of(A))
        trusted_kernels(A, B).nm_sddmm(idx, self.m, A, B, out.reshape(self.idx.shape))
        return out                                                          # (nnz,)

    # ----- topology ----------------------------------------------------------------------
    unit_coords = coords

    @property
    def n_groups(self):
        return self.shape[0] * self.groups_per_row

    def group_of(self, unit_rows, unit_cols):
        return (np.asarray(unit_rows, dtype=np.int64) * self.groups_per_row
                + np.asarray(unit_cols, dtype=np.int64) // self.m)

    def update(self, drop, grow_rows, grow_cols, grow_values=None):
        n_rows, n_cols = self.shape
        grow_rows, grow_cols = check_update_args(drop, grow_rows, grow_cols, self.nnz, self.shape)
        grow_values = check_grow_values(grow_values, grow_rows.size, (), self.dtype)
        rows, cols = self.coords()
        new_keys, source = merge_pattern(rows * n_cols + cols, drop, grow_rows * n_cols + grow_cols,
                                         n_cols)
        self._check_group_counts(new_keys // self.m, self.n_groups, self.n, self.groups_per_row,
                                 f"the {self.n}:{self.m} rule: drops and grows must balance "
                                 "within each group")
        values, new_from_old = gather_values(backend.to_numpy(self.values), source, grow_values)
        idx = (new_keys % self.m).reshape(self.idx.shape).astype(np.uint8)
        return NM(self._same_device(values), idx, self.m), new_from_old
