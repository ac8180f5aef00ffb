"""``wincaffe compare``: a pruning study as independent cells, run in parallel,
resumable, on a local pool of processes or a Dask cluster.

    study.yaml ─▶ dense baselines (cached) ─▶ cells (method × rate × repeat) ─▶ executor
    results.jsonl (one record per finished cell, keyed by its config) ◀── the client only
       └─▶ results.csv, results.md, PNG plots          (wincaffe/compare_report.py)

A dense baseline is a task (:func:`train_dense`) that trains a method's net and
returns its weights; the client caches them in ``DIR/dense/<key>.npz`` (key: a
hash of the net and solver files, the iterations, the test images, the threads and
the repeat), so a rerun, or another study with the same baseline and the same
output folder, trains nothing. A cell is a task (:func:`run_cell`): prune →
test → retrain → test → multiply counts → inference milliseconds; it returns a
record and writes nothing. The client appends each record to
``DIR/results.jsonl`` as it arrives (flushed and fsynced): a killed run loses at
most the cells in flight, and a rerun skips every cell already in the store.
Cells that failed are recorded with their error and tried again on the next run.
"""
import json
import math
import os
import sys
import time

import numpy as np

from wincaffe import study as studies
from wincaffe.errors import WincaffeError
from wincaffe.log import get_logger

log = get_logger("compare")

HIST_BINS = 40


# ----- tasks (run on workers: pure, no files written) ---------------------------------------------

def _worker_setup(threads):
    from wincaffe.threads import set_num_threads
    set_num_threads(threads)


def _solver_spec(job):
    """The validated solver spec of a task, its net embedded (no paths needed)."""
    from wincaffe.config import validate_net, validate_solver
    spec = validate_solver(dict(job["solver"]), None)
    spec["net"] = validate_net(job["net"], job["net_name"])
    spec["test_net"] = None
    spec["snapshot"] = 0
    spec["test_interval"] = 0
    spec["test_iter"] = spec.test_iter or 1
    return spec


def _set_test_images(solver, images):
    if images:
        solver.spec["test_iter"] = max(1, math.ceil(images / max(1, solver.test_net.batch_size())))


def train_dense(job):
    """Task: train a method's net dense. Returns {key, weights (arrays), accuracy, iters, seconds}."""
    from wincaffe.prune_job import accuracy_of
    from wincaffe.snapshot import weights_arrays
    from wincaffe.solver import Solver
    t0 = time.perf_counter()
    _worker_setup(job["threads"])
    spec = _solver_spec(job)
    iters = job["iters"] or spec.max_iter
    solver = Solver(spec, output_dir=os.devnull, progress=False)
    _set_test_images(solver, job["test_images"])
    solver.step(iters)
    accuracy = accuracy_of(solver.test(rewind=True))
    weights = {k: np.array(v, copy=True) for k, v in weights_arrays(solver.net).items()}
    return {"key": job["key"], "weights": weights, "accuracy": accuracy, "iters": iters,
            "seconds": round(time.perf_counter() - t0, 2)}


def _histogram(scores, edges):
    """Counts of the nonzero |scores| in ``edges`` and the number of zeros."""
    s = np.abs(np.asarray(scores, np.float64)).reshape(-1)
    nz = s[s != 0]
    return np.histogram(np.minimum(nz, edges[-1]), bins=edges)[0].tolist(), int(s.size - nz.size)


