# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
# distutils: extra_compile_args = -fno-tree-loop-distribute-patterns
"""Winograd tiling kernels: im2col at stride m fused with the separable tile
transform, and its exact adjoint (transform fused with the scatter-add / crop).

Use them through :mod:`wincaffe._kernels.winograd`, which picks this baseline
build or ``winograd_tiles_avx2`` (the same code compiled with -mavx2 -mfma).

Both kernels take a small matrix ``L`` of shape (α, s) and work on stacks of
planes ``(N, P, h, w)``. Tile (ty, tx) of a plane is the s×s window whose
top-left corner is at (ty·m − pad, tx·m − pad); rows and columns outside the
plane read as zero (the zero padding). With T = th·tw tiles per image, tiles
are stored in column (ty·N + n)·tw + tx of the GEMM layout (any fixed order
works for the GEMMs; this one keeps the tiles of one tile row of all images
contiguous, so that small images still give long vector loops):

gather_transform (forward direction)
    out[i·α + l, p, col(n, ty, tx)] = Σ_{j,j'} L[i, j] · tile[j, j'] · L[l, j']
    i.e. out_tile = L · tile · Lᵀ, out of shape (α², P, N·T), the layout of the
    batched GEMMs (one GEMM per transform point ξ = i·α + l, batch and tiles
    folded into the GEMM's N dimension).
      * input transform V = Bᵀ d B (the gradient note, eq. 1): L = Bᵀ (α, α), pad = conv pad
      * output-gradient transform dM = A dY Aᵀ:      L = A (α, m),  pad = 0

transform_scatter (the adjoint)
    plane[ty·m − pad + j, tx·m − pad + j'] = bias[p] + Σ_tiles Σ_{i,l} L[i, j] · in[i·α + l, p, col] · L[l, j']
    i.e. tile = Lᵀ · in_tile · L, summed where tiles overlap, cropped to the plane.
      * output transform Y = Aᵀ M A (+ bias):        L = A (α, m),  pad = 0
      * input gradient dX = Σ_tiles B dV Bᵀ:          L = Bᵀ (α, α), pad = conv pad

Both transforms are done as two separable 1-D passes (never an α⁴ Kronecker
product), generic in α and s: the non-zeros of L are precomputed as C arrays
and the passes loop over them (Bᵀ of F(4,3) has 22 non-zeros out of 36), up to
four terms per sweep. Along rows, each input row is processed once: copied
into a zero-padded buffer and split into its m stride-m phases (an 8×8 AVX2
register transpose in the AVX2 build, the only non-unit-stride step), so that
every loop afterwards runs with unit stride; rows shared by vertically
overlapping tiles are copied, not recomputed. Along columns, one sweep covers
all tiles of a work item at once. Work items are (chunk of channels, chunk of
images), sized so that the item's scratch (S·α·T per plane) stays in L2;
several channels per item only when the rows are short (N·tw < 32). Items run
in parallel (OpenMP ``prange``), each thread with its own scratch, allocated
once per call.
"""
include "winograd_tiles_impl.pxi"
