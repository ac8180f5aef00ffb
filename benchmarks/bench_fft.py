"""FFTConv speed against spatial convolutions, all ratios measured in the same run.

    python benchmarks/bench_fft.py [--threads 1] [--repeat 20] [--backend pyfftw]
                                   [--fft-size auto] [--batch-large 8] [--quick]

Rows: LeNet conv1 (64×1×28×28, 20 kernels 5×5) and conv2 (64×20×12×12, 50
kernels 5×5) at batch 64, then 32 → 32 channels on 64×64 inputs (pad k//2) with
3×3, 5×5, 7×7 and 11×11 kernels at batch ``--batch-large``. Columns: milliseconds
(best of ``--repeat`` runs) for forward (F) and forward + backward (F+B) of

    fft      FFTConv (``--backend``, ``--fft-size``; weights: spatial). ``auto`` is
             the default here: it equals Liu & Turakhia's linear size for LeNet (32, 16)
             but avoids 68 = 4·17 and 76 = 4·19 on the 64×64 rows.
    im2col   a plain NumPy im2col + matmul reference conv (in this file)
    conv     the framework's ``Convolution`` layer, if registered
    torch    torch.nn.functional.conv2d (CPU), if ``import torch`` works

and fft/im2col, fft/conv ratios. LeNet conv1 backward skips the input gradient,
as in training (its bottom is the data). The last block times a whole LeNet-5
training iteration (forward + backward, Input layers instead of MNIST) with
Convolution vs FFTConv — the experiment of Liu & Turakhia, §4.2, whose Theano version took
12 hours per retraining epoch. ``--threads`` sets the FFT threads and, before
NumPy is imported, the BLAS threads.
"""
import argparse
import os
import sys


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--backend", default="pyfftw", choices=("pyfftw", "scipy", "numpy"))
    ap.add_argument("--fft-size", default="auto",
                    help="linear | auto (default; = linear for LeNet) | min")
    ap.add_argument("--batch-large", type=int, default=8, help="batch for the 64×64 rows")
    ap.add_argument("--quick", action="store_true", help="LeNet rows only")
    return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # must precede the NumPy import to bind OpenBLAS/OpenMP
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wincaffe.config import read_yaml  # noqa: E402
from wincaffe.layer import layer_types  # noqa: E402
from wincaffe.net import Net  # noqa: E402
from wincaffe.testing import make_layer  # noqa: E402
import torch_reference  # noqa: E402  (benchmarks/, beside this script)
from timing import best_ms as _best_ms  # noqa: E402  (benchmarks/, beside this script)


# ----- the NumPy reference: im2col + one matmul ----------------------------------------

class Im2colConv:
    """y = W2d @ im2col(x_pad) + b, backward by the transposed products and col2im."""

    def __init__(self, x, w, b, pad):
        self.x, self.w, self.b, self.pad = x, w, b, pad

    def forward(self):
        x, w, p = self.x, self.w, self.pad
        N, C, H, W = x.shape
        K, _, k, _ = w.shape
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # N C Ho Wo k k
        Ho, Wo = win.shape[2:4]
        self.cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(N * Ho * Wo, C * k * k)
        y = self.cols @ w.reshape(K, -1).T                                       # (N·Ho·Wo, K)
        y += self.b
        self.shape = (N, C, H, W, K, k, Ho, Wo)
        return y.reshape(N, Ho, Wo, K).transpose(0, 3, 1, 2)

    def backward(self, dy, need_dx=True):
        N, C, H, W, K, k, Ho, Wo = self.shape
        p = self.pad
        dy2 = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, K)
        dw = (dy2.T @ self.cols).reshape(K, C, k, k)
        db = dy2.sum(0)
        dx = None
        if need_dx:
            dcols = (dy2 @ self.w.reshape(K, -1)).reshape(N, Ho, Wo, C, k, k)
            dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), self.x.dtype)
            for u in range(k):
                for v in range(k):
                    dxp[:, :, u:u + Ho, v:v + Wo] += dcols[:, :, :, :, u, v].transpose(0, 3, 1, 2)
            dx = dxp[:, :, p:p + H, p:p + W]
        return dw, db, dx


# ----- timing -------------------------------------------------------------------------------



def _layer_times(layer_type, shape, K, k, pad, need_dx, repeat, **blocks):
    layer, bottoms, tops = make_layer(layer_type, [shape], dtype=np.float32,
                                      convolution_param={"num_output": K, "kernel_size": k, "pad": pad},
                                      **blocks)
    tops[0].diff[...] = np.random.default_rng(1).standard_normal(tops[0].shape)

    def fwd():
        layer.forward(bottoms, tops)

    def fwd_bwd():
        layer.forward(bottoms, tops)
        layer.backward(tops, [need_dx], bottoms)

    times = (_best_ms(fwd, repeat), _best_ms(fwd_bwd, repeat))
    return times, getattr(layer, "fshape", None)


