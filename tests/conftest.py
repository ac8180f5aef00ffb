import os

import numpy as np
import pytest

from wincaffe.log import setup_logging

setup_logging()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


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
