"""Milliseconds per LeNet-5 training iteration (forward, backward, update), wincaffe
vs PyTorch (when installed; in a process of its own) on the same thread count, batch 64,
real MNIST batches.

    python benchmarks/bench_lenet.py --threads 1
    python benchmarks/bench_lenet.py --threads 1 --net nets/lenet5.yaml nets/lenet5_winograd.yaml
    python benchmarks/bench_lenet.py --threads 1 --isa avx2     # as on an AVX2-only CPU (isa.py)

Prints per-phase times, the per-epoch estimate (938 iterations), the GEMM bound of
each net (its direct-convolution GEMM flops per iteration over the sgemm rate measured
in the same run) and, measured in this run, the ratios PyTorch / wincaffe (> 1 means wincaffe is faster) and each
net / the first --net. Each measurement is the median of --repeats blocks of
--iters iterations, all runners alternating so that load on a shared machine
hits every one of them alike.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # also under python -m benchmarks.…
import isa  # noqa: E402  (benchmarks/, beside this script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_phases(iters, before, forward, backward, update):
    """Milliseconds per iteration of [forward, backward, update], averaged over
    ``iters``; ``before`` runs untimed ahead of each iteration (e.g. fetching a batch)."""
    totals = [0.0, 0.0, 0.0]
    for _ in range(iters):
        state = before()
        t0 = time.perf_counter()
        state = forward(state)
        t1 = time.perf_counter()
        backward(state)
        t2 = time.perf_counter()
        update()
        t3 = time.perf_counter()
        totals[0] += t1 - t0
        totals[1] += t2 - t1
        totals[2] += t3 - t2
    return [1000 * t / iters for t in totals]


def bench_wincaffe(net_path, iters):
    import numpy as np
    from wincaffe.solver import Solver
    from wincaffe.config import load_solver_spec
    solver_path = os.path.join(ROOT, "nets", "lenet5_solver.yaml")
    spec = load_solver_spec(solver_path)
    spec["net"] = net_path
    spec["test_iter"] = 0
    spec["test_interval"] = 0
    spec["display"] = 0
    solver = Solver(spec, progress=False)
    net = solver.net
    for _ in range(3):
        net.forward_backward()
        solver.apply_update()

    def update():
        solver.apply_update()
        solver.iter += 1

    def run():
        return timed_phases(iters, lambda: None, lambda _: net.forward(), lambda _: net.backward(), update)
    from wincaffe.counting import gemm_flops_per_iteration
    run.gemm_flops = gemm_flops_per_iteration(net)
    return run


def bench_torch(iters):
    try:
        import torch
    except ImportError:
        return None
    from wincaffe.data import load_mnist
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    images, labels = load_mnist("train")
    x_all = torch.from_numpy(images[:64 * 20].astype("float32") / 256.0)
    y_all = torch.from_numpy(labels[:64 * 20].astype("int64"))
    state = {"i": 0}

    def batch():
        i = state["i"] % 20
        state["i"] += 1
        return x_all[i * 64:(i + 1) * 64], y_all[i * 64:(i + 1) * 64]

    for _ in range(3):
        x, y = batch()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    def forward(xy):
        opt.zero_grad(set_to_none=True)
        return loss_fn(model(xy[0]), xy[1])

    def run():
        return timed_phases(iters, batch, forward, lambda loss: loss.backward(), opt.step)
    return run


def _serve_torch(conn, threads, iters):
    """The PyTorch runner, in a process of its own (see torch_reference: PyTorch's
    libgomp loaded beside wincaffe's kernels starves the BLAS threads); runs a timed
    block on each request."""
    import torch
    from wincaffe.threads import set_num_threads
    set_num_threads(threads)
    torch.set_num_threads(threads)
    run = bench_torch(iters)
    conn.send(f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()}")
    while conn.recv() is not None:
        conn.send(run())


def start_torch(threads, iters):
    """(name, run, stop) of the PyTorch runner in a spawned process, or None without PyTorch."""
    import torch_reference
    if not torch_reference.available():
        return None
    version, call, stop = torch_reference.spawn(_serve_torch, threads, iters)
    return f"pytorch {version}", lambda: call(True), stop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50, help="iterations per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per framework (median reported)")
    ap.add_argument("--net", nargs="+", default=[os.path.join(ROOT, "nets", "lenet5.yaml")],
                    help="one or more nets, timed in the same run")
    isa.add_argument(ap)
    args = ap.parse_args(argv)
    isa.apply(args.isa, argv)

    from wincaffe.log import setup_logging
    from wincaffe.threads import set_num_threads
    import logging
    setup_logging(logging.WARNING)
    set_num_threads(args.threads)
    names = [os.path.relpath(net, ROOT) for net in args.net]
    if len(set(names)) != len(names):
        ap.error(f"--net: a net is given twice: {' '.join(names)}")
    runners = {name: bench_wincaffe(net, args.iters) for name, net in zip(names, args.net)}
    nets = list(runners)
    torch_runner = start_torch(args.threads, args.iters)
    if torch_runner:
        runners[torch_runner[0]] = torch_runner[1]
    else:
        print("(PyTorch not installed: `pip install torch==2.13.0` to compare)")
    results = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            results[name].append(run())
    if torch_runner:
        torch_runner[2]()
    width = max(22, max(len(n) for n in runners) + 2)
    from wincaffe.machine import describe
    print(describe())
    print(isa.describe())
    print(f"LeNet-5 training iteration, batch 64, {args.threads} thread(s)")
    print(f"{'net / framework':<{width}}{'forward':>9}{'backward':>10}{'update':>9}{'total ms':>10}{'s/epoch':>9}")
    totals = {}
    for name, blocks in results.items():
        med = [statistics.median(b[i] for b in blocks) for i in range(3)]
        total = statistics.median(sum(b) for b in blocks)
        totals[name] = total
        print(f"{name:<{width}}{med[0]:9.2f}{med[1]:10.2f}{med[2]:9.2f}{total:10.2f}{total * 938 / 1000:9.1f}")
    from timing import sgemm_gflops
    rate = sgemm_gflops()
    print(f"GEMM bound (GEMM flops of the iteration / sgemm {rate:.0f} GFLOP/s measured now, NumPy's BLAS):")
    for net in nets:
        flops = runners[net].gemm_flops
        bound = flops / rate / 1e6
        print(f"  {net}: {flops / 1e9:.3f} GFLOP -> {bound:.2f} ms; measured / bound = {totals[net] / bound:.2f}")
    for other in (n for n in totals if n not in nets):
        for net in nets:
            print(f"ratio {other} / {net} = {totals[other] / totals[net]:.2f} (> 1: wincaffe faster)")
    for net in nets[1:]:
        print(f"ratio {net} / {nets[0]} = {totals[net] / totals[nets[0]]:.2f} (< 1: {net} faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
