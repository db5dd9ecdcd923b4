"""Block: block-sparse rows (BSR) with square bs x bs blocks, the unit of storage and topology.

The block grid is (n_rows / bs, n_cols / bs); block b sits at block row r (indptr[r] <= b <
indptr[r+1]) and block column indices[b], and holds the dense tile values[b*bs*bs:(b+1)*bs*bs]
in row-major order (`blocks` is that flat array viewed as (nnzb, bs, bs)). Blocks keep dense
inner loops busy, which is why they run faster per stored weight than single elements.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .base import (SparseMatrix, apply_epilogue, check_dense, check_index_array, check_mask,
                   check_operand, check_shape, check_values, frozen, kernels_for, output, owned,
                   top_k_mask, trusted_kernels, units_for_density)
from .csr import check_compressed
from .topology import check_grow_values, check_update_args, gather_values, merge_pattern


def check_block_size(block_size, shape):
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if shape[0] % block_size or shape[1] % block_size:
        raise ValueError(f"block_size {block_size} must divide both dimensions of shape {shape}")
    return int(block_size)


def _tiles(dense, bs):
    """View (n_block_rows, n_block_cols, bs, bs) of a dense matrix's tiles (no copy)."""
    n_rows, n_cols = dense.shape
    return dense.reshape(n_rows // bs, bs, n_cols // bs, bs).transpose(0, 2, 1, 3)


class Block(SparseMatrix):
    format = "block"

    def __init__(self, indptr, indices, values, shape, block_size):
        n_rows, n_cols = check_shape(shape)
        bs = check_block_size(block_size, (n_rows, n_cols))
        # checked on private copies, which stay read-only (see `owned`)
        indptr, indices, _ = check_compressed(owned(check_index_array(indptr, "indptr")),
                                              owned(check_index_array(indices, "indices")),
                                              n_rows // bs, n_cols // bs)
        indptr, indices = frozen(indptr), frozen(indices)
        if getattr(values, "ndim", 1) == 3:              # (nnzb, bs, bs) accepted, stored flat
            if values.shape != (indices.size, bs, bs):
                raise ValueError(f"values must have shape ({indices.size}, {bs}, {bs}), "
                                 f"got {values.shape}")
            values = values.reshape(-1)
        check_values(values, indices.size * bs * bs)
        self.shape, self.block_size = (n_rows, n_cols), bs
        self.unit_shape = (bs, bs)
        self.indptr, self.indices = indptr, indices               # int64 and int32
        self.values = values
        self._transposed = None                                   # (colptr, rowind, perm)

    # ----- facts and elements ------------------------------------------------------------
    @property
    def nnz(self):
        return int(self.values.size)

    @property
    def n_units(self):
        return int(self.indices.size)

    @property
    def unit_grid(self):
        return self.shape[0] // self.block_size, self.shape[1] // self.block_size

    @property
    def blocks(self):
        """values viewed as (nnzb, bs, bs)."""
        bs = self.block_size
        return self.values.reshape(-1, bs, bs)

    def _index_arrays(self):
        transposed = self._transposed or self._device_copies().get("transposed", ())
        return [self.indptr, self.indices, *transposed]

    def _kernel_arrays(self):
        return self.indptr, self.indices

    def unit_coords(self):
        block_rows = np.repeat(np.arange(self.unit_grid[0], dtype=np.int64), np.diff(self.indptr))
        return block_rows, self.indices.astype(np.int64)

    def coords(self):
        bs = self.block_size
        block_rows, block_cols = self.unit_coords()
        inner = np.arange(bs)
        rows = block_rows[:, None, None] * bs + inner[None, :, None]    # (nnzb, bs, 1)
        cols = block_cols[:, None, None] * bs + inner[None, None, :]    # (nnzb, 1, bs)
        rows, cols = np.broadcast_arrays(rows, cols)
        return rows.ravel(), cols.ravel()

    def to_dense(self):
        out = np.zeros(self.shape, dtype=self.dtype)
        _tiles(out, self.block_size)[self.unit_coords()] = backend.to_numpy(self.blocks)
        return out

    def to_scipy(self):
        import scipy.sparse
        bs = self.block_size
        return scipy.sparse.bsr_array((backend.to_numpy(self.blocks), self.indices, self.indptr),
                                      shape=self.shape, blocksize=(bs, bs))

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def from_dense(cls, array, density=None, mask=None, block_size=16, block_mask=None):
        """Keep the blocks with the largest L2 norm (`density`), the blocks where an element
        `mask` is True (it must be all True or all False in each block), the True entries of a
        `block_mask` over the block grid, or else the blocks holding any nonzero."""
        check_dense(array)
        bs = check_block_size(block_size, array.shape)
        tiles = _tiles(array, bs)                                   # (nbr, nbc, bs, bs)
        if sum(x is not None for x in (density, mask, block_mask)) > 1:
            raise ValueError("give at most one of density, mask and block_mask")
        if density is not None:
            norms = np.sqrt((tiles.astype(np.float64) ** 2).sum(axis=(2, 3)))
            block_mask = top_k_mask(norms, units_for_density(density, norms.size))
        elif mask is not None:
            mask_tiles = _tiles(check_mask(mask, array.shape), bs)
            block_mask = mask_tiles.all(axis=(2, 3))
            partial = mask_tiles.any(axis=(2, 3)) & ~block_mask
            if partial.any():
                r, c = np.argwhere(partial)[0]
                raise ValueError(f"mask is not block-structured for block_size {bs}: block "
                                 f"({r}, {c}) is partly True")
        elif block_mask is not None:
            check_mask(block_mask, tiles.shape[:2], "block_mask")
        else:
            block_mask = (tiles != 0).any(axis=(2, 3))
        indptr = np.concatenate([[0], np.cumsum(block_mask.sum(axis=1))]).astype(np.int64)
        block_cols = np.nonzero(block_mask)[1].astype(np.int32)
        return cls(indptr, block_cols, tiles[block_mask].reshape(-1), array.shape, bs)

    @classmethod
    def _from_coo(cls, rows, cols, values, shape, block_size=None):
        n_rows, n_cols = check_shape(shape)
        bs = check_block_size(block_size, (n_rows, n_cols))
        rows = check_index_array(rows, "rows").astype(np.int64)
        cols = check_index_array(cols, "cols").astype(np.int64)
        check_values(values, rows.size)
        n_block_cols = n_cols // bs
        if rows.size and np.unique(rows * n_cols + cols).size != rows.size:
            raise ValueError("the coordinates hold a duplicate position")
        block_keys, block_of, counts = np.unique((rows // bs) * n_block_cols + cols // bs,
                                                 return_inverse=True, return_counts=True)
        if (counts != bs * bs).any():
            key = int(block_keys[np.flatnonzero(counts != bs * bs)[0]])
            raise ValueError(f"the pattern does not fit {bs}x{bs} blocks: block "
                             f"({key // n_block_cols}, {key % n_block_cols}) is partly filled")
        blocks = np.zeros((block_keys.size, bs, bs), dtype=values.dtype)
        blocks[block_of, rows % bs, cols % bs] = values
        counts_per_row = np.bincount(block_keys // n_block_cols, minlength=n_rows // bs)
        indptr = np.concatenate([[0], np.cumsum(counts_per_row)])
        return cls(indptr, (block_keys % n_block_cols).astype(np.int32), blocks.reshape(-1),
                   (n_rows, n_cols), bs)

    @classmethod
    def from_scipy(cls, matrix, block_size=None):
        """From scipy; a square-blocked `bsr_array` gives its own block size by default."""
        if block_size is None:
            blocksize = getattr(matrix, "blocksize", None)
            if getattr(matrix, "format", None) != "bsr" or blocksize[0] != blocksize[1]:
                raise ValueError("block_size is needed unless matrix is a bsr_array with square blocks")
            block_size = blocksize[0]
        return super().from_scipy(matrix, block_size=block_size)

    # ----- products ----------------------------------------------------------------------
    def transposed_index(self, device="cpu"):
        """(colptr, rowind, perm) over the block grid: BSC block j is blocks[perm[j]]. Built
        once per device, by that device's kernel (read-only on the host: see `owned`)."""
        if device == "cpu":
            if self._transposed is None:
                k = kernels_for(self.indptr)
                self._transposed = tuple(owned(a) for a in
                                         k.bsr_to_bsc(self.indptr, self.indices,
                                                      self.unit_grid[1]))
            return self._transposed
        copies = self._device_copies()
        if "transposed" not in copies:
            indptr, indices = self.kernel_index(device)
            copies["transposed"] = kernels_for(indptr).bsr_to_bsc(indptr, indices, self.unit_grid[1])
        return copies["transposed"]

    def upload(self):
        self.transposed_index("cuda")

    def _blocks_of(self, values):
        bs = self.block_size
        return self._values_or_own(values).reshape(-1, bs, bs)

    def spmm(self, X, values=None, out=None, bias=None, relu=False):
        blocks = self._blocks_of(values)                                    # (nnzb, bs, bs)
        X = check_operand(X, self.shape[1], blocks.dtype, "X")              # (n_cols, k)
        shape = (self.shape[0], X.shape[1])
        out = output(out, shape, blocks.dtype, like=X)
        trusted_kernels(blocks, X).bsr_spmm(*self.kernel_index(backend.device_of(X)), blocks, X,
                                            out)
        return apply_epilogue(out, bias, relu)                              # (n_rows, k)

    def spmm_t(self, G, values=None, out=None):
        blocks = self._blocks_of(values)
        G = check_operand(G, self.shape[0], blocks.dtype, "G")              # (n_rows, k)
        shape = (self.shape[1], G.shape[1])
        out = output(out, shape, blocks.dtype, like=G)
        colptr, rowind, perm = self.transposed_index(backend.device_of(G))
        trusted_kernels(blocks, G).bsr_spmm_t(colptr, rowind, perm, blocks, G, out)
        return out                                                          # (n_cols, k)

    def sddmm(self, A, B, out=None):
        A = check_operand(A, self.shape[0], self.dtype, "A")                # (n_rows, k)
        B = check_operand(B, self.shape[1], self.dtype, "B")                # (n_cols, k)
        if A.shape[1] != B.shape[1]:
            raise ValueError(f"A and B must have the same k, got {A.shape} and {B.shape}")
        out = output(out, (self.nnz,), self.dtype, like=A)
        bs = self.block_size
        trusted_kernels(A, B).bsr_sddmm(*self.kernel_index(backend.device_of(A)), A, B,
                                        out.reshape(-1, bs, bs))
        return out                                                          # (nnzb * bs * bs,)

    # ----- topology ----------------------------------------------------------------------
    def unit_scores(self, elem_scores):
        """L2 norm of each block's element scores."""
        check_values(elem_scores, self.nnz, "elem_scores")
        per_block = elem_scores.reshape(self.n_units, -1)
        return np.sqrt((per_block * per_block).sum(axis=1))

    def update(self, drop, grow_rows, grow_cols, grow_values=None):
        bs, (n_block_rows, n_block_cols) = self.block_size, self.unit_grid
        grow_rows, grow_cols = check_update_args(drop, grow_rows, grow_cols, self.n_units,
                                                 self.unit_grid)
        grow_values = check_grow_values(grow_values, grow_rows.size, (bs, bs), self.dtype)
        block_rows, block_cols = self.unit_coords()
        new_keys, source = merge_pattern(block_rows * n_block_cols + block_cols, drop,
                                         grow_rows * n_block_cols + grow_cols, n_block_cols)
        values, new_from_old = gather_values(backend.to_numpy(self.values), source, grow_values,
                                             unit_size=bs * bs)
        counts = np.bincount(new_keys // n_block_cols, minlength=n_block_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        new = Block(indptr, (new_keys % n_block_cols).astype(np.int32), self._same_device(values),
                    self.shape, bs)
        return new, new_from_old
