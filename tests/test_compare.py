"""``wincaffe compare``: a tiny study end to end on real MNIST subsets, reruns that skip
finished cells, a killed run that resumes, the same study on a Dask LocalCluster,
a failing cell, and malformed study files."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from wincaffe.cli import main
from wincaffe.errors import ConfigError
from wincaffe.study import load_study

pytestmark = pytest.mark.mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = os.path.join(ROOT, "nets")

STUDY = """
name: tiny study
dense_iters: 30
retrain_iters: 6
test_images: 100
count_batches: 1
time_batches: 1
methods:
  - name: wino
    title: "Winograd F(2,3), spatial_masked"
    solver: wino_solver.yaml
    rates: [0.5, 0.9]
    table: liu_turakhia_winograd
  - name: fft
    title: FFT, kernel scope
    solver: fft_solver.yaml
    scope: kernel
    rates: [0.25, 0.75]
    table: liu_turakhia_fft
"""


def _variant(tmp_path, net_name, solver_name, tag):
    net = yaml.safe_load(open(os.path.join(NETS, f"{net_name}.yaml")))
    for layer in net["layer"]:
        if layer["type"] == "Data":
            layer["data_param"]["num_samples"] = 320 if layer["include"]["phase"] == "TRAIN" else 100
    (tmp_path / f"{tag}.yaml").write_text(yaml.safe_dump(net))
    solver = yaml.safe_load(open(os.path.join(NETS, solver_name)))
    solver.update(net=f"{tag}.yaml", test_iter=1, display=0)
    (tmp_path / f"{tag}_solver.yaml").write_text(yaml.safe_dump(solver))


@pytest.fixture
def tiny_study(tmp_path):
    _variant(tmp_path, "lenet5_pad1_3x3_winograd", "lenet5_pad1_3x3_winograd_solver.yaml", "wino")
    _variant(tmp_path, "lenet5_fft", "lenet5_fft_solver.yaml", "fft")
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return str(path)


def records(out):
    with open(os.path.join(out, "results.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def comparable(recs):
    """Per cell, the numbers that must not depend on where it ran."""
    keys = ("accuracy_dense", "accuracy_pruned", "accuracy_retrained", "density", "mults")
    return {(r["method"], r["rate"], r["repeat"]): tuple(json.dumps(r.get(k), sort_keys=True) for k in keys)
            for r in recs}


def test_tiny_study_end_to_end_then_a_rerun_skips_everything(tiny_study, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["compare", "--config", tiny_study, "--output", out, "--workers", "2", "--no-progress"]) == 0
    assert "4 cells (0 skipped as finished, 0 failed)" in capsys.readouterr().out
    recs = records(out)
    assert sorted((r["method"], r["rate"]) for r in recs) == [("fft", 0.25), ("fft", 0.75), ("wino", 0.5),
                                                              ("wino", 0.9)]
    for r in recs:
        assert "error" not in r and 0 <= r["accuracy_retrained"] <= 1
        assert abs(r["density"] - (1 - r["rate"])) < 0.02
        assert r["mults"]["direct"] > 0 and r["inference_ms"] > 0
    md = open(os.path.join(out, "results.md")).read()
    assert "Liu & Turakhia, Table 2" in md and "theirs: loss after 1 epoch" in md and "| 75% | 25.0% |" in md
    assert "Fig. 8" in md
    for png in ("accuracy_vs_rate.png", "accuracy_vs_density.png", "accuracy_vs_mults.png", "weight_histograms.png"):
        assert open(os.path.join(out, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    csv = open(os.path.join(out, "results.csv")).read().splitlines()
    assert len(csv) == 5 and csv[0].startswith("method,rate,repeat,density,density_conv1,density_conv2")
    dense = os.listdir(os.path.join(out, "dense"))
    assert len([f for f in dense if f.endswith(".npz")]) == 2
    # a rerun trains nothing and runs no cell
    before = os.path.getmtime(os.path.join(out, "results.jsonl"))
    assert main(["compare", "--config", tiny_study, "--output", out, "--workers", "2", "--no-progress"]) == 0
    assert "4 cells (4 skipped as finished, 0 failed)" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out, "results.jsonl")) == before
    assert len(records(out)) == 4
    # a new rate is a new cell; the others are kept
    assert main(["compare", "--config", tiny_study, "--output", out, "--workers", "1", "--methods", "wino",
                 "--rates", "0.5,0.7", "--no-progress"]) == 0
    assert "2 cells (1 skipped as finished, 0 failed)" in capsys.readouterr().out


def test_a_killed_study_resumes_without_redoing_finished_cells(tiny_study, tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "wincaffe", "compare", "--config", tiny_study, "--output", out, "--workers", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = os.path.join(out, "results.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(store) and os.path.getsize(store) > 0:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)                 # the client and its workers, mid-sweep
    proc.wait()
    first = records(out)
    assert 1 <= len(first) < 4
    done = {r["key"]: r for r in first}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"4 cells ({len(first)} skipped as finished, 0 failed)" in r.stdout
    final = records(out)
    assert len(final) == 4 and len({x["key"] for x in final}) == 4
    for rec in final:                                  # finished cells were not redone
        if rec["key"] in done:
            assert rec == done[rec["key"]]


def test_dask_local_cluster_gives_the_same_results_as_the_local_pool(tiny_study, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        out_dask = str(tmp_path / "dask")
        assert main(["compare", "--config", tiny_study, "--output", out_dask, "--scheduler",
                     cluster.scheduler_address, "--no-progress"]) == 0
    assert "on the Dask cluster at tcp://127.0.0.1" in capsys.readouterr().err
    out_local = str(tmp_path / "local")
    assert main(["compare", "--config", tiny_study, "--output", out_local, "--workers", "2", "--no-progress"]) == 0
    assert comparable(records(out_dask)) == comparable(records(out_local))


def test_a_failing_cell_is_recorded_and_the_others_finish(tiny_study, tmp_path, capsys):
    text = open(tiny_study).read() + """  - name: broken
    solver: wino_solver.yaml
    layers: [conv1, no_such_layer]
    rates: [0.5]
