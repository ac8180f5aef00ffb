"""Quantized Winograd on LeNet-5-3x3 (Chikin & Kryzhanovskiy): test accuracy of the float
net, QW and BQW at 8, 6 and 4 bits, post-training (``wincaffe quantize``) and, for 6 and
4 bits, after quantization-aware training (``wincaffe train`` of the quantized net with
nets/lenet5_3x3_qat_solver.yaml, from the post-training net).

The float net is LeNet-5-3x3 trained with spatial weights (nets/lenet5_3x3.yaml, as the
README shows); nets/lenet5_3x3_f43.yaml and _f63.yaml run those weights as WinogradConv
F(4,3) and F(6,3). Tile-wise scales, static (calibrated on 10 TRAIN batches), the whole
test set. Every cell is kept in OUT/cells.jsonl: a rerun skips finished cells.

    python benchmarks/experiment_quantization.py --weights runs/lenet5_3x3/lenet5_3x3_iter_24000.npz \\
        --output results/quantization
"""
import argparse
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = {"F(4,3)": "lenet5_3x3_f43.yaml", "F(6,3)": "lenet5_3x3_f63.yaml"}


def _done(path):
    out = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue        # a torn last line of a killed run
                out[rec["key"]] = rec
    return out


def _append(path, rec):
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="trained weights of nets/lenet5_3x3.yaml")
    ap.add_argument("--output", default="results/quantization")
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    ap.add_argument("--qat-bits", type=int, nargs="+", default=[6, 4])
    ap.add_argument("--qat-iters", type=int, help="override the QAT solver's max_iter")
    ap.add_argument("--calib-batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from wincaffe import quantization
    from wincaffe.config import load_solver_spec
    from wincaffe.log import setup_logging
    from wincaffe.snapshot import load_weights
    from wincaffe.solver import Solver
    from wincaffe.threads import set_num_threads
    setup_logging(logging.WARNING)
    set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    store = os.path.join(args.output, "cells.jsonl")
    done = _done(store)
    print(f"{len(done)} cells already in {store}", flush=True)
    for tile, net_file in NETS.items():
        model = os.path.join(ROOT, "nets", net_file)
        for bits in args.bits:
            key = f"{tile} {bits} ptq"
            if key not in done:
                for balance in (False, True):
                    stem = os.path.join(args.output, f"{os.path.splitext(net_file)[0]}_q{bits}_{'bqw' if balance else 'qw'}")
                    rep = quantization.run(model, args.weights, bits=bits, balance=balance,
                                           calib_batches=args.calib_batches, output=stem + ".npz")
                rec = {"key": key, "tile": tile, "bits": bits, "stage": "ptq",
                       "float": rep["float"], "qw": rep["qw"], "bqw": rep["bqw"]}
                _append(store, rec)
                done[key] = rec
            r = done[key]
            print(f"{tile} {bits}-bit post-training: float {r['float']:.4f} QW {r['qw']:.4f} BQW {r['bqw']:.4f}", flush=True)
        for bits in args.qat_bits:
            key = f"{tile} {bits} qat"
            if key in done:
                r = done[key]
            else:
                r = {"key": key, "tile": tile, "bits": bits, "stage": "qat"}
                for variant in ("qw", "bqw"):
                    stem = os.path.join(args.output, f"{os.path.splitext(net_file)[0]}_q{bits}_{variant}")
                    if not os.path.exists(stem + ".npz"):
                        quantization.run(model, args.weights, bits=bits, balance=variant == "bqw",
                                         calib_batches=args.calib_batches, output=stem + ".npz")
                    spec = load_solver_spec(os.path.join(ROOT, "nets", "lenet5_3x3_qat_solver.yaml"))
                    spec["net"] = stem + ".yaml"
                    spec["snapshot_prefix"] = os.path.basename(stem) + "_qat"
                    solver = Solver(spec, output_dir=args.output, max_iter=args.qat_iters, progress=False)
                    load_weights(solver.net, stem + ".npz", strict=True)
                    result = solver.solve()
                    r[variant] = result["accuracy"]
                    r["iters"] = solver.iter
                _append(store, r)
                done[key] = r
            print(f"{tile} {bits}-bit QAT ({r['iters']} iterations): QW {r['qw']:.4f} BQW {r['bqw']:.4f}", flush=True)
    _write_table(os.path.join(args.output, "results.md"), done)
    return 0


def _write_table(path, done):
    lines = ["| algorithm | bits | training | float | QW | BQW | BQW − QW |", "| --- | --- | --- | --- | --- | --- | --- |"]
    floats = {r["tile"]: r["float"] for r in done.values() if r["stage"] == "ptq"}
    for r in sorted(done.values(), key=lambda r: (r["tile"], -r["bits"], r["stage"] == "qat")):
        how = "post-training" if r["stage"] == "ptq" else f"QAT, {r['iters']:,} iterations"
        fl = floats.get(r["tile"])
        lines.append(f"| {r['tile']} | {r['bits']} | {how} | {'' if fl is None else f'{100 * fl:.2f}%'} | "
                     f"{100 * r['qw']:.2f}% | {100 * r['bqw']:.2f}% | {100 * (r['bqw'] - r['qw']):+.2f} |")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
