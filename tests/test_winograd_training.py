"""The gradient note's claim on real MNIST: Winograd-domain weights trained with the raw gradient
explode at the learning rate where the preconditioned gradient (eq. 18) trains well."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from experiment_winograd_gradient import run  # noqa: E402


@pytest.mark.mnist
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_raw_gradient_needs_a_far_smaller_learning_rate():
    with np.errstate(all="ignore"):
        preconditioned = run("preconditioned", 0.01, iters=150, test_images=1000)
        raw_same_lr = run("raw", 0.01, iters=150, test_images=1000)
        raw_tiny_lr = run("raw", 1e-5, iters=150, test_images=1000)
    assert preconditioned is not None and preconditioned > 0.9
    assert raw_same_lr is None                             # the loss became NaN
    assert raw_tiny_lr is not None and raw_tiny_lr < preconditioned  # stable only 1000x lower, and slower
