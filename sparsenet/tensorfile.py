"""safetensors files, read with every header field checked before a byte of data is read.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON, then the
tensors' bytes. The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
end]} (offsets into the data, which must be covered exactly, without holes or overlaps) and
may hold "__metadata__", a {str: str} map. `read_header` checks all of that against the file's
real size, so a header that declares a 3 GiB tensor in a 1 KB file, a shape whose bytes do not
match its offsets, or a truncated file is refused at once. The caller then checks the names,
dtypes and shapes against what it is about to build (`check_entry`) and only then reads the
tensors it wants (`read_tensors`), each bounded by the file's size.

Every problem is one `TensorFileError` (a ValueError) naming the file and the field. Files are
written with `write` (safetensors' own serializer, then `files.atomic_write`); nothing is ever
unpickled.
"""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from .files import atomic_write

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
          "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
CODES = {np.dtype(t): code for code, t in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000           # safetensors' own limit
ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class TensorFileError(ValueError):
    """A malformed or mismatched file: the message names the file and the field."""

    def __init__(self, path, field, problem):
        self.path, self.field = os.fspath(path), field
        super().__init__(f"{self.path}: {field}: {problem}" if field else f"{self.path}: {problem}")


class Entry:
    """One tensor of the header: its dtype, shape and byte range in the data."""

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end
        self.data_start = 0              # file offset of the data block (set by read_header)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def read_header(path):
    """({name: Entry}, metadata {str: str}) of a safetensors file, every field checked."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file at {path}")
    if not os.path.isfile(path):
        raise TensorFileError(path, "", "is not a regular file")
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise TensorFileError(path, "header length", f"the file has {file_size} bytes; a "
                                  "safetensors file starts with an 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, file_size - 8):
            raise TensorFileError(path, "header length", f"{n} bytes declared, but the file holds "
                                  f"{file_size - 8} after the length (and at most "
                                  f"{MAX_HEADER_BYTES} are allowed): not a safetensors file, or "
                                  "truncated")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as err:
        raise TensorFileError(path, "header", f"is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise TensorFileError(path, "header", f"must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise TensorFileError(path, "__metadata__", "must be a map of strings to strings")
    entries = {name: _entry(path, name, spec) for name, spec in header.items()}
    _check_coverage(path, entries, file_size - 8 - n)
    for entry in entries.values():
        entry.data_start = 8 + n                  # where the data begins in the file
    return entries, metadata


def _entry(path, name, spec) -> Entry:
    field = f"tensor {name!r}"
    if not name:
        raise TensorFileError(path, "header", "a tensor has an empty name")
    if not isinstance(spec, dict) or set(spec) != ENTRY_KEYS:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise TensorFileError(path, field, f"must have exactly the keys {sorted(ENTRY_KEYS)}, "
                              f"got {keys}")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPES:
        raise TensorFileError(path, f"{field} dtype", f"{dtype!r} is not one of "
                              f"{sorted(DTYPES)} (what NumPy can hold)")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise TensorFileError(path, f"{field} shape", f"must be a list of integers >= 0, "
                              f"got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise TensorFileError(path, f"{field} data_offsets", f"must be [begin, end] with "
                              f"0 <= begin <= end, got {offsets!r}")
    entry = Entry(name, np.dtype(DTYPES[dtype]), tuple(shape), offsets[0], offsets[1])
    declared = entry.size * entry.dtype.itemsize
    if offsets[1] - offsets[0] != declared:
        raise TensorFileError(path, f"{field} data_offsets", f"cover {offsets[1] - offsets[0]} "
                              f"bytes, but shape {list(shape)} of {dtype} needs {declared}")
    return entry


def _check_coverage(path, entries, data_bytes):
    """The tensors cover the data exactly: no holes, no overlaps, nothing past the end."""
    position = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            problem = "overlaps the tensor before it" if entry.begin < position else \
                f"leaves a hole of {entry.begin - position} bytes before it"
            raise TensorFileError(path, f"tensor {entry.name!r} data_offsets", problem)
        position = entry.end
    if position != data_bytes:
        raise TensorFileError(path, "data", f"the header declares {position:,} bytes of tensor "
                              f"data, the file holds {data_bytes:,} (truncated, or not this "
                              "header's data)")


def check_entry(path, entry: Entry, dtypes=None, shape=None, ndim=None, max_size=None):
    """Refuse an entry whose dtype, shape, rank or element count is not the expected one."""
    field = f"tensor {entry.name!r}"
    if dtypes is not None and entry.dtype not in [np.dtype(d) for d in dtypes]:
        wanted = " or ".join(CODES[np.dtype(d)] for d in dtypes)
        raise TensorFileError(path, f"{field} dtype", f"is {CODES[entry.dtype]}, expected {wanted}")
    if shape is not None and entry.shape != tuple(shape):
        raise TensorFileError(path, f"{field} shape", f"is {list(entry.shape)}, expected "
                              f"{list(shape)}")
    if ndim is not None and len(entry.shape) != ndim:
        raise TensorFileError(path, f"{field} shape", f"is {list(entry.shape)}, expected "
                              f"{ndim} dimension(s)")
    if max_size is not None and entry.size > max_size:
        raise TensorFileError(path, f"{field} shape", f"{list(entry.shape)} holds {entry.size:,} "
                              f"entries, more than the {max_size:,} the layer can have")


def check_names(path, entries, expected, what="tensors"):
    """Refuse missing or unexpected tensor names (before anything is read)."""
    missing, extra = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
    if missing or extra:
        parts = ([f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}"] if missing else []) \
            + ([f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"] if extra else [])
        raise TensorFileError(path, what, "; ".join(parts))


def read_tensors(path, entries, names=None) -> dict:
    """{name: array} of the named entries (all by default), read from their byte ranges."""
    from .limits import check_bytes
    path = os.fspath(path)
    chosen = list(entries if names is None else names)
    check_bytes(sum(entries[n].end - entries[n].begin for n in chosen), f"reading {path}")
    out = {}
    with open(path, "rb") as f:
        for name in chosen:
            entry = entries[name]
            f.seek(entry.data_start + entry.begin)
            data = f.read(entry.end - entry.begin)
            if len(data) != entry.end - entry.begin:
                raise TensorFileError(path, f"tensor {name!r}", "the file ended early "
                                      "(it changed while being read?)")
            little = entry.dtype.newbyteorder("<")
            array = np.frombuffer(data, dtype=little).astype(entry.dtype, copy=True)
            out[name] = array.reshape(entry.shape)
    return out


def write(path, arrays: dict, metadata: dict) -> None:
    """Write `arrays` ({name: NumPy array}) and `metadata` ({str: str}) atomically."""
    from safetensors.numpy import save as serialize
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype not in CODES:
            raise TypeError(f"tensor {name!r} must be a NumPy array of one of "
                            f"{sorted(str(d) for d in CODES)}, got {type(array).__name__} "
                            f"{getattr(array, 'dtype', '')}")
    try:
        data = serialize({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                         metadata=metadata)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:     # safetensors' errors, its PanicException (a BaseException)
        raise ValueError(f"cannot serialize {os.fspath(path)}: {type(err).__name__}: "
                         f"{err}") from None
    atomic_write(path, data)