def _im2col_times(shape, K, k, pad, need_dx, repeat):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((K, shape[1], k, k)).astype(np.float32)
    ref = Im2colConv(x, w, np.zeros(K, np.float32), pad)
    y = ref.forward()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    return (_best_ms(ref.forward, repeat),
            _best_ms(lambda: (ref.forward(), ref.backward(dy, need_dx)), repeat))


def _torch_times(shape, K, k, pad, need_dx, repeat, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((K, shape[1], k, k)).astype(np.float32)
    return torch_reference.conv2d_times(x, w, np.zeros(K, np.float32), pad, need_dx, repeat, threads)


def _fmt(t):
    return "      -    " if t is None else f"{t[0]:7.2f} {t[1]:7.2f}"


def _ratio(a, b):
    return "    -   " if a is None or b is None else f"{a[0] / b[0]:4.2f} {a[1] / b[1]:4.2f}"


def bench_layers(args):
    have_conv = "Convolution" in layer_types()
    cases = [("LeNet conv1", (64, 1, 28, 28), 20, 5, 0, False),
             ("LeNet conv2", (64, 20, 12, 12), 50, 5, 0, True)]
    if not args.quick:
        nb = args.batch_large
        cases += [(f"{k}x{k} 32ch 64x64", (nb, 32, 64, 64), 32, k, k // 2, True) for k in (3, 5, 7, 11)]
    fft_param = {"backend": args.backend, "threads": args.threads, "fft_size": args.fft_size}
    from wincaffe.machine import describe
    print(describe())
    print(f"FFTConv backend={args.backend} fft_size={args.fft_size} threads={args.threads}; "
          f"ms, best of {args.repeat}; each cell: F  F+B")
    print(f"{'case [FFT size]':26s} {'input':>16s} | {'fft':>15s} | {'im2col':>15s} | {'conv':>15s} | "
          f"{'torch':>15s} | {'fft/im2col':>10s} | {'fft/conv':>10s}")
    for label, shape, K, k, pad, need_dx in cases:
        t_fft, fshape = _layer_times("FFTConv", shape, K, k, pad, need_dx, args.repeat, fft_param=fft_param)
        t_ref = _im2col_times(shape, K, k, pad, need_dx, args.repeat)
        t_conv = _layer_times("Convolution", shape, K, k, pad, need_dx, args.repeat)[0] if have_conv else None
        t_torch = _torch_times(shape, K, k, pad, need_dx, args.repeat, args.threads)
        label = f"{label} [{fshape[0]}x{fshape[1]}]"
        print(f"{label:26s} {'x'.join(map(str, shape)):>16s} | {_fmt(t_fft)} | {_fmt(t_ref)} | "
              f"{_fmt(t_conv)} | {_fmt(t_torch)} | {_ratio(t_fft, t_ref):>10s} | {_ratio(t_fft, t_conv):>10s}")
        sys.stdout.flush()


def _lenet_spec(conv_type, fft_param):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    raw = read_yaml(os.path.join(here, "nets", "lenet5.yaml"))
    layers = []
    for l in raw["layer"]:
        if l["type"] == "Data":
            if (l.get("include") or {}).get("phase") == "TEST":
                continue
            layers.append({"name": "data", "type": "Input", "top": "data",
                           "input_param": {"shape": [64, 1, 28, 28], "fill": "gaussian"}})
            layers.append({"name": "label", "type": "Input", "top": "label", "input_param": {"shape": [64]}})
            continue
        l = dict(l)
        if l["type"] == "Convolution" and conv_type != "Convolution":
            l["type"] = conv_type
            l["fft_param"] = fft_param
        layers.append(l)
    return {"name": "LeNet", "layer": layers}


def bench_lenet(args):
    if "Convolution" not in layer_types():
        print("\n(no Convolution layer registered: skipping the LeNet-5 iteration)")
        return
    fft_param = {"backend": args.backend, "threads": args.threads, "fft_size": args.fft_size}
    print("\nLeNet-5 training iteration (batch 64, forward + backward), ms, best of", args.repeat)
    results = {}
    for conv_type in ("Convolution", "FFTConv"):
        net = Net(_lenet_spec(conv_type, fft_param), phase="TRAIN", dtype=np.float32)
        results[conv_type] = _best_ms(net.forward_backward, args.repeat)
        fwd, bwd = net.time_layers(iterations=max(3, args.repeat // 2))
        per = ", ".join(f"{l.name} {f:.2f}+{b:.2f}" for l, f, b in zip(net.layers, fwd, bwd)
                        if l.name.startswith(("conv", "ip", "pool")))
        print(f"  {conv_type:12s} {results[conv_type]:7.2f} ms   (per-layer means, F+B: {per})")
    ratio = results["FFTConv"] / results["Convolution"]
    print(f"  FFTConv / Convolution: {ratio:.2f}x  (target: at most 1.2x) -> an epoch of 60000 images "
          f"≈ {results['FFTConv'] * 60000 / 64 / 1000:.1f} s vs {results['Convolution'] * 60000 / 64 / 1000:.1f} s")


def main():
    args = ARGS
    bench_layers(args)
    bench_lenet(args)


if __name__ == "__main__":
    main()
