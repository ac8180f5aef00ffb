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
        from wincaffe.executors import DaskExecutor
        ex = DaskExecutor(cluster.scheduler_address)
        a, b = ex.share({"weights": 1.0}), ex.share({"weights": 2.0})      # same keys, other data
        assert ex.submit(dict.get, a, "weights").result() == 1.0
        assert ex.submit(dict.get, b, "weights").result() == 2.0
        ex.close()
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


# ----- the pieces, without running cells ------------------------------------------------------------

def test_store_survives_torn_and_foreign_lines(tmp_path):
    import logging
    from wincaffe.compare import ResultsStore
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("wincaffe.compare").addHandler(handler)
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"key": "a", "method": "m", "rate": 0.5, "repeat": 0}\n'
                     b'not json at all\n\xff\xfe binary\n'
                     b'{"key": "b", "method": "m", "rate": 0.7, "repeat": 0, "error": "boom"}\n'
                     b'{"key": "c", "meth')                                  # torn by a kill
    store = ResultsStore(str(path))
    assert store.finished("a") and not store.finished("b") and not store.finished("c")   # failed: retried
    logging.getLogger("wincaffe.compare").removeHandler(handler)
    assert any("3 unreadable line(s) ignored" in m for m in seen)
    store.append({"key": "c", "method": "m", "rate": 0.9, "repeat": 0})
    again = ResultsStore(str(path))
    assert again.finished("c") and again.finished("a")               # not glued to the torn line


def test_cell_keys_follow_what_matters(tiny_study):
    from wincaffe import study as studies
    s = load_study(tiny_study)
    m = s["methods"][0]
    files = studies.method_files(m)
    key = studies.cells(s, m, files, ["d"])[0][0]
    assert studies.cells(s, m, files, ["d"])[0][0] == key                         # stable
    m2 = dict(m, title="another title", table="baseline")
    assert studies.cells(s, type(m)(m2), files, ["d"])[0][0] == key              # cosmetic: same cell
    for change in ({"net": dict(files["net"], name="other")},                    # net content
                   {"solver": dict(files["solver"], base_lr=0.02)}):             # solver content
        assert studies.cells(s, m, dict(files, **change), ["d"])[0][0] != key
    assert studies.cells(s, m, files, ["other dense"])[0][0] != key             # other dense weights
    assert studies.cells(dict(s, test_images=50), m, files, ["d"])[0][0] != key
    assert studies.cells(dict(s, retrain_iters=7), m, files, ["d"])[0][0] != key


def test_retraining_length_precedence(tiny_study, tmp_path):
    from wincaffe import study as studies
    text = open(tiny_study).read().replace("    rates: [0.25, 0.75]", "    rates: [0.25, 0.75]\n    retrain_epochs: 3")
    path = tmp_path / "prec.yaml"
    path.write_text(text)
    s = load_study(str(path))
    assert studies.retrain_length(s, s["methods"][1]) == (None, 3.0)             # the method's own wins
    assert studies.retrain_length(s, s["methods"][0]) == (6, None)               # the study's iterations
    path.write_text(text.replace("retrain_epochs: 3", "retrain_epochs: 3\n    retrain_iters: 4"))
    with pytest.raises(ConfigError, match=r"methods\[1\]\.retrain_epochs: give retrain_iters or retrain_epochs"):
        load_study(str(path))


@pytest.mark.parametrize("args,words", [
    (["--rates", "0.5,0.5"], "--rates: the rate 0.5 is given twice"),
    (["--dense-iters", "0"], "--dense-iters: must be >= 1"),
    (["--retrain-iters", "-1"], "--retrain-iters: must be >= 0"),
    (["--repeats", "0"], "--repeats: must be >= 1"),
    (["--workers", "0"], "--workers: must be >= 1"),
])
def test_bad_overrides_are_refused_before_any_work(tiny_study, tmp_path, capsys, args, words):
    assert main(["compare", "--config", tiny_study, "--output", str(tmp_path / "o"), *args]) == 1
    assert words in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "results.jsonl")


def test_duplicate_and_nan_rates_in_the_file(tiny_study):
    text = open(tiny_study).read()
    for bad, words in (("rates: [0.5, 0.5]", r"methods\[0\]\.rates: the rate 0.5 is given twice"),
                       ("rates: [0.5, .nan]", r"methods\[0\]\.rates\[1\]: must be a number, got nan")):
        with open(tiny_study, "w") as fh:
            fh.write(text.replace("rates: [0.5, 0.9]", bad))
        with pytest.raises(ConfigError, match=words):
            load_study(tiny_study)


def test_repeats_train_their_own_baselines_and_a_bad_dense_file_fails_only_its_cells(tiny_study, tmp_path, capsys):
    (tmp_path / "junk.npz").write_bytes(b"not a weights file")
    text = open(tiny_study).read() + """  - name: junk
    solver: wino_solver.yaml
    dense_weights: junk.npz
    rates: [0.5]
"""
    path = tmp_path / "rep.yaml"
    path.write_text(text)
    out = str(tmp_path / "rep")
    assert main(["compare", "--config", str(path), "--output", out, "--workers", "2", "--methods", "wino,junk",
                 "--rates", "0.5", "--repeats", "2", "--no-progress"]) == 2
    recs = records(out)
    wino = sorted((r for r in recs if r["method"] == "wino"), key=lambda r: r["repeat"])
    assert [r["repeat"] for r in wino] == [0, 1] and all("error" not in r for r in wino)
    assert wino[0]["accuracy_dense"] != wino[1]["accuracy_dense"] or wino[0] != wino[1]
    assert len([f for f in os.listdir(os.path.join(out, "dense")) if f.endswith(".npz")]) == 2
    junk = [r for r in recs if r["method"] == "junk"]
    assert len(junk) == 2 and all("dense weights:" in r["error"] for r in junk)
