"""The gradient note, section 3-4: training Winograd-domain weights Q with the raw gradient
dL/dQ needs a far smaller learning rate than with the preconditioned gradient
(G Gᵀ) dL/dQ (G Gᵀ) (eq. 18).

Trains LeNet-5 with both conv layers as WinogradConv F(4x4, 5x5), weights in the
Winograd domain, for --iters iterations at each learning rate and gradient, from
the same initialisation and batches, and prints the test accuracy on the first
--test-images MNIST test images (or "diverged" when the loss became NaN).

    python benchmarks/experiment_winograd_gradient.py
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(gradient, lr, iters, test_images, seed=1):
    """Test accuracy after ``iters`` iterations, or None if the loss diverged."""
    from wincaffe.gradient_experiment import train_with_gradient
    return train_with_gradient(os.path.join(ROOT, "nets", "lenet5_winograd.yaml"),
                               os.path.join(ROOT, "nets", "lenet5_winograd_solver.yaml"),
                               gradient, lr, iters, test_images, seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from wincaffe.log import setup_logging
    from wincaffe.threads import set_num_threads
    setup_logging(logging.WARNING)
    set_num_threads(args.threads)
    import numpy as np
    np.seterr(all="ignore")  # a diverging run overflows on purpose
    print(f"LeNet-5 Winograd F(4x4,5x5), weights Q in the Winograd domain, {args.iters} iterations, "
          f"accuracy on {args.test_images} test images")
    print(f"{'base_lr':>10}  {'raw dL/dQ':>12}  {'preconditioned':>15}")
    for lr in args.lrs:
        cells = []
        for gradient in ("raw", "preconditioned"):
            acc = run(gradient, lr, args.iters, args.test_images)
            cells.append("diverged" if acc is None else f"{acc:.3f}")
        print(f"{lr:10.0e}  {cells[0]:>12}  {cells[1]:>15}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
