import os

import numpy as np
import pytest

from wincaffe.log import setup_logging

setup_logging()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def train_toy(tmp_path, monkeypatch):
    """``train_toy(net_yaml, solver_yaml)``: writes net.yaml and solver.yaml (dedented) into
    tmp_path, serves the toy data set (``source: toy``) and trains with the solver into
    tmp_path/dense; returns tmp_path."""
    import textwrap
    from test_solver import toy_data
    from wincaffe.data import DATASETS
    from wincaffe.solver import Solver
    monkeypatch.setitem(DATASETS, "toy", toy_data)
    monkeypatch.setenv("WINCAFFE_DATA", str(tmp_path / "cache"))

    def train(net_yaml, solver_yaml):
        (tmp_path / "net.yaml").write_text(textwrap.dedent(net_yaml))
        (tmp_path / "solver.yaml").write_text(textwrap.dedent(solver_yaml))
        Solver(str(tmp_path / "solver.yaml"), output_dir=str(tmp_path / "dense"), progress=False).solve()
        return tmp_path
    return train


def reference_correlation(x, w, b=None, pad=0, stride=1):
    """Direct Caffe convolution (cross-correlation) via scipy, summed over channels:
    x (N, C, H, W), w (K, C, k, k) -> (N, K, oh, ow)."""
    from scipy.signal import correlate
    N, C = x.shape[:2]
    K = w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    outs = np.zeros((N, K) + tuple(np.array(xp.shape[2:]) - np.array(w.shape[2:]) + 1))
    for n in range(N):
        for k in range(K):
            for c in range(C):
                outs[n, k] += correlate(xp[n, c].astype(np.float64), w[k, c].astype(np.float64), mode="valid")
    outs = outs[:, :, ::stride, ::stride]
    if b is not None:
        outs += b[None, :, None, None]
    return outs


@pytest.fixture
def ref_corr():
    return reference_correlation
