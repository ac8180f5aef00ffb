# cython: language_level=3
"""pooling compiled for AVX2 (x86-64-v3) by GCC's ``#pragma GCC target`` (other compilers
get the baseline code; ``SIMD`` says which). Import it through :mod:`wincaffe._kernels.pool`."""

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
    #pragma GCC target("avx2,fma")
    #endif
    """

include "pooling_impl.pxi"
