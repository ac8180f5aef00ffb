# cython: language_level=3
"""Max and average pooling over (N, C, H, W), parallel over the N*C planes.

Output size follows Caffe: oh = ceil((H + 2*pad - k) / s) + 1, clipped so the
last window starts inside the (padded) input. MAX records the flat index
(y*W + x) of the winner in each window for the backward pass.

Use the kernels through :mod:`wincaffe._kernels.pool`, which picks this baseline build
or ``pooling_avx2`` (the same code compiled for AVX2, where float32 2x2 windows at
stride 2 tiling planes of a width W % 8 == 0, LeNet's case, run as shuffles over eight
windows at a time; ``SIMD`` names the build). Every build gives the same bits.
"""
include "pooling_impl.pxi"
