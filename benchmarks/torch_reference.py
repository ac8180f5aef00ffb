"""PyTorch conv2d as the optional comparison in the benchmarks (never imported by wincaffe).

PyTorch ships its own libgomp. Loaded beside wincaffe's kernels, it becomes their
OpenMP runtime too, and its idle threads spin long enough to starve NumPy's BLAS
threads: measured at 2 threads, WinogradConv and Convolution forward + backward
25% slower once torch was imported, a LeNet-5 iteration 4x. So the benchmarks time
PyTorch in a process of its own (:func:`conv2d_times`) and never import it themselves.
"""
import importlib.util

_conv2d_worker = None


def available():
    """Whether PyTorch is installed (without importing it here)."""
    return importlib.util.find_spec("torch") is not None


def spawn(serve, *args):
    """Start ``serve(conn, *args)`` in a spawned process (a fresh interpreter, so torch's
    libgomp never meets wincaffe's). ``serve`` first sends one message (e.g. the torch
    version), then answers every job it receives until it receives None. Returns
    ``(first message, call, stop)``: ``call(job)`` sends a job and returns the answer;
    ``stop()`` (also run at exit) ends the process."""
    import atexit
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child,) + args, daemon=True)
    proc.start()
    first = parent.recv()

    def call(job):
        parent.send(job)
        return parent.recv()

    def stop():
        if proc.is_alive():
            parent.send(None)
            proc.join(timeout=10)
    atexit.register(stop)
    return first, call, stop


def _serve_conv2d(conn):
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    from timing import best_ms
    conn.send(torch.__version__)
    while (job := conn.recv()) is not None:
        x, w, b, pad, need_dx, repeat, threads = job
        torch.set_num_threads(threads)
        fwd, fb = conv2d_closures(x, w, b, pad, need_dx)
        conn.send((best_ms(fwd, repeat), best_ms(fb, repeat)))


def conv2d_times(x, w, b, pad, need_dx, repeat, threads):
    """(forward ms, forward + backward ms) of ``torch.nn.functional.conv2d`` on these
    arrays (best of ``repeat``, ``threads`` threads), timed in a spawned worker process
    kept for later calls; None without PyTorch."""
    global _conv2d_worker
    if not available():
        return None
    if _conv2d_worker is None:
        _conv2d_worker = spawn(_serve_conv2d)[1]
    return _conv2d_worker((x, w, b, pad, need_dx, repeat, threads))


def conv2d_closures(x, w, b, pad, need_dx=True):
    """``(forward, forward_backward)`` closures of ``torch.nn.functional.conv2d`` on the
    NumPy arrays x (N, C, H, W), w (K, C, r, r), b (K,), or None without PyTorch.
    forward_backward back-propagates ones; the input gradient only with ``need_dx``."""
    try:
        import torch
    except Exception:
        return None
    tx = torch.from_numpy(x).requires_grad_(need_dx)
    tw, tb = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, padding=pad)

    def forward_backward():
        y = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        y.backward(torch.ones_like(y))
    return forward, forward_backward
