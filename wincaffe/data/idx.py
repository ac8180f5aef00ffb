"""The IDX file format (LeCun's MNIST format), plain or gzip-compressed.

Layout, all big-endian: two zero bytes, a dtype code byte, a byte ``ndim``,
then ``ndim`` uint32 dimensions, then the C-order payload.  Dtype codes:
0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
So MNIST images have magic 0x00000803 (uint8, 3 dims N,28,28) and labels
0x00000801 (uint8, 1 dim N).  Decoding uses :func:`numpy.frombuffer` only.
"""
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from wincaffe.data.cache import write_verified
from wincaffe.errors import DataError

CODES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in CODES.items()}
_GZ_MAGIC = b"\x1f\x8b"


def decode_idx(data, name="<idx>"):
    """Decode IDX bytes into a native-endian array of the header's shape.

    ``name`` is used in error messages.  Raises :class:`DataError` on a bad
    magic number, an unsupported dtype code, a truncated header or payload, or
    trailing bytes after the payload.
    """
    data = memoryview(data).cast("B")
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX file: {len(data)} bytes, the header alone needs at least 4")
    zero, code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0:
        raise DataError(f"{name}: bad IDX magic number 0x{bytes(data[:4]).hex()}: "
                        "must start with two zero bytes (is it an IDX file?)")
    if code not in CODES:
        known = ", ".join(f"0x{c:02X}" for c in CODES)
        raise DataError(f"{name}: unsupported IDX dtype code 0x{code:02X} (magic 0x{bytes(data[:4]).hex()}); "
                        f"known codes: {known}")
    if ndim == 0:
        raise DataError(f"{name}: bad IDX header: 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                        f"file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = CODES[code]
    need = dtype.itemsize
    for d in dims:
        need *= d
    have = len(data) - header
    if have < need:
        raise DataError(f"{name}: truncated IDX file: header says shape {dims} of {dtype.name} "
                        f"= {need} payload bytes, found only {have}")
    if have > need:
        raise DataError(f"{name}: IDX size mismatch: header says shape {dims} of {dtype.name} "
                        f"= {need} payload bytes, found {have} ({have - need} extra)")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def encode_idx(array):
    """The IDX bytes of ``array`` (dtype one of uint8, int8, int16, int32, float32, float64)."""
    arr = np.asarray(array)
    dt = arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype
    code = _CODE_OF.get(dt)
    if code is None:
        raise DataError(f"cannot write IDX: unsupported dtype {arr.dtype} "
                        "(use uint8, int8, int16, int32, float32 or float64)")
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"cannot write IDX: need 1..255 dimensions, got {arr.ndim}")
    if any(d >= 2 ** 32 for d in arr.shape):
        raise DataError(f"cannot write IDX: dimension too large in shape {arr.shape}")
    header = struct.pack(f">BBBB{arr.ndim}I", 0, 0, code, arr.ndim, *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=CODES[code]).tobytes()


def _is_gz(path, head):
    return str(path).endswith(".gz") or head[:2] == _GZ_MAGIC


def read_idx(path):
    """Read an IDX file (``.gz`` or gzip magic → decompressed) into a NumPy array.

    Returns a writable, native-endian array whose shape is the header's dims; raises
    :class:`DataError` naming ``path`` for anything malformed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = bytearray(f.seek(0, 2))
            f.seek(0)
            got = f.readinto(raw)
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file: {e.strerror or e}") from e
    del raw[got:]
    if _is_gz(path, raw):
        try:
            raw = bytearray(gzip.decompress(raw))
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data: {e}") from e
    return decode_idx(raw, name=str(path))


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``), atomically."""
    data = encode_idx(array)
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return write_verified(path, data)
