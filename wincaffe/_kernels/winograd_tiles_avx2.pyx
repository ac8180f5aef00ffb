# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
# distutils: extra_compile_args = -fno-tree-loop-distribute-patterns
"""winograd_tiles compiled for AVX2 + FMA (x86-64-v3) by GCC's ``#pragma GCC target``
(other compilers and CPUs get the baseline code, so the module builds everywhere).
Import it only through :mod:`wincaffe._kernels.winograd`, which checks the CPU first."""

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
    #pragma GCC target("avx2,fma")
    #endif
    """

include "winograd_tiles_impl.pxi"