def run_cell(config, dense):
    """Task: one cell. Returns its record (``error`` set, instead of results, if it failed)."""
    t0 = time.perf_counter()
    record = {k: config[k] for k in ("method", "rate", "repeat")}
    try:
        record.update(_run_cell(config, dense))
    except Exception as exc:           # recorded, and the sweep goes on
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def _run_cell(config, dense):
    from wincaffe import counting
    from wincaffe.prune_job import PruneJob
    _worker_setup(config["threads"])
    spec = _solver_spec(config)
    job = PruneJob(spec, dense["weights"], layers=config["layers"], skip_first=config["skip_first"],
                   domain=config["domain"], scope=config["scope"], base_lr=config["base_lr"],
                   seed=spec.random_seed + 1000 * config["repeat"], progress=False)
    _set_test_images(job.solver, config["test_images"])
    hist = {}

    def before(job):
        for t in job.targets:
            s = np.abs(t.layer.prune_scores(t.domain))
            edges = np.linspace(0.0, float(s.max()) or 1.0, HIST_BINS + 1)
            counts, zeros = _histogram(s, edges)
            hist[t.name] = {"domain": t.domain, "edges": edges.tolist(), "dense": counts, "dense_zeros": zeros}
    rates = config["round_rates"] if config["schedule"] == "rounds" else None
    report = job.run(schedule=config["schedule"], rate=None if rates else config["rate"], rates=rates,
                     retrain_iters=config["retrain_iters"], retrain_epochs=config["retrain_epochs"],
                     agp_steps=config["agp_steps"], save=False, before_pruning=before)
    for t in job.targets:
        counts, zeros = _histogram(t.layer.prune_scores(t.domain), np.asarray(hist[t.name]["edges"]))
        hist[t.name].update(retrained=counts, retrained_zeros=zeros)
    test_net = job.solver.test_net
    rows, total = counting.count_net(test_net, config["count_batches"])
    ms = _inference_ms(test_net, config["time_batches"])
    return {
        "accuracy_dense": report["accuracy_dense"], "accuracy_pruned": report["accuracy_pruned"],
        "accuracy_retrained": report["accuracy_retrained"], "retrain_iters": report["retrain_iters"],
        "density": report["total"]["density"],
        "layers": {r["name"]: {"domain": r["domain"], "density": r["density"], "entries": r["entries"]}
                   for r in report["layers"]},
        "mults": {k: total[k] for k in counting.COUNTS},
        "inference_ms": ms, "batch": test_net.batch_size(), "test_images": report["test_images"],
        "hist": hist,
    }


def _inference_ms(net, batches):
    """Median milliseconds of one TEST forward pass (a batch) over ``batches`` passes."""
    if not batches:
        return None
    net.forward()                      # warm-up (plans, workspaces)
    times = []
    for _ in range(batches):
        t = time.perf_counter()
        net.forward()
        times.append(1000 * (time.perf_counter() - t))
    return round(float(np.median(times)), 3)


# ----- the results store (client side) ----------------------------------------------------------

class ResultsStore:
    """``DIR/results.jsonl``: one JSON record per line, appended, flushed and fsynced,
    the last record of a key winning. A line cut short by a kill is ignored."""

    def __init__(self, path):
        self.path = path
        self.records = {}
        self._needs_newline = False
        if not os.path.exists(path):
            return
        with open(path, "rb") as fh:
            data = fh.read()
        self._needs_newline = bool(data) and not data.endswith(b"\n")   # a line torn by a kill
        bad = 0
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except ValueError:                      # torn, not JSON, not UTF-8
                bad += 1
                continue
            if isinstance(rec, dict) and "key" in rec:
                self.records[rec["key"]] = rec
            else:
                bad += 1
        if bad:
            log.warning(f"{path}: {bad} unreadable line(s) ignored (a run killed while writing, or not a "
                        f"results store); their cells run again")

    def finished(self, key):
        rec = self.records.get(key)
        return rec is not None and "error" not in rec

    def append(self, record):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if self._needs_newline:                 # never glue a record to a torn line
                fh.write("\n")
                self._needs_newline = False
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records[record["key"]] = record


# ----- the driver -----------------------------------------------------------------------------------

def _load_dense_file(path):
    from wincaffe.snapshot import load_npz
    return load_npz(path)


