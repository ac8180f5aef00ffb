"""The on-disk data cache: where it lives, and how files get into it safely.

Files enter the cache only through :func:`write_verified`: the bytes go to a
hidden temp file in the destination folder (a unique name, so two processes
fetching at once never share one), are checked, and are then moved into place
with :func:`os.replace` (atomic on one file system; :mod:`wincaffe.fileio`).  A reader
therefore sees either no file or a whole one, never a half-written one.
"""
import hashlib
from pathlib import Path

from wincaffe import fileio
from wincaffe.errors import DataError, SnapshotError

_ENV = "WINCAFFE_DATA"

# (path, size, mtime_ns) -> md5 hex, for files already hashed by this process.
_md5_memo = {}


def data_dir():
    """The cache folder: ``$WINCAFFE_DATA`` if set, else ``~/.cache/wincaffe`` (a
    DataError if that path is a file); see :func:`wincaffe.fileio.cache_dir`."""
    return Path(fileio.cache_dir())


def md5_bytes(data):
    """MD5 hex digest of a bytes-like object."""
    return hashlib.md5(data).hexdigest()


def md5_file(path):
    """MD5 hex digest of the file at ``path``; remembered per (size, mtime) in-process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _md5_memo.get(key)
    if digest is None:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = _md5_memo[key] = h.hexdigest()
    return digest


def is_verified(path, md5):
    """True if ``path`` exists and its MD5 is ``md5``."""
    try:
        return md5_file(path) == md5
    except FileNotFoundError:
        return False
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e


def write_verified(path, data, md5=None, what=None):
    """Atomically write ``data`` (bytes) to ``path``, checking its MD5 first.

    With ``md5`` given, a mismatch raises :class:`DataError` and nothing is
    written; the written temp file is checked again before it is renamed into
    place (:func:`wincaffe.fileio.atomic_write`). ``what`` names the origin of the
    bytes in error messages.
    """
    path = Path(path)
    if md5 is not None:
        got = md5_bytes(data)
        if got != md5:
            raise DataError(f"{path.name}{f' (from {what})' if what else ''}: MD5 mismatch: "
                            f"expected {md5}, got {got} ({len(data)} bytes); not written to {path.parent}")

    def check(tmp, _):
        if md5 is not None and md5_file(tmp) != md5:
            raise DataError(f"{tmp}: MD5 changed while writing (disk full or failing?)")
    try:
        fileio.atomic_write(str(path), lambda fh: fh.write(data), check=check)
    except SnapshotError as e:
        raise DataError(f"{path}: {e}") from None
    return path


def remove_stale_temps(folder, max_age=fileio.STALE_SECONDS):
    """Delete temp files in ``folder`` left over by crashed writers (older than ``max_age`` s)."""
    fileio.remove_stale_temps(folder, max_age)
