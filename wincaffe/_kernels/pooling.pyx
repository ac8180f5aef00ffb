# cython: language_level=3
"""Max and average pooling over (N, C, H, W), parallel over the N*C planes.

Output size follows Caffe: oh = ceil((H + 2*pad - k) / s) + 1, clipped so the
last window starts inside the (padded) input. MAX records the flat index
(y*W + x) of the winner in each window for the backward pass.
"""
from cython.parallel cimport prange
from libc.string cimport memset

ctypedef fused real:
    float
    double


def max_pool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y, int[:, :, :, ::1] argmax,
                     int kh, int kw, int sh, int sw, int pad):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = y.shape[2], ow = y.shape[3]
    cdef Py_ssize_t p, n, c, py, px, hs, ws, he, we, iy, ix
    cdef int best_idx
    cdef real best, v
    cdef const real* plane
    cdef const real* row0
    cdef const real* row1
    cdef real* out
    cdef int* arg
    cdef bint fast2x2 = kh == 2 and kw == 2 and sh == 2 and sw == 2 and pad == 0
    with nogil:
        for p in prange(N * C, schedule="static"):
            n = p // C
            c = p % C
            plane = &x[n, c, 0, 0]
            out = &y[n, c, 0, 0]
            arg = &argmax[n, c, 0, 0]
            for py in range(oh):
                hs = py * sh - pad
                he = hs + kh
                if he > H:
                    he = H
                if hs < 0:
                    hs = 0
                if fast2x2 and he - hs == 2:
                    # LeNet's case: two input rows, windows never overlap
                    row0 = plane + hs * W
                    row1 = row0 + W
                    for px in range(ow):
                        ws = 2 * px
                        best = row0[ws]
                        best_idx = <int>(hs * W + ws)
                        if ws + 1 < W and row0[ws + 1] > best:
                            best = row0[ws + 1]
                            best_idx = <int>(hs * W + ws + 1)
                        if row1[ws] > best:
                            best = row1[ws]
                            best_idx = <int>((hs + 1) * W + ws)
                        if ws + 1 < W and row1[ws + 1] > best:
                            best = row1[ws + 1]
                            best_idx = <int>((hs + 1) * W + ws + 1)
                        out[py * ow + px] = best
                        arg[py * ow + px] = best_idx
                    continue
                for px in range(ow):
                    ws = px * sw - pad
                    we = ws + kw
                    if we > W:
                        we = W
                    if ws < 0:
                        ws = 0
                    best_idx = <int>(hs * W + ws)
                    best = plane[hs * W + ws]
                    for iy in range(hs, he):
                        for ix in range(ws, we):
                            v = plane[iy * W + ix]
                            if v > best:
                                best = v
                                best_idx = <int>(iy * W + ix)
                    out[py * ow + px] = best
                    arg[py * ow + px] = best_idx


def max_pool_backward(const real[:, :, :, ::1] dy, const int[:, :, :, ::1] argmax,
                      real[:, :, :, ::1] dx):
    """dx (overwritten) = scatter of dy to the winners recorded in argmax."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t p, n, c, q
    cdef real* plane
    cdef const real* g
    cdef const int* arg
    with nogil:
        for p in prange(N * C, schedule="static"):
            n = p // C
            c = p % C
            plane = &dx[n, c, 0, 0]
            g = &dy[n, c, 0, 0]
            arg = &argmax[n, c, 0, 0]
            memset(plane, 0, H * W * sizeof(real))
            for q in range(oh * ow):
                plane[arg[q]] += g[q]


def ave_pool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y,
                     int kh, int kw, int sh, int sw, int pad):
    """Caffe's AVE: the divisor counts the padded window clipped to H+pad, W+pad."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = y.shape[2], ow = y.shape[3]
    cdef Py_ssize_t p, n, c, py, px, hs, ws, he, we, iy, ix, size
    cdef real acc
    with nogil:
        for p in prange(N * C, schedule="static"):
            n = p // C
            c = p % C
            for py in range(oh):
                for px in range(ow):
                    hs = py * sh - pad
                    ws = px * sw - pad
                    he = hs + kh
                    we = ws + kw
                    if he > H + pad:
                        he = H + pad
                    if we > W + pad:
                        we = W + pad
                    size = (he - hs) * (we - ws)
                    if hs < 0:
                        hs = 0
                    if ws < 0:
                        ws = 0
                    if he > H:
                        he = H
                    if we > W:
                        we = W
                    acc = 0
                    for iy in range(hs, he):
                        for ix in range(ws, we):
                            acc = acc + x[n, c, iy, ix]
                    y[n, c, py, px] = acc / size


def ave_pool_backward(const real[:, :, :, ::1] dy, real[:, :, :, ::1] dx,
                      int kh, int kw, int sh, int sw, int pad):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t p, n, c, py, px, hs, ws, he, we, iy, ix, size
    cdef real g
    with nogil:
        for p in prange(N * C, schedule="static"):
            n = p // C
            c = p % C
            for iy in range(H):
                for ix in range(W):
                    dx[n, c, iy, ix] = 0
            for py in range(oh):
                for px in range(ow):
                    hs = py * sh - pad
                    ws = px * sw - pad
                    he = hs + kh
                    we = ws + kw
                    if he > H + pad:
                        he = H + pad
                    if we > W + pad:
                        we = W + pad
                    size = (he - hs) * (we - ws)
                    if hs < 0:
                        hs = 0
                    if ws < 0:
                        ws = 0
                    if he > H:
                        he = H
                    if we > W:
                        we = W
                    g = dy[n, c, py, px] / size
                    for iy in range(hs, he):
                        for ix in range(ws, we):
                            dx[n, c, iy, ix] += g
