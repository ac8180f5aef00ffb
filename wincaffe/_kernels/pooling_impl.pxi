# The body of the pooling kernels, included by pooling.pyx (baseline build) and
# pooling_avx2.pyx (built for AVX2; picked at import by wincaffe._kernels.pool when the CPU
# has it). See pooling.pyx.
cimport openmp
from cython.parallel cimport prange
from libc.string cimport memset

ctypedef fused real:
    float
    double

include "serial_below.pxi"


cdef extern from *:
    """
    /* 2x2 windows at stride 2 tiling planes whose width W is a multiple of 8, float32, as
       chunks of four windows: chunk g covers row pair r = g / (W/8), columns 8j .. 8j+7 with
       j = g % (W/8), its outputs are out[4g .. 4g+3] and its inputs rows x + 2rW + 8j and + W.
       The AVX2 build does two chunks (8 windows) per step with shuffles; every result is the
       scalar loop's, bit for bit: the same compares and selects in the same order (MAX), the
       same sums (AVE), 0 + value where Caffe adds into a zeroed gradient. */
    #include <stddef.h>
    #if defined(__AVX2__)
    #include <immintrin.h>
    #define WP_SIMD "avx2"
    #define WP_VECTOR 1
    /* evens / odds of u and v, in shuffle order: [u0 u2 v0 v2 u4 u6 v4 v6], [u1 u3 v1 v3 u5 u7 v5 v7];
       WP_ORDER puts a vector in that order back in window order [u0 u2 u4 u6 v0 v2 v4 v6] */
    #define WP_EVENS(u, v) _mm256_shuffle_ps(u, v, 0x88)
    #define WP_ODDS(u, v)  _mm256_shuffle_ps(u, v, 0xDD)
    #define WP_ORDER(t) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8))
    #else
    #define WP_SIMD "baseline"
    #define WP_VECTOR 0
    #endif

    /* the position of chunk g: input offset of its top row, argmax base (2 py W + 8 j) */
    typedef struct { ptrdiff_t r, j, py; } wp_pos;
    static inline wp_pos wp_at(ptrdiff_t g, ptrdiff_t W, ptrdiff_t oh) {
        wp_pos p; p.r = g / (W / 8); p.j = g % (W / 8); p.py = p.r % oh; return p;
    }
    static inline void wp_next(wp_pos* p, ptrdiff_t W, ptrdiff_t oh) {
        if (++p->j == W / 8) { p->j = 0; p->r++; if (++p->py == oh) p->py = 0; }
    }
    #define WP_IN(p, W) (2 * (p).r * (W) + 8 * (p).j)
    #define WP_BASE(p, W) ((int) (2 * (p).py * (W) + 8 * (p).j))

    static void wp_max_chunk(const float* x, float* y, int* arg, ptrdiff_t g, wp_pos p, ptrdiff_t W) {
        const float* r0 = x + WP_IN(p, W); const float* r1 = r0 + W;
        int base = WP_BASE(p, W), l;
        for (l = 0; l < 4; l++) {
            float a = r0[2 * l], b = r0[2 * l + 1], c = r1[2 * l], d = r1[2 * l + 1], best = a;
            int x0 = base + 2 * l, idx = x0;
            if (b > best) { idx = x0 + 1; best = b; }
            if (c > best) { idx = x0 + (int) W; best = c; }
            if (d > best) { idx = x0 + (int) W + 1; best = d; }
            y[4 * g + l] = best; arg[4 * g + l] = idx;
        }
    }
    static void wp_max_back_chunk(const float* dy, const int* arg, float* dx, ptrdiff_t g, wp_pos p, ptrdiff_t W) {
        float* r0 = dx + WP_IN(p, W); float* r1 = r0 + W;
        int base = WP_BASE(p, W), l;
        for (l = 0; l < 4; l++) {
            int o = arg[4 * g + l] - base - 2 * l;
            float v = 0.0f + dy[4 * g + l];
            r0[2 * l] = o == 0 ? v : 0.0f; r0[2 * l + 1] = o == 1 ? v : 0.0f;
            r1[2 * l] = o == W ? v : 0.0f; r1[2 * l + 1] = o == W + 1 ? v : 0.0f;
        }
    }
    static void wp_ave_chunk(const float* x, float* y, ptrdiff_t g, wp_pos p, ptrdiff_t W) {
        const float* r0 = x + WP_IN(p, W); const float* r1 = r0 + W;
        int l;
        for (l = 0; l < 4; l++)
            y[4 * g + l] = ((((0.0f + r0[2 * l]) + r0[2 * l + 1]) + r1[2 * l]) + r1[2 * l + 1]) / 4.0f;
    }
    static void wp_ave_back_chunk(const float* dy, float* dx, ptrdiff_t g, wp_pos p, ptrdiff_t W) {
        float* r0 = dx + WP_IN(p, W); float* r1 = r0 + W;
        int l;
        for (l = 0; l < 4; l++) {
            float v = 0.0f + dy[4 * g + l] / 4.0f;
            r0[2 * l] = v; r0[2 * l + 1] = v; r1[2 * l] = v; r1[2 * l + 1] = v;
        }
    }

    /* chunks g0 .. g1-1 of one pass (what = 0 MAX forward, 1 MAX backward, 2 AVE forward,
       3 AVE backward); a: x or dy, b: y or dx, arg: the argmax */
    static void wp_tiled2x2(int what, const float* a, float* b, int* arg, ptrdiff_t g0, ptrdiff_t g1,
                            ptrdiff_t W, ptrdiff_t oh) {
        wp_pos p = wp_at(g0, W, oh);
        ptrdiff_t g = g0;
    #if defined(__AVX2__)
        const __m256i lane2 = _mm256_setr_epi32(0, 2, 0, 2, 4, 6, 4, 6);   /* shuffle order */
        const __m256i one = _mm256_set1_epi32(1), wv = _mm256_set1_epi32((int) W);
        const __m256 zero = _mm256_setzero_ps(), four = _mm256_set1_ps(4.0f);
        for (; g + 2 <= g1; g += 2) {
            wp_pos q = p; wp_next(&q, W, oh);
            ptrdiff_t ia = WP_IN(p, W), ib = WP_IN(q, W);
            /* the argmax base of each window, in shuffle order: [bp bp bq bq bp bp bq bq] + lane2 */
            __m256i base = _mm256_add_epi32(_mm256_unpacklo_epi64(_mm256_set1_epi32(WP_BASE(p, W)),
                                                                  _mm256_set1_epi32(WP_BASE(q, W))), lane2);
            if (what == 0 || what == 2) {
                __m256 A0 = _mm256_loadu_ps(a + ia), A1 = _mm256_loadu_ps(a + ia + W);
                __m256 B0 = _mm256_loadu_ps(a + ib), B1 = _mm256_loadu_ps(a + ib + W);
                __m256 va = WP_EVENS(A0, B0), vb = WP_ODDS(A0, B0), vc = WP_EVENS(A1, B1), vd = WP_ODDS(A1, B1);
                if (what == 0) {
                    __m256 best = va, m;
                    __m256i idx = base;
                    m = _mm256_cmp_ps(vb, best, _CMP_GT_OQ);
                    idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx), _mm256_castsi256_ps(_mm256_add_epi32(base, one)), m));
                    best = _mm256_blendv_ps(best, vb, m);
                    m = _mm256_cmp_ps(vc, best, _CMP_GT_OQ);
                    idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx), _mm256_castsi256_ps(_mm256_add_epi32(base, wv)), m));
                    best = _mm256_blendv_ps(best, vc, m);
                    m = _mm256_cmp_ps(vd, best, _CMP_GT_OQ);
                    idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx),
                                              _mm256_castsi256_ps(_mm256_add_epi32(_mm256_add_epi32(base, wv), one)), m));
                    best = _mm256_blendv_ps(best, vd, m);
                    _mm256_storeu_ps(b + 4 * g, WP_ORDER(best));
                    _mm256_storeu_ps((float*) (arg + 4 * g), WP_ORDER(_mm256_castsi256_ps(idx)));
                } else {
                    __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(zero, va), vb), vc), vd);
                    _mm256_storeu_ps(b + 4 * g, WP_ORDER(_mm256_div_ps(sum, four)));
                }
            } else {
                __m256 v0, v1, v2, v3, lo, hi;
                if (what == 1) {
                    __m256 d = _mm256_add_ps(zero, _mm256_loadu_ps(a + 4 * g));
                    __m256i idx = _mm256_loadu_si256((const __m256i*) (arg + 4 * g));
                    __m256i bo = _mm256_castps_si256(WP_ORDER(_mm256_castsi256_ps(base)));  /* window order */
                    __m256i bw = _mm256_add_epi32(bo, wv);
                    v0 = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(idx, bo)), d);
                    v1 = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(idx, _mm256_add_epi32(bo, one))), d);
                    v2 = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(idx, bw)), d);
                    v3 = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(idx, _mm256_add_epi32(bw, one))), d);
                } else {
                    v0 = v1 = v2 = v3 = _mm256_add_ps(zero, _mm256_div_ps(_mm256_loadu_ps(a + 4 * g), four));
                }
                lo = _mm256_unpacklo_ps(v0, v1); hi = _mm256_unpackhi_ps(v0, v1);
                _mm256_storeu_ps(b + ia, _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_storeu_ps(b + ib, _mm256_permute2f128_ps(lo, hi, 0x31));
                lo = _mm256_unpacklo_ps(v2, v3); hi = _mm256_unpackhi_ps(v2, v3);
                _mm256_storeu_ps(b + ia + W, _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_storeu_ps(b + ib + W, _mm256_permute2f128_ps(lo, hi, 0x31));
            }
            wp_next(&q, W, oh);
            p = q;
        }
    #endif
        for (; g < g1; g++) {
            if (what == 0) wp_max_chunk(a, b, arg, g, p, W);
            else if (what == 1) wp_max_back_chunk(a, arg, b, g, p, W);
            else if (what == 2) wp_ave_chunk(a, b, g, p, W);
            else wp_ave_back_chunk(a, b, g, p, W);
            wp_next(&p, W, oh);
        }
    }
    """
    const char* WP_SIMD
    int WP_VECTOR
    void wp_tiled2x2(int what, const float* a, float* b, int* arg, Py_ssize_t g0, Py_ssize_t g1,
                     Py_ssize_t W, Py_ssize_t oh) noexcept nogil

