"""Study files of ``wincaffe compare``: which nets to prune how, at which rates.

A study (YAML) lists methods; each method is a solver (the net it trains dense, or
``dense_weights``), the domain, scope, layers and schedule to prune with, and its
rates. Study-wide fields set the retraining length, the repeats, how much of the
test set to score, and the length of dense training. Paths are relative to the
study file. Command-line options override the file (:func:`apply_overrides`).

:func:`cells` expands a study into independent cells (method × rate × repeat),
each a plain JSON-able dict that carries everything a worker needs (the solver and
net files' contents, not their paths), keyed by a hash of that dict: the results
store recognises a finished cell by its key. The key is conservative: any change to
the solver or net file (their whole content and name, even a display interval), a
rate, the retraining, the test images, the threads or the dense weights makes a new
cell; the title, the table and the study's name do not.
"""
import hashlib
import json
import os

from wincaffe import pruning
from wincaffe.config import read_yaml, resolve_relative, validate_net, validate_solver
from wincaffe.errors import ConfigError
from wincaffe.schema import Block, Field

TABLES = ("liu_turakhia_fft", "liu_turakhia_winograd", "liu_et_al", "baseline")

METHOD = Block(
    name=Field(str, doc="short name, used on the command line (--methods) and in file names"),
    title=Field(str, None, doc="what the tables and plots call it"),
    solver=Field(str, doc="solver file: the net, its dense training, the test set, the retraining"),
    net=Field(str, None, doc="this net instead of the solver's"),
    dense_weights=Field(str, None, doc="trained weights to prune instead of training the net dense"),
    dense_iters=Field(int, None, min=1, doc="dense training iterations (default: the study's, else max_iter)"),
    domain=Field(str, None, choices=pruning.DOMAINS, doc="prune every layer in this domain"),
    scope=Field(str, "layer", choices=pruning.SCOPES),
    layers=Field(str, None, list_of=True, doc="layers to prune (default: the conv layers)"),
    skip_first=Field(bool, False, doc="leave the first conv layer dense"),
    schedule=Field(str, "oneshot", choices=pruning.SCHEDULES),
    rates=Field(float, list_of=True, min=0.0, max=1.0),
    retrain_iters=Field(int, None, min=0),
    retrain_epochs=Field(float, None, min=0.0),
    base_lr=Field(float, None, min_exclusive=0.0, doc="retraining learning rate"),
    agp_steps=Field(int, 10, min=1),
    table=Field(str, "baseline", choices=TABLES, doc="which of the sources' tables the method belongs to"),
    label=Field(str, None, doc="its row in that table, e.g. (a), (b), (c) of Liu et al. Fig. 1"),
)

STUDY = Block(
    name=Field(str, "study"),
    retrain_iters=Field(int, None, min=0, doc="retraining iterations per cell"),
    retrain_epochs=Field(float, 1.0, min=0.0, doc="retraining epochs per cell (default one)"),
    dense_iters=Field(int, None, min=1, doc="dense training iterations (default: each solver's max_iter)"),
    repeats=Field(int, 1, min=1, doc="repeats of each cell: each repeat trains its own dense baseline and "
                                     "retrains with its own seed (random_seed + 1000·repeat)"),
    test_images=Field(int, None, min=1, doc="test images scored per evaluation (default: the solver's test_iter)"),
    count_batches=Field(int, 2, min=0, doc="TEST batches to measure the sparse multiply counts on"),
    time_batches=Field(int, 5, min=0, doc="TEST batches to time inference on"),
    threads=Field(int, 1, min=1, doc="BLAS/OpenMP threads per worker"),
)


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj):
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


def load_study(path):
    """Read and validate a study file; returns ``{"name", ..., "methods": [...], "source"}``."""
    raw = read_yaml(path)
    methods = raw.get("methods")
    top = {k: v for k, v in raw.items() if k != "methods"}
    try:
        study = STUDY.validate(top, "")
    except ConfigError as exc:
        raise exc.located(source=path) from None
    if not isinstance(methods, list) or not methods:
        raise ConfigError("needs a non-empty list 'methods'", source=path, field="methods")
    out, names = [], set()
    for i, m in enumerate(methods):
        try:
            method = METHOD.validate(m, f"methods[{i}]")
        except ConfigError as exc:
            raise exc.located(source=path) from None
        if method.name in names:
            raise ConfigError(f"the name {method.name!r} is used twice", source=path, field=f"methods[{i}].name")
        names.add(method.name)
        if not method.rates:
            raise ConfigError("needs at least one rate", source=path, field=f"methods[{i}].rates")
        _unique_rates(method.rates, f"methods[{i}].rates", path)
        if method.retrain_iters is not None and method.retrain_epochs is not None:
            raise ConfigError("give retrain_iters or retrain_epochs, not both", source=path,
                              field=f"methods[{i}].retrain_epochs")
        if method.layers and method.skip_first:
            raise ConfigError("give layers or skip_first, not both", source=path, field=f"methods[{i}].skip_first")
        if method.dense_weights is not None and not os.path.isabs(method.dense_weights):
            method["dense_weights"] = os.path.normpath(os.path.join(os.path.dirname(path), method.dense_weights))
        for key in ("solver", "net", "dense_weights"):
            if method[key] is not None:
                method[key] = resolve_relative(method[key], path)
                if key != "dense_weights" and not os.path.exists(method[key]):
                    raise ConfigError(f"file not found: {method[key]}", source=path, field=f"methods[{i}].{key}")
        method["title"] = method.title or method.name
        method["where"] = (path, f"methods[{i}]")   # dense_weights is checked when the method runs
        out.append(method)
    study["methods"] = out
    study["source"] = path
    return study


