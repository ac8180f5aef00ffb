# The body of the Winograd tiling kernels, included by winograd_tiles.pyx (baseline
# build) and winograd_tiles_avx2.pyx (built with -mavx2 -mfma; picked at run time by
# wincaffe._kernels.winograd when the CPU has AVX2 and FMA). See winograd_tiles.pyx.
cimport openmp
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc

import numpy as np

ctypedef fused real:
    float
    double

cdef extern from *:
    """
    /* Stride-m (de-)interleaving of a row, the only non-unit-stride step of the tiling.
       deint:  out[p*os + t] = src[t*m + p]      (p < m, t < cnt; src readable up to (cnt-1)*m + 8)
       inter:  dst[t*m + p] = in[p*is + t]       (p < m, t < cnt; dst writable up to (cnt-1)*m + 8)
       With AVX2 and m <= 8, blocks of 8 t are moved by an 8x8 register transpose. */
    #include <stddef.h>
    #if defined(__AVX2__)
    #include <immintrin.h>
    #define WC_T8(r0,r1,r2,r3,r4,r5,r6,r7) do { \
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1); \
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3); \
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5); \
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7); \
        __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE); \
        __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE); \
        __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE); \
        __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE); \
        r0 = _mm256_permute2f128_ps(s0, s4, 0x20); r1 = _mm256_permute2f128_ps(s1, s5, 0x20); \
        r2 = _mm256_permute2f128_ps(s2, s6, 0x20); r3 = _mm256_permute2f128_ps(s3, s7, 0x20); \
        r4 = _mm256_permute2f128_ps(s0, s4, 0x31); r5 = _mm256_permute2f128_ps(s1, s5, 0x31); \
        r6 = _mm256_permute2f128_ps(s2, s6, 0x31); r7 = _mm256_permute2f128_ps(s3, s7, 0x31); \
    } while (0)
    #endif
    static void wc_deint_f(const float* src, float* out, ptrdiff_t m, ptrdiff_t cnt, ptrdiff_t os) {
        ptrdiff_t t = 0, p;
    #if defined(__AVX2__)
        if (m <= 8) {
            for (; t + 8 <= cnt; t += 8) {
                const float* s = src + t * m;
                __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + m), r2 = _mm256_loadu_ps(s + 2 * m),
                       r3 = _mm256_loadu_ps(s + 3 * m), r4 = _mm256_loadu_ps(s + 4 * m),
                       r5 = _mm256_loadu_ps(s + 5 * m), r6 = _mm256_loadu_ps(s + 6 * m),
                       r7 = _mm256_loadu_ps(s + 7 * m);
                WC_T8(r0, r1, r2, r3, r4, r5, r6, r7);
                float* o = out + t;
                _mm256_storeu_ps(o, r0);
                if (m > 1) _mm256_storeu_ps(o + os, r1);
                if (m > 2) _mm256_storeu_ps(o + 2 * os, r2);
                if (m > 3) _mm256_storeu_ps(o + 3 * os, r3);
                if (m > 4) _mm256_storeu_ps(o + 4 * os, r4);
                if (m > 5) _mm256_storeu_ps(o + 5 * os, r5);
                if (m > 6) _mm256_storeu_ps(o + 6 * os, r6);
                if (m > 7) _mm256_storeu_ps(o + 7 * os, r7);
            }
        }
    #endif
        for (; t < cnt; t++)
            for (p = 0; p < m; p++)
                out[p * os + t] = src[t * m + p];
    }
    static void wc_inter_f(const float* in, float* dst, ptrdiff_t m, ptrdiff_t cnt, ptrdiff_t is) {
        ptrdiff_t t = 0, p;
    #if defined(__AVX2__)
        if (m <= 8) {
            __m256 z = _mm256_setzero_ps();
            for (; t + 8 <= cnt; t += 8) {
                const float* i = in + t;
                __m256 r0 = _mm256_loadu_ps(i);
                __m256 r1 = m > 1 ? _mm256_loadu_ps(i + is) : z;
                __m256 r2 = m > 2 ? _mm256_loadu_ps(i + 2 * is) : z;
                __m256 r3 = m > 3 ? _mm256_loadu_ps(i + 3 * is) : z;
                __m256 r4 = m > 4 ? _mm256_loadu_ps(i + 4 * is) : z;
                __m256 r5 = m > 5 ? _mm256_loadu_ps(i + 5 * is) : z;
                __m256 r6 = m > 6 ? _mm256_loadu_ps(i + 6 * is) : z;
                __m256 r7 = m > 7 ? _mm256_loadu_ps(i + 7 * is) : z;
                WC_T8(r0, r1, r2, r3, r4, r5, r6, r7);
                float* d = dst + t * m;   /* in order: each store's tail is overwritten by the next */
                _mm256_storeu_ps(d, r0); _mm256_storeu_ps(d + m, r1);
                _mm256_storeu_ps(d + 2 * m, r2); _mm256_storeu_ps(d + 3 * m, r3);
                _mm256_storeu_ps(d + 4 * m, r4); _mm256_storeu_ps(d + 5 * m, r5);
                _mm256_storeu_ps(d + 6 * m, r6); _mm256_storeu_ps(d + 7 * m, r7);
            }
        }
    #endif
        for (; t < cnt; t++)
            for (p = 0; p < m; p++)
                dst[t * m + p] = in[p * is + t];
    }
    /* Prefetch n elements of a row (for reading, or for writing with rw = 1) into the cache:
       rows of different images and channels lie far apart, out of the hardware prefetchers' reach. */
    static inline void wc_prefetch_f(const float* p, ptrdiff_t n, int rw) {
    #if defined(__GNUC__)
        ptrdiff_t k;
        for (k = 0; k < n; k += 16) {
            if (rw) __builtin_prefetch(p + k, 1); else __builtin_prefetch(p + k, 0);
        }
        if (n > 0) { if (rw) __builtin_prefetch(p + n - 1, 1); else __builtin_prefetch(p + n - 1, 0); }
    #endif
    }
    static void wc_deint_d(const double* src, double* out, ptrdiff_t m, ptrdiff_t cnt, ptrdiff_t os) {
        ptrdiff_t t, p;
        for (p = 0; p < m; p++)
            for (t = 0; t < cnt; t++)
                out[p * os + t] = src[t * m + p];
    }
    static void wc_inter_d(const double* in, double* dst, ptrdiff_t m, ptrdiff_t cnt, ptrdiff_t is) {
        ptrdiff_t t, p;
        for (t = 0; t < cnt; t++)
            for (p = 0; p < m; p++)
                dst[t * m + p] = in[p * is + t];
    }
    """
    void wc_deint_f(const float* src, float* out, Py_ssize_t m, Py_ssize_t cnt, Py_ssize_t os) noexcept nogil
    void wc_prefetch_f(const float* p, Py_ssize_t n, int rw) noexcept nogil
    void wc_inter_f(const float* inp, float* dst, Py_ssize_t m, Py_ssize_t cnt, Py_ssize_t is_) noexcept nogil
    void wc_deint_d(const double* src, double* out, Py_ssize_t m, Py_ssize_t cnt, Py_ssize_t os) noexcept nogil
    void wc_inter_d(const double* inp, double* dst, Py_ssize_t m, Py_ssize_t cnt, Py_ssize_t is_) noexcept nogil


