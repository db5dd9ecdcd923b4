"""Canonical Huffman coding, and fixed-width bit packing, of small-alphabet symbol streams.

Huffman (1952): repeatedly merge the two least frequent subtrees; a symbol's code length is
its depth in the final tree, and frequent symbols get short codes. The average length is within
one bit of the stream's entropy, and no prefix code does better symbol by symbol.

Canonical codes (as in DEFLATE, RFC 1951 Section 3.2.2): only the code *lengths* are kept.
Sort the symbols by (length, symbol); the first gets code 0...0, each next one the previous
code + 1, shifted left whenever the length grows. Reader and writer rebuild the same codes from
the lengths, so a table costs one byte per symbol of the alphabet instead of a tree.

Bits are written most significant first: bit i of the stream is bit 7 - i % 8 of byte i // 8;
the last byte is padded with zeros. Decoding is the kernel `huffman_decode`
(sparsenet.kernels), which refuses truncated streams and bit patterns that are no code.
"""
from __future__ import annotations

import heapq

import numpy as np

from .kernels import cpu as kernels
from .kernels.cpu.codebook import MAX_CODE_LENGTH, check_code_lengths

MAX_LENGTH = 24          # the longest code the encoder writes (the format allows up to 32)


def code_lengths(counts, max_length: int = MAX_LENGTH) -> np.ndarray:
    """Huffman code lengths (uint8, 0 for an unused symbol) from symbol counts.

    Ties are broken by the smaller symbol, so the same counts always give the same code.
    A lone used symbol gets a 1-bit code (a code needs at least one bit). If a code would be
    longer than `max_length`, the counts are flattened (halved, keeping every used symbol
    at >= 1) and the tree rebuilt: slightly worse compression, bounded decoding.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise ValueError(f"counts must be a 1-D array of counts >= 0, got {counts!r}")
    if not 1 <= max_length <= MAX_CODE_LENGTH:
        raise ValueError(f"max_length must be in [1, {MAX_CODE_LENGTH}], got {max_length}")
    used = np.nonzero(counts)[0]
    if used.size > 2 ** max_length:
        raise ValueError(f"{used.size} symbols do not fit codes of at most {max_length} bits")
    lengths = np.zeros(counts.size, dtype=np.uint8)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used] = 1
        return lengths
    weights = counts[used].astype(np.int64)
    while True:
        depth = _tree_depths(weights)
        if depth.max() <= max_length:
            lengths[used] = depth
            return lengths
        weights = np.maximum(weights // 2, 1)


def _tree_depths(weights) -> np.ndarray:
    """Depth of each leaf in the Huffman tree of `weights` (two or more leaves)."""
    # heap entries: (weight, smallest symbol below, node id); ids < n are leaves
    heap = [(int(w), i, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    parent = {}
    next_id = len(weights)
    while len(heap) > 1:
        w1, s1, a = heapq.heappop(heap)
        w2, s2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (w1 + w2, min(s1, s2), next_id))
        next_id += 1
    root = heap[0][2]
    depth = {root: 0}
    for node in range(next_id - 1, -1, -1):          # parents have larger ids than children
        if node != root:
            depth[node] = depth[parent[node]] + 1
    return np.array([depth[i] for i in range(len(weights))], dtype=np.int64)


def canonical_codes(lengths) -> np.ndarray:
    """The canonical code (int64, read as `lengths[s]` bits) of every symbol s."""
    lengths = np.asarray(lengths, dtype=np.uint8)
    check_code_lengths(lengths)
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for symbol in np.lexsort((np.arange(lengths.size), lengths)):
        length = int(lengths[symbol])
        if length == 0:
            continue
        code <<= length - previous
        codes[symbol] = code
        code, previous = code + 1, length
    return codes


def pack_bits(values, widths) -> tuple[np.ndarray, int]:
    """Concatenate `values[i]` written in `widths[i]` bits, most significant bit first.
    Returns (bytes as uint8, number of bits)."""
    values = np.asarray(values, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    n_bits = int(widths.sum())
    if n_bits == 0:
        return np.zeros(0, dtype=np.uint8), 0
    start = np.cumsum(widths) - widths                       # first bit of each value
    owner = np.repeat(np.arange(values.size), widths)        # (n_bits,) which value a bit is of
    shift = widths[owner] - 1 - (np.arange(n_bits) - start[owner])
    bits = ((values[owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits), n_bits


def encode(symbols, lengths) -> tuple[np.ndarray, int]:
    """Huffman-code `symbols` (ints in [0, len(lengths))) with the canonical code of `lengths`."""
    symbols = np.asarray(symbols)
    lengths = np.asarray(lengths, dtype=np.uint8)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= lengths.size
                         or (lengths[symbols] == 0).any()):
        raise ValueError("symbols: every symbol must have a code in lengths")
    codes = canonical_codes(lengths)
    return pack_bits(codes[symbols], lengths[symbols])


def decode(stream, n_bits: int, lengths, count: int) -> np.ndarray:
    """`count` symbols (uint8) back from a stream written by `encode`."""
    out = np.empty(int(count), dtype=np.uint8)
    return kernels.huffman_decode(np.ascontiguousarray(stream, dtype=np.uint8), int(n_bits),
                                  np.asarray(lengths, dtype=np.uint8), out)


def pack_fixed(symbols, width: int) -> tuple[np.ndarray, int]:
    """Every symbol in `width` bits (the stage before Huffman coding)."""
    symbols = np.asarray(symbols)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= 1 << width):
        raise ValueError(f"symbols must lie in [0, 2^{width})")
    return pack_bits(symbols, np.full(symbols.size, width))


def unpack_fixed(stream, n_bits: int, width: int, count: int) -> np.ndarray:
    """`count` symbols of `width` bits (uint8) back from a stream written by `pack_fixed`."""
    if n_bits != width * count:
        raise ValueError(f"stream: {count} symbols of {width} bits take {width * count} bits, "
                         f"the stream has {n_bits}")
    if stream.size != -(-n_bits // 8):
        raise ValueError(f"stream: {n_bits} bits take {-(-n_bits // 8)} bytes, got {stream.size}")
    bits = np.unpackbits(stream)[:n_bits].reshape(count, width).astype(np.int64)
    return (bits << np.arange(width - 1, -1, -1)).sum(axis=1).astype(np.uint8)


def mean_bits(counts, lengths) -> float:
    """Average code length (bits per symbol) of a stream with these symbol counts."""
    counts = np.asarray(counts, dtype=np.int64)
    return float((counts * np.asarray(lengths, dtype=np.int64)).sum() / max(counts.sum(), 1))
