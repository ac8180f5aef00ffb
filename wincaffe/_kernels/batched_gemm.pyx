# cython: language_level=3
"""Batched matrix products, the batch split over OpenMP threads.

``batched_matmul(a, b, out, trans_a, trans_b)``: out[p] = op(a[p]) @ op(b[p]) for
p in range(P), op(x) = xᵀ when its flag is set; a, b, out C-contiguous (P, ·, ·),
out (P, m, n), op(a[p]) (m, k), op(b[p]) (k, n); float32, float64, complex64 or
complex128 (s/d/c/zgemm; op is the plain transpose for complex too, never conjugating).

Each product is one single-threaded BLAS gemm (SciPy's, through
``scipy.linalg.cython_blas``) and the P products are shared among the OpenMP
threads. For WinogradConv's α² products (36 or 64 of them, often small:
64×64×1024 at C = K = 64) and FFTConv's per-frequency complex products (144 to
544 of them, tiny: 64×20 @ 20×50 for LeNet's conv2) this scales with threads
where a threaded BLAS, woken for every one of the P calls (or, for tiny ones, not
threading them at all), does not. The caller must keep SciPy's BLAS at one
thread (``wincaffe._kernels.gemm`` does).
"""
cimport openmp
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport cgemm, dgemm, sgemm, zgemm

ctypedef fused scalar:
    float
    double
    float complex
    double complex


cdef inline void _gemm(bint ta, bint tb, int m, int n, int k,
                       const scalar* a, const scalar* b, scalar* c) noexcept nogil:
    # row-major out (m×n) = op(a) op(b)  <=>  column-major outᵀ (n×m) = op(b)ᵀ op(a)ᵀ
    cdef char opb = b'T' if tb else b'N'
    cdef char opa = b'T' if ta else b'N'
    cdef int ldb = k if tb else n
    cdef int lda = m if ta else k
    cdef int ldc = n
    cdef scalar one = 1, zero = 0
    if scalar is float:
        sgemm(&opb, &opa, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &zero, c, &ldc)
    elif scalar is double:
        dgemm(&opb, &opa, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda, &zero, c, &ldc)
    elif scalar is "float complex":
        cgemm(&opb, &opa, &n, &m, &k, &one, <float complex*>b, &ldb, <float complex*>a, &lda, &zero, c, &ldc)
    else:
        zgemm(&opb, &opa, &n, &m, &k, &one, <double complex*>b, &ldb, <double complex*>a, &lda, &zero, c,
              &ldc)


def batched_matmul(const scalar[:, :, ::1] a, const scalar[:, :, ::1] b, scalar[:, :, ::1] out,
                   bint trans_a=False, bint trans_b=False, int num_threads=0):
    """out[p] = op(a[p]) @ op(b[p]); see the module docstring for the shapes."""
    cdef Py_ssize_t P = out.shape[0], m = out.shape[1], n = out.shape[2]
    cdef Py_ssize_t k = a.shape[1] if trans_a else a.shape[2]
    cdef Py_ssize_t am = a.shape[2] if trans_a else a.shape[1]
    cdef Py_ssize_t bk = b.shape[2] if trans_b else b.shape[1]
    cdef Py_ssize_t bn = b.shape[1] if trans_b else b.shape[2]
    if a.shape[0] != P or b.shape[0] != P or am != m or bk != k or bn != n:
        raise ValueError(f"batched_matmul: op(a) {(a.shape[0], am, k)} @ op(b) "
                         f"{(b.shape[0], bk, bn)} does not give out {(P, m, n)}")
    if max(m, n, k) > 2**31 - 1:
        raise ValueError("batched_matmul: a dimension exceeds the BLAS int range")
    cdef Py_ssize_t p
    if P == 0 or m == 0 or n == 0:
        return
    if k == 0:
        out[...] = 0
        return
    cdef int nt = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    for p in prange(P, nogil=True, num_threads=nt, schedule="static"):
        _gemm(trans_a, trans_b, <int>m, <int>n, <int>k, &a[p, 0, 0], &b[p, 0, 0], &out[p, 0, 0])
