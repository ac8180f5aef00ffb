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
