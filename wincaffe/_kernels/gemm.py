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
    except ImportError:
        return None
    ctl = ThreadpoolController().select(user_api="blas")
    roots = {name: os.path.dirname(os.path.realpath(mod.__file__)) for name, mod in
             (("scipy", scipy), ("numpy", np))}

    def owned_by(info, name):
        path = os.path.realpath(info.get("filepath", ""))
        return path.startswith(roots[name] + os.sep) or path.startswith(roots[name] + ".libs" + os.sep)

    infos = ctl.info()
    scipy_paths = [i["filepath"] for i in infos if owned_by(i, "scipy")]
    numpy_paths = {i["filepath"] for i in infos if owned_by(i, "numpy")}
    if len(scipy_paths) != 1 or scipy_paths[0] in numpy_paths:
        return None
    return ctl.select(filepath=scipy_paths[0])


def pin_scipy_blas():
    """Keep SciPy's BLAS at one thread (the OpenMP threads call it concurrently)."""
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
OMP_MAX_MACS = 1 << 23


def batched_matmul(a, b, out, trans_a=False, trans_b=False):
    """out[p] = op(a[p]) @ op(b[p]); a, b, out C-contiguous 3-D arrays of one dtype
    (float32 or float64), op(x) = xᵀ when its flag is set."""
    if (BACKEND != "numpy" and a.dtype == b.dtype == out.dtype and a.dtype in (np.float32, np.float64)
            and out.shape[1] * out.shape[2] * (a.shape[1] if trans_a else a.shape[2]) <= OMP_MAX_MACS
            and get_omp_threads() > 1):
        _omp_batched_matmul(a, b, out, trans_a, trans_b)
        return out
    return np.matmul(a.transpose(0, 2, 1) if trans_a else a,
                     b.transpose(0, 2, 1) if trans_b else b, out=out)
