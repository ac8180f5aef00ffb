"""Fuzzing the config layer: random mutations of every shipped net and solver file
(fields deleted, wrong types, swapped values, huge or negative numbers, unknown keys,
wrong nesting) either build or raise wincaffe's own error type, never anything else.

Fixed seed (derandomized) and a small budget, so it stays a few seconds in the suite;
``WINCAFFE_FUZZ_EXAMPLES=2000 python -m pytest tests/test_config_fuzz.py`` runs longer."""
import copy
import glob
import os

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wincaffe.config import validate_net, validate_solver
from wincaffe.errors import WincaffeError
from wincaffe.layer import TEST, TRAIN
from wincaffe.lr_policy import learning_rate
from wincaffe.net import Net

pytestmark = pytest.mark.mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "nets", "*.yaml")))
SOLVERS = [f for f in FILES if f.endswith("_solver.yaml")]
NETS = [f for f in FILES if f not in SOLVERS and yaml.safe_load(open(f)).get("layer") is not None]
EXAMPLES = int(os.environ.get("WINCAFFE_FUZZ_EXAMPLES", "60"))

ODD_VALUES = [None, True, -1, 0, 1, -(10 ** 12), 10 ** 12, 2 ** 40, 1.5, -0.0, float("inf"), float("nan"),
              "", "x", "TRAIN", "MAX", [], [1, 2, 3], {}, {"a": 1}, [{"b": None}]]


def _paths(obj, prefix=()):
    """Every (path, value) inside nested dicts and lists."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def mutated(draw, files):
    path = draw(st.sampled_from(files))
    doc = copy.deepcopy(yaml.safe_load(open(path)))
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p, _ in _paths(doc) if p]
        if not places:
            break
        where = draw(st.sampled_from(places))
        parent, key = _get(doc, where[:-1]), where[-1]
        op = draw(st.sampled_from(["delete", "odd", "swap", "unknown", "nest", "listify"]))
        if op == "delete":
            del parent[key]
        elif op == "odd":
            parent[key] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
        elif op == "swap":
            other = draw(st.sampled_from(places))
            try:
                parent[key] = copy.deepcopy(_get(doc, other))
            except (KeyError, IndexError, TypeError):
                pass
        elif op == "unknown" and isinstance(parent, dict):
            parent[f"no_such_field_{len(parent)}"] = draw(st.sampled_from(ODD_VALUES))
        elif op == "nest":
            parent[key] = {"value": parent[key]}
        elif op == "listify":
            parent[key] = [parent[key]]
    return path, doc


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated(NETS), phase=st.sampled_from([TRAIN, TEST]))
def test_mutated_nets_build_or_raise_our_error(case, phase):
    path, doc = case
    try:
        Net(validate_net(doc, path), phase, dtype=np.float32)
    except WincaffeError:
        pass


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated(SOLVERS))
def test_mutated_solvers_validate_or_raise_our_error(case):
    path, doc = case
    try:
        spec = validate_solver(doc, path)
        for it in (0, 1, 12000, spec.max_iter):
            learning_rate(spec, it)
    except WincaffeError:
        pass


def test_the_fuzzer_sees_every_shipped_file():
    assert len(NETS) >= 10 and len(SOLVERS) >= 8
    for path in NETS:
        validate_net(yaml.safe_load(open(path)), path)
    for path in SOLVERS:
        validate_solver(yaml.safe_load(open(path)), path)
