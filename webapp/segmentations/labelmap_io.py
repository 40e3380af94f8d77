"""The labelmap transfer format of the REST API: a NumPy ``.npy`` file, optionally gzip-compressed.

The array is ``[k, j, i]`` (one layer) or ``[layer, k, j, i]`` on the series' voxel grid (docs/volumes.md),
``uint8`` or ``uint16``, values are segment numbers (0 = background). ``.npy`` carries its own shape and type,
numpy reads it directly, and its header is a short text that a browser writes and parses in a few lines.
"""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
ALLOWED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"))


class LabelmapFormatError(ValueError):
    pass


def read_labelmap(data: bytes, shape: tuple[int, int, int], *, max_bytes: int) -> np.ndarray:
    """``[layer, k, j, i]`` from an uploaded ``.npy`` (gzip or not), checked against the grid ``shape``."""
    if data[:2] == GZIP_MAGIC:
        try:
            # Bounded: a small upload must not inflate without limit.
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            data = inflater.decompress(data, max_bytes + 1)
        except zlib.error as exc:
            raise LabelmapFormatError(f"the gzip data is corrupt: {exc}") from exc
        if len(data) > max_bytes:
            raise LabelmapFormatError(f"the labelmap expands to more than {max_bytes} bytes")
    if not data.startswith(NPY_MAGIC):
        raise LabelmapFormatError("not a NumPy .npy file (optionally gzip-compressed)")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LabelmapFormatError(f"the .npy file cannot be read: {exc}") from exc
    if array.dtype.newbyteorder("=") not in ALLOWED_DTYPES:
        raise LabelmapFormatError(f"the labelmap must be uint8 or uint16, not {array.dtype}")
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(shape) or array.shape[0] == 0:
        raise LabelmapFormatError(
            f"the labelmap has shape {list(array.shape)}; the series' grid needs [k, j, i] = {list(shape)} "
            "or [layers, k, j, i]"
        )
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def write_labelmap(layers: np.ndarray, *, compress: bool = True) -> bytes:
    """``.npy`` bytes of ``[layer, k, j, i]``, gzip-compressed unless ``compress`` is false."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(layers), allow_pickle=False)
    raw = buffer.getvalue()
    return gzip.compress(raw, compresslevel=1) if compress else raw