def _unique_rates(rates, field, source=None):
    seen = set()
    for r in rates:
        if r in seen:
            raise ConfigError(f"the rate {r:g} is given twice", source=source, field=field)
        seen.add(r)


def apply_overrides(study, *, methods=None, rates=None, retrain_iters=None, dense_iters=None, repeats=None):
    """The command line's ``--methods a,b --rates 0.5,0.9 --retrain-iters N --dense-iters N --repeats K``."""
    if rates is not None:
        _unique_rates(rates, "--rates")
    if retrain_iters is not None and retrain_iters < 0:
        raise ConfigError(f"must be >= 0, got {retrain_iters}", field="--retrain-iters")
    if dense_iters is not None and dense_iters < 1:
        raise ConfigError(f"must be >= 1, got {dense_iters}", field="--dense-iters")
    if methods:
        known = [m.name for m in study["methods"]]
        for name in methods:
            if name not in known:
                raise ConfigError(f"no method {name!r} in the study (methods: {', '.join(known)})",
                                  field="--methods")
        study["methods"] = [m for m in study["methods"] if m.name in methods]
    for m in study["methods"]:
        if rates is not None:
            m["rates"] = list(rates)
        if retrain_iters is not None:
            m["retrain_iters"], m["retrain_epochs"] = retrain_iters, None
        if dense_iters is not None:
            m["dense_iters"] = dense_iters
    if retrain_iters is not None:
        study["retrain_iters"] = retrain_iters
    if dense_iters is not None:
        study["dense_iters"] = dense_iters
    if repeats is not None:
        if repeats < 1:
            raise ConfigError(f"must be >= 1, got {repeats}", field="--repeats")
        study["repeats"] = repeats
    return study


def method_files(method):
    """The raw solver and net mappings of a method (validated once here, so a broken
    file is one clear error before anything runs)."""
    if method.dense_weights is not None and not os.path.exists(method.dense_weights):
        source, field = method.get("where", (None, method.name))
        raise ConfigError(f"file not found: {method.dense_weights} (train the dense net first)", source=source,
                          field=f"{field}.dense_weights")
    solver_raw = read_yaml(method.solver)
    spec = validate_solver(solver_raw, method.solver)
    net_path = method.net or spec.net
    net_raw = read_yaml(net_path)
    validate_net(net_raw, net_path)
    return {"solver": solver_raw, "solver_path": method.solver, "net": net_raw, "net_path": net_path}


def dense_job(study, method, files, repeat=0):
    """The dense baseline of a method's ``repeat`` as a task description, keyed by what
    it depends on: the solver and net files (content and name), the iterations, the test
    images it is scored on, the threads, and the repeat (each repeat trains its own
    baseline, with the solver's random_seed + 1000·repeat)."""
    iters = method.dense_iters or study["dense_iters"]
    job = {"solver": files["solver"], "net": files["net"], "net_name": os.path.basename(files["net_path"]),
           "solver_name": os.path.basename(files["solver_path"]), "iters": iters,
           "test_images": study["test_images"], "threads": study["threads"]}
    if repeat:
        job["repeat"] = repeat
    job["key"] = digest(job)
    return job


def retrain_length(study, method):
    """(iters, epochs) of a method's retraining: the method's own setting, else the study's
    (iterations if it gives them, else epochs)."""
    if method.retrain_iters is not None:
        return method.retrain_iters, None
    if method.retrain_epochs is not None:
        return None, method.retrain_epochs
    if study["retrain_iters"] is not None:
        return study["retrain_iters"], None
    return None, study["retrain_epochs"]


def cells(study, method, files, dense_keys):
    """The cells of one method: [(key, config)] for each rate and repeat; ``dense_keys``
    [repeat] names the baseline each repeat prunes."""
    out = []
    iters, epochs = retrain_length(study, method)
    for repeat in range(study["repeats"]):
        dense_key = dense_keys[repeat]
        for rate in method.rates:
            config = {
                "method": method.name, "rate": float(rate), "repeat": repeat,
                "solver": files["solver"], "net": files["net"],
                "net_name": os.path.basename(files["net_path"]), "dense_key": dense_key,
                "domain": method.domain, "scope": method.scope, "layers": method.layers,
                "skip_first": method.skip_first, "schedule": method.schedule, "agp_steps": method.agp_steps,
                # rounds: every rate of the method up to this one, in order, each followed by retraining
                "round_rates": (sorted(r for r in method.rates if r <= rate) if method.schedule == "rounds"
                                else None),
                "retrain_iters": iters, "retrain_epochs": epochs,
                "base_lr": method.base_lr, "test_images": study["test_images"],
                "count_batches": study["count_batches"], "time_batches": study["time_batches"],
                "threads": study["threads"],
            }
            out.append((digest(config), config))
    return out
