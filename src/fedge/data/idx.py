"""Reader and writer for the IDX format of MNIST, Fashion-MNIST and EMNIST (LeCun et al. 1998).

An IDX file is a 4-byte magic number — two zero bytes, a type code, the number of dimensions — followed by one
big-endian int32 per dimension and then the values, big-endian, row-major. The canonical files are distributed
gzip-compressed; `read_idx` detects gzip by its magic bytes, so `name` and `name.gz` both load. Every structural
problem (bad magic, unknown type, truncated or over-long data) is a `DataError` naming the file, never a silent
reshape.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from fedge.errors import DataError

# type code -> big-endian numpy dtype (the IDX specification's table)
_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from err
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt gzip stream ({err})") from err
    return raw


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (gzip-compressed or not) into a tensor of its stored type (uint8 for images and labels)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise DataError(f"{path}: IDX header has a negative dimension {shape}")
    dtype = _TYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap around for absurd headers
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file holds "
                        f"{len(data) - header} bytes of data")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, array: np.ndarray | torch.Tensor, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file; gzip-compressed when `compress` (default: when the name ends in `.gz`).

    Used by the tests to build small files in the real format, and handy for exporting subsets.
    """
    path = Path(path)
    arr = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    code = _CODES[native]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=_TYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
