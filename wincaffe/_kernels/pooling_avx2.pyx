# cython: language_level=3
"""pooling compiled for AVX2 by GCC's ``#pragma GCC target`` (other compilers get the baseline
code; ``SIMD`` says which). Import it through :mod:`wincaffe._kernels.pool`.

AVX2 without FMA, on purpose: with FMA allowed, GCC contracts AVE's ``0 + dy / 4`` (as
``0 + dy * 0.25``) into one fused multiply-add, which keeps the sign of a product that
underflows to zero (-0 where Caffe's rounded ``dy / 4`` then ``0 + -0`` gives +0), so this
build would no longer give the baseline's bits (tests/test_pool_kernels.py checks it)."""

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
    #pragma GCC target("avx2")
    #endif
    """

include "pooling_impl.pxi"
