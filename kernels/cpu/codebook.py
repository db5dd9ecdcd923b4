"""Kernels of the Deep Compression form (cpu backend); the spec is in ``kernels.reference``.

- ``codebook_spmm``: Y = W @ X with W stored as CSR of one-byte codes plus a codebook:
  W[r, indices[p]] = codebook[codes[p]]. Per stored weight it reads 1 + 4 bytes (code and
  column) instead of float32 CSR's 4 + 4; the codebook (at most 256 floats) stays in cache.
- ``huffman_decode``: a canonical Huffman bitstream back to symbols, run once when a
  compressed file is loaded (the product never sees Huffman codes).

Like the CSR kernels, the public ``codebook_spmm`` checks every column index and every code
before the product, so no input can make it read outside its arrays; ``trusted.codebook_spmm``
skips that O(nnz) pass for ``sparsenet.sparse.CodebookCSR``, which checks its read-only arrays
once when it is built (``check_codebook``). ``huffman_decode`` trusts nothing: a stream comes
from a file.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import checks as c
from .micro import add_permuted_rows, work_bounds
from .wrap import contig, finish, out_buffer

CODE_DTYPE = np.dtype(np.uint8)
MAX_CODE_LENGTH = 32                 # longest Huffman code a table may hold (bits)

# status codes of _decode (negative: where the stream is wrong)
TRUNCATED, INVALID_CODE = -1, -2


# ---- argument contracts (shared with the reference twin) ---------------------

def args_codebook_spmm(indptr, indices, codes, codebook, X, out):
    n_rows, nnz = c.csr_pattern(indptr, indices)
    c.int_array("codes", codes, CODE_DTYPE)
    c.shape("codes", codes, (nnz,), "one code per entry of indices")
    dtype = c.float_array("codebook", codebook, ndim=1)
    if not 1 <= codebook.shape[0] <= 256:
        raise ValueError(f"codebook: expected 1 to 256 shared values (one-byte codes), "
                         f"got {codebook.shape[0]}")
    c.float_array("X", X, ndim=2)
    c.same_dtype("X", X, dtype, "codebook")
    c.out_array(out, (n_rows, X.shape[1]), dtype, f"W with {n_rows} rows @ X of shape {X.shape}",
                [("X", X)])
    return n_rows, X.shape[0], X.shape[1]


def args_huffman_decode(stream, n_bits, lengths, out):
    c.int_array("stream", stream, np.dtype(np.uint8))
    n_bits = c.positive_int("n_bits", n_bits, minimum=0)
    if n_bits > 8 * stream.shape[0]:
        raise ValueError(f"stream: truncated: n_bits = {n_bits} needs {-(-n_bits // 8)} bytes, "
                         f"got {stream.shape[0]}")
    c.int_array("lengths", lengths, np.dtype(np.uint8))
    c.int_array("out", out, CODE_DTYPE)
    if not out.flags.writeable:
        raise ValueError("out: expected a writeable array")
    check_code_lengths(lengths)
    return n_bits, out.shape[0]


def check_code_lengths(lengths):
    """A table of canonical code lengths (0 = symbol absent) that is a prefix code."""
    if not 1 <= lengths.shape[0] <= 256:
        raise ValueError(f"lengths: expected 1 to 256 symbols, got {lengths.shape[0]}")
    if lengths.size and int(lengths.max()) > MAX_CODE_LENGTH:
        raise ValueError(f"lengths: a code is {int(lengths.max())} bits long, the most allowed "
                         f"is {MAX_CODE_LENGTH}")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size == 0:
        raise ValueError("lengths: no symbol has a code")
    # Kraft: sum 2^-l <= 1 for a prefix code, counted in units of 2^-MAX_CODE_LENGTH
    kraft = int(np.sum(np.int64(1) << (MAX_CODE_LENGTH - used)))
    if kraft > 1 << MAX_CODE_LENGTH:
        raise ValueError("lengths: the code lengths over-subscribe the code space (Kraft sum "
                         f"{kraft / 2 ** MAX_CODE_LENGTH:.4f} > 1): not a prefix code")


def canonical_tables(lengths):
    """(first code, first slot, count) per length 0..MAX and the symbols in canonical order
    (by length, then symbol): the decoding tables of a canonical code."""
    count = np.bincount(lengths, minlength=MAX_CODE_LENGTH + 1).astype(np.int64)
    count[0] = 0
    first_code = np.zeros(MAX_CODE_LENGTH + 1, dtype=np.int64)
    first_slot = np.zeros(MAX_CODE_LENGTH + 1, dtype=np.int64)
    code = slot = 0
    for length in range(1, MAX_CODE_LENGTH + 1):
        code = (code + count[length - 1]) << 1
        first_code[length], first_slot[length] = code, slot
        slot += count[length]
    used = np.nonzero(lengths)[0]
    order = used[np.lexsort((used, lengths[used]))].astype(np.uint8)
    return first_code, first_slot, count, order


# ---- kernels -------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _spmm(indptr, indices, codes, codebook, X, out, n_threads):
    # o += codebook[codes[p]] * X[indices[p]]: the CSC-order helper of the transposed CSR
    # product, with the codes as its permutation (eight rows per pass, see micro.py)
    bounds = work_bounds(indptr, X.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            o = out[r]  # (k,)
            o[:] = 0
            add_permuted_rows(o, codebook, codes, X, indices, indptr[r], indptr[r + 1])
    return out


@njit(parallel=True, cache=True)
def _spmv(indptr, indices, codes, codebook, x, out, n_threads):
    # k = 1: a gathered dot product per row, four products per step summed as a tree
    bounds = work_bounds(indptr, 1, n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            s = codebook.dtype.type(0)
            p, stop = indptr[r], indptr[r + 1]
            while p + 4 <= stop:
                s += ((codebook[codes[p]] * x[np.uint32(indices[p])]
                       + codebook[codes[p + 1]] * x[np.uint32(indices[p + 1])])
                      + (codebook[codes[p + 2]] * x[np.uint32(indices[p + 2])]
                         + codebook[codes[p + 3]] * x[np.uint32(indices[p + 3])]))
                p += 4
            while p < stop:
                s += codebook[codes[p]] * x[np.uint32(indices[p])]
                p += 1
            out[r] = s
    return out


@njit(cache=True)
def _decode(stream, n_bits, max_length, first_code, first_slot, count, order, out):
    """Decode out.shape[0] symbols; returns the bits read, or TRUNCATED / INVALID_CODE."""
    pos = 0
    for i in range(out.shape[0]):
        code = 0
        found = False
        for length in range(1, max_length + 1):
            if pos >= n_bits:
                return TRUNCATED
            code = (code << 1) | ((stream[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
            offset = code - first_code[length]
            if 0 <= offset < count[length]:
                out[i] = order[first_slot[length] + offset]
                found = True
                break
        if not found:
            return INVALID_CODE
    return pos


def codebook_spmm(indptr, indices, codes, codebook, X, out):
    """out (n_rows, k) = W @ X, W[r, indices[p]] = codebook[codes[p]] (CSR of codes)."""
    args_codebook_spmm(indptr, indices, codes, codebook, X, out)
    c.check_csr(indptr, indices, X.shape[0])
    check_codebook(codes, codebook)
    return codebook_spmm_trusted(indptr, indices, codes, codebook, X, out)


def codebook_spmm_trusted(indptr, indices, codes, codebook, X, out):
    """codebook_spmm for index arrays and codes known to be valid (see trusted.py)."""
    _, _, k = args_codebook_spmm(indptr, indices, codes, codebook, X, out)
    buf = out_buffer(out)
    ip, ix, cd, cb, X = contig(indptr), contig(indices), contig(codes), contig(codebook), contig(X)
    if k == 1:
        _spmv(ip, ix, cd, cb, X.reshape(-1), buf.reshape(-1), get_num_threads())
    elif k > 1:
        _spmm(ip, ix, cd, cb, X, buf, get_num_threads())
    return finish(out, buf)


def huffman_decode(stream, n_bits, lengths, out):
    """Decode out.shape[0] symbols from the first n_bits bits of ``stream`` (most significant
    bit first) with the canonical code of ``lengths``; every bit must be used. Returns out."""
    n_bits, n = args_huffman_decode(stream, n_bits, lengths, out)
    tables = canonical_tables(lengths)
    used = _decode(contig(stream), n_bits, int(lengths.max()), *tables, out)
    raise_decode_status(used, n_bits, n)
    return out


def raise_decode_status(used, n_bits, n):
    if used == TRUNCATED:
        raise ValueError(f"stream: truncated: its {n_bits} bits end before {n} symbols are decoded")
    if used == INVALID_CODE:
        raise ValueError("stream: holds a bit pattern that is no code of the table (lengths)")
    if used != n_bits:
        raise ValueError(f"stream: {n} symbols use {used} bits, the stream has {n_bits}")


def check_codebook(codes, codebook):
    """Full check that every code indexes the codebook (once, when a layer is built)."""
    c.int_array("codes", codes, CODE_DTYPE)
    c.float_array("codebook", codebook, ndim=1)
    if codes.size and int(codes.max()) >= codebook.shape[0]:
        raise ValueError(f"codes: expected values in [0, {codebook.shape[0]}) (the codebook's "
                         f"entries), got a code {int(codes.max())}")
    if not np.isfinite(codebook).all():
        raise ValueError("codebook: contains NaN or infinity")
