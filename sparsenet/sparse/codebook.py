"""CodebookCSR: a CSR pattern whose entries are one-byte codes into a small codebook.

The inference form of a Deep Compression layer (Han, Mao & Dally 2016, Section 3): weight
(r, indices[p]) is `codebook[codes[p]]`, with at most 256 shared values per layer. Per stored
weight it holds a 1-byte code and a 4-byte column index (float32 CSR: 4 + 4); the codebook
adds 4 bytes per shared value. The product `spmm` runs the kernel `codebook_spmm` on the codes
directly: the float weights are never expanded. It runs on the CPU (NumPy arrays): the GPU
backend has no codebook kernel.

It is not a training format (no topology interface, no values to train): a model is trained
and fine-tuned in CSR, quantized, written to a compressed file, and loaded into this form.
"""
from __future__ import annotations

import numpy as np

from ..kernels import cpu
from ..kernels.cpu.codebook import check_codebook
from .base import check_operand, check_shape, output
from .csr import CSR, check_compressed


def _frozen(array):
    array = np.array(array)                    # a copy the caller cannot reach
    array.flags.writeable = False
    return array


class CodebookCSR:
    format = "codebook"

    def __init__(self, indptr, indices, codes, codebook, shape):
        n_rows, n_cols = check_shape(shape)
        indptr, indices, _ = check_compressed(indptr, indices, n_rows, n_cols)
        codes = np.asarray(codes)
        codebook = np.asarray(codebook)
        if codes.dtype != np.uint8 or codes.shape != indices.shape:
            raise ValueError(f"codes must be uint8 of shape {indices.shape} (one per stored "
                             f"weight), got {codes.dtype} {codes.shape}")
        if codebook.dtype not in (np.float32, np.float64) or codebook.ndim != 1 \
                or not 1 <= codebook.size <= 256:
            raise ValueError(f"codebook must be a float32/float64 vector of 1 to 256 shared "
                             f"values, got {codebook.dtype} {codebook.shape}")
        check_codebook(codes, codebook)
        self.shape = (n_rows, n_cols)
        self.indptr, self.indices = _frozen(indptr), _frozen(indices)
        self.codes, self.codebook = _frozen(codes), _frozen(codebook)

    @classmethod
    def from_csr(cls, weight: CSR, codes, codebook):
        """The codebook form of a CSR weight whose values are `codebook[codes]`."""
        return cls(weight.indptr, weight.indices, codes, codebook, weight.shape)

    @property
    def dtype(self):
        return self.codebook.dtype

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held: row pointers, column indices, codes and codebook."""
        return sum(a.nbytes for a in (self.indptr, self.indices, self.codes, self.codebook))

    @property
    def values(self) -> np.ndarray:
        """The float weights, expanded (for checks and conversions, not for the product)."""
        return self.codebook[self.codes]

    def to_csr(self) -> CSR:
        return CSR(self.indptr.copy(), self.indices.copy(), self.values, self.shape)

    def to_dense(self) -> np.ndarray:
        return self.to_csr().to_dense()

    def spmm(self, X, out=None):
        """W @ X for X (n_cols, k); returns (n_rows, k)."""
        X = check_operand(X, self.shape[1], self.dtype, "X")               # (n_cols, k)
        out = output(out, (self.shape[0], X.shape[1]), self.dtype, like=X)
        # trusted: the arrays were checked when this weight was built and are read-only
        return cpu.trusted.codebook_spmm(self.indptr, self.indices, self.codes, self.codebook,
                                         X, out)

    def __matmul__(self, other):
        return self.spmm(other)

    def __repr__(self):
        return (f"CodebookCSR(shape={self.shape}, nnz={self.nnz}, "
                f"shared values={self.codebook.size}, nbytes={self.nbytes})")
