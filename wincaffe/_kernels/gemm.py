"""``batched_matmul(a, b, out, trans_a=False, trans_b=False)``: out[p] = op(a[p]) @ op(b[p]).

WinogradConv's α² products (U[ξ] @ V[ξ] and their gradients) are many mid-sized
GEMMs. NumPy's matmul runs them one after another, each on the threaded BLAS,
which must wake its threads for every call; with 2 threads that cost eats the
gain (measured: 64×64×1024 products at 2 threads no faster than at 1). Here the
products are shared among the OpenMP threads instead, each one a single-threaded
gemm of SciPy's BLAS (:mod:`wincaffe._kernels.batched_gemm`).

That needs SciPy's BLAS at one thread without touching NumPy's, which still runs
the big single GEMMs (Convolution, InnerProduct) threaded. So the OpenMP path is
used only when SciPy's BLAS is a library of its own (the PyPI wheels: scipy.libs/
vs numpy.libs/) that threadpoolctl can pin to one thread; otherwise, or with
``WINCAFFE_BATCHED_GEMM=numpy``, ``np.matmul`` does the work. ``BACKEND`` names
the choice; :func:`pin_scipy_blas` re-pins after ``threadpool_limits`` calls
(``wincaffe.threads.set_num_threads`` does it).
"""
import os

import numpy as np

from wincaffe._kernels.threads import get_omp_threads

BACKEND = "numpy"
_scipy_pool = None


def _find_scipy_pool():
    """threadpoolctl controller of SciPy's own BLAS, or None if it is shared or unknown."""
    try:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
        from threadpoolctl import ThreadpoolController
        ctl = ThreadpoolController().select(user_api="blas")
    except Exception:   # no threadpoolctl, or it cannot inspect this process: plain matmul
        return None
    root = os.path.dirname(os.path.realpath(scipy.__file__))   # .../site-packages/scipy

    def in_scipy(info):   # scipy/ itself (.dylibs on macOS) or the wheel's scipy.libs/
        path = os.path.realpath(info.get("filepath", ""))
        return path.startswith(root + os.sep) or path.startswith(root + ".libs" + os.sep)

    scipy_paths = [i["filepath"] for i in ctl.info() if in_scipy(i)]
    if len(scipy_paths) != 1:   # a BLAS inside SciPy's folders cannot be NumPy's too
        return None
    return ctl.select(filepath=scipy_paths[0])


def pin_scipy_blas():
    """Keep SciPy's BLAS at one thread (the OpenMP threads call it concurrently).

    A global ``threadpoolctl.threadpool_limits(n)`` outside wincaffe lifts the pin;
    results stay correct (OpenBLAS serves concurrent callers) but the products run
    ~1.7× slower until this is called again (``set_num_threads`` does)."""
    if _scipy_pool is not None:
        _scipy_pool.limit(limits=1)


if os.environ.get("WINCAFFE_BATCHED_GEMM", "") != "numpy":
    _scipy_pool = _find_scipy_pool()
    if _scipy_pool is not None:
        from wincaffe._kernels.batched_gemm import batched_matmul as _omp_batched_matmul
        pin_scipy_blas()
        BACKEND = "openmp+scipy-blas"


# Products up to this many multiply-adds (m·n·k) go the OpenMP way when more than one
# thread is allowed. Measured on the 2-core AVX2 machine, float32, 36 products: at
# 64×64×1024 (4.2M) 3.6 ms vs np.matmul's 5.1 ms; at 128×128×1024 (16.8M) and above
# both ~equal (the threaded BLAS is busy long enough per call). At one thread
# np.matmul always (NumPy's OpenBLAS build was ~15% faster per call than SciPy's).
# Complex products count complex multiply-adds against the same limit; on the OpenMP
# path they were faster at every size measured (AMD EPYC, two threads, complex64, 100-144
# products): 1.29x at 1M, 1.45x at 4.2M and 1.06x at 16.8M, which goes to np.matmul.
# Matrix-vector products (m or n = 1) always go to np.matmul, which calls gemv: for
# FFTConv's conv1 weight gradient (544 products 20×64 @ 64×1, complex64) 0.10 ms
# against the OpenMP gemms' 0.33 ms at two threads (AMD EPYC, AVX-512).
OMP_MAX_MACS = 1 << 23


_KERNEL_DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


def _fits_kernel(a, b, out):
    """The OpenMP kernel takes three C-contiguous 3-D arrays of one dtype (float32,
    float64, complex64, complex128), out not overlapping the inputs; anything else
    goes to np.matmul."""
    return (a.dtype == b.dtype == out.dtype and a.dtype in _KERNEL_DTYPES
            and a.ndim == b.ndim == out.ndim == 3
            and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous
            and not np.shares_memory(out, a) and not np.shares_memory(out, b))


def batched_matmul(a, b, out, trans_a=False, trans_b=False):
    """out[p] = op(a[p]) @ op(b[p]); a, b, out C-contiguous 3-D arrays of one dtype
    (float32, float64, complex64, complex128), op(x) = xᵀ (never conjugated) when its
    flag is set."""
    if (BACKEND != "numpy" and get_omp_threads() > 1 and _fits_kernel(a, b, out) and min(out.shape[1:]) > 1
            and out.shape[1] * out.shape[2] * (a.shape[1] if trans_a else a.shape[2]) <= OMP_MAX_MACS):
        _omp_batched_matmul(a, b, out, trans_a, trans_b)
        return out
    return np.matmul(a.transpose(0, 2, 1) if trans_a else a,
                     b.transpose(0, 2, 1) if trans_b else b, out=out)
