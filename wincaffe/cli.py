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
    from wincaffe.counting import memory_traffic
    from wincaffe.layer import TRAIN
    net = _load_net(args, TRAIN)
    log.info(f"Performing Forward-Backward timing over {args.iterations} iterations")
    fwd, bwd = net.time_layers(args.iterations)
    traffic = memory_traffic(net)
    width = max(len(l.name) for l in net.layers)
    print(f"{'layer':<{width}}  {'type':<16} {'forward ms':>10} {'backward ms':>11} {'fwd MB':>7} {'bwd MB':>7} "
          f"{'GB/s':>6}  path")
    for layer, f, b, t in zip(net.layers, fwd, bwd, traffic):
        moved = t["forward"] + t["backward"]
        rate = f"{moved / (f + b) / 1e6:6.1f}" if f + b > 0 else f"{'':6}"
        print(f"{layer.name:<{width}}  {layer.type_name:<16} {f:10.3f} {b:11.3f} {t['forward'] / 1e6:7.2f} "
              f"{t['backward'] / 1e6:7.2f} {rate}  {layer.execution() or ''}".rstrip())
    print(f"Average Forward pass: {fwd.sum():.3f} ms.")
    print(f"Average Backward pass: {bwd.sum():.3f} ms.")
    print(f"Average Forward-Backward: {fwd.sum() + bwd.sum():.3f} ms.")
    total = sum(t["forward"] + t["backward"] for t in traffic)
    print(f"Memory traffic: {total / 1e6:.1f} MB per iteration (each array counted once per read and write; "
          f"GB/s = the layer's MB over its forward + backward time).")
    largest = max(net.blobs.values(), key=lambda b: b.data.nbytes).data
    print(f"For scale: np.copyto of the largest blob ({largest.nbytes / 1e6:.1f} MB), repeated on warm caches, "
          f"moves {_copy_rate(largest):.1f} GB/s (read + write) here.")
    return 0


def _copy_rate(array, repeats=20):
    """GB/s of np.copyto(dst, array), read + write, the fastest of ``repeats``."""
    import time
    dst = np.empty_like(array)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, array)
        best = min(best, time.perf_counter() - t0)
    return 2 * array.nbytes / best / 1e9


def _names(text):
    return [t for t in (text or "").replace(" ", "").split(",") if t] or None


def cmd_prune(args):
    from wincaffe.prune_job import DEFAULT_SENSITIVITY_RATES, PruneJob, parse_rates
    from wincaffe.fileio import ensure_writable_dir
    ensure_writable_dir(args.output)
    rates = parse_rates(args.rates) if args.rates is not None else None
    layers = None if args.layers is None else (_names(args.layers) or [])
    job = PruneJob(args.solver, args.weights, net=args.net, layers=layers,
                   skip_first=args.skip_first, domain=args.domain, scope=args.scope,
                   test_iterations=args.test_iterations, base_lr=args.base_lr, output=args.output,
                   dtype=_dtype(args.dtype), progress=False if args.no_progress else None)
    if args.sensitivity:
        report = job.sensitivity(rates or DEFAULT_SENSITIVITY_RATES)
        print(report["table"])
        print(f"dense accuracy = {report['accuracy_dense']:.4f}")
        print(f"wrote {report['plot'] or '(no plot: matplotlib missing)'} and its .csv/.json")
        return 0
    report = job.run(schedule=args.schedule, rate=args.rate, rates=rates, retrain_iters=args.retrain_iters,
                     retrain_epochs=args.retrain_epochs, agp_steps=args.agp_steps)
    print(report["table"])
    for key in ("accuracy_dense", "accuracy_pruned", "accuracy_retrained"):
        print(f"{key} = {report[key]:.4f}")
    print(f"wrote {report['weights_out']}, {', '.join(report['report_files'])}")
    return 0


def cmd_density(args):
    from wincaffe.density import activation_densities
    from wincaffe.layer import TEST
    from wincaffe.report import Column, format_table
    if args.iterations < 1:
        raise WincaffeError(f"--iterations: must be >= 1, got {args.iterations}")
    net = _load_net(args, TEST)
    rows = activation_densities(net, args.iterations)
    if args.json:
        import json
        print(json.dumps({"layers": rows}, indent=2))
        return 0
    print(format_table(rows, [Column("name", "layer"), Column("type"), Column("domain"),
                              Column("mean", "density mean", "{:.2%}"), Column("std", "std", "{:.2%}"),
                              Column("batches")]))
    return 0


