"""IDX file reader (the MNIST format), with content checksums."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch

from bench.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: str | Path) -> bytes:
    """Raw (decompressed if .gz) bytes of a file, with a one-line error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} is missing; reinstall bench or restore it from git (see docs/data.md)")
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"data file {path} is corrupt ({e}); restore it from git (see docs/data.md)") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> torch.Tensor:
    """Decode IDX bytes into a tensor (uint8 stays uint8)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{source} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated (header)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{source} is truncated or padded: {len(data) - header} bytes of data, expected {expected}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))


def read_idx(path: str | Path, md5: str | None = None) -> torch.Tensor:
    """Read an IDX (.gz) file; if ``md5`` is given, check it against the decompressed content."""
    data = read_bytes(path)
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise DataError(f"data file {path} is corrupt (md5 of its content does not match); restore it from git")
    return parse_idx(data, str(path))
