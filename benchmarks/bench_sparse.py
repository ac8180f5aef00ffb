"""Pruned convolutions that run faster: the sparse path of WinogradConv and FFTConv against
their dense path, in one run, at transform-domain densities 100, 50, 30, 20, 10 and 5%.

Cases: F(4,3) at 128×128, one image, C = K ∈ {64, 128, 256}; LeNet-5's conv2 (64×20×12×12,
K = 50) as F(4,5) and F(2,5); the FFT LeNet-5's conv2 (FFTConv). Stages: ``products``
(the element-wise stage alone: dense batched GEMMs vs our sparse kernel vs SciPy's CSR
times dense, one product per tile position or frequency) and ``layer`` (the whole forward,
and forward + backward for WinogradConv). Best of --repeat, ms. The break-even density of
each case (highest density at which the sparse path is not slower, interpolated) is
printed at the end. ``--lenet`` also scores the MNIST test set with LeNet-5 F(4,5) pruned
to 10% in the Winograd domain, sparse against dense.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_sparse.py --threads 1 --lenet

``--json`` prints one object per measurement: case, density, stage, dense_ms, sparse_ms,
csr_ms (products only), and pass (forward / forward_backward).
"""
import argparse
import json
import os
import sys


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--lenet", action="store_true", help="also time LeNet-5 F(4,5) at 10%% on the MNIST test set")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import wincaffe  # noqa: E402,F401
import numpy as np  # noqa: E402

from wincaffe.testing import make_layer  # noqa: E402
from timing import best_ms  # noqa: E402  (benchmarks/, beside this script)




def _mask(shape, density, rng):
    return (rng.random(shape) < density).astype(np.float32)


