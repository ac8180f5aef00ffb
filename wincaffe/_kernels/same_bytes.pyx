# cython: language_level=3
"""``same_bytes(a, b)``: whether two C-contiguous arrays hold the same bytes, without the
temporary of ``np.array_equal`` (a bool array of their size). Equal bytes mean identical
contents, so a caller checking "unchanged since last time" has nothing to redo (NaN
included, which ``==`` calls unequal). Unequal bytes can still be equal values (+0 and
-0, or bools stored as other nonzero bytes): then the caller merely redoes its work."""
import numpy as np
from libc.string cimport memcmp


def same_bytes(a, b):
    """True if ``a`` and ``b`` have the same shape, dtype and bytes; False if shape or dtype
    differ; ValueError if they agree but either is not C-contiguous."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not (a.flags.c_contiguous and b.flags.c_contiguous):
        raise ValueError("same_bytes: both arrays must be C-contiguous")
    if a.nbytes == 0:
        return True
    cdef const unsigned char[::1] x = a.reshape(-1).view(np.uint8)
    cdef const unsigned char[::1] y = b.reshape(-1).view(np.uint8)
    cdef int r
    with nogil:
        r = memcmp(&x[0], &y[0], x.shape[0])
    return r == 0
