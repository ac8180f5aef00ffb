# cython: language_level=3
"""im2col / col2im for convolution as one GEMM over the whole batch, and
``gemm_to_nchw``, which brings the GEMM's (K, N*P) result back to (N, K, P) with the bias.

Layout: ``col[(c*kh + i)*kw + j, n*P + y*ow + x] = x_pad[n, c, y*s + i*d, x*s + j*d]``
with P = oh*ow, i.e. ``col`` is (C*kh*kw, N*oh*ow), so that a convolution is
``W.reshape(K, C*kh*kw) @ col`` -> (K, N*oh*ow). Zero padding is implicit.

For one row r = (c, i, j) of ``col`` the valid output rows [ylo, yhi) and columns
[lo, hi) (those that read inside the image) are the same for every image, so each
(r, n) block is: zero borders, then ``yhi - ylo`` runs of ``hi - lo`` elements.
Output rows are short (8 in LeNet's conv2), so the runs are moved in fixed-size
chunks of 8 (memcpy of a constant size, which the compiler turns into vector moves
with no aliasing checks) instead of loops of unknown length.

Each row of ``col`` is written by one thread (prange over rows); ``col2im`` splits
the work by channel so no two threads add into the same input element, and every
input element receives its terms in the same order, kernel offset (i, j) ascending,
whatever the thread count (the sums are deterministic).
"""
cimport openmp
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from wincaffe.conv_geometry import conv_output_size

include "serial_below.pxi"

ctypedef fused real:
    float
    double


cdef inline Py_ssize_t _lo(Py_ssize_t x0, Py_ssize_t stride, Py_ssize_t W, Py_ssize_t ow) noexcept nogil:
    """First output index xx with x0 + xx*stride >= 0 (at most _hi)."""
    cdef Py_ssize_t a = 0, b = _hi(x0, stride, W, ow)
    if x0 < 0:
        a = (-x0 + stride - 1) // stride
    return a if a < b else b


cdef inline Py_ssize_t _hi(Py_ssize_t x0, Py_ssize_t stride, Py_ssize_t W, Py_ssize_t ow) noexcept nogil:
    """One past the last output index xx with x0 + xx*stride < W."""
    cdef Py_ssize_t b = 0
    if x0 < W:
        b = (W - 1 - x0) // stride + 1
    return b if b < ow else ow


def _check_geometry(Py_ssize_t H, Py_ssize_t W, int kh, int kw, int pad, int stride, int dilation,
                    int oh, int ow):
    """The kernels index with these numbers unchecked: reject any that do not describe a
    convolution of an (H, W) plane (a zero stride would divide by zero)."""
    if kh < 1 or kw < 1 or stride < 1 or dilation < 1 or pad < 0:
        raise ValueError(f"bad geometry: kernel {kh}x{kw}, stride {stride}, dilation {dilation}, pad {pad}")
    eh = conv_output_size(H, kh, pad, stride, dilation)
    ew = conv_output_size(W, kw, pad, stride, dilation)
    if (oh, ow) != (max(eh, 0), max(ew, 0)):
        raise ValueError(f"output {oh}x{ow} does not follow from a {H}x{W} input "
                         f"(kernel {kh}x{kw}, pad {pad}, stride {stride}, dilation {dilation}: {eh}x{ew})")


cdef inline void _copy_run(real* dst, const real* src, Py_ssize_t n) noexcept nogil:
    """dst[0:n] = src[0:n] (the arrays do not overlap). Runs of 4 or more are moved as
    chunks of 8 (or 4) of constant size; the last chunk may overlap the one before it,
    which rewrites the same values."""
    cdef Py_ssize_t q = 0
    if n >= 8:
        while q < n - 8:
            memcpy(dst + q, src + q, 8 * sizeof(real))
            q += 8
        memcpy(dst + n - 8, src + n - 8, 8 * sizeof(real))
    elif n >= 4:
        memcpy(dst, src, 4 * sizeof(real))
        memcpy(dst + n - 4, src + n - 4, 4 * sizeof(real))
    else:
        for q in range(n):
            dst[q] = src[q]


