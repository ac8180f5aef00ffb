# cython: language_level=3
"""Max and average pooling over (N, C, H, W), parallel over the N*C planes.

Output size follows Caffe: oh = ceil((H + 2*pad - k) / s) + 1, clipped so the
last window starts inside the (padded) input. MAX records the flat index
(y*W + x) of the winner in each window for the backward pass.
"""
cimport openmp
from cython.parallel cimport prange
from libc.string cimport memset

ctypedef fused real:
    float
    double

# Inputs below this many elements (1 MB of float32) are pooled on one thread. Such a pass
# takes ~0.1 ms on one core; at 2 threads it waits for the second one, which may be asleep
# after BLAS work or busy with another process: LeNet's pool2 (64x50x8x8, 0.8 MB) in
# `wincaffe time --threads 2` with the other core loaded took 0.73 / 0.67 ms forward /
# backward on 2 threads and 0.28 / 0.19 ms on one (medians of 6 alternating runs); on a
# quiet machine 2 threads win a little (forward + backward 0.28 against 0.35 ms).
cdef Py_ssize_t SERIAL_BELOW = 1 << 18


cdef inline int _threads(Py_ssize_t elements) noexcept nogil:
    return 1 if elements < SERIAL_BELOW else openmp.omp_get_max_threads()


