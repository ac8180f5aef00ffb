"""Unpickling restricted to plain NumPy arrays.

A pickle can name any importable callable, so unpickling untrusted bytes is
code execution.  :class:`ArrayUnpickler` resolves only the globals NumPy needs
to rebuild arrays and scalars (under both the NumPy 1 ``numpy.core`` and the
NumPy 2 ``numpy._core`` module names), refuses object dtypes on every route that
makes an array (the dtype constructor, the dtype argument of each array or scalar
constructor, their results, and everything in the final result), and raises
:class:`DataError`, naming the file, for anything else.  Callers should still verify a checksum
of the bytes *before* unpickling them.
"""
import io
import pickle

import numpy as np

from wincaffe.errors import DataError

try:  # NumPy >= 2
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric


class _Refused(Exception):
    """An object dtype somewhere in the pickle (turned into a DataError naming the file)."""


def _check_dtype(dt):
    dt = np.dtype(dt)
    if dt.hasobject:
        raise _Refused(f"pickle asks for object dtype {dt!r}, which is not allowed")
    return dt


def _dtype(*args, **kwargs):
    """``numpy.dtype`` that refuses object dtypes (they could carry arbitrary objects)."""
    return _check_dtype(np.dtype(*args, **kwargs))


def _checked(make, dtype_arg):
    """``make`` (an array or scalar constructor) with its dtype argument (position
    ``dtype_arg``) and its result both checked: every route that creates an array
    passes the same test, whatever the pickle hands it (a dtype, a string such as
    'O', a type)."""
    def build(*args, **kwargs):
        if len(args) > dtype_arg:
            _check_dtype(args[dtype_arg])
        out = make(*args, **kwargs)
        if isinstance(out, (np.ndarray, np.generic)):
            _check_dtype(out.dtype)
        return out
    return build


class _CheckedArray:
    """Stands for ``numpy.ndarray`` in a pickle: the class _reconstruct is called with."""


def _reconstruct(cls, shape, dtype):
    if cls is not _CheckedArray and cls is not np.ndarray:
        raise _Refused(f"pickle reconstructs {cls!r}, not a NumPy array")
    return _checked(_multiarray._reconstruct, 2)(np.ndarray, shape, dtype)


def _allowed():
    table = {("numpy", "ndarray"): _CheckedArray, ("numpy", "dtype"): _dtype}
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{mod}.multiarray", "scalar")] = _checked(_multiarray.scalar, 0)
        table[(f"{mod}.numeric", "_frombuffer")] = _checked(_numeric._frombuffer, 1)  # protocol-5 arrays
    return table


def _walk_check(obj, depth=0):
    """After loading: no array anywhere in the result holds objects (BUILD can set an
    array's dtype after _reconstruct made it)."""
    if depth > 50:
        raise _Refused("pickle nests containers too deeply")
    if isinstance(obj, (np.ndarray, np.generic)):
        _check_dtype(obj.dtype)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _walk_check(x, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk_check(k, depth + 1)
            _walk_check(v, depth + 1)


ALLOWED = _allowed()


class ArrayUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` admits only :data:`ALLOWED`."""

    def __init__(self, file, *, name="<pickle>", **kwargs):
        super().__init__(file, **kwargs)
        self.name = name

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"{self.name}: pickle refers to {module}.{name}, which is not allowed "
                            "(only NumPy array reconstruction is)") from None

    def persistent_load(self, pid):
        raise DataError(f"{self.name}: pickle uses persistent IDs, which are not allowed")


def load_arrays(file, name="<pickle>"):
    """Unpickle NumPy arrays (in tuples/lists/dicts) from a binary file object or bytes.

    Python-2 era pickles are read with ``encoding='latin1'`` (what NumPy needs
    for their byte strings).  Malformed data raises :class:`DataError`.
    """
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(file)
    try:
        obj = ArrayUnpickler(file, name=name, encoding="latin1").load()
        _walk_check(obj)
        return obj
    except DataError:
        raise
    except _Refused as e:
        raise DataError(f"{name}: {e}") from None
    except Exception as e:  # truncated or malformed pickle: many exception types
        raise DataError(f"{name}: cannot unpickle: {type(e).__name__}: {e}") from e