cdef inline void _gather_block(real* dst, const real* plane, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
                               Py_ssize_t y0, Py_ssize_t x0, Py_ssize_t stride, Py_ssize_t ylo,
                               Py_ssize_t yhi, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """One (oh, ow) block of ``col``: dst[yy, xx] = plane[y0 + yy*s, x0 + xx*s] inside the
    image, 0 outside (rows outside [ylo, yhi), columns outside [lo, hi))."""
    cdef Py_ssize_t yy, xx
    cdef const real* src
    cdef real* row
    if ylo > 0:
        memset(dst, 0, ylo * ow * sizeof(real))
    if stride == 1 and lo == 0 and hi == ow:        # the common case: whole rows inside
        for yy in range(ylo, yhi):
            _copy_run(dst + yy * ow, plane + (y0 + yy) * W + x0, ow)
    else:
        for yy in range(ylo, yhi):
            row = dst + yy * ow
            src = plane + (y0 + yy * stride) * W + x0
            for xx in range(lo):
                row[xx] = 0
            if stride == 1:
                _copy_run(row + lo, src + lo, hi - lo)
            else:
                for xx in range(lo, hi):
                    row[xx] = src[xx * stride]
            for xx in range(hi, ow):
                row[xx] = 0
    if yhi < oh:
        memset(dst + yhi * ow, 0, (oh - yhi) * ow * sizeof(real))


def im2col(const real[:, :, :, ::1] x not None, real[:, ::1] col not None, int kh, int kw,
           int pad, int stride, int dilation, int oh, int ow):
    """x (N, C, H, W) -> col (C*kh*kw, N*oh*ow)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t rows = C * kh * kw, P = oh * ow
    cdef Py_ssize_t r, c, i, j, n, x0, y0, lo, hi, ylo, yhi
    _check_geometry(H, W, kh, kw, pad, stride, dilation, oh, ow)
    if col.shape[0] != rows or col.shape[1] != N * P:
        raise ValueError(f"col has shape {(col.shape[0], col.shape[1])}, expected ({rows}, {N * P})")
    if N == 0 or rows == 0 or P == 0:
        return
    with nogil:
        for r in prange(rows, schedule="static"):
            c = r // (kh * kw)
            i = (r // kw) % kh
            j = r % kw
            y0 = i * dilation - pad
            x0 = j * dilation - pad
            ylo = _lo(y0, stride, H, oh)
            yhi = _hi(y0, stride, H, oh)
            lo = _lo(x0, stride, W, ow)
            hi = _hi(x0, stride, W, ow)
            for n in range(N):
                _gather_block(&col[r, n * P], &x[n, c, 0, 0], W, oh, ow, y0, x0, stride, ylo, yhi, lo, hi)


def col2im(const real[:, ::1] col not None, real[:, :, :, ::1] dx not None, int kh, int kw,
           int pad, int stride, int dilation, int oh, int ow):
    """The adjoint of im2col: dx (N, C, H, W) = scatter-add of col (C*kh*kw, N*oh*ow).
    ``dx`` is overwritten."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = oh * ow
    cdef Py_ssize_t r, c, i, j, n, yy, xx, iy, x0, lo, hi
    cdef const real* src
    cdef real* dst
    _check_geometry(H, W, kh, kw, pad, stride, dilation, oh, ow)
    if col.shape[0] != C * kh * kw or col.shape[1] != N * P:
        raise ValueError(f"col has shape {(col.shape[0], col.shape[1])}, expected ({C * kh * kw}, {N * P})")
    with nogil:
        for c in prange(C, schedule="static"):
            for n in range(N):
                memset(&dx[n, c, 0, 0], 0, H * W * sizeof(real))
            for i in range(kh):
                for j in range(kw):
                    r = (c * kh + i) * kw + j
                    x0 = j * dilation - pad
                    lo = _lo(x0, stride, W, ow)
                    hi = _hi(x0, stride, W, ow)
                    for n in range(N):
                        for yy in range(oh):
                            iy = yy * stride + i * dilation - pad
                            if iy < 0 or iy >= H:
                                continue
                            src = &col[r, n * P + yy * ow]
                            dst = &dx[n, c, iy, 0]
                            if stride == 1:
                                for xx in range(lo, hi):
                                    dst[x0 + xx] += src[xx]
                            else:
                                for xx in range(lo, hi):
                                    dst[x0 + xx * stride] += src[xx]


def gemm_to_nchw(const real[:, ::1] out2d not None, const real[::1] bias, real[:, :, ::1] y not None):
    """y[n, k, p] = out2d[k, n*P + p] + bias[k]: the convolution GEMM's (K, N*P) layout to
    (N, K, P), with the bias (``None``: none) added in the same pass. One addition per
    element, as NumPy's broadcast add does."""
    cdef Py_ssize_t N = y.shape[0], K = y.shape[1], P = y.shape[2]
    cdef Py_ssize_t nk, n, k, p
    cdef bint has_bias = bias is not None
    cdef real b
    cdef int nt = _threads(N * K * P)
    if out2d.shape[0] != K or out2d.shape[1] != N * P:
        raise ValueError(f"out2d has shape {(out2d.shape[0], out2d.shape[1])}, expected ({K}, {N * P})")
    if has_bias and bias.shape[0] != K:
        raise ValueError(f"bias has {bias.shape[0]} elements, expected {K}")
    with nogil:
        for nk in prange(N * K, schedule="static", num_threads=nt):
            n = nk // K
            k = nk % K
            if has_bias:
                b = bias[k]
                for p in range(P):
                    y[n, k, p] = out2d[k, n * P + p] + b
            else:
                memcpy(&y[n, k, 0], &out2d[k, n * P], P * sizeof(real))
