"""Where the cells of a sweep run: a local pool of worker processes, or a Dask cluster.

One interface for both, so the driver of ``wincaffe compare`` has one code path:

    ex = make_executor(workers=2)                # or make_executor(scheduler="tcp://host:8786")
    fut = ex.submit(fn, *args)                   # fn and args must pickle
    done, pending = ex.wait_any({fut, ...})      # at least one finished (more may be added later)
    fut.result()                                 # the value, or the task's exception
    ex.close()

Tasks are pure functions: they get everything as arguments and return a value;
they write no files, so workers need no shared disk.
"""
import multiprocessing
from concurrent import futures

from wincaffe.errors import ConfigError


def _init_local_worker(threads):
    from wincaffe.log import setup_logging
    from wincaffe.threads import set_num_threads
    import logging
    setup_logging(logging.WARNING)           # workers stay quiet; the client logs per cell
    set_num_threads(threads)


class LocalExecutor:
    """``workers`` processes on this machine (spawned: each a fresh interpreter with
    ``threads`` BLAS/OpenMP threads, so the cells do not fight over cores)."""

    def __init__(self, workers, threads=1):
        self.workers = int(workers)
        self._pool = futures.ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_local_worker, initargs=(threads,))

    def describe(self):
        return f"a local pool of {self.workers} worker processes"

    def submit(self, fn, *args):
        return self._pool.submit(fn, *args)

    def share(self, value):
        """A handle to ``value`` for several tasks (here: the value itself)."""
        return value

    def wait_any(self, fs):
        done, pending = futures.wait(fs, return_when=futures.FIRST_COMPLETED)
        return set(done), set(pending)

    def close(self, cancel=False):
        """Wait for the pool to finish; ``cancel``: drop the queued tasks and stop the
        workers now (their cells in flight are lost, as after a kill). Idempotent."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if cancel:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskExecutor:
    """The tasks on a Dask distributed cluster (``pip install -e ".[cluster]"``)."""

    def __init__(self, address):
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("needs dask's distributed package: pip install -e \".[cluster]\"",
                              field="--scheduler") from None
        try:
            self._client = Client(address, timeout=30)
        except Exception as exc:    # OSError, TimeoutError, ValueError for a malformed address ...
            raise ConfigError(f"cannot reach a Dask scheduler at {address!r}: {type(exc).__name__}: {exc}",
                              field="--scheduler") from None
        self.address = address

    def describe(self):
        n = len(self._client.scheduler_info().get("workers", {}))
        return f"the Dask cluster at {self.address} ({n} workers)"

    def submit(self, fn, *args):
        return self._client.submit(fn, *args, pure=False)

    def share(self, value):
        """Send ``value`` to the cluster once; tasks given the handle receive the value.
        (Wrapped in a list: scattering a dict itself would use its keys as Dask keys,
        so every dict with the same keys would share the first one's data.)"""
        [future] = self._client.scatter([value], hash=False)
        return future

    def wait_any(self, fs):
        from distributed import wait
        done, pending = wait(list(fs), return_when="FIRST_COMPLETED")
        return set(done), set(pending)

    def close(self, cancel=False):
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


def make_executor(*, workers=None, scheduler=None, threads=1):
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is None:
        workers = max(1, multiprocessing.cpu_count() // max(1, threads))
    if workers < 1:
        raise ConfigError(f"must be >= 1, got {workers}", field="--workers")
    return LocalExecutor(workers, threads)
