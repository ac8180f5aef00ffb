"""Pooling against memory speed: each pass beside a plain ``np.copyto`` of its input,
measured in the same run (issue 14's bar: within 2x of the copy).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pooling.py --threads 1

Cases: LeNet-5's pool1 (64x20x24x24, 2.9 MB) and pool2 (64x50x8x8, 0.8 MB, in L2 after
conv2), and a VGG-like 32x64x112x112 (103 MB, from memory); 2x2 windows, stride 2. The
data are MNIST-like (many ties) so that branchy code would be measured fairly.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from timing import best_ms  # noqa: E402

CASES = [("LeNet pool1", (64, 20, 24, 24)), ("LeNet pool2", (64, 50, 8, 8)), ("VGG-like", (32, 64, 112, 112))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    from wincaffe.machine import describe
    from wincaffe.testing import make_layer
    from wincaffe.threads import set_num_threads
    set_num_threads(args.threads)
    print(describe())
    from wincaffe._kernels import pool
    print(f"Pooling 2x2 stride 2, float32, {args.threads} thread(s), best of {args.repeat}; kernels: "
          f"{pool.KERNELS} (of {', '.join(pool.available_paths())}); "
          f"ratio = pass / np.copyto of its input (<= 2: the bar)")
    print(f"{'case':13s} {'input':>17s} {'copyto':>8s} | {'MAX F':>7s} {'ratio':>6s} {'MAX B':>7s} {'ratio':>6s} | "
          f"{'AVE F':>7s} {'ratio':>6s} {'AVE B':>7s} {'ratio':>6s}")
    rng = np.random.default_rng(0)
    for name, shape in CASES:
        x = np.maximum(rng.standard_normal(shape, dtype=np.float32), 0)       # ReLU-like: ties at 0
        copy = np.empty_like(x)
        t_copy = best_ms(lambda: np.copyto(copy, x), args.repeat)
        row = [f"{name:13s} {'x'.join(map(str, shape)):>17s} {t_copy:8.3f} |"]
        for pool in ("MAX", "AVE"):
            layer, bottoms, tops = make_layer("Pooling", [shape], dtype=np.float32,
                                              pooling_param={"pool": pool, "kernel_size": 2, "stride": 2})
            bottoms[0].data[...] = x
            tops[0].diff[...] = 1
            t_f = best_ms(lambda: layer.forward(bottoms, tops), args.repeat)
            t_b = best_ms(lambda: layer.backward(tops, [True], bottoms), args.repeat)
            row.append(f"{t_f:7.3f} {t_f / t_copy:6.2f} {t_b:7.3f} {t_b / t_copy:6.2f} |")
        print(" ".join(row).rstrip(" |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
