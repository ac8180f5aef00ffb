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
import copy
import logging
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(gradient, lr, iters, test_images, seed=1):
    """Test accuracy after ``iters`` iterations, or None if the loss diverged."""
    from wincaffe.config import load_solver_spec, validate_net
    from wincaffe.errors import TrainingError
    from wincaffe.solver import Solver
    net = yaml.safe_load(open(os.path.join(ROOT, "nets", "lenet5_winograd.yaml")))
    net = copy.deepcopy(net)
    for layer in net["layer"]:
        if layer["type"] == "WinogradConv":
            layer["winograd_param"]["gradient"] = gradient
        if layer["type"] == "Data" and layer["include"]["phase"] == "TEST":
            layer["data_param"]["num_samples"] = test_images
    spec = load_solver_spec(os.path.join(ROOT, "nets", "lenet5_winograd_solver.yaml"))
    spec.update(net=validate_net(net), max_iter=iters, base_lr=lr, test_iter=test_images // 100,
                test_interval=0, display=0, snapshot=0, random_seed=seed)
    solver = Solver(spec, progress=False)
    try:
        solver.step(iters)
    except TrainingError:
        return None
    return solver.test()["accuracy"]


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
