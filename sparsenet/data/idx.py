"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number, then one big-endian uint32 per
dimension, then the array itself in C order, big-endian:

    byte 0-1  0x00 0x00
    byte 2    type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
              0x0D float32, 0x0E float64)
    byte 3    number of dimensions
    then      the dimension sizes, then the payload

The files are usually distributed gzipped. We recognise gzip by its magic
bytes rather than by the file name, because downloads land in temporary
files whose names say nothing, and people do rename files.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDXError", "read_idx", "write_idx"]

# Type code -> big-endian dtype on disk.
_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Keyed by (kind, itemsize) so that any byte order of the same type matches.
_DTYPE_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIMS = 4
_MAX_DIM_SIZE = 2**32 - 1  # a dimension is stored as uint32


class IDXError(ValueError):
    """A file is not a well-formed IDX file (or not a readable gzip stream)."""


def _check_path(path, argname: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argname} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _read_bytes(path: Path) -> bytes:
    """Return the file's IDX bytes, decompressing when it is gzipped."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises BadGzipFile (an OSError) for bad headers, EOFError for a
        # cut-off stream and zlib.error for corrupt deflate data; callers
        # should only need to catch one thing.
        raise IDXError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-byte-order array.

    Raises IDXError, naming the file and the problem, when the magic number,
    the type code, the number of dimensions or the payload length is wrong.
    """
    path = _check_path(path)
    data = _read_bytes(path)

    if len(data) < 4:
        raise IDXError(f"{path}: file is {len(data)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IDXError(
            f"{path}: bad magic number {data[:4].hex()}: expected the first two bytes to be zero"
        )
    if code not in _CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X}" for c in _CODE_TO_DTYPE)
        raise IDXError(f"{path}: unknown type code 0x{code:02X}; expected one of {known}")
    if not 1 <= ndim <= _MAX_DIMS:
        raise IDXError(f"{path}: number of dimensions is {ndim}; expected 1 to {_MAX_DIMS}")

    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    if any(size == 0 for size in shape):
        raise IDXError(f"{path}: dimension sizes {shape} contain a zero; expected all positive")

    dtype = _CODE_TO_DTYPE[code]
    # Python ints, so a corrupt header cannot overflow this product.
    expected = dtype.itemsize * int(np.prod(shape, dtype=object))
    actual = len(data) - header_len
    if actual < expected:
        raise IDXError(
            f"{path}: truncated payload: shape {shape} needs {expected} bytes, found {actual}"
        )
    if actual > expected:
        raise IDXError(
            f"{path}: {actual - expected} trailing bytes after the payload of shape {shape}"
        )

    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    # Native byte order and a writable copy: callers should not have to care
    # that the file was big-endian, nor hit read-only buffer errors.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write `array` as an IDX file; gzip it when `path` ends with ".gz".

    The gzip header carries no file name or time stamp, so writing the same
    array twice gives byte-identical files (the bundled subset relies on it).
    """
    path = _check_path(path)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be a numpy.ndarray, got {type(array).__name__}")
    code = _DTYPE_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(
            f"array dtype {array.dtype} has no IDX type code; expected uint8, int8, "
            "int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= _MAX_DIMS:
        raise ValueError(f"array must have 1 to {_MAX_DIMS} dimensions, got {array.ndim}")
    if any(not 0 < size <= _MAX_DIM_SIZE for size in array.shape):
        raise ValueError(
            f"array shape {array.shape} must have sizes between 1 and {_MAX_DIM_SIZE}"
        )

    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()

    if path.name.endswith(".gz"):
        with open(path, "wb") as raw_file:
            gz = gzip.GzipFile(
                filename="", mode="wb", fileobj=raw_file, compresslevel=9, mtime=0
            )
            with gz:
                gz.write(header)
                gz.write(payload)
    else:
        with open(path, "wb") as raw_file:
            raw_file.write(header)
            raw_file.write(payload)