def cmd_mults(args):
    from wincaffe.counting import COUNTS, mults_report
    from wincaffe.layer import TEST
    from wincaffe.report import Column, format_table, to_csv
    batches = args.batches if args.batches is not None else (10 if args.weights else 0)
    if batches < 0:
        raise WincaffeError(f"--batches: must be >= 0, got {batches}")
    if batches and not args.weights:
        log.warning("No --weights given: sparse counts are measured on the randomly initialised net")
    net = _load_net(args, TEST)
    report = mults_report(net, batches)
    rows = report["layers"] + [report["total"]]
    if args.format == "json":
        import json
        print(json.dumps(report, indent=2))
        return 0
    keys = ["name", "type"] + list(COUNTS) + ["weight_domain", "weight_density", "activation_domain",
                                              "activation_density", "activation_density_std"] + \
        [f"reduction_{k}" for k in COUNTS if k not in ("direct", "transforms")]
    if args.format == "csv":
        sys.stdout.write(to_csv(rows, keys))
        return 0
    for r in rows:
        if r.get("activation_density") is not None:
            r["act"] = f"{r['activation_density']:.1%} ± {r['activation_density_std']:.1%}"
    cols = [Column("name", "layer"), Column("type")] + [Column(k, k, "{:,}") for k in COUNTS] + \
        [Column("weight_density", "w density", "{:.1%}"), Column("act", "act density")]
    print(format_table(rows, cols))
    t = report["total"]
    factors = ", ".join(f"{k} {t[f'reduction_{k}']:.2f}x" for k in COUNTS
                        if k not in ("direct", "transforms") and t.get(f"reduction_{k}"))
    print(f"reduction of the total against direct: {factors or 'none'}")
    if batches:
        print(f"sparse counts and activation densities: {report['images']} images ({batches} TEST batches)")
    print("per forward pass of one image, in real multiplies (4 per complex product); transforms are "
          "counted apart (see wincaffe/counting.py)")
    return 0


def _quant_layers(text):
    if text is None:
        return None
    names = _names(text)
    if not names:
        raise WincaffeError("--layers: give at least one layer name")
    return names


