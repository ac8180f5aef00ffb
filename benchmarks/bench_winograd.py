"""WinogradConv speed against im2col convolution, all ratios measured in the same run.

    python benchmarks/bench_winograd.py [--threads 2] [--repeat 10] [--rounds 3] [--quick] [--channels 64 128]
                                        [--isa avx2]   # as on an AVX2-only CPU (isa.py)

Rows: (a) LeNet conv2 at batch 64 (64×20×12×12 input, 50 kernels 5×5, pad 0)
with F(2,5) and F(4,5); (b) 3×3 pad 1, batch 1, H = W = 128, C = K ∈ {8, 16,
32, 64, 128, 256} with F(2,3), F(4,3), F(6,3). Columns: milliseconds (best of
``--repeat`` runs, the most robust figure on a shared machine) for forward (F)
and forward + backward (F+B, with the input gradient) of

    wino     WinogradConv (weights: spatial, float32)
    conv     the framework's ``Convolution`` layer (im2col + one GEMM) if registered,
             else a plain NumPy im2col + matmul reference (in this file)
    torch    torch.nn.functional.conv2d (CPU), if ``import torch`` works

the ratios conv/wino (> 1: Winograd is faster), the time of the forward GEMM stage
alone (α² batched GEMMs U[ξ] (K×C) @ V[ξ] (C×N·T)) and its GFLOP/s, and the share
of the forward spent outside the GEMMs (the transforms). ``--threads`` sets
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before NumPy is imported (``--blas-threads``
the BLAS ones alone). On 2 shared cores, OpenBLAS's spinning workers and the
OpenMP kernels get in each other's way when both use 2 threads; ``--threads 2
--blas-threads 1`` avoids it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # also under python -m benchmarks.…
import isa  # noqa: E402  (benchmarks/, beside this script; standard library only)


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="OpenMP and BLAS threads "
                    "(default: leave the environment alone)")
    ap.add_argument("--blas-threads", type=int, default=None, help="BLAS threads, if not --threads")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all columns of a row; "
                    "each figure is its best over the rounds")
    ap.add_argument("--quick", action="store_true", help="C = K ∈ {16, 64} only")
    ap.add_argument("--channels", type=int, nargs="+", default=None)
    ap.add_argument("--tiles", type=int, nargs="+", default=[2, 4, 6])
    isa.add_argument(ap)
    return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    isa.apply(ARGS.isa)                            # re-executes restricted to AVX2 if asked
if ARGS is not None and ARGS.threads is not None:  # before NumPy binds OpenBLAS / OpenMP
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
if ARGS is not None and ARGS.blas_threads is not None:
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.blas_threads)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import wincaffe  # noqa: E402,F401  (its thread-pool defaults must precede NumPy's OpenBLAS)
import numpy as np  # noqa: E402

from wincaffe._kernels.gemm import BACKEND as GEMM_BACKEND, batched_matmul  # noqa: E402
from wincaffe._kernels.threads import get_omp_threads  # noqa: E402
from wincaffe.layer import layer_types  # noqa: E402
from wincaffe.testing import make_layer  # noqa: E402
import torch_reference  # noqa: E402  (benchmarks/, beside this script)
from timing import best_ms  # noqa: E402  (benchmarks/, beside this script)




class NumpyIm2colConv:
    """Reference: y = W2d @ im2col(x_pad) + b; backward by transposed products + col2im."""

    def __init__(self, x, w, b, pad):
        self.x, self.w, self.b, self.pad = x, w, b, pad
        N, C, H, W = x.shape
        K, _, r, _ = w.shape
        self.r, self.Ho, self.Wo = r, H + 2 * pad - r + 1, W + 2 * pad - r + 1

    def forward(self):
        N, C, H, W = self.x.shape
        K, r, p = self.w.shape[0], self.r, self.pad
        xp = np.pad(self.x, ((0, 0), (0, 0), (p, p), (p, p)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (r, r), axis=(2, 3))  # N C Ho Wo r r
        self.col = np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(C * r * r, -1)
        y = self.w.reshape(K, -1) @ self.col + self.b[:, None]
        return y.reshape(K, N, self.Ho, self.Wo).transpose(1, 0, 2, 3)

    def backward(self, dy):
        N, C, H, W = self.x.shape
        K, r, p = self.w.shape[0], self.r, self.pad
        dy2 = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(K, -1)
        dw = dy2 @ self.col.T
        dcol = (self.w.reshape(K, -1).T @ dy2).reshape(C, r, r, N, self.Ho, self.Wo)
        dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), self.x.dtype)
        for u in range(r):
            for v in range(r):
                dxp[:, :, u:u + self.Ho, v:v + self.Wo] += dcol[:, u, v].transpose(1, 0, 2, 3)
        return dxp[:, :, p:p + H, p:p + W], dw


def make_conv(shape, K, r, pad, x, w, b):
    """(forward, forward+backward) closures of the comparison convolution and its name."""
    if "Convolution" in layer_types():
        layer, bottoms, tops = make_layer("Convolution", [shape], dtype=np.float32,
                                          convolution_param={"num_output": K, "kernel_size": r, "pad": pad})
        bottoms[0].data[...] = x
        layer.params[0].data[...] = w
        layer.params[1].data[...] = b
        tops[0].diff[...] = 1.0

        def fb():
            layer.forward(bottoms, tops)
            layer.backward(tops, [True], bottoms)
        return (lambda: layer.forward(bottoms, tops)), fb, "conv"
    ref = NumpyIm2colConv(x, w, b, pad)
    dy = np.ones((shape[0], K, ref.Ho, ref.Wo), np.float32)

    def fb():
        ref.forward()
        ref.backward(dy)
    return ref.forward, fb, "im2col"


def bench_row(label, shape, K, r, pad, tile, repeat, rounds):
    layer, bottoms, tops = make_layer("WinogradConv", [shape], dtype=np.float32, seed=0,
                                      convolution_param={"num_output": K, "kernel_size": r, "pad": pad},
                                      winograd_param={"tile": tile})
    x, w, b = bottoms[0].data, layer.params[0].data, layer.params[1].data
    tops[0].diff[...] = 1.0

    def wfb():
        layer.forward(bottoms, tops)
        layer.backward(tops, [True], bottoms)
    a = layer.alpha
    U = layer._compute_U()
    M = np.empty((a * a, K, layer.NT), np.float32)
    cf_fn, cfb_fn, cname = make_conv(shape, K, r, pad, x, w, b)
    # every figure is the best over `rounds` rounds, each round timing all of them in turn
    # (best of `repeat` runs each), so that a slow spell of the shared machine falls on
    # every column alike instead of on one
    best = {}
    for _ in range(rounds):
        t = {"wf": best_ms(lambda: layer.forward(bottoms, tops), repeat), "wb": best_ms(wfb, repeat),
             "tg": best_ms(lambda: batched_matmul(U, layer.V, M), repeat),   # the GEMM stage alone
             "cf": best_ms(cf_fn, repeat), "cfb": best_ms(cfb_fn, repeat)}
        tt = torch_reference.conv2d_times(x, w, b, pad, True, repeat, get_omp_threads())
        if tt is not None:
            t["tf"], t["tfb"] = tt
        best = {k: min(v, best.get(k, v)) for k, v in t.items()}
    wf, wb, tg, cf, cfb = best["wf"], best["wb"], best["tg"], best["cf"], best["cfb"]
    gflops = 2.0 * a * a * K * shape[1] * layer.NT / (tg * 1e-3) / 1e9
    row = (f"{label:<26} F({tile},{r})  {wf:8.2f} {wb:8.2f} | {cf:8.2f} {cfb:8.2f} | "
           f"{cf / wf:5.2f}x {cfb / wb:5.2f}x | {tg:7.2f} {gflops:6.1f} {100 * (1 - tg / wf):5.0f}%")
    if "tf" in best:
        row += f" | {best['tf']:8.2f} {best['tfb']:8.2f} {best['tf'] / wf:5.2f}x"
    print(row, flush=True)
    return cname


def main(a):
    try:
        from threadpoolctl import threadpool_info
        pools = ", ".join(f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info())
    except Exception:
        pools = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, " \
                f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    from wincaffe._kernels.threads import get_omp_threads
    from wincaffe._kernels.winograd import KERNELS
    from wincaffe.machine import describe
    print(describe())
    print(isa.describe())
    print(f"WinogradConv benchmark, float32, best of {a.repeat} runs x {a.rounds} rounds; threads: {pools}, OpenMP {get_omp_threads()}; "
          f"cpus: {os.cpu_count()}; kernels: {KERNELS}; batched GEMMs: {GEMM_BACKEND}")
    has_torch = torch_reference.available()     # timed in a process of its own
    cname = "conv" if "Convolution" in layer_types() else "im2col"
    head = (f"{'case':<26} tile    {'wino F':>8} {'F+B':>8} | {cname + ' F':>8} {'F+B':>8} | "
            f"{'ratio F':>6} {'F+B':>6} | {'gemm ms':>7} {'GF/s':>6} {'other':>6}")
    if has_torch:
        head += f" | {'torch F':>8} {'F+B':>8} {'t/w F':>6}"
    print(head)
    for tile in [t for t in (2, 4) if t in a.tiles]:
        bench_row("LeNet conv2 64x20x12x12", (64, 20, 12, 12), 50, 5, 0, tile, a.repeat, a.rounds)
    chans = a.channels or ([16, 64] if a.quick else [8, 16, 32, 64, 128, 256])
    for c in chans:
        for tile in a.tiles:
            bench_row(f"3x3 pad1 1x{c}x128x128 K={c}", (1, c, 128, 128), c, 3, 1, tile, a.repeat, a.rounds)


if __name__ == "__main__":
    main(ARGS)