cdef inline void _deint(const real* src, real* out, Py_ssize_t m, Py_ssize_t cnt, Py_ssize_t os) noexcept nogil:
    if real is float:
        wc_deint_f(src, out, m, cnt, os)
    else:
        wc_deint_d(src, out, m, cnt, os)


cdef inline void _prefetch(const real* p, Py_ssize_t n, int rw) noexcept nogil:
    # hint: p[0:n] will be read (rw = 0) or written (rw = 1) soon
    wc_prefetch_f(<const float*> p, n * sizeof(real) // sizeof(float), rw)


cdef inline void _inter(const real* inp, real* dst, Py_ssize_t m, Py_ssize_t cnt, Py_ssize_t is_) noexcept nogil:
    if real is float:
        wc_inter_f(inp, dst, m, cnt, is_)
    else:
        wc_inter_d(inp, dst, m, cnt, is_)

# Target size (elements) of one work item's transform-domain scratch (S·α·T per
# plane): items are (chunk of channels, chunk of images), as many as fit, so that
# the scratch stays in L2 while the loops run over long rows.
cdef enum:
    ITEM_ELEMS = 163840

# Rows ahead to prefetch when the items read or write rows of many planes in turn.
cdef enum:
    PREFETCH_ROWS = 4


cdef inline int _threads(int num_threads) noexcept nogil:
    if num_threads > 0:
        return num_threads
    return openmp.omp_get_max_threads()


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # ceil(a / b) for b > 0 and any sign of a
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


cdef inline void _lincomb(real* dst, Py_ssize_t n, int cnt, const int* idx, const real* val,
                          const real* base, Py_ssize_t step) noexcept nogil:
    # dst[0:n] = Σ_k val[k] · base[idx[k]·step : idx[k]·step + n]   (0 when cnt == 0);
    # up to four terms per sweep over dst.
    cdef Py_ssize_t t
    cdef int k
    cdef real c0, c1, c2, c3
    cdef const real* s0
    cdef const real* s1
    cdef const real* s2
    cdef const real* s3
    if cnt <= 0:
        for t in range(n):
            dst[t] = 0
        return
    c0 = val[0]
    s0 = base + idx[0] * step
    if cnt == 1:
        for t in range(n):
            dst[t] = c0 * s0[t]
        return
    c1 = val[1]
    s1 = base + idx[1] * step
    if cnt == 2:
        for t in range(n):
            dst[t] = c0 * s0[t] + c1 * s1[t]
        return
    c2 = val[2]
    s2 = base + idx[2] * step
    if cnt == 3:
        for t in range(n):
            dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t]
        return
    c3 = val[3]
    s3 = base + idx[3] * step
    for t in range(n):
        dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t] + c3 * s3[t]
    k = 4
    while k + 1 < cnt:
        c0 = val[k]
        s0 = base + idx[k] * step
        c1 = val[k + 1]
        s1 = base + idx[k + 1] * step
        for t in range(n):
            dst[t] += c0 * s0[t] + c1 * s1[t]
        k = k + 2
    if k < cnt:
        c0 = val[k]
        s0 = base + idx[k] * step
        for t in range(n):
            dst[t] += c0 * s0[t]


cdef inline void _copy(real* dst, const real* src, Py_ssize_t n) noexcept nogil:
    # small copies: an inline loop (built with -fno-tree-loop-distribute-patterns, so it
    # stays a vectorised loop instead of becoming a libc call)
    cdef Py_ssize_t t
    for t in range(n):
        dst[t] = src[t]


