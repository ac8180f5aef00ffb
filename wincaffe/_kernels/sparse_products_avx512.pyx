# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""sparse_products compiled for AVX-512 F + FMA by GCC's ``#pragma GCC target`` (other compilers
get the baseline code; ``SIMD`` says which). Import it through :mod:`wincaffe._kernels.sparse`."""

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
    #pragma GCC target("avx2,fma,avx512f")
    #endif
    """

include "sparse_products_impl.pxi"
