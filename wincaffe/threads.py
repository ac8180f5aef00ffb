"""One knob for every thread pool wincaffe uses: OpenMP (the Cython kernels, and
FFTW's threads in pyFFTW's own OpenMP runtime) and the BLAS behind NumPy (through
threadpoolctl when it is installed).

``set_num_threads(1)`` before a benchmark makes "one thread" mean one thread.
"""
import ctypes
import os


def set_num_threads(n):
    from wincaffe._kernels.threads import set_omp_threads
    n = int(n)
    set_omp_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        # Every OpenMP runtime too: pyFFTW's wheel brings its own libgomp, and FFTW's
        # threaded plans run as many threads as that runtime allows (its OMP_NUM_THREADS
        # at load time), whatever the plan's thread count: a process that loaded pyFFTW
        # after set_num_threads(1) ran later 2-thread FFTs on one thread.
        threadpool_limits(limits={"blas": n, "openmp": n})
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's usual installs
        os.environ["OPENBLAS_NUM_THREADS"] = str(n)
    from wincaffe._kernels.gemm import pin_scipy_blas
    pin_scipy_blas()                # SciPy's BLAS stays at 1: OpenMP threads share its calls
    os.environ["OMP_NUM_THREADS"] = str(n)


def get_num_threads():
    from wincaffe._kernels.threads import get_omp_threads
    return get_omp_threads()


def restart_openblas_threads():
    """Make every pthreads OpenBLAS already loaded (NumPy's, SciPy's) adopt the
    environment's ``OPENBLAS_THREAD_TIMEOUT`` now; returns their file paths.

    OpenBLAS reads the timeout once, when its thread server starts, i.e. when NumPy
    is imported. With ``import numpy`` before ``import wincaffe`` its idle threads
    would spin for 2^28 cycles (about 0.1 s of CPU) after every threaded GEMM,
    competing with the OpenMP kernels for the cores. This re-reads the environment
    (``openblas_read_env``) and stops the thread server (``blas_thread_shutdown_``,
    OpenBLAS's own pre-fork handler); the next threaded call starts it again with
    the new timeout. Libraries without those symbols, or with another threading
    layer, are left alone.

    Call it only while no other thread uses BLAS: a shutdown during a threaded call
    can hang the process. ``import wincaffe`` calls it only when NumPy came first
    and the process has no other Python thread (in a Jupyter kernel, which has some,
    import wincaffe before NumPy, set ``OPENBLAS_THREAD_TIMEOUT=4`` before starting
    it, or call this yourself)."""
    try:
        from threadpoolctl import ThreadpoolController
        libraries = ThreadpoolController().select(internal_api="openblas").info()
    except Exception:  # no threadpoolctl, or it cannot inspect this process
        return []
    restarted = []
    for info in libraries:
        if info.get("threading_layer") != "pthreads":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except (OSError, AttributeError, KeyError):
            continue
        read_env.restype = None
        read_env()
        shutdown()
        restarted.append(info["filepath"])
    return restarted