SIMD = WP_SIMD.decode()

# Chunks of four windows per work item of the tiled 2x2 kernels (wp_tiled2x2): even, so
# that the AVX2 build's pairs of chunks never straddle two items.
cdef Py_ssize_t TILED_BLOCK = 512


cdef inline bint _window2x2(int kh, int kw, int sh, int sw, int pad) noexcept nogil:
    # 2x2 windows at stride 2, unpadded: LeNet's case, which the fast loops take
    return kh == 2 and kw == 2 and sh == 2 and sw == 2 and pad == 0


cdef inline bint _tiles2x2(Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow, int kh, int kw,
                           int sh, int sw, int pad) noexcept nogil:
    # those windows tiling the planes: every input in exactly one window
    return _window2x2(kh, kw, sh, sw, pad) and H == 2 * oh and W == 2 * ow


cdef inline bint _tiled2x2(Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow, int kh, int kw,
                           int sh, int sw, int pad) noexcept nogil:
    # the vector kernels' case: tiling 2x2 windows on planes of a width W % 8 == 0
    return WP_VECTOR and _tiles2x2(H, W, oh, ow, kh, kw, sh, sw, pad) and W % 8 == 0 and oh > 0


cdef inline void _check_plane(Py_ssize_t H, Py_ssize_t W) except *:
    # MAX's argmax is a flat int32 index into one plane
    if H * W > 2147483647:
        raise ValueError(f"max pooling: a {H}x{W} plane has more than 2^31 - 1 elements, "
                         f"which the int32 argmax cannot index")


