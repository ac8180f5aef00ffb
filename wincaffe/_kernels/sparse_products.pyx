# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Sparse × dense products for pruned transform-domain weights: for P matrices at once (one
per Winograd tile position or FFT frequency), in one CSR of P·R rows.

    spmm          out[p] = S[p] @ X[p]            (S sparse (R, Q), X (Q, n) dense rows)
    sampled_dot   vals = (A[p] @ B[p]ᵀ) at S's pattern only (the weight gradient under a mask)

Use them through :mod:`wincaffe._kernels.sparse`, which picks this baseline build or
``sparse_products_avx2`` / ``sparse_products_avx512`` (the same code for those targets).
Each work item (one matrix p, a block of SP_CHUNK columns) first copies its columns of X
into contiguous strips of two vectors (rows of X a power of two apart would otherwise
share a few L1 sets); each strip stays in L1 while the rows of S pass over it, four rows
at a time (eight independent FMA chains; per nonzero u = S[r, c] one broadcast and two
loads). Work ∝ density plus one pass over X; fully pruned matrices only zero their
output. The CSR is checked first (rowptr from 0, non-decreasing; columns in range).
"""
include "sparse_products_impl.pxi"
