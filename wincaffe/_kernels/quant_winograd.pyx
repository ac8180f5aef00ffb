# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""The integer element-wise stage of quantized Winograd convolution (Chikin &
Kryzhanovskiy, eq. A.1): for each transform point ξ, M[ξ] = Ũ[ξ] @ Ṽ[ξ] with b-bit
integers Ũ (K, C) and Ṽ (C, N·T), accumulated exactly in int32 over the channels.

Use it through :mod:`wincaffe._kernels.quant`, which picks the build for this CPU:
``quant_winograd_vnni`` (AVX-512 VNNI: ``vpdpbusd``, four u8 × s8 products per 32-bit
lane; Ṽ is stored as u8 = Ṽ + 128 and the offset is taken back out exactly with
128 · Σ_c Ũ), ``quant_winograd_avx2`` (``vpmaddwd`` on int16 pairs, exact, no
saturation) or this portable baseline (the int16-pair layout in plain C).

Kernels: :func:`pack_inputs` (quantize and interleave Ṽ in one pass, SIMD),
:func:`products` (register-blocked ROWS × COLS output tiles, cache blocks of
QW_CHUNK columns, OpenMP over (ξ, column block)), :func:`row_absmax` (ranges for
calibration and dynamic scales). Packing of Ũ (small, once per weight change) is
NumPy, in :mod:`wincaffe._kernels.quant`.
"""
include "quant_winograd_impl.pxi"
