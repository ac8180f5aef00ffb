"""One knob for every thread pool wincaffe uses: OpenMP (the Cython kernels) and
the BLAS behind NumPy (through threadpoolctl when it is installed).

``set_num_threads(1)`` before a benchmark makes "one thread" mean one thread.
"""
import os


def set_num_threads(n):
    from wincaffe._kernels.threads import set_omp_threads
    n = int(n)
    set_omp_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's usual installs
        os.environ["OPENBLAS_NUM_THREADS"] = str(n)
    from wincaffe._kernels.gemm import pin_scipy_blas
    pin_scipy_blas()                # SciPy's BLAS stays at 1: OpenMP threads share its calls
    os.environ["OMP_NUM_THREADS"] = str(n)


def get_num_threads():
    from wincaffe._kernels.threads import get_omp_threads
    return get_omp_threads()
