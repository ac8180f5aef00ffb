"""Caffe's learning-rate policies: lr(iter) for fixed, step, multistep, inv, exp, poly, sigmoid."""
import math


def learning_rate(spec, it):
    """``spec`` is a validated solver spec; ``it`` the current iteration (0-based)."""
    base, policy = spec.base_lr, spec.lr_policy
    if policy == "fixed":
        return base
    if policy == "step":
        return base * spec.gamma ** (it // spec.stepsize)
    if policy == "multistep":
        return base * spec.gamma ** sum(1 for s in spec.stepvalue if it >= s)
    if policy == "exp":
        return base * spec.gamma ** it
    if policy == "inv":
        return base * (1.0 + spec.gamma * it) ** (-spec.power)
    if policy == "poly":
        return base * (1.0 - it / spec.max_iter) ** spec.power if spec.max_iter else base
    if policy == "sigmoid":
        return base / (1.0 + math.exp(-spec.gamma * (it - spec.stepsize)))
    raise ValueError(f"unknown lr_policy {policy!r}")
