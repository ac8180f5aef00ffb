# The body of the sparse × dense product kernels, included by sparse_products.pyx (baseline),
# sparse_products_avx2.pyx and sparse_products_avx512.pyx (the same code built for AVX2 /
# AVX-512 by #pragma GCC target). See sparse_products.pyx.
cimport openmp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__AVX512F__)
    #  define SP_SIMD "avx512"
    #elif defined(__AVX2__)
    #  define SP_SIMD "avx2"
    #else
    #  define SP_SIMD "baseline"
    #endif
    #if defined(__AVX512F__)
    #  define SP_VB 64           /* vector bytes of this build */
    #elif defined(__AVX2__)
    #  define SP_VB 32
    #else
    #  define SP_VB 16
    #endif
    #define SP_CHUNK 512         /* columns per work item (a multiple of every strip width) */

    /* GCC vector extensions of this build's native width (zmm, ymm or xmm). */
    typedef float sp_vf __attribute__((vector_size(SP_VB), aligned(4), may_alias));
    typedef double sp_vd __attribute__((vector_size(SP_VB), aligned(8), may_alias));

    /* out[r, j0:j1] = sum_{i in row r} vals[i] * X[cols[i], j0:j1] for rows 0..R-1.
       The columns j0..j1 of X are first copied, row by row (sequential reads), into buf as
       strips of 2 vectors (2W columns): strip s is a contiguous Q x 2W block (rows of X a
       power of two apart would otherwise fall into the same few L1 sets and pages). A
       strip stays in L1 while every row of S passes over it; four rows at a time give
       eight independent FMA chains, each nonzero one broadcast and two loads. */           \
    #define SP_DEFINE(T, VT, W, NAME_MM, NAME_DOT)                                               \
    static void NAME_MM(const int64_t* rowptr, const int32_t* cols, const T* vals,               \
                        const T* X, ptrdiff_t ld, ptrdiff_t Q, ptrdiff_t R,                      \
                        ptrdiff_t j0, ptrdiff_t j1, T* out, T* buf) {                            \
        ptrdiff_t r, j, q;                                                                       \
        int64_t i, t;                                                                            \
        const ptrdiff_t sw = 2 * W;                                                              \
        const ptrdiff_t nstrips = (j1 - j0) / sw;                                                \
        for (q = 0; q < Q; q++) {                                                                \
            const T* src = X + q * ld + j0;                                                      \
            ptrdiff_t st;                                                                        \
            for (st = 0; st < nstrips; st++)                                                     \
                memcpy(buf + (st * Q + q) * sw, src + st * sw, sizeof(T) * sw);                  \
        }                                                                                        \
        for (j = j0; j + 2 * W <= j1; j += 2 * W) {                                              \
            const T* Xj = buf + ((j - j0) / sw) * Q * sw;                                        \
            for (r = 0; r + 4 <= R; r += 4) {                                                    \
                int64_t b0 = rowptr[r], b1 = rowptr[r + 1], b2 = rowptr[r + 2], b3 = rowptr[r + 3]; \
                int64_t n0 = b1 - b0, n1 = b2 - b1, n2 = b3 - b2, n3 = rowptr[r + 4] - b3;        \
                int64_t m = n0 < n1 ? n0 : n1; m = m < n2 ? m : n2; m = m < n3 ? m : n3;         \
                VT a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0}; \
                for (t = 0; t < m; t++) {                                                        \
                    const VT* x0 = (const VT*)(Xj + (ptrdiff_t)cols[b0 + t] * sw);               \
                    const VT* x1 = (const VT*)(Xj + (ptrdiff_t)cols[b1 + t] * sw);               \
                    const VT* x2 = (const VT*)(Xj + (ptrdiff_t)cols[b2 + t] * sw);               \
                    const VT* x3 = (const VT*)(Xj + (ptrdiff_t)cols[b3 + t] * sw);               \
                    T u0 = vals[b0 + t], u1 = vals[b1 + t], u2 = vals[b2 + t], u3 = vals[b3 + t];  \
                    a00 += u0 * x0[0]; a01 += u0 * x0[1];                                        \
                    a10 += u1 * x1[0]; a11 += u1 * x1[1];                                        \
                    a20 += u2 * x2[0]; a21 += u2 * x2[1];                                        \
                    a30 += u3 * x3[0]; a31 += u3 * x3[1];                                        \
                }                                                                                \
                for (t = m; t < n0; t++) { const VT* x = (const VT*)(Xj + (ptrdiff_t)cols[b0 + t] * sw); T u = vals[b0 + t]; a00 += u * x[0]; a01 += u * x[1]; } \
                for (t = m; t < n1; t++) { const VT* x = (const VT*)(Xj + (ptrdiff_t)cols[b1 + t] * sw); T u = vals[b1 + t]; a10 += u * x[0]; a11 += u * x[1]; } \
                for (t = m; t < n2; t++) { const VT* x = (const VT*)(Xj + (ptrdiff_t)cols[b2 + t] * sw); T u = vals[b2 + t]; a20 += u * x[0]; a21 += u * x[1]; } \
                for (t = m; t < n3; t++) { const VT* x = (const VT*)(Xj + (ptrdiff_t)cols[b3 + t] * sw); T u = vals[b3 + t]; a30 += u * x[0]; a31 += u * x[1]; } \
                VT* o = (VT*)(out + r * ld + j);                                                 \
                o[0] = a00; o[1] = a01;                                                          \
                o = (VT*)(out + (r + 1) * ld + j); o[0] = a10; o[1] = a11;                       \
                o = (VT*)(out + (r + 2) * ld + j); o[0] = a20; o[1] = a21;                       \
                o = (VT*)(out + (r + 3) * ld + j); o[0] = a30; o[1] = a31;                       \
            }                                                                                    \
            for (; r < R; r++) {                                                                 \
                VT a0 = {0}, a1 = {0};                                                           \
                for (i = rowptr[r]; i < rowptr[r + 1]; i++) {                                    \
                    const VT* x = (const VT*)(Xj + (ptrdiff_t)cols[i] * sw);                     \
                    T u = vals[i];                                                               \
                    a0 += u * x[0]; a1 += u * x[1];                                              \
                }                                                                                \
                VT* o = (VT*)(out + r * ld + j);                                                 \
                o[0] = a0; o[1] = a1;                                                            \
            }                                                                                    \
        }                                                                                        \
        if (j < j1) {                        /* the last, narrower strip */                      \
            ptrdiff_t w = j1 - j;                                                                \
            for (r = 0; r < R; r++) {                                                            \
                T* o = out + r * ld + j;                                                         \
                for (q = 0; q < w; q++) o[q] = 0;                                                \
                for (i = rowptr[r]; i < rowptr[r + 1]; i++) {                                    \
                    const T* x = X + (ptrdiff_t)cols[i] * ld + j;                                \
                    T u = vals[i];                                                               \
                    for (q = 0; q < w; q++) o[q] += u * x[q];                                    \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* vals[i] = <A[r, :], B[cols[i], :]> for the entries i of rows r0..r1 (length n rows). */   \\
    static void NAME_DOT(const int64_t* rowptr, const int32_t* cols, const T* A, const T* B,     \\
                         ptrdiff_t n, ptrdiff_t r0, ptrdiff_t r1, T* vals) {                     \\
        ptrdiff_t r, j;                                                                          \\
        int64_t i;                                                                               \\
        for (r = r0; r < r1; r++) {                                                              \\
            const T* a = A + r * n;                                                              \\
            for (i = rowptr[r]; i < rowptr[r + 1]; i++) {                                        \\
                const T* b = B + (ptrdiff_t)cols[i] * n;                                         \\
                VT s0 = {0}, s1 = {0};                                                           \\
                for (j = 0; j + 2 * W <= n; j += 2 * W) {                                        \\
                    s0 += *(const VT*)(a + j) * *(const VT*)(b + j);                             \\
                    s1 += *(const VT*)(a + j + W) * *(const VT*)(b + j + W);                     \\
                }                                                                                \\
                s0 += s1;                                                                        \\
                T t = 0;                                                                         \\
                int q;                                                                           \\
                for (q = 0; q < W; q++) t += s0[q];                                              \\
                for (; j < n; j++) t += a[j] * b[j];                                             \\
                vals[i] = t;                                                                     \\
            }                                                                                    \\
        }                                                                                        \\
    }
    SP_DEFINE(float, sp_vf, (SP_VB / 4), sp_mm_f, sp_dot_f)
    SP_DEFINE(double, sp_vd, (SP_VB / 8), sp_mm_d, sp_dot_d)
    """
    const char* SP_SIMD
    int SP_CHUNK
    void sp_mm_f(const int64_t* rowptr, const int32_t* cols, const float* vals, const float* X,
                 Py_ssize_t ld, Py_ssize_t Q, Py_ssize_t R, Py_ssize_t j0, Py_ssize_t j1, float* out,
                 float* buf) noexcept nogil
    void sp_mm_d(const int64_t* rowptr, const int32_t* cols, const double* vals, const double* X,
                 Py_ssize_t ld, Py_ssize_t Q, Py_ssize_t R, Py_ssize_t j0, Py_ssize_t j1, double* out,
                 double* buf) noexcept nogil
    int SP_VB
    void sp_dot_f(const int64_t* rowptr, const int32_t* cols, const float* A, const float* B,
                  Py_ssize_t n, Py_ssize_t r0, Py_ssize_t r1, float* vals) noexcept nogil
    void sp_dot_d(const int64_t* rowptr, const int32_t* cols, const double* A, const double* B,
                  Py_ssize_t n, Py_ssize_t r0, Py_ssize_t r1, double* vals) noexcept nogil

ctypedef fused real:
    float
    double

SIMD = SP_SIMD.decode()


cdef inline int _threads(int num_threads) noexcept nogil:
    return num_threads if num_threads > 0 else openmp.omp_get_max_threads()


cdef int _check_csr(const int64_t[::1] rowptr, const int32_t[::1] cols, Py_ssize_t nvals,
                    Py_ssize_t Q) noexcept nogil:
    """0 if rowptr starts at 0, never decreases and ends within the values, and every
    column index is in [0, Q); else 1 (bad rowptr) or 2 (bad column). O(rows + nnz)."""
    cdef Py_ssize_t r, nrows = rowptr.shape[0] - 1
    cdef int64_t i, end = rowptr[nrows]
    if rowptr[0] != 0 or end > nvals or end > cols.shape[0]:
        return 1
    for r in range(nrows):
        if rowptr[r + 1] < rowptr[r]:
            return 1
    for i in range(end):
        if cols[i] < 0 or cols[i] >= Q:
            return 2
    return 0


def _raise_csr(int code, str name, Py_ssize_t Q):
    if code == 1:
        raise ValueError(f"{name}: rowptr must start at 0, never decrease and end within the values")
    raise ValueError(f"{name}: a column index is outside [0, {Q})")


def spmm(const int64_t[::1] rowptr, const int32_t[::1] cols, const real[::1] vals,
         const real[:, :, ::1] X, real[:, :, ::1] out, int num_threads=0):
    """out[p] = S[p] @ X[p] for P sparse matrices S[p] (R, Q) in one CSR of P·R rows
    (row p·R + r, column indices < Q): X (P, Q, n), out (P, R, n), rows of n contiguous.
    OpenMP over (p, block of SP_CHUNK columns); each nonzero adds a scaled row of X."""
    cdef Py_ssize_t P = X.shape[0], Q = X.shape[1], n = X.shape[2], R = out.shape[1]
    if out.shape[0] != P or out.shape[2] != n or rowptr.shape[0] != P * R + 1:
        raise ValueError(f"spmm: CSR of {rowptr.shape[0] - 1} rows, X {np.asarray(X).shape}, out {np.asarray(out).shape} "
                         f"do not fit")
    cdef int bad = _check_csr(rowptr, cols, vals.shape[0], Q)
    if bad:
        _raise_csr(bad, "spmm", Q)
    if P == 0 or R == 0 or n == 0:
        return
    cdef Py_ssize_t chunks = (n + SP_CHUNK - 1) // SP_CHUNK
    cdef Py_ssize_t item, p, j0, j1, j
    cdef real* buf
    cdef int nt = _threads(num_threads)
    cdef size_t buf_bytes = <size_t>(Q if Q > 0 else 1) * SP_CHUNK * sizeof(real)
    for item in prange(P * chunks, nogil=True, num_threads=nt, schedule="dynamic"):
        p = item // chunks
        j0 = (item % chunks) * SP_CHUNK
        j1 = j0 + SP_CHUNK if j0 + SP_CHUNK < n else n
        if rowptr[p * R] == rowptr[(p + 1) * R]:       # a fully pruned matrix: zeros, nothing to pack
            for j in range(R):
                memset(&out[p, j, j0], 0, (j1 - j0) * sizeof(real))
            continue
        buf = <real*>malloc(buf_bytes)      # the packed strips of X's columns j0..j1, per work item
        if buf == NULL:
            with gil:
                raise MemoryError()
        if real is float:
            sp_mm_f(&rowptr[p * R], &cols[0], &vals[0], &X[p, 0, 0], n, Q, R, j0, j1, &out[p, 0, 0], buf)
        else:
            sp_mm_d(&rowptr[p * R], &cols[0], &vals[0], &X[p, 0, 0], n, Q, R, j0, j1, &out[p, 0, 0], buf)
        free(buf)


def sampled_dot(const int64_t[::1] rowptr, const int32_t[::1] cols, const real[:, :, ::1] A,
                const real[:, :, ::1] B, real[::1] vals, int num_threads=0):
    """vals[i] = <A[p, r, :], B[p, cols[i], :]> for every entry i (row p·R + r) of the CSR:
    the sampled dense–dense product A[p] @ B[p]ᵀ at the pattern's entries only. A (P, R, n),
    B (P, Q, n). OpenMP over p."""
    cdef Py_ssize_t P = A.shape[0], R = A.shape[1], n = A.shape[2]
    if B.shape[0] != P or B.shape[2] != n or rowptr.shape[0] != P * R + 1:
        raise ValueError(f"sampled_dot: CSR of {rowptr.shape[0] - 1} rows, A {np.asarray(A).shape}, B {np.asarray(B).shape} "
                         f"do not fit")
    cdef int bad = _check_csr(rowptr, cols, vals.shape[0], B.shape[1])
    if bad:
        _raise_csr(bad, "sampled_dot", B.shape[1])
    if P == 0 or R == 0 or rowptr[P * R] == 0:
        return
    cdef Py_ssize_t p
    cdef int nt = _threads(num_threads)
    for p in prange(P, nogil=True, num_threads=nt, schedule="dynamic"):
        if real is float:
            sp_dot_f(&rowptr[p * R], &cols[0], &A[p, 0, 0], &B[p, 0, 0], n, 0, R, &vals[0])
        else:
            sp_dot_d(&rowptr[p * R], &cols[0], &A[p, 0, 0], &B[p, 0, 0], n, 0, R, &vals[0])
