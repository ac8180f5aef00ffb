# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Sparse × dense products for pruned transform-domain weights: for P matrices at once (one
per Winograd tile position or FFT frequency), in one CSR of P·R rows.

    spmm          out[p] = S[p] @ X[p]            (S sparse (R, Q), X (Q, n) dense rows)
    sampled_dot   vals = (A[p] @ B[p]ᵀ) at S's pattern only (the weight gradient under a mask)

Use them through :mod:`wincaffe._kernels.sparse`, which picks this baseline build or
``sparse_products_avx2`` / ``sparse_products_avx512`` (the same code for those targets).
The inner loop adds u · X[c, j0:j0+128] into eight vector accumulators per nonzero u = S[r, c]
(GCC vector extensions: 8 zmm, 16 ymm or 32 xmm registers' worth), so the cost is one
pass over a 128-column strip of X per nonzero: work ∝ density, no index arithmetic per
multiply; cache blocks of 512 columns keep the strips of X in L2 across the R rows.
"""
include "sparse_products_impl.pxi"