def cmd_quantize(args):
    from wincaffe import quantization
    from wincaffe.report import Column, format_table
    report = quantization.run(args.model, args.weights, bits=args.bits, scales=args.scales, mode=args.mode,
                              balance=args.balance, calib_batches=args.calib_batches,
                              test_iterations=args.test_iterations,
                              layers=_quant_layers(args.layers), output=args.output,
                              dtype=_dtype(args.dtype), progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        import json
        print(json.dumps(report, indent=2))
        return 0
    print(format_table(report["layers"], [Column("name", "layer"), Column("bits"), Column("scales"),
                                          Column("variant"), Column("mode"), Column("path", "kernel path")]))
    s = report["settings"]
    print(f"test accuracy ({report['test_iterations']} batches), {s['bits']} bits, {s['scales']} scales, "
          f"{s['mode']}: float {report['float']:.4f}  QW {report['qw']:.4f}  BQW {report['bqw']:.4f}")
    if report.get("written"):
        w = report["written"]
        print(f"wrote {w['model']} and {w['weights']}: wincaffe test --model {w['model']} --weights {w['weights']}")
    return 0


def cmd_compare(args):
    from wincaffe import compare, study
    from wincaffe.fileio import ensure_writable_dir
    from wincaffe.executors import make_executor
    from wincaffe.prune_job import parse_rates
    s = study.load_study(args.config)
    study.apply_overrides(s, methods=_names(args.methods), rates=parse_rates(args.rates) if args.rates else None,
                          retrain_iters=args.retrain_iters, dense_iters=args.dense_iters, repeats=args.repeats)
    ensure_writable_dir(args.output)
    for m in s["methods"]:
        study.method_files(m)          # every file readable and valid before anything runs
    executor = make_executor(workers=args.workers, scheduler=args.scheduler, threads=s["threads"])
    import signal

    def terminate(signum, frame):      # SIGTERM: stop like Ctrl-C, workers included
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        summary = compare.run_study(s, args.output, executor, progress=False if args.no_progress else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
        executor.close()
    print(f"{summary['cells']} cells ({summary['skipped']} skipped as finished, {summary['failed']} failed) "
          f"in {summary['wall_seconds'] / 60:.1f} min")
    print(f"wrote {', '.join(os.path.join(args.output, f) for f in summary['files'])}")
    return 0 if not summary["failed"] else 2


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

    pr = sub.add_parser("prune", help="prune a trained net in the spatial, Winograd or FFT domain and retrain",
                        description="Prune the weights of --weights by magnitude in each layer's domain "
                                    "(spatial W, Winograd-domain U, or the kernel's half spectrum), test, "
                                    "retrain with the masks fixed, test again. Writes <net>_pruned.npz (an "
                                    "ordinary weights file with the masks) and <net>_pruned.json/.csv into "
                                    "--output. With --sensitivity: each layer pruned alone at --rates, no "
                                    "retraining, as a table and <net>_sensitivity.png.")
    pr.add_argument("--solver", required=True, help="solver definition (YAML): the net, the test set and "
                                                    "the retraining schedule")
    pr.add_argument("--weights", required=True, help="trained weights (.npz) to prune")
    pr.add_argument("--rate", type=float, help="fraction of entries to prune, in [0, 1] (oneshot, agp)")
    pr.add_argument("--scope", default="layer", choices=("layer", "kernel", "filter", "global"),
                    help="one threshold per layer (default), per (k, c) kernel, whole filters by Frobenius "
                         "norm, or one threshold over all chosen layers")
    lg = pr.add_mutually_exclusive_group()
    lg.add_argument("--layers", help="comma-separated layers to prune (default: every conv layer)")
    lg.add_argument("--skip-first", action="store_true", help="leave the first conv layer dense (Liu et al.)")
    pr.add_argument("--domain", choices=("spatial", "winograd", "spectral"),
                    help="prune every chosen layer in this domain (default: each layer's own, the domain "
                         "its products are in)")
    pr.add_argument("--schedule", default="oneshot", choices=("oneshot", "rounds", "agp"),
                    help="oneshot (default); rounds: each rate of --rates then retraining; agp: gradual "
                         "pruning to --rate during retraining (Zhu & Gupta)")
    pr.add_argument("--rates", help="comma-separated rates: the rounds of --schedule rounds, or the scan of "
                                    "--sensitivity (default 0.1,...,0.9,0.95)")
    rl = pr.add_mutually_exclusive_group()
    rl.add_argument("--retrain-iters", type=int, help="retraining iterations per round")
    rl.add_argument("--retrain-epochs", type=float, help="retraining epochs per round (default 1)")
    pr.add_argument("--agp-steps", type=int, default=10, help="mask updates of the agp schedule (default 10), "
                                                              "spread over the first half of retraining")
    pr.add_argument("--base-lr", type=float, help="retraining learning rate (default: the solver's base_lr)")
    pr.add_argument("--net", help="prune this net instead of the solver's 'net'")
    pr.add_argument("--output", default=".", help="folder for the pruned weights and the report (default: .)")
    pr.add_argument("--sensitivity", action="store_true", help="scan each layer alone, no retraining")
    pr.add_argument("--test-iterations", type=int, help="test batches per evaluation (default: the "
                                                        "solver's test_iter); always the first ones")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    common(pr, model=False)
    pr.set_defaults(func=cmd_prune)

    de = sub.add_parser("density", help="activation density where each layer multiplies (Liu et al. Fig. 3)",
                        description="Run the TEST phase for --iterations batches and print, per layer that "
                                    "multiplies, the fraction of nonzero inputs at the point of "
                                    "multiplication (V = B^T d B for WinogradConv, after its Winograd-ReLU), "
                                    "mean and standard deviation over the batches.")
    common(de)
    de.add_argument("--iterations", type=int, default=10, help="number of test batches (default 10)")
    de.add_argument("--json", action="store_true", help="print JSON instead of a table")
    de.set_defaults(func=cmd_density)

    mu = sub.add_parser("mults", help="multiply counts per layer: direct, sparse, Winograd, FFT, transforms",
                        description="Count the real multiplies of one image's forward pass per layer (exact "
                                    "integers): direct, direct_sparse (nonzero weight and input), winograd, "
                                    "winograd_sparse (nonzero U and V), fft and fft_masked (4 per complex "
                                    "product), and the transforms apart; the densities behind them; a total "
                                    "and its reduction against direct. Sparse counts are measured on TEST "
                                    "batches when --weights is given.")
    common(mu)
    mu.add_argument("--batches", type=int, help="TEST batches to measure sparse counts on (default 10 with "
                                                "--weights, else 0: dense counts only)")
    mu.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output format")
    mu.set_defaults(func=cmd_mults)

    co = sub.add_parser("compare", help="the Winograd-vs-FFT pruning study: many prune/retrain cells in parallel",
                        description="Run a pruning study (YAML: methods, rates, retraining): train each "
                                    "method's dense baseline (cached), then every (method, rate, repeat) cell "
                                    "-- prune, test, retrain, test, count multiplies, time inference -- on a "
                                    "local pool of processes or a Dask cluster. Resumable: finished cells are "
                                    "kept in DIR/results.jsonl and skipped by a rerun. Writes results.csv, "
                                    "results.md and PNG plots into DIR. Exit code 2 if a cell failed.")
    co.add_argument("--config", default="nets/compare_lenet5.yaml", help="study file (default: %(default)s)")
    co.add_argument("--output", required=True, help="results folder")
    co.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    co.add_argument("--scheduler", help="address of a Dask scheduler (tcp://host:8786): run the cells there")
    co.add_argument("--methods", help="comma-separated methods of the study to run (default: all)")
    co.add_argument("--rates", help="comma-separated rates for every method (overrides the file)")
    co.add_argument("--retrain-iters", type=int, help="retraining iterations per cell (overrides the file)")
    co.add_argument("--dense-iters", type=int, help="dense training iterations (overrides the file)")
    co.add_argument("--repeats", type=int, help="repeats of each cell: each repeat trains its own dense "
                                                "baseline and retrains with its own seed")
    co.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    co.set_defaults(func=cmd_compare)

    q = sub.add_parser("quantize", help="quantized Winograd (QW, BQW) from a trained float net",
                       description="Quantize the element-wise stage of every WinogradConv layer of --model "
                                   "to --bits-bit integers (Chikin & Kryzhanovskiy): calibrate on TRAIN "
                                   "batches, then print the test accuracy of the float net, of QW and of "
                                   "channel-balanced BQW. --output FILE writes FILE.yaml (the net with its "
                                   "quantize settings) and FILE.npz (weights, integer weights, scales and "
                                   "calibrated ranges) for `wincaffe test`, `time` and `train` "
                                   "(quantization-aware training); QW, or BQW with --balance.")
    q.add_argument("--model", required=True, help="net definition (YAML) with WinogradConv layers")
    q.add_argument("--weights", required=True, help="trained float weights (.npz)")
    q.add_argument("--bits", type=int, default=8, help="bits of the integers, 2..16 (default 8; <= 8 runs "
                                                       "the int8 SIMD kernels)")
    q.add_argument("--scales", default="tile", choices=("tensor", "tile"),
                   help="one scale per tensor or per tile position (default tile)")
    q.add_argument("--balance", action="store_true", help="write the balanced net (BQW) instead of QW")
    q.add_argument("--mode", default="static", choices=("static", "dynamic"),
                   help="input scales calibrated (static, default) or from each batch (dynamic)")
    q.add_argument("--calib-batches", type=int, default=10, help="TRAIN batches to calibrate on (default 10)")
    q.add_argument("--test-iterations", type=int, help="TEST batches to score (default: the whole test set)")
    q.add_argument("--layers", help="comma-separated layers to quantize (default: every one that can)")
    q.add_argument("--output", help="write FILE.yaml and FILE.npz (the quantized net)")
    q.add_argument("--json", action="store_true", help="print the report as one JSON object")
    q.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    common(q, model=False)
    q.set_defaults(func=cmd_quantize)

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


# Options that must be at least some value: one clear line instead of silent nonsense.
_MINIMUM = {"threads": 1, "iterations": 1, "max_iter": 0, "batches": 0, "workers": 1, "repeats": 1,
            "test_iterations": 1, "retrain_iters": 0, "dense_iters": 1, "agp_steps": 1, "calib_batches": 1}


def _check_minimums(args):
    for key, low in _MINIMUM.items():
        value = getattr(args, key, None)
        if value is not None and value < low:
            raise WincaffeError(f"--{key.replace('_', '-')}: must be >= {low}, got {value}")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(logging, args.log_level))
    try:
        _check_minimums(args)
        _threads(getattr(args, "threads", None))
        return args.func(args)
    except WincaffeError as exc:
        print(f"wincaffe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wincaffe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
