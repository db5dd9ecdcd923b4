"""The Deep Compression file: pruned, weight-shared, Huffman-coded layers, everything counted.

Han, Mao & Dally 2016 store each pruned layer as (Section 2, 3, 4): a codebook of shared
weights, one cluster index per kept weight, and the relative position of each kept weight,
with the indices and positions Huffman-coded. This file holds exactly that, plus the parts that
stay dense (biases, unquantized layers), so its size on disk is the whole compressed model.

File layout (integers little-endian; no pickle anywhere):

    bytes 0-7     magic b"SNDCMP\\x00\\x01" (format version 1)
    bytes 8-11    H: uint32, the header's length in bytes
    next H bytes  the header: a UTF-8 JSON object (below)
    then          the payload: the segments the header describes, in its order, back to back,
                  without padding; the file ends where the last segment ends.

Header:

    {"format": "sparsenet-deep-compression", "version": 1,
     "model": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10,
     "layers": [LAYER, ...], "dense": [TENSOR, ...]}
    LAYER  = {"name": module name, "kind": "linear" | "conv2d", "shape": [rows, cols],
              "nnz": kept weights, "weight_bits": b, "clusters": K (1 <= K <= 2^b),
              "index_bits": ib, "entries": index entries (nnz + fillers),
              "weights": STREAM, "index": STREAM}
    STREAM = {"coding": "huffman" | "fixed", "bits": length of the bitstream in bits}
    TENSOR = {"name": state-dict name, "dtype": "float32" | ..., "shape": [...]}

Segments of each layer, in order:

    codebook       K float32: the shared weights
    weight table   K uint8: canonical Huffman code lengths of the cluster indices (huffman only)
    weight stream  the nnz cluster indices: Huffman codes, or b bits each (fixed)
    index table    2^ib uint8: code lengths of the index symbols (huffman only)
    index stream   the `entries` index symbols: Huffman codes, or ib bits each (fixed)

then each dense tensor's raw bytes. Streams are written most significant bit first and padded
to a whole byte (sparsenet.huffman). A weight matrix is (rows, cols) = (out, in * kh * kw).

Relative index (Section 2, Figure 2): the kept weights are visited in row-major order and each
is coded by its distance d >= 1 from the previous one (from position -1 for the first), so no
row pointers are stored. With M = 2^ib - 1, symbol s < M means d = s + 1; symbol M is a
filler: advance M positions, no weight. A distance d > M is coded as (d - 1) // M fillers and
then the rest. (The paper's filler is a stored zero weight; ours carries no weight, which
saves the b bits and the codebook slot a zero would take, at one symbol of the 2^ib.)
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass

import numpy as np

from . import huffman
from .kernels.cpu.codebook import check_code_lengths

MAGIC = b"SNDCMP\x00\x01"
MAX_ROWS = 1 << 24               # rows of a layer this reader accepts (its row pointers are built)
FORMAT = "sparsenet-deep-compression"
DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")


class CompressedFileError(ValueError):
    """A compressed file that cannot be read; the message names the file and the field."""


@dataclass
class LayerCodes:
    """One compressed layer: CSR pattern, one code per kept weight, the shared values."""
    name: str
    kind: str
    shape: tuple
    indptr: np.ndarray
    indices: np.ndarray
    codes: np.ndarray            # uint8 (nnz,)
    codebook: np.ndarray         # float32 (K,)
    weight_bits: int
    index_bits: int
    file_bytes: int = 0          # the layer's bytes in the file it was read from


# ----- relative index -------------------------------------------------------------------------
def relative_index(positions, index_bits: int) -> np.ndarray:
    """Index symbols (uint8) of sorted flat positions, fillers included (module docstring)."""
    filler = (1 << index_bits) - 1
    gaps = np.diff(np.concatenate([[-1], np.asarray(positions, dtype=np.int64)]))
    fillers = (gaps - 1) // filler                           # (nnz,)
    symbols = np.full(int(fillers.sum()) + gaps.size, filler, dtype=np.uint8)
    symbols[np.cumsum(fillers + 1) - 1] = gaps - fillers * filler - 1
    return symbols


def absolute_positions(symbols, index_bits: int) -> np.ndarray:
    """Flat positions of the kept weights back from index symbols."""
    filler = (1 << index_bits) - 1
    symbols = np.asarray(symbols, dtype=np.int64)
    positions = np.cumsum(np.where(symbols == filler, filler, symbols + 1)) - 1
    return positions[symbols != filler]


# ----- writing --------------------------------------------------------------------------------
def _stream(symbols, alphabet, width, use_huffman):
    """(segments, header entry, stats) of one stream: table + bits, or fixed-width bits."""
    if use_huffman:
        lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
        if not lengths.any():                                  # an empty stream still has a table
            lengths[0] = 1
        data, n_bits = huffman.encode(symbols, lengths)
        return [lengths.tobytes(), data.tobytes()], {"coding": "huffman", "bits": n_bits}, \
            {"table_bytes": alphabet, "stream_bits": n_bits}
    data, n_bits = huffman.pack_fixed(symbols, width)
    return [data.tobytes()], {"coding": "fixed", "bits": n_bits}, \
        {"table_bytes": 0, "stream_bits": n_bits}


def write_compressed(path, layers, dense: dict, model_spec=None, input_shape=(1, 28, 28),
                     num_classes=10, use_huffman=True) -> dict:
    """Write `layers` (LayerCodes) and the `dense` arrays {name: array} to `path`.

    Returns {"bytes": file size, "layers": per-layer byte and bit counts}. Written to a
    temporary file and moved into place, so a failed write never leaves half a file.
    """
    header = {"format": FORMAT, "version": 1, "model": model_spec,
              "input_shape": [int(s) for s in input_shape], "num_classes": int(num_classes),
              "layers": [], "dense": []}
    segments, stats = [], []
    for layer in layers:
        codebook = np.ascontiguousarray(layer.codebook, dtype="<f4")
        k, b, ib = codebook.size, int(layer.weight_bits), int(layer.index_bits)
        if not (1 <= b <= 8 and 1 <= k <= 1 << b and 1 <= ib <= 8):
            raise ValueError(f"layer {layer.name!r}: need 1 <= weight_bits <= 8, 1 <= clusters "
                             f"<= 2^weight_bits and 1 <= index_bits <= 8, got {b}, {k}, {ib}")
        rows = np.repeat(np.arange(layer.shape[0], dtype=np.int64), np.diff(layer.indptr))
        index = relative_index(rows * layer.shape[1] + layer.indices, ib)
        w_segs, w_head, w_stats = _stream(layer.codes, k, b, use_huffman)
        i_segs, i_head, i_stats = _stream(index, 1 << ib, ib, use_huffman)
        segments += [codebook.tobytes(), *w_segs, *i_segs]
        header["layers"].append({"name": layer.name, "kind": layer.kind,
                                 "shape": [int(s) for s in layer.shape],
                                 "nnz": int(layer.codes.size), "weight_bits": b, "clusters": k,
                                 "index_bits": ib, "entries": int(index.size),
                                 "weights": w_head, "index": i_head})
        stats.append({"name": layer.name, "shape": list(layer.shape), "nnz": int(layer.codes.size),
                      "entries": int(index.size), "codebook_bytes": codebook.nbytes,
                      "weight_table_bytes": w_stats["table_bytes"],
                      "weight_stream_bits": w_stats["stream_bits"],
                      "index_table_bytes": i_stats["table_bytes"],
                      "index_stream_bits": i_stats["stream_bits"]})
    for name, array in dense.items():
        array = np.asarray(array)
        if array.dtype.name not in DTYPES:
            raise ValueError(f"dense tensor {name!r} has dtype {array.dtype}; expected one of {DTYPES}")
        header["dense"].append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
        segments.append(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    text = json.dumps(header, separators=(",", ":")).encode()
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(text)) + text + b"".join(segments))
    os.replace(tmp, path)
    return {"bytes": os.path.getsize(path), "header_bytes": len(MAGIC) + 4 + len(text),
            "layers": stats}


# ----- reading --------------------------------------------------------------------------------
@dataclass
class CompressedFile:
    path: str
    header: dict
    layers: list                 # LayerCodes, decoded
    dense: dict                  # {name: array}


def _fail(path, field, problem):
    raise CompressedFileError(f"{path}: {field}: {problem}")


def _int(obj, key, where, path, lo=0, hi=None):
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or \
            (hi is not None and value > hi):
        _fail(path, f"{where}.{key}", f"expected an integer in [{lo}, {hi if hi is not None else 'inf'}]"
              f", got {value!r}")
    return value


class _Payload:
    """Reads the payload segment by segment, naming the field that runs short."""

    def __init__(self, data, path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n, field, dtype="u1"):
        if self.pos + n > len(self.data):
            _fail(self.path, field, f"truncated: needs {n} bytes at payload offset {self.pos}, "
                  f"the payload has {len(self.data)}")
        chunk = np.frombuffer(self.data, dtype=dtype, count=n // np.dtype(dtype).itemsize,
                              offset=self.pos)
        self.pos += n
        return chunk


def _read_stream(payload, entry, alphabet, width, count, field, path):
    coding = entry.get("coding") if isinstance(entry, dict) else None
    n_bits = _int(entry, "bits", field, path)
    if count > n_bits:                      # every symbol takes a bit at least: bounds memory
        _fail(path, f"{field}.bits", f"{n_bits} bits cannot hold {count} symbols")
    try:
        if coding == "huffman":
            lengths = payload.take(alphabet, f"{field}.table").copy()
            try:
                check_code_lengths(lengths)
            except ValueError as err:
                _fail(path, f"{field}.table", f"malformed Huffman table: {err}")
            stream = payload.take(-(-n_bits // 8), f"{field}.stream")
            return huffman.decode(stream, n_bits, lengths, count)
        if coding == "fixed":
            if n_bits != width * count:
                _fail(path, f"{field}.bits", f"{count} symbols of {width} bits take "
                      f"{width * count} bits, the header says {n_bits}")
            return huffman.unpack_fixed(payload.take(-(-n_bits // 8), f"{field}.stream"),
                                        n_bits, width, count)
    except CompressedFileError:
        raise
    except ValueError as err:
        _fail(path, field, str(err))
    _fail(path, f"{field}.coding", f"expected 'huffman' or 'fixed', got {coding!r}")


def _read_layer(payload, entry, i, path):
    where = f"layers[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or \
            entry.get("kind") not in ("linear", "conv2d"):
        _fail(path, where, "expected an object with a name and kind 'linear' or 'conv2d'")
    shape = entry.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and
            all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        _fail(path, f"{where}.shape", f"expected [rows, cols] of positive integers, got {shape!r}")
    if shape[0] > MAX_ROWS or shape[1] >= 1 << 31:
        _fail(path, f"{where}.shape", f"{shape} is larger than this reader accepts ({MAX_ROWS} "
              "rows, 2^31 - 1 columns)")
    nnz = _int(entry, "nnz", where, path, 0, shape[0] * shape[1])
    b = _int(entry, "weight_bits", where, path, 1, 8)
    k = _int(entry, "clusters", where, path, 1, 1 << b)
    ib = _int(entry, "index_bits", where, path, 1, 8)
    entries = _int(entry, "entries", where, path, nnz)
    start = payload.pos
    codebook = payload.take(4 * k, f"{where}.codebook", "<f4").astype(np.float32)
    if not np.isfinite(codebook).all():
        _fail(path, f"{where}.codebook", "holds NaN or infinity")
    codes = _read_stream(payload, entry.get("weights"), k, b, nnz, f"{where}.weights", path)
    if codes.size and int(codes.max()) >= k:
        _fail(path, f"{where}.weights", f"codes out of range: a code {int(codes.max())}, the "
              f"codebook has {k} entries")
    symbols = _read_stream(payload, entry.get("index"), 1 << ib, ib, entries, f"{where}.index", path)
    positions = absolute_positions(symbols, ib)
    if positions.size != nnz:
        _fail(path, f"{where}.index", f"decodes to {positions.size} weights, nnz says {nnz}")
    if nnz and positions[-1] >= shape[0] * shape[1]:
        _fail(path, f"{where}.index", f"points past the {shape[0]}x{shape[1]} matrix")
    rows, cols = np.divmod(positions, shape[1])
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return LayerCodes(entry["name"], entry["kind"], tuple(shape), indptr.astype(np.int64),
                      cols.astype(np.int32), codes, codebook, b, ib, payload.pos - start)


def read_compressed(path) -> CompressedFile:
    """Read and fully decode a file written by `write_compressed` (every field checked)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no compressed model file at {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != MAGIC:
        _fail(path, "magic", f"not a sparsenet compressed file (starts with {data[:8]!r})")
    if len(data) < 12:
        _fail(path, "header", "truncated before the header length")
    (size,) = struct.unpack("<I", data[8:12])
    if 12 + size > len(data):
        _fail(path, "header", f"its length {size} runs past the end of the {len(data)}-byte file")
    try:
        header = json.loads(data[12:12 + size].decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        _fail(path, "header", f"not valid JSON: {err}")
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != 1:
        _fail(path, "header.format", f"expected {FORMAT!r} version 1")
    for key in ("layers", "dense"):
        if not isinstance(header.get(key), list):
            _fail(path, f"header.{key}", "expected a list")
    payload = _Payload(memoryview(data)[12 + size:], path)
    layers = [_read_layer(payload, e, i, path) for i, e in enumerate(header["layers"])]
    dense = {}
    for i, entry in enumerate(header["dense"]):
        where = f"dense[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or \
                entry.get("dtype") not in DTYPES or not isinstance(entry.get("shape"), list) or \
                not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                        for s in entry["shape"]):
            _fail(path, where, f"expected a name, a dtype in {DTYPES} and a shape, got {entry!r}")
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        count = math.prod(entry["shape"])                   # exact: no overflow to wrap
        if count * dtype.itemsize > len(payload.data) - payload.pos:
            _fail(path, f"{where} ({entry['name']})", f"truncated: {entry['shape']} needs "
                  f"{count * dtype.itemsize} bytes, {len(payload.data) - payload.pos} are left")
        raw = payload.take(count * dtype.itemsize, f"{where} ({entry['name']})", dtype)
        dense[entry["name"]] = raw.astype(dtype.newbyteorder("="), copy=True).reshape(entry["shape"])
    if payload.pos != len(payload.data):
        _fail(path, "payload", f"the header describes {payload.pos} payload bytes, the file "
              f"holds {len(payload.data)}")
    return CompressedFile(path, header, layers, dense)
