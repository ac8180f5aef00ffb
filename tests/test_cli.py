"""The wincaffe command line: train / test / time / data fetch, and its error path."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from wincaffe.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = os.path.join(ROOT, "nets")


def lenet_variant(tmp_path, train_samples=None, test_samples=None, **solver_edits):
    net = yaml.safe_load(open(os.path.join(NETS, "lenet5.yaml")))
    for layer in net["layer"]:
        if layer["type"] == "Data":
            phase = layer["include"]["phase"]
            n = train_samples if phase == "TRAIN" else test_samples
            if n:
                layer["data_param"]["num_samples"] = n
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net))
    solver = yaml.safe_load(open(os.path.join(NETS, "lenet5_solver.yaml")))
    solver["net"] = "net.yaml"
    solver.update(solver_edits)
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump(solver))
    return str(tmp_path / "solver.yaml"), str(tmp_path / "net.yaml")


def test_help_mentions_every_option(capsys):
    for cmd, words in [("train", ["--solver", "--weights", "--snapshot", "--max-iter", "--output", "--net", "--snapshot-prefix"]),
                       ("test", ["--model", "--weights", "--iterations"]),
                       ("time", ["--model", "--iterations"])]:
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        for w in words:
            assert w in out


def test_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlayer:\n  - {name: a, type: Nope, top: a}\n")
    assert main(["time", "--model", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("wincaffe: error: ") and "unknown layer type 'Nope'" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "wincaffe", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout


@pytest.mark.mnist
def test_train_lenet_subset_then_test_and_time(tmp_path, capsys):
    """A short real-MNIST run: 300 iterations of LeNet-5 reach > 93% on 2000 test images
    (about 95% in practice; an untrained net scores about 10%)."""
    solver, net = lenet_variant(tmp_path, test_samples=2000, max_iter=300, test_iter=20, test_interval=300,
                                snapshot=0, display=100)
    out_dir = tmp_path / "out"
    assert main(["train", "--solver", solver, "--output", str(out_dir), "--no-progress"]) == 0
    captured = capsys.readouterr()
    accuracy = float(re.search(r"accuracy = ([0-9.]+)", captured.out).group(1))
    assert accuracy > 0.93
    assert "Snapshotting to" in captured.err and "Test net output #0: accuracy" in captured.err
    weights = out_dir / "lenet_iter_300.npz"
    assert weights.exists() and (out_dir / "lenet_iter_300.solverstate.npz").exists()

    assert main(["test", "--model", net, "--weights", str(weights), "--iterations", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    tested = float(re.search(r"accuracy = ([0-9.]+)", "\n".join(lines)).group(1))
    assert abs(tested - accuracy) < 1e-6  # same 2000 images, same weights

    assert main(["time", "--model", net, "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and re.search(r"Average Forward-Backward: [0-9.]+ ms", out)
    # each row: forward ms, backward ms, forward MB, backward MB, GB/s -- the MB from counting.memory_traffic
    from wincaffe.counting import memory_traffic
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    traffic = {t["name"]: t for t in memory_traffic(Net(net, TRAIN))}
    row = re.search(r"^conv1\s+Convolution\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", out, re.M)
    f_ms, b_ms, f_mb, b_mb, rate = map(float, row.groups())
    assert (f_mb, b_mb) == (round(traffic["conv1"]["forward"] / 1e6, 2), round(traffic["conv1"]["backward"] / 1e6, 2))
    assert rate == pytest.approx((f_mb + b_mb) / (f_ms + b_ms), rel=0.05, abs=0.06)
    assert re.search(r"Memory traffic: [0-9.]+ MB per iteration", out) and "np.copyto of the largest blob" in out


@pytest.mark.mnist
def test_resume_from_cli_snapshot(tmp_path, capsys):
    solver, _ = lenet_variant(tmp_path, train_samples=640, test_samples=200, max_iter=20, test_iter=2,
                              test_interval=10, snapshot=10, display=0)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--solver", solver, "--output", str(a), "--no-progress"]) == 0
    assert main(["train", "--solver", solver, "--output", str(b), "--no-progress", "--max-iter", "10"]) == 0
    assert main(["train", "--solver", solver, "--output", str(b), "--no-progress",
                 "--snapshot", str(b / "lenet_iter_10.solverstate.npz")]) == 0
    wa = np.load(a / "lenet_iter_20.npz")
    wb = np.load(b / "lenet_iter_20.npz")
    for k in wa.files:
        np.testing.assert_array_equal(wa[k], wb[k])


@pytest.mark.parametrize("given, expect", [
    ({}, ("PASSIVE", "10000", "4")),                                     # wincaffe's defaults
    ({"OMP_WAIT_POLICY": "ACTIVE"}, ("ACTIVE", None, "4")),               # the user's OpenMP choice stands
    ({"GOMP_SPINCOUNT": "0", "OPENBLAS_THREAD_TIMEOUT": "7"}, (None, "0", "7")),
])
def test_thread_pool_environment_defaults(given, expect):
    """Importing wincaffe sets OpenMP's wait policy, libgomp's short spin and OpenBLAS's
    timeout only where the environment says nothing (they must precede libgomp's load)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(given)
    code = ("import os, wincaffe; print([os.environ.get(k) for k in "
            "('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OPENBLAS_THREAD_TIMEOUT')])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(list(expect))


_NUMPY_FIRST = """
import ctypes, json, os, sys, threading, numpy as np
from threadpoolctl import threadpool_info
libs = [i for i in threadpool_info() if i["internal_api"] == "openblas" and i["threading_layer"] == "pthreads"]
paths = [i["filepath"] for i in libs]
timeout = lambda: [ctypes.CDLL(p).openblas_thread_timeout() for p in paths]
workers = lambda: sorted(set(map(int, os.listdir("/proc/self/task"))) - {threading.main_thread().native_id})
a = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
before, product, workers_before = timeout(), a @ a, workers()   # NumPy's OpenBLAS threads are running
threads_before = [i["num_threads"] for i in threadpool_info() if i["filepath"] in paths]
if sys.argv[1] == "other-thread":                                # a Python thread that could be in BLAS
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
import wincaffe
after, workers_after_import = timeout(), workers()
same = bool(np.array_equal(a @ a, product))
print(json.dumps({"libs": len(libs), "before": before, "after": after, "same_product": same,
                  "threads_before": threads_before,
                  "threads": [i["num_threads"] for i in threadpool_info() if i["filepath"] in paths],
                  "workers_before": workers_before, "workers_after_import": workers_after_import,
                  "workers_after_gemm": workers()}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the threads from /proc")
@pytest.mark.parametrize("given, case, restarted", [({}, "alone", True),
                                                    ({"OPENBLAS_THREAD_TIMEOUT": "7"}, "alone", False),
                                                    ({}, "other-thread", False)])
def test_numpy_imported_first_still_gets_the_openblas_timeout(given, case, restarted):
    """With ``import numpy`` before ``import wincaffe``, OpenBLAS has already started its
    threads with its own timeout; wincaffe joins them, and the next threaded call starts
    new ones, which read wincaffe's timeout. A timeout the user set was read at NumPy's
    load, and another Python thread might be inside BLAS: then the threads are kept.
    The product and the thread count are the same either way."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(given, OPENBLAS_NUM_THREADS="2")
    out = json.loads(subprocess.run([sys.executable, "-c", _NUMPY_FIRST, case], env=env, capture_output=True,
                                    text=True, check=True, timeout=120).stdout)
    if out["libs"] == 0:
        pytest.skip("NumPy's BLAS here is not a pthreads OpenBLAS")
    if len(out["workers_before"]) != out["libs"]:   # one worker per OpenBLAS at 2 threads
        pytest.skip("OpenBLAS did not start one worker thread per library here (one CPU?)")
    user = int(given.get("OPENBLAS_THREAD_TIMEOUT", 0))
    assert out["before"] == [user] * out["libs"]
    assert out["after"] == [4 if restarted else user] * out["libs"]
    assert out["same_product"]
    assert out["threads"] == out["threads_before"] == [2] * out["libs"]
    old = set(out["workers_before"])
    if restarted:   # the old workers joined during the import, as many new ones after a GEMM
        assert not old & set(out["workers_after_import"]) and not old & set(out["workers_after_gemm"])
        assert len(set(out["workers_after_gemm"]) - set(out["workers_after_import"])) == len(old)
    else:
        assert old <= set(out["workers_after_gemm"])
