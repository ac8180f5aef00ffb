"""Files written whole or not at all, and the cache folder.

Every file wincaffe writes (weights, solver states, reports, plots, the MNIST cache,
FFTW wisdom) goes through :func:`atomic_write_all`: the bytes go to a hidden temp file
beside the target (``.tmp-*``), are fsynced, and only then renamed into place, so a
reader sees the old file or the new one, never half of one. Temp files of killed runs
are removed once they are an hour old (:func:`remove_stale_temps`).
"""
import os
import tempfile
import time

from wincaffe.errors import DataError, SnapshotError

TMP_PREFIX = ".tmp-"
STALE_SECONDS = 3600


def cache_dir():
    """The cache folder (MNIST, FFTW wisdom): ``$WINCAFFE_DATA`` if set, else
    ``~/.cache/wincaffe``. Not created here; a path that exists but is no folder is a
    DataError."""
    env = os.environ.get("WINCAFFE_DATA")
    path = os.path.expanduser(env) if env else os.path.join(os.path.expanduser("~"), ".cache", "wincaffe")
    if os.path.exists(path) and not os.path.isdir(path):
        where = "WINCAFFE_DATA" if env else "the cache folder"
        raise DataError(f"{where} {path} is not a folder (set WINCAFFE_DATA to a folder for the data cache)")
    return path


def remove_stale_temps(folder, max_age=STALE_SECONDS):
    """Delete our temp files (``.tmp-*`` and ``.*.tmp-*``) in ``folder`` older than
    ``max_age`` seconds: left by killed runs, never by a live writer."""
    try:
        entries = os.scandir(folder)
    except OSError:
        return
    now = time.time()
    with entries:
        for e in entries:
            if e.name.startswith(".") and TMP_PREFIX in e.name and e.is_file(follow_symlinks=False):
                try:
                    if now - e.stat().st_mtime > max_age:
                        os.unlink(e.path)
                except OSError:
                    pass


def _write_temp(path, write, binary=True):
    """Write ``path``'s future content through ``write(file)`` into a fsynced temp file
    beside it (an ordinary file's permissions); returns the temp path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1], dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a snapshot is an ordinary file
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_all(items, *, binary=True, check=None):
    """Create several files, all or none: ``items`` [(path, write)]. Every file is
    written to a temp file first; only when all are complete are they renamed into
    place (``os.replace``, atomic per file), so a full disk or a crash while writing
    leaves the earlier versions, never a new file without its partner. An OSError
    becomes one SnapshotError naming the path. ``check(tmp, path)`` may inspect each
    written temp file and raise to abort."""
    temps = []
    try:
        for path, write in items:
            try:
                temps.append((_write_temp(path, write, binary), path))
            except OSError as exc:
                raise SnapshotError(f"cannot write {path}: {exc.strerror or exc}") from None
        if check is not None:
            for tmp, path in temps:
                check(tmp, path)
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write(path, write, *, binary=True, check=None):
    """Create ``path`` through ``write(file)`` atomically: a temp file in the same
    folder, fsync, then ``os.replace``; on any failure nothing is left behind."""
    atomic_write_all([(path, write)], binary=binary, check=check)


def save_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def ensure_writable_dir(folder, option="--output"):
    """Create ``folder`` if needed and prove it writable now, before any long work;
    else one SnapshotError naming ``option`` and the folder."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX + "write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SnapshotError(f"{option}: cannot write to {folder}: {exc.strerror or exc}") from None
    remove_stale_temps(folder)


