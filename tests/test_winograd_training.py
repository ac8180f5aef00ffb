"""The gradient note's claim on real MNIST: Winograd-domain weights trained with the raw gradient
explode at the learning rate where the preconditioned gradient (eq. 18) trains well."""
import os

import numpy as np
import pytest

from wincaffe.gradient_experiment import train_with_gradient

NETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nets")


def run(gradient, lr, iters, test_images):
    return train_with_gradient(os.path.join(NETS, "lenet5_winograd.yaml"),
                               os.path.join(NETS, "lenet5_winograd_solver.yaml"), gradient, lr, iters, test_images)


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
