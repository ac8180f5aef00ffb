"""Helpers for tests of layers: build one layer from a mapping and check its
gradients against central finite differences (in float64); run a block on a
given number of OpenMP threads."""
import contextlib

import numpy as np

from wincaffe.config import validate_layer
from wincaffe.layer import TRAIN, Blob, layer_class


@contextlib.contextmanager
def omp_threads(n):
    """Run the block with the kernels on ``n`` OpenMP threads; the previous count after."""
    from wincaffe._kernels.threads import get_omp_threads, set_omp_threads
    before = get_omp_threads()
    set_omp_threads(n)
    try:
        yield
    finally:
        set_omp_threads(before)


def make_layer(layer_type, bottom_shapes, *, dtype=np.float64, seed=0, phase=TRAIN, n_tops=1, **blocks):
    """Build and set up one layer: ``make_layer("Convolution", [(2, 3, 7, 7)],
    convolution_param={"num_output": 4, "kernel_size": 3})``.

    Returns ``(layer, bottoms, tops)`` with bottoms filled with N(0, 1) noise.
    """
    rng = np.random.default_rng(seed)
    spec = {"name": layer_type.lower(), "type": layer_type,
            "bottom": [f"in{i}" for i in range(len(bottom_shapes))],
            "top": [f"out{i}" for i in range(n_tops)]}
    spec.update(blocks)
    spec = validate_layer(spec, 0)
    layer = layer_class(layer_type)(spec, phase=phase, dtype=dtype, rng=rng)
    bottoms = []
    for i, s in enumerate(bottom_shapes):
        b = Blob(f"in{i}", dtype)
        b.reshape(s)
        b.data[...] = rng.standard_normal(s)
        bottoms.append(b)
    tops = [Blob(f"out{i}", dtype) for i in range(n_tops)]
    layer.setup(bottoms, tops)
    layer.reshape(bottoms, tops)
    return layer, bottoms, tops


def _weighted_output(layer, bottoms, tops, weights):
    """L = Σ_i <top_i, R_i> after a fresh forward."""
    layer.reshape(bottoms, tops)
    layer.forward(bottoms, tops)
    return sum(float((t.data * w).sum()) for t, w in zip(tops, weights))


def check_gradients(layer, bottoms, tops, *, check_bottoms=None, check_params=True, eps=1e-6,
                    rtol=1e-5, atol=1e-7, seed=1, max_checks=60, param_diff=None):
    """Compare analytic gradients with central differences of L = Σ_i <top_i, R_i>
    for random R_i. Checks up to ``max_checks`` random entries of each bottom and
    param. ``param_diff(layer, i)`` may return the raw gradient to compare for
    param i when a layer stores something else (e.g. a preconditioned gradient)
    in ``Param.diff``. Raises AssertionError naming the worst entry."""
    rng = np.random.default_rng(seed)
    layer.reshape(bottoms, tops)
    layer.forward(bottoms, tops)
    weights = [rng.standard_normal(t.shape) for t in tops]
    if check_bottoms is None:
        check_bottoms = list(range(len(bottoms)))
    propagate_down = [i in check_bottoms for i in range(len(bottoms))]
    for t, w in zip(tops, weights):
        t.diff[...] = w
    layer.backward(tops, propagate_down, bottoms)
    analytic = [(f"bottom {i}", bottoms[i].data, bottoms[i].diff.copy()) for i in check_bottoms]
    if check_params:
        for i, p in enumerate(layer.params):
            g = param_diff(layer, i) if param_diff else p.diff
            analytic.append((f"param {i} ({p.name})", p.data, np.array(g, copy=True)))
    for label, array, grad in analytic:
        flat = array.reshape(-1)
        assert grad.shape == array.shape, f"{label}: gradient shape {grad.shape} != {array.shape}"
        idx = rng.choice(flat.size, size=min(max_checks, flat.size), replace=False)
        for j in idx:
            old = flat[j]
            flat[j] = old + eps
            lp = _weighted_output(layer, bottoms, tops, weights)
            flat[j] = old - eps
            lm = _weighted_output(layer, bottoms, tops, weights)
            flat[j] = old
            numeric = (lp - lm) / (2 * eps)
            got = grad.reshape(-1)[j]
            if not np.isclose(got, numeric, rtol=rtol, atol=atol):
                raise AssertionError(f"{layer.type_name} {label}[{np.unravel_index(j, array.shape)}]: "
                                     f"analytic {got!r} vs numeric {numeric!r}")
    layer.reshape(bottoms, tops)
    layer.forward(bottoms, tops)
    return True
