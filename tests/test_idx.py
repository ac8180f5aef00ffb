"""The IDX reader/writer on small synthetic files: round trips and every rejection."""
import gzip
import struct

import numpy as np
import pytest

from wincaffe.data.idx import decode_idx, encode_idx, read_idx, write_idx
from wincaffe.errors import DataError

DTYPES = ["u1", "i1", "i2", "i4", "f4", "f8"]


def _example(dtype, shape=(3, 4, 5)):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * 50).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    a = _example(dtype)
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype.newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable and b.flags.c_contiguous


@pytest.mark.parametrize("shape", [(7,), (2, 3), (1, 1, 1, 1), (0, 28, 28)])
def test_round_trip_shapes(tmp_path, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    write_idx(tmp_path / "a", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)


def test_mnist_style_headers_are_standard():
    images = np.zeros((2, 28, 28), np.uint8)
    labels = np.array([7, 3], np.uint8)
    assert encode_idx(images)[:16] == struct.pack(">IIII", 0x803, 2, 28, 28)
    assert encode_idx(labels) == struct.pack(">II", 0x801, 2) + b"\x07\x03"


def test_payload_is_big_endian():
    data = encode_idx(np.array([1, 256], dtype="<i4"))
    assert data == struct.pack(">BBBBI", 0, 0, 0x0C, 1, 2) + struct.pack(">ii", 1, 256)
    assert decode_idx(data).tolist() == [1, 256]


def test_gzip_detected_by_magic_without_suffix(tmp_path):
    a = _example("f4")
    (tmp_path / "a").write_bytes(gzip.compress(encode_idx(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)


def _write(tmp_path, data, name="bad-idx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _rejects(path, *words):
    with pytest.raises(DataError) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_rejects_bad_magic(tmp_path):
    data = bytearray(encode_idx(np.zeros((2, 2), np.uint8)))
    data[0] = 0x12
    _rejects(_write(tmp_path, data), "magic")


def test_rejects_text_file(tmp_path):
    _rejects(_write(tmp_path, b"hello, world\n"), "magic")


def test_rejects_unsupported_dtype_code(tmp_path):
    data = bytearray(encode_idx(np.zeros((2, 2), np.uint8)))
    data[2] = 0x0A
    _rejects(_write(tmp_path, data), "unsupported", "0x0A")


def test_rejects_zero_dims(tmp_path):
    _rejects(_write(tmp_path, b"\x00\x00\x08\x00"), "0 dimensions")


@pytest.mark.parametrize("n", [0, 3])
def test_rejects_truncated_magic(tmp_path, n):
    _rejects(_write(tmp_path, b"\x00\x00\x08\x03"[:n]), "truncated")


def test_rejects_truncated_dims(tmp_path):
    data = encode_idx(np.zeros((2, 28, 28), np.uint8))[:10]
    _rejects(_write(tmp_path, data), "truncated", "header")


def test_rejects_truncated_payload(tmp_path):
    data = encode_idx(np.zeros((2, 28, 28), np.uint8))[:-1]
    _rejects(_write(tmp_path, data), "truncated", "1568", "1567")


def test_rejects_truncated_payload_multibyte(tmp_path):
    data = encode_idx(np.zeros(4, np.float64))[:-3]
    _rejects(_write(tmp_path, data), "truncated")


def test_rejects_header_dims_vs_payload_mismatch(tmp_path):
    data = bytearray(encode_idx(np.zeros((4, 5), np.uint8)))
    data[7] = 2  # header says 2 rows, payload holds 4
    _rejects(_write(tmp_path, data), "size mismatch", "extra")


def test_rejects_huge_dims_without_allocating(tmp_path):
    data = struct.pack(">BBBBIII", 0, 0, 0x0E, 3, 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1) + b"\0" * 8
    _rejects(_write(tmp_path, data), "truncated")


def test_rejects_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(encode_idx(np.arange(1000, dtype=np.int32))))
    data[20:30] = b"\xff" * 10
    _rejects(_write(tmp_path, data, "bad-idx.gz"), "gzip")


def test_rejects_truncated_gzip(tmp_path):
    data = gzip.compress(encode_idx(np.arange(1000, dtype=np.int32)))
    _rejects(_write(tmp_path, data[: len(data) // 2], "bad-idx.gz"), "gzip")


def test_truncated_payload_inside_valid_gzip(tmp_path):
    data = gzip.compress(encode_idx(np.zeros((3, 3), np.uint8))[:-2])
    _rejects(_write(tmp_path, data, "bad-idx.gz"), "truncated")


def test_missing_file(tmp_path):
    _rejects(tmp_path / "nope-idx", "cannot read")


@pytest.mark.parametrize("a", [np.zeros(3, np.int64), np.zeros(3, bool), np.array([None]),
                               np.zeros(3, np.uint16), np.float32(1.0)])
def test_write_rejects_unsupported(tmp_path, a):
    with pytest.raises(DataError, match="cannot write IDX"):
        write_idx(tmp_path / "a", a)
    assert not list(tmp_path.iterdir())


def test_write_is_atomic_no_temp_left(tmp_path):
    write_idx(tmp_path / "a-idx", np.zeros(5, np.uint8))
    write_idx(tmp_path / "a-idx", np.ones(6, np.uint8))  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["a-idx"]
    assert read_idx(tmp_path / "a-idx").tolist() == [1] * 6
