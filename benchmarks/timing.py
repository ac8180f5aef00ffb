"""The benchmarks' one timer (imported from beside them, like torch_reference)."""
import time


def best_ms(fn, repeat):
    """Best wall time in ms of ``repeat`` calls of ``fn`` after one warm-up call (plans,
    workspaces, caches): on a shared machine the minimum is the least disturbed estimate."""
    fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def sgemm_gflops(n=1024, repeat=10):
    """The measured float32 GEMM rate of NumPy's BLAS (the one the layers call), in
    GFLOP/s: best of ``repeat`` n×n×n products on the current thread settings."""
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    return 2 * n ** 3 / best_ms(lambda: np.matmul(a, b, out=out), repeat) / 1e6