def run_study(study, output, executor, *, progress=None):
    """Run every unfinished cell of ``study`` on ``executor``; write the store as cells
    finish and the tables and plots at the end. Returns the summary dict."""
    from wincaffe.compare_report import write_outputs
    t0 = time.perf_counter()
    os.makedirs(output, exist_ok=True)
    store = ResultsStore(os.path.join(output, "results.jsonl"))
    plans = []    # one per (method, repeat): its baseline (a training job, or a file) and its cells
    repeats = study["repeats"]
    for m in study["methods"]:
        files = studies.method_files(m)
        if m.dense_weights:      # every repeat prunes the same file (and retrains with its own seed)
            from wincaffe.data.cache import md5_file
            jobs, keys = [None] * repeats, ["file-" + md5_file(m.dense_weights)[:12]] * repeats
        else:
            jobs = [studies.dense_job(study, m, files, r) for r in range(repeats)]
            keys = [j["key"] for j in jobs]
        cs = studies.cells(study, m, files, keys)
        for r in range(repeats):
            plans.append((m, jobs[r], keys[r], [(k, c) for k, c in cs if c["repeat"] == r]))
    all_cells = [(key, cfg) for _, _, _, cs in plans for key, cfg in cs]
    todo = {key for key, _ in all_cells if not store.finished(key)}
    skipped = len(all_cells) - len(todo)
    log.info(f"Study '{study['name']}': {len(study['methods'])} methods, {len(all_cells)} cells on "
             f"{executor.describe()}" + (f"; {skipped} already finished, skipped" if skipped else ""))

    bar = None
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=len(all_cells), initial=skipped, unit="cell", desc="compare", dynamic_ncols=True,
                   file=sys.stderr)
    dense_info, pending, waiting = {}, {}, {}
    dense_dir = os.path.join(output, "dense")
    try:
        for m, job, dense_key, cs in plans:
            cells_todo = [(k, c) for k, c in cs if k in todo]
            cache = os.path.join(dense_dir, f"{dense_key}.npz")
            if m.dense_weights or os.path.exists(cache) or not cells_todo:
                if cells_todo:
                    try:
                        weights = _load_dense_file(m.dense_weights or cache)
                    except WincaffeError as exc:      # this method's cells fail; the sweep goes on
                        _fail_all(store, bar, cells_todo, f"dense weights: {exc}")
                        continue
                    handle = executor.share({"weights": weights})
                    for k, c in cells_todo:
                        pending[executor.submit(run_cell, c, handle)] = ("cell", k)
                info_path = os.path.join(dense_dir, f"{dense_key}.json")
                if os.path.exists(info_path):
                    with open(info_path, encoding="utf-8") as fh:
                        dense_info[m.name] = json.load(fh)
                continue
            if job["key"] not in waiting:   # methods with the same baseline share one training
                pending[executor.submit(train_dense, job)] = ("dense", job["key"])
                log.info(f"Training {m.name} dense ({job['iters'] or 'max_iter'} iterations)")
            waiting.setdefault(job["key"], []).append((m, cells_todo))
        while pending:
            done, _ = executor.wait_any(set(pending))
            for fut in done:
                kind, key = pending.pop(fut)
                if kind == "dense":
                    _dense_done(fut, key, waiting.pop(key), executor, pending, store, bar, dense_dir, dense_info)
                else:
                    try:
                        record = fut.result()
                    except Exception as exc:          # the task itself could not run (a lost worker)
                        cfg = dict(all_cells)[key]
                        record = dict(method=cfg["method"], rate=cfg["rate"], repeat=cfg["repeat"],
                                      error=f"{type(exc).__name__}: {exc}")
                    record["key"] = key
                    _finish(store, bar, record)
    except BaseException:
        executor.close(cancel=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    records = [store.records[k] for k, _ in all_cells if k in store.records]
    wall = time.perf_counter() - t0
    summary = write_outputs(study, output, records, dense_info, wall_seconds=wall, skipped=skipped)
    summary.update(cells=len(all_cells), skipped=skipped, failed=sum(1 for r in records if "error" in r))
    return summary


def _dense_done(fut, key, methods, executor, pending, store, bar, dense_dir, dense_info):
    """A dense baseline arrived: cache it, then submit the cells of every method using it
    (or record them all as failed)."""
    from wincaffe.report import write_json
    from wincaffe.snapshot import save_npz
    names = ", ".join(m.name for m, _ in methods)
    try:
        result = fut.result()
    except Exception as exc:
        error = f"dense training failed: {type(exc).__name__}: {exc}"
        log.error(f"{names}: {error}")
        for _, cells_todo in methods:
            _fail_all(store, bar, cells_todo, error)
        return
    save_npz(os.path.join(dense_dir, f"{key}.npz"), result["weights"])
    info = {k: result[k] for k in ("accuracy", "iters", "seconds")}
    write_json(os.path.join(dense_dir, f"{key}.json"), info)
    log.info(f"{names} dense: accuracy {info['accuracy']:.4f} after {info['iters']} iterations "
             f"({info['seconds']:.0f} s)")
    handle = executor.share({"weights": result["weights"]})
    for m, cells_todo in methods:
        dense_info[m.name] = info
        for k, c in cells_todo:
            pending[executor.submit(run_cell, c, handle)] = ("cell", k)


def _fail_all(store, bar, cells, error):
    for k, c in cells:
        _finish(store, bar, dict(key=k, method=c["method"], rate=c["rate"], repeat=c["repeat"], error=error))


def _finish(store, bar, record):
    store.append(record)
    if "error" in record:
        log.error(f"cell {record['method']} rate {record['rate']:g} repeat {record['repeat']}: FAILED: "
                  f"{record['error']}")
    else:
        log.info(f"cell {record['method']} rate {record['rate']:g} repeat {record['repeat']}: accuracy "
                 f"{record['accuracy_dense']:.4f} -> pruned {record['accuracy_pruned']:.4f} -> retrained "
                 f"{record['accuracy_retrained']:.4f}, density {record['density']:.1%} ({record['seconds']:.0f} s)")
    if bar is not None:
        bar.update(1)