def vectorised(bint float32, Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow, int kh, int kw,
               int sh, int sw, int pad):
    """Whether this build pools (H, W) planes into (oh, ow) with these windows eight at a time
    (else the scalar loops run); ``float32``: the dtype is float32."""
    return bool(float32 and _tiled2x2(H, W, oh, ow, kh, kw, sh, sw, pad))


cdef void _run_tiled(int what, const float* a, float* b, int* arg, Py_ssize_t planes, Py_ssize_t H,
                     Py_ssize_t W) noexcept nogil:
    # every chunk of the planes, TILED_BLOCK chunks per parallel work item
    cdef Py_ssize_t G = planes * (H // 2) * (W // 8)
    cdef Py_ssize_t nblk = (G + TILED_BLOCK - 1) // TILED_BLOCK, q, g1
    for q in prange(nblk, schedule="static", num_threads=_threads(planes * H * W)):
        g1 = (q + 1) * TILED_BLOCK
        wp_tiled2x2(what, a, b, arg, q * TILED_BLOCK, g1 if g1 < G else G, W, H // 2)


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
    cdef real* out
    cdef int* arg
    cdef Py_ssize_t full
    cdef bint fast2x2 = _window2x2(kh, kw, sh, sw, pad)
    _check_plane(H, W)
    if real is float:
        if N * C > 0 and _tiled2x2(H, W, oh, ow, kh, kw, sh, sw, pad):
            with nogil:
                _run_tiled(0, &x[0, 0, 0, 0], &y[0, 0, 0, 0], &argmax[0, 0, 0, 0], N * C, H, W)
            return
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
                      real[:, :, :, ::1] dx, int kh=0, int kw=0, int sh=0, int sw=0, int pad=0):
    """dx (overwritten) = scatter of dy to the winners recorded in argmax: a memset and one
    add per output. Given the forward's window (kh, kw, sh, sw, pad) and 2x2 windows tiling
    the planes, each input is written once instead (0 + dy at the winner, 0 elsewhere: the
    same values). The window must be the forward's: a winner outside the given window gets
    no gradient on that path."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t p, n, c, q
    cdef real* plane
    cdef const real* g
    cdef const int* arg
    _check_plane(H, W)
    if real is float:
        if N * C > 0 and _tiled2x2(H, W, oh, ow, kh, kw, sh, sw, pad):
            with nogil:
                _run_tiled(1, &dy[0, 0, 0, 0], &dx[0, 0, 0, 0], <int*> &argmax[0, 0, 0, 0], N * C, H, W)
            return
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
    cdef bint fast2x2 = _window2x2(kh, kw, sh, sw, pad)
    if real is float:
        if N * C > 0 and _tiled2x2(H, W, oh, ow, kh, kw, sh, sw, pad):
            with nogil:
                _run_tiled(2, &x[0, 0, 0, 0], &y[0, 0, 0, 0], NULL, N * C, H, W)
            return
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
    cdef bint tiled2x2 = _tiles2x2(H, W, oh, ow, kh, kw, sh, sw, pad)
    if real is float:
        if N * C > 0 and _tiled2x2(H, W, oh, ow, kh, kw, sh, sw, pad):
            with nogil:
                _run_tiled(3, &dy[0, 0, 0, 0], &dx[0, 0, 0, 0], NULL, N * C, H, W)
            return
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