cdef inline void _zero(real* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(n):
        dst[t] = 0


cdef void _gather_item(const real* xp, Py_ssize_t xn, Py_ssize_t xc, Py_ssize_t pc, Py_ssize_t nb,
                       Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, int A, int S,
                       Py_ssize_t m, Py_ssize_t pad, Py_ssize_t th, Py_ssize_t tw,
                       const int* rcnt, const int* ridx, const real* rval,
                       real* op, Py_ssize_t ostride, bint relu,
                       real* R2, real* ph, real* rrow, real* rowp) noexcept nogil:
    # One item: channels p0 .. p0+pc-1, images n0 .. n0+nb-1 (pc > 1 only when nb == N).
    # xp = &x[n0, p0, 0, 0] (xn, xc: strides between images, channels);
    # op = &out[0, p0, n0·tw], tile columns (ty·N + n)·tw + tx.
    # R2[j, l, pch, ty, n, tx] = Σ_j' L[l, j'] · x[n, pch, ty·m + j − pad, tx·m + j' − pad]
    cdef Py_ssize_t B1 = nb * tw, B = pc * nb * tw, TB = th * nb * tw
    cdef Py_ssize_t Hp = (th - 1) * m + S
    cdef Py_ssize_t y, yin, j, tx, l, i, n, c, ty, ty0, j0, t, runs, run, rlen, sh
    cdef Py_ssize_t ns = 1 + (S - 1) // m              # row shifts: phase j = sh·m + p
    cdef Py_ssize_t rlen_p = (tw + ns - 2) * m + 8     # what _deint may read of rowp
    cdef Py_ssize_t wcopy = W if W < rlen_p - pad else rlen_p - pad
    if wcopy < 0:
        wcopy = 0
    # one segment of tw·m per (channel, image) in rowp when each image's row fits its
    # segment without shifts: then one de-interleave covers the whole row of the item
    cdef bint whole = ns == 1 and pad + W <= tw * m
    cdef Py_ssize_t seg = tw * m
    cdef real v
    cdef const real* row
    cdef real* o
    cdef real* dst
    _zero(rowp, B * m + 8 if whole else rlen_p + pad + W)
    # pass 1, along rows, once per input row y (tile rows overlap when S > m):
    for y in range(Hp):
        ty0 = y // m
        if ty0 >= th:
            ty0 = th - 1
        j0 = y - ty0 * m
        if j0 >= S:
            continue
        yin = y - pad
        if yin < 0 or yin >= H:
            for l in range(A):
                for c in range(pc):
                    _zero(R2 + ((j0 * A + l) * pc + c) * TB + ty0 * B1, B1)
        else:
            # de-interleave: ph[j, pch, n, tx] = rowp[tx·m + j] (rowp: the row, zero-padded),
            # as the m phases of rowp shifted by sh·m, for j = sh·m + p
            if whole:
                for c in range(pc):
                    for n in range(nb):
                        row = xp + n * xn + c * xc + yin * W
                        if yin + PREFETCH_ROWS < H:
                            _prefetch(row + PREFETCH_ROWS * W, W, 0)
                        _copy(rowp + (c * nb + n) * seg + pad, row, W)
                _deint(rowp, ph, m, B, B)
            else:
                for c in range(pc):
                    for n in range(nb):
                        row = xp + n * xn + c * xc + yin * W
                        if yin + PREFETCH_ROWS < H:
                            _prefetch(row + PREFETCH_ROWS * W, W, 0)
                        _copy(rowp + pad, row, wcopy)
                        for sh in range(ns):
                            _deint(rowp + sh * m, ph + sh * m * B + c * B1 + n * tw, m, tw, B)
            for l in range(A):
                if pc == 1:
                    _lincomb(R2 + (j0 * A + l) * TB + ty0 * B1, B, rcnt[l], ridx + l * S, rval + l * S, ph, B)
                else:
                    dst = rrow + l * B
                    _lincomb(dst, B, rcnt[l], ridx + l * S, rval + l * S, ph, B)
                    for c in range(pc):
                        _copy(R2 + ((j0 * A + l) * pc + c) * TB + ty0 * B1, dst + c * B1, B1)
        ty = ty0 - 1
        j = j0 + m
        while ty >= 0 and j < S:  # the same row seen from the tile rows above
            for l in range(A):
                for c in range(pc):
                    _copy(R2 + ((j * A + l) * pc + c) * TB + ty * B1,
                          R2 + ((j0 * A + l) * pc + c) * TB + ty0 * B1, B1)
            ty = ty - 1
            j = j + m
    # pass 2, along columns, all tiles of the item at once:
    # out[i·α + l, pch, (ty, n, tx)] = Σ_j L[i, j] · R2[j, l, pch, ty, n, tx]
    if nb == N:
        runs, rlen = 1, pc * TB   # the item's columns are contiguous in out
    else:
        runs, rlen = th, B1       # (pc == 1)
    for i in range(A):
        for l in range(A):
            for run in range(runs):
                o = op + (i * A + l) * ostride + run * N * tw
                _lincomb(o, rlen, rcnt[i], ridx + i * S, rval + i * S, R2 + l * pc * TB + run * B1,
                         A * pc * TB)
                if relu:
                    for t in range(rlen):
                        v = o[t]
                        o[t] = v if v > 0 else 0


cdef void _scatter_item(const real* ip, Py_ssize_t istride, Py_ssize_t pc, Py_ssize_t nb, Py_ssize_t N,
                        int A, int S, Py_ssize_t m, Py_ssize_t pad, Py_ssize_t th, Py_ssize_t tw,
                        const int* ccnt, const int* cidx, const real* cval,
                        real* op, Py_ssize_t on, Py_ssize_t oc, Py_ssize_t Ho, Py_ssize_t Wo, const real* bias,
                        real* R2, real* rowbuf, real* ph, real* rowp, real* dbuf) noexcept nogil:
    # One item: channels p0 .. p0+pc-1, images n0 .. n0+nb-1 (pc > 1 only when nb == N).
    # ip = &in[0, p0, n0·tw], op = &out[n0, p0, 0, 0] (on, oc: strides between images, channels),
    # bias = &b[p0]. R2 (S, α, pc, th, nb, tw), rowbuf (α, pc, nb, tw), ph (S, pc, nb, tw),
    # dbuf (m, cnt), rowp (max(cnt, pc·nb·tw)·m + 8).
    cdef Py_ssize_t B1 = nb * tw, B = pc * nb * tw, TB = th * nb * tw
    cdef Py_ssize_t Hp = (th - 1) * m + S
    cdef Py_ssize_t y, yout, j, tx, l, n, c, ty, ylo, yhi, ty0, j0, runs, run, rlen, t
    cdef Py_ssize_t cnt = tw + (S - 1) // m            # phases of a row, as in _gather_item
    cdef bint whole = S == m and pad + Wo <= tw * m    # see pass 2
    cdef real b0
    cdef real* Rr
    cdef const real* Rs
    cdef real* orow
    # pass 1, along columns: R2[j, l, pch, ty, n, tx] = Σ_i L[i, j] · in[i·α + l, pch, (ty, n, tx)]
    if nb == N:
        runs, rlen = 1, pc * TB
    else:
        runs, rlen = th, B1
    for j in range(S):
        for l in range(A):
            for run in range(runs):
                _lincomb(R2 + (j * A + l) * pc * TB + run * B1, rlen, ccnt[j], cidx + j * A, cval + j * A,
                         ip + l * istride + run * N * tw, A * istride)
    # pass 2, along rows: out[n, pch, y − pad, tx·m + j' − pad] = b + Σ_l L[l, j'] · Σ_{ty·m + j = y} R2[j, l, pch, ty, n, tx]
    ylo = pad
    yhi = pad + Ho
    if yhi > Hp:
        yhi = Hp
    for y in range(ylo, yhi):
        yout = y - pad
        ty0 = y // m
        if ty0 >= th:
            ty0 = th - 1
        j0 = y - ty0 * m
        if j0 >= S:
            for c in range(pc):
                b0 = bias[c]
                for n in range(nb):
                    orow = op + n * on + c * oc + yout * Wo
                    for tx in range(Wo):
                        orow[tx] = b0
            continue
        for l in range(A):
            for c in range(pc):
                _copy(rowbuf + l * B + c * B1, R2 + ((j0 * A + l) * pc + c) * TB + ty0 * B1, B1)
        ty = ty0 - 1
        j = j0 + m
        while ty >= 0 and j < S:
            for l in range(A):
                for c in range(pc):
                    Rr = rowbuf + l * B + c * B1
                    Rs = R2 + ((j * A + l) * pc + c) * TB + ty * B1
                    for t in range(B1):
                        Rr[t] += Rs[t]
            ty = ty - 1
            j = j + m
        # phases ph[j, pch, n, tx] = Σ_l L[l, j] · rowbuf[l, pch, n, tx]
        for j in range(S):
            _lincomb(ph + j * B, B, ccnt[j], cidx + j * A, cval + j * A, rowbuf, B)
        if whole:
            # S = m phases, nothing to fold: interleave the whole row of the item at once,
            # rowp[(pch·nb + n)·tw·m + tx·m + j] = ph[j, pch, n, tx], then crop each image's part
            _inter(ph, rowp, m, B, B)
            for c in range(pc):
                b0 = bias[c]
                for n in range(nb):
                    orow = op + n * on + c * oc + yout * Wo
                    if yout + PREFETCH_ROWS < Ho:
                        _prefetch(orow + PREFETCH_ROWS * Wo, Wo, 1)
                    Rs = rowp + (c * nb + n) * tw * m + pad
                    for tx in range(Wo):
                        orow[tx] = b0 + Rs[tx]
            continue
        for c in range(pc):
            b0 = bias[c]
            for n in range(nb):
                # fold phase j into phase j mod m shifted by j // m, interleave, crop
                _zero(dbuf, m * cnt)
                for j in range(S):
                    Rr = dbuf + (j % m) * cnt + j // m
                    Rs = ph + j * B + c * B1 + n * tw
                    for tx in range(tw):
                        Rr[tx] += Rs[tx]
                _inter(dbuf, rowp, m, cnt, cnt)
                orow = op + n * on + c * oc + yout * Wo
                if yout + PREFETCH_ROWS < Ho:
                    _prefetch(orow + PREFETCH_ROWS * Wo, Wo, 1)
                Rs = rowp + pad
                for tx in range(Wo):
                    orow[tx] = b0 + Rs[tx]
    for y in range(yhi - ylo, Ho):  # rows no tile reaches (only if the caller's th is too small)
        for c in range(pc):
            b0 = bias[c]
            for n in range(nb):
                orow = op + n * on + c * oc + y * Wo
                for tx in range(Wo):
                    orow[tx] = b0


def _nonzeros(L):
    """Row- and column-wise lists of the non-zero entries of L (α, s)."""
    L = np.asarray(L)
    A, S = L.shape
    rcnt = np.zeros(A, np.int32)
    ridx = np.zeros((A, S), np.int32)
    rval = np.zeros((A, S), L.dtype)
    for i in range(A):
        nz = np.flatnonzero(L[i])
        rcnt[i] = nz.size
        ridx[i, :nz.size] = nz
        rval[i, :nz.size] = L[i, nz]
    ccnt = np.zeros(S, np.int32)
    cidx = np.zeros((S, A), np.int32)
    cval = np.zeros((S, A), L.dtype)
    for j in range(S):
        nz = np.flatnonzero(L[:, j])
        ccnt[j] = nz.size
        cidx[j, :nz.size] = nz
        cval[j, :nz.size] = L[nz, j]
    return rcnt, ridx, rval, ccnt, cidx, cval


_NZ_CACHE = {}


def _nonzeros_cached(L):
    L = np.asarray(L)
    key = (L.shape, L.dtype.str, L.tobytes())
    r = _NZ_CACHE.get(key)
    if r is None:
        if len(_NZ_CACHE) > 64:
            _NZ_CACHE.clear()
        r = _NZ_CACHE[key] = _nonzeros(L)
    return r


def _plan(Py_ssize_t N, Py_ssize_t P, Py_ssize_t per_image, Py_ssize_t work, int num_threads,
          Py_ssize_t tw=0):
    """Work items (chunk of pc channels) × (chunk of nb images); pc > 1 only with nb == N
    and short rows (N·tw < 32: several channels make the row pass long enough to vectorise,
    at the price of copies). Returns (pc, nb, channel chunks, image chunks, threads)."""
    cdef int nt = _threads(num_threads)
    if work < 32768:   # not worth waking a second thread
        nt = 1
    per_image = max(per_image, 1)
    if per_image * N <= ITEM_ELEMS:
        nb = N
        pc = max(1, min(P, ITEM_ELEMS // (per_image * N), _ceil_div(P, nt))) if N * tw < 32 else 1
    else:
        pc = 1
        nb = max(1, min(N, ITEM_ELEMS // per_image))
        if P * _ceil_div(N, nb) < nt and N > 1:  # e.g. a 1-channel input: split the batch
            nb = max(1, _ceil_div(N, _ceil_div(nt, P)))
    if pc == 1 and nb == N and P < nt and N > 1:
        nb = max(1, _ceil_div(N, _ceil_div(nt, P)))
    npc, nnb = _ceil_div(P, pc), _ceil_div(N, nb)
    nt = min(nt, npc * nnb)
    return pc, nb, npc, nnb, max(nt, 1)


def gather_transform(const real[:, :, :, ::1] x, const real[:, ::1] L, int m, int pad,
                     int th, int tw, real[:, :, ::1] out, bint relu=False, int num_threads=0):
    """Cut s×s tiles at stride ``m`` from the zero-padded planes and transform them.

    x   (N, P, H, W)       the planes (C-contiguous)
    L   (α, s)             the transform (Bᵀ for the input, A for the output gradient)
    out (α², P, N·th·tw)   out[i·α + l, p, (ty·N + n)·tw + tx] = (L · tile(n, p, ty, tx) · Lᵀ)[i, l];
                           with ``relu`` max(·, 0) of it (Winograd-ReLU, Liu et al., Fig. 1c)
    Tile (ty, tx) starts at row ty·m − pad, column tx·m − pad. ``num_threads`` 0: OpenMP's.
    """
    cdef Py_ssize_t N = x.shape[0], P = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int A = L.shape[0], S = L.shape[1]
    cdef Py_ssize_t T = <Py_ssize_t> th * tw
    if m < 1 or th < 0 or tw < 0 or pad < 0:
        raise ValueError("gather_transform: bad geometry")
    if out.shape[0] != A * A or out.shape[1] != P or out.shape[2] != N * T:
        raise ValueError(f"gather_transform: out has shape {tuple(out.shape)[:3]}, "
                         f"expected {(A * A, P, N * T)}")
    if N * P * T == 0:
        return
    nzr = _nonzeros_cached(L)
    cdef int[::1] rcnt = nzr[0]
    cdef int[:, ::1] ridx = nzr[1]
    cdef real[:, ::1] rval = nzr[2]
    cdef Py_ssize_t pc, nb, npc, nnb, q, p0, n0, pcc, nbc
    cdef int nt
    pc, nb, npc, nnb, nt = _plan(N, P, S * A * T, A * A * P * N * T, num_threads, tw)
    cdef Py_ssize_t ostride = P * N * T
    cdef real* R = NULL
    cdef real* ph = NULL
    cdef real* rrow = NULL
    cdef real* rowp = NULL
    cdef Py_ssize_t rowlen = max((tw + (S - 1) // m) * m + 8 + pad + W, tw * nb * pc * m) + 8
    cdef const real* xb = &x[0, 0, 0, 0]
    cdef real* ob = &out[0, 0, 0]
    with nogil, parallel(num_threads=nt):
        R = <real*> malloc(S * A * T * nb * pc * sizeof(real))
        ph = <real*> malloc(((S - 1) // m + 1) * m * tw * nb * pc * sizeof(real))
        rrow = <real*> malloc(A * tw * nb * pc * sizeof(real))
        rowp = <real*> malloc(rowlen * sizeof(real))
        for q in prange(npc * nnb, schedule="dynamic"):
            p0 = (q // nnb) * pc
            n0 = (q % nnb) * nb
            pcc = P - p0 if P - p0 < pc else pc
            nbc = N - n0 if N - n0 < nb else nb
            _gather_item(xb + (n0 * P + p0) * H * W, P * H * W, H * W, pcc, nbc, N, H, W, A, S, m, pad, th, tw,
                         &rcnt[0], &ridx[0, 0], &rval[0, 0],
                         ob + p0 * N * T + n0 * tw, ostride, relu, R, ph, rrow, rowp)
        free(R)
        free(ph)
        free(rrow)
        free(rowp)


def transform_scatter(const real[:, :, ::1] inp, const real[:, ::1] L, int m, int pad,
                      int th, int tw, real[:, :, :, ::1] out, bias=None, int num_threads=0):
    """The adjoint of :func:`gather_transform`: transform tiles back and scatter-add them.

    inp  (α², P, N·th·tw)  transform-domain tiles, column (ty·N + n)·tw + tx
    L    (α, s)            A for the output transform (s = m), Bᵀ for the input gradient (s = α)
    out  (N, P, Ho, Wo)    OVERWRITTEN with bias[p] + Σ_tiles (Lᵀ · in_tile · L) placed at
                           (ty·m − pad, tx·m − pad) and cropped to the plane
    bias (P,) or None
    """
    cdef Py_ssize_t N = out.shape[0], P = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef int A = L.shape[0], S = L.shape[1]
    cdef Py_ssize_t T = <Py_ssize_t> th * tw
    if m < 1 or th < 0 or tw < 0 or pad < 0:
        raise ValueError("transform_scatter: bad geometry")
    if inp.shape[0] != A * A or inp.shape[1] != P or inp.shape[2] != N * T:
        raise ValueError(f"transform_scatter: inp has shape {tuple(inp.shape)[:3]}, "
                         f"expected {(A * A, P, N * T)}")
    if N * P * Ho * Wo == 0:
        return
    dt = np.float32 if real is float else np.float64
    cdef real[::1] b
    if bias is None:
        b = np.zeros(P, dt)
    else:
        b = np.ascontiguousarray(bias, dtype=dt)
        if b.shape[0] != P:
            raise ValueError("transform_scatter: bias must have P entries")
    if T == 0:
        np.asarray(out)[...] = np.asarray(b)[None, :, None, None]
        return
    nzr = _nonzeros_cached(L)
    cdef int[::1] ccnt = nzr[3]
    cdef int[:, ::1] cidx = nzr[4]
    cdef real[:, ::1] cval = nzr[5]
    cdef Py_ssize_t pc, nb, npc, nnb, q, p0, n0, pcc, nbc
    cdef int nt
    pc, nb, npc, nnb, nt = _plan(N, P, S * A * T, A * A * P * N * T, num_threads, tw)
    cdef Py_ssize_t istride = P * N * T
    cdef real* R = NULL
    cdef real* ph = NULL
    cdef real* rowp = NULL
    cdef real* dbuf = NULL
    cdef Py_ssize_t cnt = tw + (S - 1) // m
    cdef Py_ssize_t rowlen = max(cnt, tw * nb * pc) * m + 8
    cdef const real* ib = &inp[0, 0, 0]
    cdef real* ob = &out[0, 0, 0, 0]
    with nogil, parallel(num_threads=nt):
        R = <real*> malloc(S * A * T * nb * pc * sizeof(real))
        ph = <real*> malloc((A + S) * tw * nb * pc * sizeof(real))
        rowp = <real*> malloc(rowlen * sizeof(real))
        dbuf = <real*> malloc(m * cnt * sizeof(real))
        for q in prange(npc * nnb, schedule="dynamic"):
            p0 = (q // nnb) * pc
            n0 = (q % nnb) * nb
            pcc = P - p0 if P - p0 < pc else pc
            nbc = N - n0 if N - n0 < nb else nb
            _scatter_item(ib + p0 * N * T + n0 * tw, istride, pcc, nbc, N, A, S, m, pad, th, tw,
                          &ccnt[0], &cidx[0, 0], &cval[0, 0],
                          ob + (n0 * P + p0) * Ho * Wo, P * Ho * Wo, Ho * Wo, Ho, Wo, &b[p0],
                          R, ph + S * tw * nb * pc, ph, rowp, dbuf)
        free(R)
        free(ph)
        free(rowp)
        free(dbuf)


# ----- fused kernels for few channels: the products U[ξ] @ V[ξ] done per work item -----
# When the GEMMs' inner dimension C is tiny (a 1-channel input: an outer product), the
# whole cost of the unfused path is moving M = U ⊙ V (α², K, N·T) through memory, α²/m²
# times the size of the output. These kernels compute M (or dM) one work item at a time
# into a scratch that stays in L2, and consume it there.

# Target size (elements) of one fused item's scratch: M or dM (α², pc, th, nb, tw) plus
# the tiling kernels' row buffers (S·α per tile): per thread, it stays in L2.
cdef enum:
    FUSED_ITEM_ELEMS = 65536


cdef inline real _dot(const real* a, const real* b, Py_ssize_t n) noexcept nogil:
    # Σ_t a[t]·b[t], in eight interleaved partial sums (a vector register's worth)
    cdef real acc[8]
    cdef real s
    cdef Py_ssize_t t = 0
    cdef int u
    for u in range(8):
        acc[u] = 0
    while t + 8 <= n:
        for u in range(8):
            acc[u] += a[t + u] * b[t + u]
        t = t + 8
    s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
    while t < n:
        s += a[t] * b[t]
        t = t + 1
    return s


cdef inline void _axpy(real* dst, Py_ssize_t n, real c, const real* src) noexcept nogil:
    # dst[0:n] += c · src[0:n]
    cdef Py_ssize_t t
    for t in range(n):
        dst[t] += c * src[t]


cdef void _product_item(const real* U, const real* V, Py_ssize_t P, Py_ssize_t C, Py_ssize_t N,
                        Py_ssize_t n0, Py_ssize_t p0, Py_ssize_t pc, Py_ssize_t pcs, Py_ssize_t nb,
                        Py_ssize_t th, Py_ssize_t tw, int A2, const int* iota, real* Mi) noexcept nogil:
    # Mi[ξ, c, ty, n, tx] = Σ_c' U[ξ, p0 + c, c'] · V[ξ, c', (ty·N + n0 + n)·tw + tx]
    # for c < pc, n < nb; Mi (α², pcs, th, nb, tw) (pcs ≥ pc: the scratch's plane count).
    cdef Py_ssize_t B1 = nb * tw, TB = th * nb * tw, NT = N * th * tw
    cdef Py_ssize_t xi, c, run, runs, rlen
    if nb == N:
        runs, rlen = 1, TB   # the item's columns are contiguous in V
    else:
        runs, rlen = th, B1
    for xi in range(A2):
        for c in range(pc):
            for run in range(runs):
                _lincomb(Mi + (xi * pcs + c) * TB + run * B1, rlen, <int> C, iota,
                         U + (xi * P + p0 + c) * C, V + xi * C * NT + (run * N + n0) * tw, NT)


cdef void _grads_item(const real* dMi, const real* U, const real* V, Py_ssize_t P, Py_ssize_t C,
                      Py_ssize_t N, Py_ssize_t n0, Py_ssize_t p0, Py_ssize_t pc, Py_ssize_t pcs,
                      Py_ssize_t nb, Py_ssize_t th, Py_ssize_t tw, int A2,
                      real* dUp, real* dV) noexcept nogil:
    # From dMi[ξ, c, ty, n, tx] (α², pcs, th, nb, tw) = dM[ξ, p0 + c, (ty·N + n0 + n)·tw + tx]:
    #   dUp[ξ, p0 + c, c'] = Σ_{ty,n,tx} dMi[ξ, c, ty, n, tx] · V[ξ, c', (ty·N + n0 + n)·tw + tx]
    #   dV[ξ, c', (ty·N + n0 + n)·tw + tx] += Σ_c U[ξ, p0 + c, c'] · dMi[ξ, c, ty, n, tx]  (dV may be NULL)
    cdef Py_ssize_t B1 = nb * tw, TB = th * nb * tw, NT = N * th * tw
    cdef Py_ssize_t xi, c, c2, run, runs, rlen
    cdef const real* d
    cdef real s
    if nb == N:
        runs, rlen = 1, TB
    else:
        runs, rlen = th, B1
    for xi in range(A2):
        for c in range(pc):
            d = dMi + (xi * pcs + c) * TB
            for c2 in range(C):
                s = 0
                for run in range(runs):
                    s += _dot(d + run * B1, V + (xi * C + c2) * NT + (run * N + n0) * tw, rlen)
                dUp[(xi * P + p0 + c) * C + c2] = s
            if dV != NULL:
                for c2 in range(C):
                    for run in range(runs):
                        _axpy(dV + (xi * C + c2) * NT + (run * N + n0) * tw, rlen,
                              U[(xi * P + p0 + c) * C + c2], d + run * B1)


def _plan_fused(Py_ssize_t N, Py_ssize_t P, Py_ssize_t per_image, int nt):
    """Items of the fused kernels: nb images × pc planes, the scratch (per_image elements per
    plane and image) about FUSED_ITEM_ELEMS, at least ``nt`` image chunks when N allows.
    Returns (pc, nb, number of plane chunks, number of image chunks)."""
    per_image = max(per_image, 1)
    nnb = min(N, max(nt, _ceil_div(N * per_image, FUSED_ITEM_ELEMS)))
    nb = _ceil_div(N, nnb)
    pc = max(1, min(P, FUSED_ITEM_ELEMS // (per_image * nb)))
    return pc, nb, _ceil_div(P, pc), _ceil_div(N, nb)


def product_transform_scatter(const real[:, :, ::1] U, const real[:, :, ::1] V, const real[:, ::1] L,
                              int m, int pad, int th, int tw, real[:, :, :, ::1] out, bias=None,
                              int num_threads=0):
    """``transform_scatter(M, L, ...)`` of the products M[ξ] = U[ξ] @ V[ξ], M never stored whole.

    U    (α², P, C)        per-point weights (the forward: U laid out for the GEMMs)
    V    (α², C, N·th·tw)  transform-domain tiles, column (ty·N + n)·tw + tx
    L    (α, s)            A for the output transform (s = m)
    out  (N, P, Ho, Wo)    OVERWRITTEN with bias[p] + Σ_tiles Lᵀ · M_tile · L, as transform_scatter
    bias (P,) or None
    M is computed per work item (pc planes × nb images) into an L2-sized scratch, as a
    C-term linear combination of rows of V: meant for small C (C = 1: a broadcast multiply).
    """
    cdef Py_ssize_t N = out.shape[0], P = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t C = V.shape[1]
    cdef int A = L.shape[0], S = L.shape[1], A2 = L.shape[0] * L.shape[0]
    cdef Py_ssize_t T = <Py_ssize_t> th * tw
    if m < 1 or th < 0 or tw < 0 or pad < 0:
        raise ValueError("product_transform_scatter: bad geometry")
    if V.shape[0] != A2 or V.shape[2] != N * T:
        raise ValueError(f"product_transform_scatter: V has shape {tuple(V.shape)[:3]}, "
                         f"expected {(A2, C, N * T)}")
    if U.shape[0] != A2 or U.shape[1] != P or U.shape[2] != C:
        raise ValueError(f"product_transform_scatter: U has shape {tuple(U.shape)[:3]}, "
                         f"expected {(A2, P, C)}")
    if C == 0 or T == 0:
        transform_scatter(np.zeros((A2, P, N * T), np.asarray(V).dtype), L, m, pad, th, tw, out, bias)
        return
    if N * P * Ho * Wo == 0:
        return
    dt = np.float32 if real is float else np.float64
    cdef real[::1] b
    if bias is None:
        b = np.zeros(P, dt)
    else:
        b = np.ascontiguousarray(bias, dtype=dt)
        if b.shape[0] != P:
            raise ValueError("product_transform_scatter: bias must have P entries")
    nzr = _nonzeros_cached(L)
    cdef int[::1] ccnt = nzr[3]
    cdef int[:, ::1] cidx = nzr[4]
    cdef real[:, ::1] cval = nzr[5]
    cdef int[::1] iota = np.arange(C, dtype=np.int32)
    cdef int nt = _threads(num_threads)
    if A2 * P * N * T < 32768:
        nt = 1
    cdef Py_ssize_t pc, nb, npc, nnb, q, p0, n0, pcc, nbc
    pc, nb, npc, nnb = _plan_fused(N, P, (A2 + S * A) * T, nt)
    nt = max(1, min(nt, npc * nnb))
    cdef real* Mi = NULL
    cdef real* R = NULL
    cdef real* ph = NULL
    cdef real* rowp = NULL
    cdef real* dbuf = NULL
    cdef Py_ssize_t cnt = tw + (S - 1) // m
    cdef const real* Ub = &U[0, 0, 0]
    cdef const real* Vb = &V[0, 0, 0]
    cdef real* ob = &out[0, 0, 0, 0]
    with nogil, parallel(num_threads=nt):
        Mi = <real*> malloc(A2 * T * nb * pc * sizeof(real))
        R = <real*> malloc(S * A * T * nb * pc * sizeof(real))
        ph = <real*> malloc((A + S) * tw * nb * pc * sizeof(real))
        rowp = <real*> malloc((max(cnt, tw * nb * pc) * m + 8) * sizeof(real))
        dbuf = <real*> malloc(m * cnt * sizeof(real))
        for q in prange(npc * nnb, schedule="dynamic"):
            p0 = (q // nnb) * pc
            n0 = (q % nnb) * nb
            pcc = P - p0 if P - p0 < pc else pc
            nbc = N - n0 if N - n0 < nb else nb
            _product_item(Ub, Vb, P, C, N, n0, p0, pcc, pc, nbc, th, tw, A2, &iota[0], Mi)
            # the scratch as a complete (α², pc, th·nbc·tw) input of nbc images
            _scatter_item(Mi, pc * T * nbc, pcc, nbc, nbc, A, S, m, pad, th, tw,
                          &ccnt[0], &cidx[0, 0], &cval[0, 0],
                          ob + (n0 * P + p0) * Ho * Wo, P * Ho * Wo, Ho * Wo, Ho, Wo, &b[p0],
                          R, ph + S * tw * nb * pc, ph, rowp, dbuf)
        free(Mi)
        free(R)
        free(ph)
        free(rowp)
        free(dbuf)


def gather_transform_grads(const real[:, :, :, ::1] dy, const real[:, ::1] L, int m, int pad,
                           int th, int tw, const real[:, :, ::1] V, const real[:, :, ::1] U,
                           real[:, :, ::1] dU, dV=None, int num_threads=0):
    """The GEMMs' gradients from ``dM = gather_transform(dy, L, ...)``, dM never stored whole.

    dy (N, P, H, W)        the output gradient (C-contiguous); L (α, s): A (s = m)
    V  (α², C, N·th·tw)    the forward's transformed input; U (α², P, C) its weights
    dU (α², P, C)          OVERWRITTEN with dU[ξ] = dM[ξ] @ V[ξ]ᵀ
    dV (α², C, N·th·tw)    or None: OVERWRITTEN with dV[ξ] = U[ξ]ᵀ @ dM[ξ]
    Work items are chunks of images (in parallel); each runs over the planes pc at a time,
    gathering dM of (pc planes, its images) into an L2-sized scratch and taking both
    products from there. dU is the sum of the items' partial sums, in a fixed order.
    Meant for small C (the products are dot products and axpys, not GEMMs).
    """
    cdef Py_ssize_t N = dy.shape[0], P = dy.shape[1], H = dy.shape[2], W = dy.shape[3]
    cdef Py_ssize_t C = V.shape[1]
    cdef int A = L.shape[0], S = L.shape[1], A2 = L.shape[0] * L.shape[0]
    cdef Py_ssize_t T = <Py_ssize_t> th * tw
    if m < 1 or th < 0 or tw < 0 or pad < 0:
        raise ValueError("gather_transform_grads: bad geometry")
    if V.shape[0] != A2 or V.shape[2] != N * T:
        raise ValueError(f"gather_transform_grads: V has shape {tuple(V.shape)[:3]}, "
                         f"expected {(A2, C, N * T)}")
    for name, arr in (("U", U), ("dU", dU)):
        if arr.shape[0] != A2 or arr.shape[1] != P or arr.shape[2] != C:
            raise ValueError(f"gather_transform_grads: {name} has shape {tuple(arr.shape)[:3]}, "
                             f"expected {(A2, P, C)}")
    cdef real[:, :, ::1] dVm
    cdef real* dVb = NULL
    if dV is not None:
        dVm = dV
        if dVm.shape[0] != A2 or dVm.shape[1] != C or dVm.shape[2] != N * T:
            raise ValueError(f"gather_transform_grads: dV has shape {tuple(dVm.shape)[:3]}, "
                             f"expected {(A2, C, N * T)}")
    if N * T == 0 or P * C == 0:
        np.asarray(dU)[...] = 0
        if dV is not None:
            np.asarray(dV)[...] = 0
        return
    if dV is not None:
        dVb = &dVm[0, 0, 0]
    nzr = _nonzeros_cached(L)
    cdef int[::1] rcnt = nzr[0]
    cdef int[:, ::1] ridx = nzr[1]
    cdef real[:, ::1] rval = nzr[2]
    cdef int nt = _threads(num_threads)
    if A2 * P * N * T < 32768:
        nt = 1
    cdef Py_ssize_t pc, nb, npc, nnb, q, p0, n0, pcc, nbc, xi, c2, run
    pc, nb, npc, nnb = _plan_fused(N, P, (A2 + S * A) * T, nt)
    nt = max(1, min(nt, nnb))
    dt = np.float32 if real is float else np.float64
    parts = np.empty((nnb, A2, P, C), dt)        # dU of each image chunk
    cdef real[:, :, :, ::1] partv = parts
    cdef real* Mi = NULL
    cdef real* R = NULL
    cdef real* ph = NULL
    cdef real* rrow = NULL
    cdef real* rowp = NULL
    cdef Py_ssize_t rowlen = max((tw + (S - 1) // m) * m + 8 + pad + W, tw * nb * pc * m) + 8
    cdef const real* xb = &dy[0, 0, 0, 0]
    cdef const real* Ub = &U[0, 0, 0]
    cdef const real* Vb = &V[0, 0, 0]
    cdef real* pb = &partv[0, 0, 0, 0]
    with nogil, parallel(num_threads=nt):
        Mi = <real*> malloc(A2 * T * nb * pc * sizeof(real))
        R = <real*> malloc(S * A * T * nb * pc * sizeof(real))
        ph = <real*> malloc(((S - 1) // m + 1) * m * tw * nb * pc * sizeof(real))
        rrow = <real*> malloc(A * tw * nb * pc * sizeof(real))
        rowp = <real*> malloc(rowlen * sizeof(real))
        for q in prange(nnb, schedule="dynamic"):
            n0 = q * nb
            nbc = N - n0 if N - n0 < nb else nb
            if dVb != NULL:   # this chunk's columns of dV
                for xi in range(A2 * C):
                    for run in range(th):
                        _zero(dVb + xi * N * T + (run * N + n0) * tw, nbc * tw)
            p0 = 0
            while p0 < P:
                pcc = P - p0 if P - p0 < pc else pc
                # dM of planes p0 .. p0+pcc-1 and this chunk's images, as (α², pc, th, nbc, tw)
                _gather_item(xb + (n0 * P + p0) * H * W, P * H * W, H * W, pcc, nbc, nbc, H, W, A, S,
                             m, pad, th, tw, &rcnt[0], &ridx[0, 0], &rval[0, 0],
                             Mi, pc * T * nbc, False, R, ph, rrow, rowp)
                _grads_item(Mi, Ub, Vb, P, C, N, n0, p0, pcc, pc, nbc, th, tw, A2,
                            pb + q * A2 * P * C, dVb)
                p0 = p0 + pc
        free(Mi)
        free(R)
        free(ph)
        free(rrow)
        free(rowp)
    np.sum(parts, axis=0, out=np.asarray(dU))
