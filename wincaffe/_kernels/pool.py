"""The pooling kernels for this CPU (:mod:`wincaffe._kernels.pooling`): the ``avx2`` or the
``baseline`` build, the best chosen at import (``WINCAFFE_POOL_PATH`` forces one;
``kernels(path)`` gives a given build, as the tests do). The builds differ only in speed:
the AVX2 one runs LeNet's case (float32 2x2 windows at stride 2 tiling planes of a width
W % 8 == 0) eight windows at a time; every result is the same, bit for bit.

    max_pool_forward(x, y, argmax, kh, kw, sh, sw, pad)
    max_pool_backward(dy, argmax, dx, kh, kw, sh, sw, pad)
    ave_pool_forward(x, y, kh, kw, sh, sw, pad)
    ave_pool_backward(dy, dx, kh, kw, sh, sw, pad)
    vectorised(float32, H, W, oh, ow, kh, kw, sh, sw, pad)   whether the windows run eight at a time
"""
from wincaffe._kernels.dispatch import Family

_FAMILY = Family("WINCAFFE_POOL_PATH", [
    ("avx2", "pooling_avx2", ("AVX2",)),
    ("baseline", "pooling", ()),
])
PATHS = _FAMILY.paths
available_paths = _FAMILY.available
kernels = _FAMILY.kernels

_mod = kernels()
KERNELS = _mod.SIMD
max_pool_forward = _mod.max_pool_forward
max_pool_backward = _mod.max_pool_backward
ave_pool_forward = _mod.ave_pool_forward
ave_pool_backward = _mod.ave_pool_backward
vectorised = _mod.vectorised

__all__ = ["PATHS", "available_paths", "kernels", "KERNELS", "max_pool_forward",
           "max_pool_backward", "ave_pool_forward", "ave_pool_backward", "vectorised"]
