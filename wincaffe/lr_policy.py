"""Caffe's learning-rate policies: lr(iter) for fixed, step, multistep, inv, exp, poly, sigmoid."""
import math


def learning_rate(spec, it):
    """``spec`` is a validated solver spec; ``it`` the current iteration (0-based).
    A policy whose value is not a finite real number at ``it`` (e.g. ``exp`` with
    gamma > 1 overflowing, ``inv`` of a negative base) is a TrainingError."""
    from wincaffe.errors import TrainingError
    try:
        lr = _policy(spec, it)
    except (OverflowError, ZeroDivisionError):
        lr = float("inf")
    if isinstance(lr, complex) or not math.isfinite(lr):
        raise TrainingError(f"Iteration {it}: lr_policy {spec.lr_policy} gives the learning rate {lr} "
                            f"(check gamma, power, stepsize)")
    return float(lr)


def _policy(spec, it):
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