cdef inline void _max2x2_row(const real* row0, const real* row1, real* out, int* arg,
                             int base, int W, Py_ssize_t n) noexcept nogil:
    """n full 2x2 windows of one output row: Caffe's scan (row by row, a later value
    wins only if strictly greater), written as selects so that it vectorises; NaN
    behaves as in the scan (never wins against a number, kept if first)."""
    cdef Py_ssize_t px
    cdef real a, b, c, d, best
    cdef int idx, x
    for px in range(n):
        x = <int>(2 * px)
        a = row0[2 * px]
        b = row0[2 * px + 1]
        c = row1[2 * px]
        d = row1[2 * px + 1]
        best = a
        idx = base + x
        idx = base + x + 1 if b > best else idx
        best = b if b > best else best
        idx = base + W + x if c > best else idx
        best = c if c > best else best
        idx = base + W + x + 1 if d > best else idx
        best = d if d > best else best
        out[px] = best
        arg[px] = idx


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
    cdef Py_ssize_t full
    cdef bint fast2x2 = kh == 2 and kw == 2 and sh == 2 and sw == 2 and pad == 0
    if fast2x2 and H % 2 == 0 and W % 2 == 0:
        # every window full and the planes tiled by them: one tight loop over row pairs
        with nogil:
            for p in prange(N * C, schedule="static", num_threads=_threads(N * C * H * W)):
                plane = &x[0, 0, 0, 0] + p * H * W
                for py in range(oh):
                    _max2x2_row(plane + 2 * py * W, plane + (2 * py + 1) * W, &y[0, 0, 0, 0] + (p * oh + py) * ow,
                                &argmax[0, 0, 0, 0] + (p * oh + py) * ow, <int>(2 * py * W), <int>W, ow)
        return
    with nogil:
        for p in prange(N * C, schedule="static", num_threads=_threads(N * C * H * W)):
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
                    full = W // 2 if W // 2 < ow else ow
                    _max2x2_row(plane + hs * W, plane + (hs + 1) * W, out + py * ow, arg + py * ow,
                                <int>(hs * W), <int>W, full)
                    for px in range(full, ow):      # a last window cut by the edge (odd W)
                        ws = 2 * px
                        best = plane[hs * W + ws]
                        best_idx = <int>(hs * W + ws)
                        if plane[(hs + 1) * W + ws] > best:
                            best = plane[(hs + 1) * W + ws]
                            best_idx = <int>((hs + 1) * W + ws)
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
    """dx (overwritten) = scatter of dy to the winners recorded in argmax (a memset and
    one add per output: already at memory speed, bench_pooling.py)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t p, n, c, q
    cdef real* plane
    cdef const real* g
    cdef const int* arg
    with nogil:
        for p in prange(N * C, schedule="static", num_threads=_threads(N * C * H * W)):
            n = p // C
            c = p % C
            plane = &dx[n, c, 0, 0]
            g = &dy[n, c, 0, 0]
            arg = &argmax[n, c, 0, 0]
            memset(plane, 0, H * W * sizeof(real))
            for q in range(oh * ow):
                plane[arg[q]] += g[q]


cdef struct Window:
    Py_ssize_t hs, he, ws, we, size


cdef inline Window _ave_window(Py_ssize_t py, Py_ssize_t px, Py_ssize_t H, Py_ssize_t W,
                               int kh, int kw, int sh, int sw, int pad) noexcept nogil:
    """Caffe's AVE window for output (py, px): the divisor counts the window clipped
    to the padded input (H + pad, W + pad); the summed range is clipped to the input."""
    cdef Window w
    w.hs = py * sh - pad
    w.ws = px * sw - pad
    w.he = w.hs + kh
    w.we = w.ws + kw
    if w.he > H + pad:
        w.he = H + pad
    if w.we > W + pad:
        w.we = W + pad
    w.size = (w.he - w.hs) * (w.we - w.ws)
    if w.hs < 0:
        w.hs = 0
    if w.ws < 0:
        w.ws = 0
    if w.he > H:
        w.he = H
    if w.we > W:
        w.we = W
    return w


def ave_pool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y,
                     int kh, int kw, int sh, int sw, int pad):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = y.shape[2], ow = y.shape[3]
    cdef Py_ssize_t p, n, c, py, px, iy, ix
    cdef Window w
    cdef real acc
    cdef const real* row0
    cdef const real* row1
    cdef real* out
    cdef bint fast2x2 = kh == 2 and kw == 2 and sh == 2 and sw == 2 and pad == 0
    with nogil:
        for p in prange(N * C, schedule="static", num_threads=_threads(N * C * H * W)):
            n = p // C
            c = p % C
            for py in range(oh):
                if fast2x2 and 2 * py + 1 < H:
                    # full 2x2 windows: the same sum order, divisor and precision (<real>: a bare
                    # 0 or 4 would be a C double and sum float32 inputs in double)
                    row0 = &x[n, c, 2 * py, 0]
                    row1 = row0 + W
                    out = &y[n, c, py, 0]
                    for px in range(W // 2 if W // 2 < ow else ow):
                        out[px] = (<real>0 + row0[2 * px] + row0[2 * px + 1] + row1[2 * px] + row1[2 * px + 1]) / <real>4
                    px = W // 2
                    if px < ow:
                        w = _ave_window(py, px, H, W, kh, kw, sh, sw, pad)
                        y[n, c, py, px] = (<real>0 + row0[2 * px] + row1[2 * px]) / w.size
                    continue
                for px in range(ow):
                    w = _ave_window(py, px, H, W, kh, kw, sh, sw, pad)
                    acc = 0
                    for iy in range(w.hs, w.he):
                        for ix in range(w.ws, w.we):
                            acc = acc + x[n, c, iy, ix]
                    y[n, c, py, px] = acc / w.size


def ave_pool_backward(const real[:, :, :, ::1] dy, real[:, :, :, ::1] dx,
                      int kh, int kw, int sh, int sw, int pad):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t p, n, c, py, px, iy, ix
    cdef Window w
    cdef real g
    cdef real* r0
    cdef real* r1
    cdef bint tiled2x2 = (kh == 2 and kw == 2 and sh == 2 and sw == 2 and pad == 0
                          and 2 * oh == H and 2 * ow == W)
    with nogil:
        for p in prange(N * C, schedule="static", num_threads=_threads(N * C * H * W)):
            n = p // C
            c = p % C
            if tiled2x2:
                # windows tile the plane: each input written once (0 + g/4, as the general loop)
                for py in range(oh):
                    r0 = &dx[n, c, 2 * py, 0]
                    r1 = r0 + W
                    for px in range(ow):
                        g = <real>0 + dy[n, c, py, px] / <real>4
                        r0[2 * px] = g
                        r0[2 * px + 1] = g
                        r1[2 * px] = g
                        r1[2 * px + 1] = g
                continue
            memset(&dx[n, c, 0, 0], 0, H * W * sizeof(real))
            for py in range(oh):
                for px in range(ow):
                    w = _ave_window(py, px, H, W, kh, kw, sh, sw, pad)
                    g = dy[n, c, py, px] / w.size
                    for iy in range(w.hs, w.he):
                        for ix in range(w.ws, w.we):
                            dx[n, c, iy, ix] += g
