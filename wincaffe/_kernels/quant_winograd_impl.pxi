# The body of the integer element-wise stage of quantized Winograd convolution, included by
# quant_winograd.pyx (baseline), quant_winograd_avx2.pyx and quant_winograd_vnni.pyx (the
# same code built for AVX2 / AVX-512 VNNI by #pragma GCC target). See quant_winograd.pyx.
cimport openmp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, uint8_t

import numpy as np

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    #if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
    #  define QW_VNNI 1
    #  define QW_GROUP 4          /* channels per 32-bit word: u8 x 4 */
    #  define QW_COLS 64         /* columns per register block: 4 zmm x 16 */
    #  define QW_SIMD "avx512_vnni"
    #  include <immintrin.h>
    #elif defined(__AVX2__)
    #  define QW_AVX2 1
    #  define QW_GROUP 2          /* channels per 32-bit word: s16 x 2 */
    #  define QW_COLS 16         /* 2 ymm x 8 */
    #  define QW_SIMD "avx2"
    #  include <immintrin.h>
    #else
    #  define QW_GROUP 2
    #  define QW_COLS 16
    #  define QW_SIMD "baseline"
    #endif
    #define QW_ROWS 4             /* output rows (k) per register block */
    #define QW_CHUNK 256          /* columns per cache block (a multiple of QW_COLS) */

    /* z -> clip(round_half_even(z), -n, n) as an int; clipping first keeps the conversion
       in range, and round(clip(z)) == clip(round(z)) for an integer n. NaN -> 0 (every
       path alike). */
    static inline int32_t qw_round(float z, float n) {
        if (z != z) return 0;
        z = z > n ? n : (z < -n ? -n : z);
        return (int32_t)nearbyintf(z);
    }

    /* max |row[j]| over the finite entries (NaN and +-inf count as 0); branch-free, so
       the compiler vectorizes it. */
    #if defined(__AVX512F__)
    #  define QW_VB 64         /* the build's vector bytes */
    #elif defined(__AVX2__)
    #  define QW_VB 32
    #else
    #  define QW_VB 16
    #endif
    #define QW_VL (QW_VB / 4)
    typedef float qw_v16 __attribute__((vector_size(QW_VB), aligned(4), may_alias));
    typedef int32_t qw_i16 __attribute__((vector_size(QW_VB), aligned(4), may_alias));
    static float qw_absmax(const float* row, ptrdiff_t n) {
        /* the reduction in QW_VL explicit lanes (a float max reduction is not vectorized
           without -ffast-math), then across the lanes */
        qw_v16 m = {0};
        ptrdiff_t j = 0;
        int t;
        for (; j + QW_VL <= n; j += QW_VL) {
            qw_v16 a = (qw_v16)(*(const qw_i16*)(row + j) & 0x7fffffff);   /* |x|; NaN stays NaN */
            qw_i16 ok = (a <= 3.4028234663852886e38f) & (a > m);          /* false for NaN, inf */
            m = (qw_v16)(((qw_i16)a & ok) | ((qw_i16)m & ~ok));
        }
        float mx = 0.0f;
        for (t = 0; t < QW_VL; t++) mx = m[t] > mx ? m[t] : mx;
        for (; j < n; j++) {
            float a = fabsf(row[j]);
            if (a <= 3.4028234663852886e38f && a > mx) mx = a;
        }
        return mx;
    }

    /* Pack one group of QW_GROUP channel rows (row t at base + t * stride, t < cnt; missing
       rows read as 0) of NT floats into 32-bit words: word j holds channel t of column j in byte (u8x4,
       value + 128) or half-word (s16x2) t. z = row[j] * s[t] (* e[t] when e). Columns
       NT..NTp-1 are zero-valued. */
    static void qw_pack_group(const float* base, ptrdiff_t stride, const float* s, const float* e, int cnt,
                              float n, ptrdiff_t NT, ptrdiff_t NTp, uint32_t* out) {
        ptrdiff_t j = 0;
        int t;
    #if defined(QW_VNNI)
        __m512 vn = _mm512_set1_ps(n), vmn = _mm512_set1_ps(-n);
        __m512i off = _mm512_set1_epi32(128), bytemask = _mm512_set1_epi32(0xFF);
        for (; j + 16 <= NT; j += 16) {
            __m512i w = _mm512_set1_epi32(0x80808080);   /* absent channels: value 0 (+128) */
            for (t = 0; t < cnt; t++) {
                __m512 z = _mm512_mul_ps(_mm512_loadu_ps(base + t * stride + j), _mm512_set1_ps(s[t]));
                if (e) z = _mm512_mul_ps(z, _mm512_set1_ps(e[t]));
                z = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, z, _CMP_ORD_Q), z);     /* NaN -> 0 */
                z = _mm512_min_ps(_mm512_max_ps(z, vmn), vn);
                __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(z), off);
                w = _mm512_andnot_si512(_mm512_slli_epi32(bytemask, 8 * t), w);
                w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(q, bytemask), 8 * t));
            }
            _mm512_storeu_si512((void*)(out + j), w);
        }
    #elif defined(QW_AVX2)
        __m256 vn = _mm256_set1_ps(n), vmn = _mm256_set1_ps(-n);
        __m256i lo = _mm256_set1_epi32(0xFFFF);
        for (; j + 8 <= NT; j += 8) {
            __m256i w = _mm256_setzero_si256();
            for (t = 0; t < cnt; t++) {
                __m256 z = _mm256_mul_ps(_mm256_loadu_ps(base + t * stride + j), _mm256_set1_ps(s[t]));
                if (e) z = _mm256_mul_ps(z, _mm256_set1_ps(e[t]));
                z = _mm256_and_ps(z, _mm256_cmp_ps(z, z, _CMP_ORD_Q));                 /* NaN -> 0 */
                z = _mm256_min_ps(_mm256_max_ps(z, vmn), vn);
                __m256i q = _mm256_cvtps_epi32(z);
                w = _mm256_or_si256(w, _mm256_slli_epi32(_mm256_and_si256(q, lo), 16 * t));
            }
            _mm256_storeu_si256((__m256i*)(out + j), w);
        }
    #endif
        for (; j < NTp; j++) {
            uint32_t w = 0;
            for (t = 0; t < QW_GROUP; t++) {
                int32_t q = 0;
                if (t < cnt && j < NT) {
                    float z = base[t * stride + j] * s[t];
                    if (e) z = z * e[t];
                    q = qw_round(z, n);
                }
    #if QW_GROUP == 4
                w |= (uint32_t)(uint8_t)(q + 128) << (8 * t);
    #else
                w |= (uint32_t)(uint16_t)(int16_t)q << (16 * t);
    #endif
            }
            out[j] = w;
        }
    }

    /* One cache block of the products: rows k of U (packed (Kp, G words)), columns j0..j1 of
       V (packed (G, NTp) words), out[k, j] = sum_c U[k, c] V[c, j] (int32), dequantized to
       float by deq when outf, else stored as int32 in outi. Row-major out (K, NT). */
    static void qw_block(const uint32_t* U, const uint32_t* V, const int32_t* usum, float deq,
                         ptrdiff_t K, ptrdiff_t G, ptrdiff_t NT, ptrdiff_t NTp,
                         ptrdiff_t j0, ptrdiff_t j1, float* outf, int32_t* outi) {
        int32_t acc[QW_ROWS][QW_COLS];
        ptrdiff_t k0, j, g;
        int r, q;
        for (k0 = 0; k0 < K; k0 += QW_ROWS) {
            const uint32_t* u = U + k0 * G;
            for (j = j0; j < j1; j += QW_COLS) {
                const uint32_t* v = V + j;
    #if defined(QW_VNNI)
                __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
                __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
                __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
                __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;
                for (g = 0; g < G; g++) {
                    const uint32_t* vg = v + g * NTp;
                    __m512i b0 = _mm512_loadu_si512((const void*)vg);
                    __m512i b1 = _mm512_loadu_si512((const void*)(vg + 16));
                    __m512i b2 = _mm512_loadu_si512((const void*)(vg + 32));
                    __m512i b3 = _mm512_loadu_si512((const void*)(vg + 48));
                    __m512i w0 = _mm512_set1_epi32((int)u[g]);
                    __m512i w1 = _mm512_set1_epi32((int)u[G + g]);
                    __m512i w2 = _mm512_set1_epi32((int)u[2 * G + g]);
                    __m512i w3 = _mm512_set1_epi32((int)u[3 * G + g]);
                    a00 = _mm512_dpbusd_epi32(a00, b0, w0); a01 = _mm512_dpbusd_epi32(a01, b1, w0);
                    a02 = _mm512_dpbusd_epi32(a02, b2, w0); a03 = _mm512_dpbusd_epi32(a03, b3, w0);
                    a10 = _mm512_dpbusd_epi32(a10, b0, w1); a11 = _mm512_dpbusd_epi32(a11, b1, w1);
                    a12 = _mm512_dpbusd_epi32(a12, b2, w1); a13 = _mm512_dpbusd_epi32(a13, b3, w1);
                    a20 = _mm512_dpbusd_epi32(a20, b0, w2); a21 = _mm512_dpbusd_epi32(a21, b1, w2);
                    a22 = _mm512_dpbusd_epi32(a22, b2, w2); a23 = _mm512_dpbusd_epi32(a23, b3, w2);
                    a30 = _mm512_dpbusd_epi32(a30, b0, w3); a31 = _mm512_dpbusd_epi32(a31, b1, w3);
                    a32 = _mm512_dpbusd_epi32(a32, b2, w3); a33 = _mm512_dpbusd_epi32(a33, b3, w3);
                }
                /* undo the +128 offset of V: sum_c U (V + 128) - 128 sum_c U */
                __m512i c0 = _mm512_set1_epi32(128 * usum[k0]), c1 = _mm512_set1_epi32(128 * usum[k0 + 1]);
                __m512i c2 = _mm512_set1_epi32(128 * usum[k0 + 2]), c3 = _mm512_set1_epi32(128 * usum[k0 + 3]);
                _mm512_storeu_si512((void*)&acc[0][0], _mm512_sub_epi32(a00, c0));
                _mm512_storeu_si512((void*)&acc[0][16], _mm512_sub_epi32(a01, c0));
                _mm512_storeu_si512((void*)&acc[0][32], _mm512_sub_epi32(a02, c0));
                _mm512_storeu_si512((void*)&acc[0][48], _mm512_sub_epi32(a03, c0));
                _mm512_storeu_si512((void*)&acc[1][0], _mm512_sub_epi32(a10, c1));
                _mm512_storeu_si512((void*)&acc[1][16], _mm512_sub_epi32(a11, c1));
                _mm512_storeu_si512((void*)&acc[1][32], _mm512_sub_epi32(a12, c1));
                _mm512_storeu_si512((void*)&acc[1][48], _mm512_sub_epi32(a13, c1));
                _mm512_storeu_si512((void*)&acc[2][0], _mm512_sub_epi32(a20, c2));
                _mm512_storeu_si512((void*)&acc[2][16], _mm512_sub_epi32(a21, c2));
                _mm512_storeu_si512((void*)&acc[2][32], _mm512_sub_epi32(a22, c2));
                _mm512_storeu_si512((void*)&acc[2][48], _mm512_sub_epi32(a23, c2));
                _mm512_storeu_si512((void*)&acc[3][0], _mm512_sub_epi32(a30, c3));
                _mm512_storeu_si512((void*)&acc[3][16], _mm512_sub_epi32(a31, c3));
                _mm512_storeu_si512((void*)&acc[3][32], _mm512_sub_epi32(a32, c3));
                _mm512_storeu_si512((void*)&acc[3][48], _mm512_sub_epi32(a33, c3));
    #elif defined(QW_AVX2)
                __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
                __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                for (g = 0; g < G; g++) {
                    const uint32_t* vg = v + g * NTp;
                    __m256i b0 = _mm256_loadu_si256((const __m256i*)vg);
                    __m256i b1 = _mm256_loadu_si256((const __m256i*)(vg + 8));
                    __m256i w0 = _mm256_set1_epi32((int)u[g]), w1 = _mm256_set1_epi32((int)u[G + g]);
                    __m256i w2 = _mm256_set1_epi32((int)u[2 * G + g]), w3 = _mm256_set1_epi32((int)u[3 * G + g]);
                    a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(b0, w0));
                    a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(b1, w0));
                    a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(b0, w1));
                    a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(b1, w1));
                    a20 = _mm256_add_epi32(a20, _mm256_madd_epi16(b0, w2));
                    a21 = _mm256_add_epi32(a21, _mm256_madd_epi16(b1, w2));
                    a30 = _mm256_add_epi32(a30, _mm256_madd_epi16(b0, w3));
                    a31 = _mm256_add_epi32(a31, _mm256_madd_epi16(b1, w3));
                }
                _mm256_storeu_si256((__m256i*)&acc[0][0], a00); _mm256_storeu_si256((__m256i*)&acc[0][8], a01);
                _mm256_storeu_si256((__m256i*)&acc[1][0], a10); _mm256_storeu_si256((__m256i*)&acc[1][8], a11);
                _mm256_storeu_si256((__m256i*)&acc[2][0], a20); _mm256_storeu_si256((__m256i*)&acc[2][8], a21);
                _mm256_storeu_si256((__m256i*)&acc[3][0], a30); _mm256_storeu_si256((__m256i*)&acc[3][8], a31);
    #else
                memset(acc, 0, sizeof(acc));
                for (g = 0; g < G; g++) {
                    const uint32_t* vg = v + g * NTp;
                    for (r = 0; r < QW_ROWS; r++) {
                        uint32_t uw = u[r * G + g];
                        int32_t u0 = (int16_t)(uw & 0xFFFF), u1 = (int16_t)(uw >> 16);
                        for (q = 0; q < QW_COLS; q++) {
                            uint32_t vw = vg[q];
                            acc[r][q] += u0 * (int32_t)(int16_t)(vw & 0xFFFF) + u1 * (int32_t)(int16_t)(vw >> 16);
                        }
                    }
                }
    #endif
                int rows = K - k0 < QW_ROWS ? (int)(K - k0) : QW_ROWS;
                int cols = NT - j < QW_COLS ? (int)(NT - j) : QW_COLS;
                if (cols <= 0) continue;       /* a block of padding columns */
                for (r = 0; r < rows; r++) {
                    if (outf) {
                        float* o = outf + (k0 + r) * NT + j;
                        for (q = 0; q < cols; q++) o[q] = (float)acc[r][q] * deq;
                    } else {
                        memcpy(outi + (k0 + r) * NT + j, acc[r], sizeof(int32_t) * cols);
                    }
                }
            }
        }
    }
    """
    int QW_GROUP
    int QW_COLS
    int QW_ROWS
    int QW_CHUNK
    const char* QW_SIMD
    void qw_pack_group(const float* base, Py_ssize_t stride, const float* s, const float* e, int cnt,
                       float n, Py_ssize_t NT, Py_ssize_t NTp, unsigned int* out) noexcept nogil
    float qw_absmax(const float* row, Py_ssize_t n) noexcept nogil
    void qw_block(const unsigned int* U, const unsigned int* V, const int32_t* usum, float deq,
                  Py_ssize_t K, Py_ssize_t G, Py_ssize_t NT, Py_ssize_t NTp,
                  Py_ssize_t j0, Py_ssize_t j1, float* outf, int32_t* outi) noexcept nogil

SIMD = QW_SIMD.decode()
GROUP = QW_GROUP          # channels per packed 32-bit word
COLS = QW_COLS            # packed V's column count is padded to a multiple of this
ROWS = QW_ROWS            # packed U's row count is padded to a multiple of this


cdef inline int _threads(int num_threads) noexcept nogil:
    return num_threads if num_threads > 0 else openmp.omp_get_max_threads()


def pack_inputs(const float[:, :, ::1] V, const float[:, ::1] scale, extra, int n,
                unsigned int[:, :, ::1] out, int num_threads=0):
    """Quantize and pack the transformed input: Ṽ[p, c, j] = clip(round(V[p, c, j] ·
    scale[p, c] [· extra[p, c]]), −n, n) (round half to even), written as 32-bit words
    ``out`` (P, G, NTp), G = ⌈C / GROUP⌉, NTp ≥ NT a multiple of COLS: word (g, j) holds
    channels g·GROUP … g·GROUP + GROUP − 1 of column j (u8 value + 128 on the VNNI path,
    int16 otherwise); padding channels and columns hold 0. ``extra`` is None or (P, C)
    float32 (the unfused balancing 1/Ω of BQW: two multiplies per element)."""
    cdef Py_ssize_t P = V.shape[0], C = V.shape[1], NT = V.shape[2]
    cdef Py_ssize_t G = out.shape[1], NTp = out.shape[2]
    cdef const float[:, ::1] e
    cdef const float* ep = NULL
    if scale.shape[0] != P or scale.shape[1] != C:
        raise ValueError(f"pack_inputs: scale {np.asarray(scale).shape} does not fit V {(P, C, NT)}")
    if out.shape[0] != P or G != (C + GROUP - 1) // GROUP or NTp < NT or NTp % COLS:
        raise ValueError(f"pack_inputs: out {np.asarray(out).shape} does not fit V {(P, C, NT)}")
    if not 1 <= n <= 127 or (GROUP == 4 and n > 127):
        raise ValueError(f"pack_inputs: clip level {n} is not in 1..127 (8 bits at most)")
    if extra is not None:
        e = extra
        if e.shape[0] != P or e.shape[1] != C:
            raise ValueError(f"pack_inputs: extra {np.asarray(e).shape} does not fit V {(P, C, NT)}")
        ep = &e[0, 0]
    cdef Py_ssize_t item, p, g, c0, cnt
    cdef int nt = _threads(num_threads)
    cdef float fn = n
    for item in prange(P * G, nogil=True, num_threads=nt, schedule="static"):
        p = item // G
        g = item % G
        c0 = g * QW_GROUP
        cnt = C - c0 if C - c0 < QW_GROUP else QW_GROUP
        qw_pack_group(&V[p, c0, 0], NT, &scale[p, c0], (ep + p * C + c0) if ep != NULL else NULL,
                      <int>cnt, fn, NT, NTp, &out[p, g, 0])


def products(const unsigned int[:, :, ::1] U, const unsigned int[:, :, ::1] V,
             const int32_t[:, ::1] usum, const float[::1] deq, int K, int NT,
             float[:, :, ::1] outf=None, int32_t[:, :, ::1] outi=None, int num_threads=0):
    """M[p] = Ũ[p] @ Ṽ[p] in int32 for each of the P transform points: packed U (P, Kp, G)
    words (rows padded to Kp, a multiple of ROWS), packed V (P, G, NTp) from
    :func:`pack_inputs`; ``usum`` (P, Kp) = Σ_c Ũ[p, k, c] (the VNNI path's offset
    correction). Writes ``outf`` (P, K, NT) = M · deq[p] (float32), or the int32 sums
    themselves into ``outi`` (P, K, NT)."""
    cdef Py_ssize_t P = U.shape[0], Kp = U.shape[1], G = U.shape[2], NTp = V.shape[2]
    if V.shape[0] != P or V.shape[1] != G or Kp < K or Kp % ROWS or NTp < NT or NTp % COLS:
        raise ValueError(f"products: packed U {np.asarray(U).shape} and V {np.asarray(V).shape} do not fit K={K}, NT={NT}")
    if usum.shape[0] != P or usum.shape[1] != Kp or deq.shape[0] != P:
        raise ValueError("products: usum must be (P, Kp) and deq (P,)")
    if G * GROUP * 255 * 127 >= 2**31:
        raise ValueError(f"products: {G * GROUP} channels could overflow the int32 sums")
    if (outf is None) == (outi is None):
        raise ValueError("products: give exactly one of outf, outi")
    cdef float* of = NULL
    cdef int32_t* oi = NULL
    cdef Py_ssize_t shape0, shape1, shape2
    if outf is not None:
        shape0, shape1, shape2 = outf.shape[0], outf.shape[1], outf.shape[2]
        of = &outf[0, 0, 0] if outf.size else NULL
    else:
        shape0, shape1, shape2 = outi.shape[0], outi.shape[1], outi.shape[2]
        oi = &outi[0, 0, 0] if outi.size else NULL
    if shape0 != P or shape1 != K or shape2 != NT:
        raise ValueError(f"products: out {(shape0, shape1, shape2)} is not {(P, K, NT)}")
    if P == 0 or K == 0 or NT == 0:
        return
    cdef Py_ssize_t chunks = (NT + QW_CHUNK - 1) // QW_CHUNK
    cdef Py_ssize_t item, p, j0, j1
    cdef int nt = _threads(num_threads)
    for item in prange(P * chunks, nogil=True, num_threads=nt, schedule="static"):
        p = item // chunks
        j0 = (item % chunks) * QW_CHUNK
        j1 = j0 + QW_CHUNK if j0 + QW_CHUNK < NTp else NTp
        qw_block(&U[p, 0, 0], &V[p, 0, 0], &usum[p, 0], deq[p], K, G, NT, NTp, j0, j1,
                 (of + p * K * NT) if of != NULL else NULL, (oi + p * K * NT) if oi != NULL else NULL)


def row_absmax(const float[:, :, ::1] V, float[:, ::1] out, int num_threads=0):
    """out[p, c] = max_j |V[p, c, j]| over the finite entries (the per-channel ranges of the
    transformed input; NaN and ±inf are left out, as they quantize to 0 and ±n)."""
    cdef Py_ssize_t P = V.shape[0], C = V.shape[1], NT = V.shape[2]
    if out.shape[0] != P or out.shape[1] != C:
        raise ValueError(f"row_absmax: out {np.asarray(out).shape} is not {(P, C)}")
    cdef Py_ssize_t item
    cdef int nt = _threads(num_threads)
    if NT == 0:
        out[...] = 0
        return
    for item in prange(P * C, nogil=True, num_threads=nt, schedule="static"):
        out[item // C, item % C] = qw_absmax(&V[item // C, item % C, 0], NT)