"""
    path = tmp_path / "study_broken.yaml"
    path.write_text(text)
    out = str(tmp_path / "b")
    assert main(["compare", "--config", str(path), "--output", out, "--workers", "2", "--methods", "wino,broken",
                 "--rates", "0.5", "--no-progress"]) == 2
    recs = {r["method"]: r for r in records(out)}
    assert "no layer named 'no_such_layer'" in recs["broken"]["error"]
    assert "error" not in recs["wino"]
    md = open(os.path.join(out, "results.md")).read()
    assert "## Failed cells" in md and "broken rate 0.5" in md


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace("rates: [0.5, 0.9]", "rates: [0.5, 1.5]"), r"methods\[0\]\.rates\[1\]: must be <= 1"),
    (lambda s: s.replace("scope: kernel", "scope: kernels"), r"methods\[1\]\.scope: must be one of layer"),
    (lambda s: s.replace("solver: fft_solver.yaml", "solver: missing.yaml"), r"methods\[1\]\.solver: file not found"),
    (lambda s: s.replace("    table: liu_turakhia_fft\n", "    table: liu_turakhia_fft\n    colour: red\n"),
     r"methods\[1\]\.colour: unknown field"),
    (lambda s: s.replace("dense_iters: 30", "dense_iters: -3"), r"study\.yaml: dense_iters: must be >= 1"),
    (lambda s: s.replace("name: fft\n", "name: wino\n"), r"methods\[1\]\.name: the name 'wino' is used twice"),
    (lambda s: s.split("methods:")[0] + "methods: []\n", r"methods: needs a non-empty list"),
])
def test_malformed_study_files_name_the_field(tiny_study, edit, message):
    with open(tiny_study) as fh:
        text = fh.read()
    with open(tiny_study, "w") as fh:
        fh.write(edit(text))
    with pytest.raises(ConfigError, match=message):
        load_study(tiny_study)


def test_bad_command_line_options_are_one_line(tiny_study, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for args, words in ([["--output", str(tmp_path / "a_file" / "sub")], "--output: cannot write to"],
                        [["--output", str(tmp_path / "o"), "--methods", "nope"], "--methods: no method 'nope'"],
                        [["--output", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1"],
                         "--scheduler: cannot reach a Dask scheduler"]):
        assert main(["compare", "--config", tiny_study, *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("wincaffe: error: ") and words in err[-1], err[-1]
