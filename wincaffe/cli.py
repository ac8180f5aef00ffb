"""The ``wincaffe`` command: train, test, time, data fetch (Caffe's tool, in Python).

Thin by design: parse arguments, call the library, print. Every error wincaffe
raises on purpose is printed as one line (``wincaffe: error: ...``), exit code 1.
"""
import argparse
import logging
import os
import sys

import numpy as np

from wincaffe.errors import WincaffeError
from wincaffe.log import get_logger, setup_logging

log = get_logger("cli")


def _dtype(name):
    return {"float32": np.float32, "float64": np.float64}[name]


def _threads(n):
    """Cap BLAS and OpenMP threads (before heavy work starts)."""
    if n is not None:
        from wincaffe.threads import set_num_threads
        set_num_threads(n)


def cmd_train(args):
    from wincaffe.snapshot import load_weights
    from wincaffe.solver import Solver
    from wincaffe.config import load_solver_spec
    spec = load_solver_spec(args.solver)
    if args.net:
        spec["net"] = args.net
        if args.snapshot_prefix is None:
            spec["snapshot_prefix"] = os.path.splitext(os.path.basename(args.net))[0]
    if args.snapshot_prefix:
        spec["snapshot_prefix"] = args.snapshot_prefix
    solver = Solver(spec, output_dir=args.output, dtype=_dtype(args.dtype), max_iter=args.max_iter,
                    progress=None if not args.no_progress else False)
    if args.weights:
        n = load_weights(solver.net, args.weights)
        log.info(f"Finetuning from {args.weights} ({n} params)")
    result = solver.solve(resume_from=args.snapshot)
    for name, value in result.items():
        print(f"{name} = {value:.4f}")
    return 0


def _load_net(args, phase):
    """The net of ``--model`` for ``phase``, with ``--weights`` loaded when given."""
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights
    net = Net(args.model, phase, dtype=_dtype(args.dtype), seed=args.seed)
    if args.weights:
        load_weights(net, args.weights, strict=True)
    return net


def cmd_test(args):
    from wincaffe.layer import TEST
    net = _load_net(args, TEST)
    if not args.weights:
        log.warning("No --weights given: testing the randomly initialised net")
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=args.iterations, desc="test", unit="batch", leave=False)

    def on_batch(i, batch):
        for name, value in batch.items():
            log.info(f"Batch {i}, {name} = {value:.6g}")
        if bar is not None:
            bar.update(1)
    means = net.evaluate(args.iterations, on_batch=on_batch)
    if bar is not None:
        bar.close()
    for name, mean in means.items():
        log.info(f"Loss: {mean:.6g}" if "loss" in name else f"{name} = {mean:.6g}")
    for name, mean in means.items():
        print(f"{name} = {mean:.4f}")
    return 0


def cmd_time(args):
    from wincaffe.layer import TRAIN
    net = _load_net(args, TRAIN)
    log.info(f"Performing Forward-Backward timing over {args.iterations} iterations")
    fwd, bwd = net.time_layers(args.iterations)
    width = max(len(l.name) for l in net.layers)
    print(f"{'layer':<{width}}  {'type':<16} {'forward ms':>10} {'backward ms':>11}")
    for layer, f, b in zip(net.layers, fwd, bwd):
        print(f"{layer.name:<{width}}  {layer.type_name:<16} {f:10.3f} {b:11.3f}")
    print(f"Average Forward pass: {fwd.sum():.3f} ms.")
    print(f"Average Backward pass: {bwd.sum():.3f} ms.")
    print(f"Average Forward-Backward: {fwd.sum() + bwd.sum():.3f} ms.")
    return 0


def cmd_data_fetch(args):
    from wincaffe.data import fetch_mnist
    fetchers = {"mnist": fetch_mnist}
    folder = fetchers[args.dataset](progress=not args.quiet, force=args.force)
    print(f"{args.dataset}: verified files in {folder}")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="wincaffe", description="Caffe-style training and timing of nets defined in YAML.")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="how much to log to stderr (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, model=True):
        if model:
            sp.add_argument("--model", required=True, help="net definition (YAML)")
            sp.add_argument("--weights", help="weights file (.npz) to load into the net")
            sp.add_argument("--seed", type=int, default=0, help="seed of the net's random generator (default 0)")
        sp.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="floating-point type of blobs and params (default float32)")
        sp.add_argument("--threads", type=int, help="cap BLAS/OpenMP threads (default: all cores)")

    t = sub.add_parser("train", help="train a net with a solver file",
                       description="Train the net named by a solver file. Writes <snapshot_prefix>_iter_<N>.npz "
                                   "(weights) and .solverstate.npz (for --snapshot) into --output.")
    t.add_argument("--solver", required=True, help="solver definition (YAML)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--weights", help="initialise from this weights file (fine-tuning)")
    g.add_argument("--snapshot", help="resume from this <prefix>_iter_<N>.solverstate.npz")
    t.add_argument("--max-iter", type=int, help="override the solver's max_iter")
    t.add_argument("--net", help="train this net instead of the solver's 'net' (e.g. the Winograd twin of a "
                                 "net under the same solver); snapshots are then named after it")
    t.add_argument("--snapshot-prefix", help="override the solver's snapshot_prefix")
    t.add_argument("--output", default=".", help="folder for snapshots (default: current folder)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    common(t, model=False)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("test", help="score a trained net on its TEST phase",
                       description="Run the TEST phase of a net for --iterations batches and print the mean "
                                   "of each scalar output (ends with 'accuracy = ...').")
    common(s)
    s.add_argument("--iterations", type=int, default=50, help="number of batches (default 50)")
    s.set_defaults(func=cmd_test)

    tm = sub.add_parser("time", help="per-layer forward/backward timing (like caffe time)",
                        description="Time forward and backward of every layer of the TRAIN phase.")
    common(tm)
    tm.add_argument("--iterations", type=int, default=50, help="number of timed iterations (default 50)")
    tm.set_defaults(func=cmd_time)

    d = sub.add_parser("data", help="datasets", description="Dataset commands.")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="download and verify a dataset into the cache",
                        description="Fetch a dataset into $WINCAFFE_DATA (default ~/.cache/wincaffe) and "
                                    "verify its checksums.")
    f.add_argument("dataset", choices=("mnist",), help="which dataset")
    f.add_argument("--force", action="store_true", help="fetch again even if verified files are present")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_data_fetch)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(logging, args.log_level))
    _threads(getattr(args, "threads", None))
    try:
        return args.func(args)
    except WincaffeError as exc:
        print(f"wincaffe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wincaffe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
