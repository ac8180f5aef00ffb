# cython: language_level=3
"""im2col / col2im for convolution as one GEMM over the whole batch.

Layout: ``col[(c*kh + i)*kw + j, n*P + y*ow + x] = x_pad[n, c, y*s + i*d, x*s + j*d]``
with P = oh*ow, i.e. ``col`` is (C*kh*kw, N*oh*ow), so that a convolution is
``W.reshape(K, C*kh*kw) @ col`` -> (K, N*oh*ow). Zero padding is implicit.
Each row of ``col`` is written by one thread (prange over rows); ``col2im`` splits
the work by channel so no two threads add into the same input element.
"""
from cython.parallel cimport prange

ctypedef fused real:
    float
    double


def im2col(const real[:, :, :, ::1] x, real[:, ::1] col, int kh, int kw,
           int pad, int stride, int dilation, int oh, int ow):
    """x (N, C, H, W) -> col (C*kh*kw, N*oh*ow)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t rows = C * kh * kw, P = oh * ow
    cdef Py_ssize_t r, c, i, j, n, yy, xx, iy, ix, base
    with nogil:
        for r in prange(rows, schedule="static"):
            c = r // (kh * kw)
            i = (r // kw) % kh
            j = r % kw
            for n in range(N):
                base = n * P
                for yy in range(oh):
                    iy = yy * stride + i * dilation - pad
                    if iy < 0 or iy >= H:
                        for xx in range(ow):
                            col[r, base + yy * ow + xx] = 0
                        continue
                    for xx in range(ow):
                        ix = xx * stride + j * dilation - pad
                        if ix < 0 or ix >= W:
                            col[r, base + yy * ow + xx] = 0
                        else:
                            col[r, base + yy * ow + xx] = x[n, c, iy, ix]


def col2im(const real[:, ::1] col, real[:, :, :, ::1] dx, int kh, int kw,
           int pad, int stride, int dilation, int oh, int ow):
    """The adjoint of im2col: dx (N, C, H, W) = scatter-add of col (C*kh*kw, N*oh*ow).
    ``dx`` is overwritten."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = oh * ow
    cdef Py_ssize_t r, c, i, j, n, yy, xx, iy, ix, base
    with nogil:
        for c in prange(C, schedule="static"):
            for n in range(N):
                for iy in range(H):
                    for ix in range(W):
                        dx[n, c, iy, ix] = 0
            for i in range(kh):
                for j in range(kw):
                    r = (c * kh + i) * kw + j
                    for n in range(N):
                        base = n * P
                        for yy in range(oh):
                            iy = yy * stride + i * dilation - pad
                            if iy < 0 or iy >= H:
                                continue
                            for xx in range(ow):
                                ix = xx * stride + j * dilation - pad
                                if ix >= 0 and ix < W:
                                    dx[n, c, iy, ix] += col[r, base + yy * ow + xx]