def winograd_case(label, shape, K, r, pad, tile, densities, repeat, rows):
    from wincaffe._kernels.gemm import batched_matmul
    from wincaffe._kernels import sparse as sk
    import scipy.sparse as sps
    rng = np.random.default_rng(0)
    layers = {}
    for mode in ("on", "off"):
        layers[mode] = make_layer("WinogradConv", [shape], dtype=np.float32, seed=0,
                                  convolution_param={"num_output": K, "kernel_size": r, "pad": pad},
                                  winograd_param={"tile": tile, "weights": "winograd", "sparse": mode})
    a = layers["on"][0].alpha
    k_mod = sk.kernels()
    Q0 = layers["on"][0].params[0].data.copy()      # set_mask zeroes Q: start each density from Q0
    for d in densities:
        mask = _mask((K, shape[1], a, a), d, rng)
        for mode in ("on", "off"):
            layers[mode][0].set_mask("winograd", None)
            layers[mode][0].params[0].data[...] = Q0
            layers[mode][0].set_mask("winograd", mask)
        lay, bottoms, tops = layers["on"]
        lay.forward(bottoms, tops)
        U, V = lay._U, lay.V
        M = np.empty((a * a, K, V.shape[2]), np.float32)
        pattern = lay._winograd_pattern()
        csr = sk.CSR(U, pattern=pattern)
        dense = best_ms(lambda: batched_matmul(U, V, M), repeat)
        sparse = best_ms(lambda: k_mod.spmm(csr.rowptr, csr.cols, csr.vals, V, M), repeat)
        mats = [sps.csr_matrix(U[p]) for p in range(a * a)]
        csr_ms = best_ms(lambda: [mats[p] @ V[p] for p in range(a * a)], max(1, repeat // 2))
        rows.append(dict(case=label, density=d, stage="products", pass_="forward", dense_ms=dense,
                         sparse_ms=sparse, csr_ms=csr_ms))
        for pass_ in ("forward", "forward_backward"):
            t = {}
            for mode in ("on", "off"):
                L, b, tp = layers[mode]
                tp[0].diff[...] = 1

                def run(L=L, b=b, tp=tp):
                    L.forward(b, tp)
                    if pass_ == "forward_backward":
                        L.backward(tp, [True], b)
                t[mode] = best_ms(run, repeat)
            rows.append(dict(case=label, density=d, stage="layer", pass_=pass_, dense_ms=t["off"],
                             sparse_ms=t["on"], csr_ms=None))
        _print_rows(rows[-3:])


def fft_case(label, shape, K, k, densities, repeat, rows):
    from wincaffe.pruning import magnitude_mask
    rng = np.random.default_rng(1)
    layers = {mode: make_layer("FFTConv", [shape], dtype=np.float32, seed=0,
                               convolution_param={"num_output": K, "kernel_size": k},
                               fft_param={"weights": "spatial_masked", "sparse": mode})
              for mode in ("on", "off")}
    for d in densities:
        scores = rng.random(layers["on"][0].mask("spectral").shape)
        for mode in ("on", "off"):
            lay = layers[mode][0]
            lay.set_mask("spectral", magnitude_mask(scores, 1 - d, partner=lay.prune_partners("spectral")))
        lay, bottoms, tops = layers["on"]
        lay.forward(bottoms, tops)
        X, Gc = lay._X, lay._Gc
        out = np.empty((X.shape[0], X.shape[1], K), X.dtype)
        dense = best_ms(lambda: np.matmul(X, Gc.transpose(0, 2, 1), out=out), repeat)
        sparse = best_ms(lambda: lay._sparse_products(X, Gc, out), repeat)
        rows.append(dict(case=label, density=d, stage="products", pass_="forward", dense_ms=dense,
                         sparse_ms=sparse, csr_ms=None))
        t = {mode: best_ms(lambda L=layers[mode]: L[0].forward(L[1], L[2]), repeat) for mode in ("on", "off")}
        rows.append(dict(case=label, density=d, stage="layer", pass_="forward", dense_ms=t["off"],
                         sparse_ms=t["on"], csr_ms=None))
        _print_rows(rows[-2:])


def lenet_case(repeat, rows):
    """LeNet-5 F(4,5), Q in the Winograd domain, both conv layers pruned to 10% (magnitude):
    scoring the 10,000 MNIST test images, sparse against dense."""
    from wincaffe.layer import TEST
    from wincaffe.net import Net
    from wincaffe.pruning import magnitude_mask
    from wincaffe.config import read_yaml
    raw = read_yaml(os.path.join(ROOT, "nets", "lenet5_winograd.yaml"))
    nets = {}
    for mode in ("auto", "off"):
        for l in raw["layer"]:
            if l["type"] == "WinogradConv":
                l["winograd_param"]["sparse"] = mode
        net = Net(raw, TEST)
        for l in net.layers:
            if l.type_name == "WinogradConv":
                l.set_mask("winograd", magnitude_mask(l.prune_scores("winograd"), 0.9))
        nets[mode] = net
    t = {mode: best_ms(lambda n=nets[mode]: n.evaluate(100, rewind=True), max(1, repeat // 2)) for mode in nets}
    paths = [l.execution() for l in nets["auto"].layers if l.type_name == "WinogradConv"]
    rows.append(dict(case="LeNet-5 F(4,5) 10% test set", density=0.1, stage="net", pass_="forward",
                     dense_ms=t["off"], sparse_ms=t["auto"], csr_ms=None))
    if not ARGS.json:
        print(f"LeNet-5 F(4,5) pruned to 10%, 10,000 test images: dense {t['off']:.0f} ms, auto {t['auto']:.0f} ms "
              f"({t['auto'] / t['off']:.2f}x; layers: {', '.join(paths)})", flush=True)


def _print_rows(rs):
    if ARGS.json:
        return
    for r in rs:
        csr = f"{r['csr_ms']:9.3f}" if r["csr_ms"] is not None else f"{'-':>9}"
        print(f"{r['case']:<34} {r['density']:>6.0%} {r['stage'] + ' ' + r['pass_']:<24} "
              f"{r['dense_ms']:9.3f} {r['sparse_ms']:9.3f} {csr} {r['dense_ms'] / r['sparse_ms']:7.2f}x", flush=True)


def break_even(rows):
    """Per (case, stage, pass): the density where the sparse path stops winning, scanning
    up from the lowest density: interpolated between the last density where it won and
    the first where it lost (so one lucky measurement above a loss does not count); 0 if
    it loses at the lowest density, the highest density if it never loses."""
    out = {}
    keys = sorted({(r["case"], r["stage"], r["pass_"]) for r in rows if r["stage"] != "net"}, key=str)
    for key in keys:
        pts = sorted((r["density"], r["dense_ms"] / r["sparse_ms"]) for r in rows
                     if (r["case"], r["stage"], r["pass_"]) == key)
        be = pts[-1][0] if pts else 0.0
        for k, (d, speedup) in enumerate(pts):
            if speedup < 1:
                if k == 0:
                    be = 0.0
                else:
                    d0, s0 = pts[k - 1]
                    be = d0 + (s0 - 1) / (s0 - speedup) * (d - d0)
                break
        out[key] = be
    return out


def main(a):
    from wincaffe._kernels import sparse as sk
    from wincaffe.machine import describe
    from wincaffe.sparse_stage import BREAK_EVEN
    rows = []
    if not a.json:
        print(describe())
        print(f"Sparse vs dense, float32, best of {a.repeat}, {a.threads} thread(s); sparse kernels: "
              f"{sk.kernels().SIMD} (available: {', '.join(sk.available_paths())}); auto's break-even: {BREAK_EVEN:.0%}")
        print(f"{'case':<34} {'dens':>6} {'stage':<24} {'dense ms':>9} {'sparse':>9} {'scipy':>9} {'speedup':>8}")
    for C in a.channels:
        winograd_case(f"F(4,3) 128x128 C=K={C}", (1, C, 128, 128), C, 3, 1, 4, a.densities, a.repeat, rows)
    winograd_case("LeNet conv2 F(4,5) 64x20x12x12", (64, 20, 12, 12), 50, 5, 0, 4, a.densities, a.repeat, rows)
    winograd_case("LeNet conv2 F(2,5) 64x20x12x12", (64, 20, 12, 12), 50, 5, 0, 2, a.densities, a.repeat, rows)
    fft_case("FFT LeNet conv2 64x20x12x12", (64, 20, 12, 12), 50, 5, a.densities, a.repeat, rows)
    if a.lenet:
        lenet_case(a.repeat, rows)
    if a.json:
        for r in rows:
            r = dict(r)
            r["pass"] = r.pop("pass_")
            print(json.dumps(r))
        return 0
    print("break-even density (sparse no slower than dense):")
    for (case, stage, pass_), be in break_even(rows).items():
        print(f"  {case:<34} {stage + ' ' + pass_:<24} {be:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
