# cython: language_level=3
"""im2col / col2im for convolution as one GEMM over the whole batch.

Layout: ``col[(c*kh + i)*kw + j, n*P + y*ow + x] = x_pad[n, c, y*s + i*d, x*s + j*d]``
with P = oh*ow, i.e. ``col`` is (C*kh*kw, N*oh*ow), so that a convolution is
``W.reshape(K, C*kh*kw) @ col`` -> (K, N*oh*ow). Zero padding is implicit.
Each row of ``col`` is written by one thread (prange over rows); ``col2im`` splits
the work by channel so no two threads add into the same input element (the sums
are therefore deterministic). Inner loops run on raw pointers over the valid
x-range of each output row, so they vectorise.
"""
from cython.parallel cimport prange
from libc.string cimport memset

ctypedef fused real:
    float
    double


cdef inline Py_ssize_t _x_lo(Py_ssize_t x0, Py_ssize_t stride, Py_ssize_t W, Py_ssize_t ow) noexcept nogil:
    """First output column xx with x0 + xx*stride >= 0 (at most _x_hi)."""
    cdef Py_ssize_t a = 0, b = _x_hi(x0, stride, W, ow)
    if x0 < 0:
        a = (-x0 + stride - 1) // stride
    return a if a < b else b


cdef inline Py_ssize_t _x_hi(Py_ssize_t x0, Py_ssize_t stride, Py_ssize_t W, Py_ssize_t ow) noexcept nogil:
    """One past the last output column xx with x0 + xx*stride < W."""
    cdef Py_ssize_t b = 0
    if x0 < W:
        b = (W - 1 - x0) // stride + 1
    return b if b < ow else ow


def im2col(const real[:, :, :, ::1] x, real[:, ::1] col, int kh, int kw,
           int pad, int stride, int dilation, int oh, int ow):
    """x (N, C, H, W) -> col (C*kh*kw, N*oh*ow)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t rows = C * kh * kw, P = oh * ow
    cdef Py_ssize_t r, c, i, j, n, yy, xx, iy, x0, lo, hi
    cdef const real* src
    cdef real* dst
    if col.shape[0] != rows or col.shape[1] != N * P:
        raise ValueError(f"col has shape {(col.shape[0], col.shape[1])}, expected ({rows}, {N * P})")
    with nogil:
        for r in prange(rows, schedule="static"):
            c = r // (kh * kw)
            i = (r // kw) % kh
            j = r % kw
            x0 = j * dilation - pad
            lo = _x_lo(x0, stride, W, ow)
            hi = _x_hi(x0, stride, W, ow)
            for n in range(N):
                for yy in range(oh):
                    dst = &col[r, n * P + yy * ow]
                    iy = yy * stride + i * dilation - pad
                    if iy < 0 or iy >= H:
                        memset(dst, 0, ow * sizeof(real))
                        continue
                    src = &x[n, c, iy, 0]
                    for xx in range(lo):
                        dst[xx] = 0
                    if stride == 1:
                        for xx in range(lo, hi):
                            dst[xx] = src[x0 + xx]
                    else:
                        for xx in range(lo, hi):
                            dst[xx] = src[x0 + xx * stride]
                    for xx in range(hi, ow):
                        dst[xx] = 0


def col2im(const real[:, ::1] col, real[:, :, :, ::1] dx, int kh, int kw,
           int pad, int stride, int dilation, int oh, int ow):
    """The adjoint of im2col: dx (N, C, H, W) = scatter-add of col (C*kh*kw, N*oh*ow).
    ``dx`` is overwritten."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = oh * ow
    cdef Py_ssize_t r, c, i, j, n, yy, xx, iy, x0, lo, hi
    cdef const real* src
    cdef real* dst
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
                    lo = _x_lo(x0, stride, W, ow)
                    hi = _x_hi(x0, stride, W, ow)
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
