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


# Deflate cannot expand data more than about 1032:1, so a gzip file of c bytes holds at most
# this many times c bytes: a header declaring more is a lie, refused before anything is read.
_GZIP_MAX_RATIO = 1100
_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 4 << 30     # 4 GiB: Fashion-MNIST's largest file is 47 MB uncompressed


def _open(path: Path):
    """(binary stream of the IDX bytes, compressed?): gzip is recognised by its magic bytes."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    return (gzip.open(path, "rb") if compressed else open(path, "rb")), compressed



def _header(stream, path: Path):
    """(dtype on disk, shape, header length) from the magic number and dimension sizes."""
    data = stream.read(4)
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
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IDXError(
            f"{path}: truncated header: {ndim} dimensions need {4 + 4 * ndim} bytes, "
            f"file has {4 + len(sizes)}"
        )
    shape = struct.unpack(f">{ndim}I", sizes)
    if any(size == 0 for size in shape):
        raise IDXError(f"{path}: dimension sizes {shape} contain a zero; expected all positive")
    return _CODE_TO_DTYPE[code], shape, 4 + 4 * ndim


def read_idx(path, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-byte-order array.

    Raises IDXError, naming the file and the problem, when the magic number,
    the type code, the number of dimensions or the payload length is wrong.
    Memory stays bounded by what the header declares: the declared size is checked against
    `max_bytes` and against what the file could hold (its size, or about 1000 times it when
    gzipped) before anything is allocated, and the payload is streamed into the array, so a
    file that holds more than it declares (a gzip bomb) fails after one byte too many.
    """
    path = _check_path(path)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    file_size = path.stat().st_size
    stream, compressed = _open(path)
    try:
        with stream:
            return _read_payload(stream, path, compressed, file_size, max_bytes)
    except IDXError as exc:
        if not compressed:
            raise
        raise IDXError(f"{exc} (in the decompressed gzip stream)") from None
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises BadGzipFile (an OSError) for bad headers, EOFError for a
        # cut-off stream and zlib.error for corrupt deflate data; callers
        # should only need to catch one thing.
        raise IDXError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc


def _read_payload(stream, path, compressed, file_size, max_bytes):
    dtype, shape, header_len = _header(stream, path)
    # Python ints, so a corrupt header cannot overflow this product.
    expected = dtype.itemsize * int(np.prod(shape, dtype=object))
    if expected > max_bytes:
        raise IDXError(f"{path}: shape {shape} declares {expected} bytes, more than "
                       f"max_bytes={max_bytes}")
    room = _GZIP_MAX_RATIO * file_size if compressed else file_size - header_len
    if expected > room:
        raise IDXError(f"{path}: truncated payload: shape {shape} needs {expected} bytes, "
                       f"{'a gzip file of ' if compressed else 'found '}"
                       f"{file_size if compressed else room} bytes"
                       f"{' cannot hold them' if compressed else ''}")
    payload = np.empty(expected, dtype=np.uint8)     # pages are touched only as data arrives
    view, filled = memoryview(payload), 0
    while filled < expected:
        got = stream.readinto(view[filled:filled + _CHUNK])
        if not got:
            raise IDXError(f"{path}: truncated payload: shape {shape} needs {expected} "
                           f"bytes, found {filled}")
        filled += got
    trailing = len(stream.read(_CHUNK))
    if trailing:
        more = "at least " if trailing == _CHUNK else ""
        raise IDXError(f"{path}: {more}{trailing} trailing bytes after the payload of shape "
                       f"{shape}")
    array = payload.view(dtype).reshape(shape)
    # Native byte order, in place: callers should not have to care that the file was
    # big-endian, and the array is the only copy (writable, owned by the caller).
    if not dtype.isnative:
        array.byteswap(inplace=True)
    return array.view(dtype.newbyteorder("="))


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
