"""Unpickling restricted to plain NumPy arrays.

A pickle can name any importable callable, so unpickling untrusted bytes is
code execution.  :class:`ArrayUnpickler` resolves only the globals NumPy needs
to rebuild arrays and scalars (under both the NumPy 1 ``numpy.core`` and the
NumPy 2 ``numpy._core`` module names), refuses object dtypes, and raises
:class:`DataError` for anything else.  Callers should still verify a checksum
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


def _dtype(*args, **kwargs):
    """``numpy.dtype`` that refuses object dtypes (they could carry arbitrary objects)."""
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise DataError(f"pickle asks for object dtype {dt!r}, which is not allowed")
    return dt


def _allowed():
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype}
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        table[(f"{mod}.multiarray", "scalar")] = _multiarray.scalar
        table[(f"{mod}.numeric", "_frombuffer")] = _numeric._frombuffer  # protocol-5 arrays
    return table


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
        return ArrayUnpickler(file, name=name, encoding="latin1").load()
    except DataError:
        raise
    except Exception as e:  # truncated or malformed pickle: many exception types
        raise DataError(f"{name}: cannot unpickle: {type(e).__name__}: {e}") from e
