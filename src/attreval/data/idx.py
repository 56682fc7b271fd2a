"""Reader (and a small writer, for tests and fixtures) of IDX files, the MNIST / Fashion-MNIST format.

An IDX file is a big-endian header ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
array in C order. Files ending in ``.gz`` are read through gzip.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx"]

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"expected an IDX file, got missing path {str(path)!r}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"expected a readable IDX file, got {str(path)!r} ({error})") from error


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, plain or gzipped.

    Args:
        path: file path; a ``.gz`` suffix means gzip-compressed.

    Returns:
        Array with the file's shape (e.g. ``(N, 28, 28)`` uint8 for images, ``(N,)`` uint8 for labels), in native
        byte order.

    Raises:
        ValueError: missing file, bad magic number, unknown type code, or a payload whose size does not match the
            header (e.g. a truncated download).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"expected IDX magic 00 00 <type> <ndim>, got {raw[:4].hex() or 'empty file'} in {path}")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise ValueError(f"expected an IDX type code in {sorted(_DTYPES)}, got {code:#04x} in {path}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"expected a {header}-byte IDX header, got {len(raw)} bytes in {path}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"expected {expected} data bytes for shape {shape}, got {len(raw) - header} in {path} (truncated?)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped if ``path`` ends in ``.gz``).

    Args:
        path: destination file.
        array: array of dtype uint8, int8, int16, int32, float32 or float64, any shape.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.idx"
    >>> write_idx(target, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(target).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"expected dtype in {sorted(str(d) for d in _CODES)}, got {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_DTYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
