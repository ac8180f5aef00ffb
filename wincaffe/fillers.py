"""Weight initialisation, as Caffe's fillers (``weight_filler: {type: xavier}``).

``fan_in`` / ``fan_out`` follow Caffe: for a (K, C, h, w) kernel fan_in = C·h·w
and fan_out = K·h·w; for an InnerProduct weight (K, D) fan_in = D, fan_out = K.
"""
import numpy as np


def fans(shape):
    if len(shape) < 2:
        return shape[0] if shape else 1, shape[0] if shape else 1
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def fill(params, shape, rng, dtype=np.float32):
    """Return a new array of ``shape`` filled as ``params`` (a filler block) says."""
    from wincaffe.layer import check_size
    check_size(shape, "a weight")
    kind = params["type"]
    fan_in, fan_out = fans(shape)
    norm = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[params["variance_norm"]]
    if kind == "constant":
        out = np.full(shape, params["value"])
    elif kind == "gaussian":
        out = rng.normal(params["mean"], params["std"], size=shape)
    elif kind == "uniform":
        out = rng.uniform(params["min"], params["max"], size=shape)
    elif kind == "xavier":  # Caffe: U(-a, a), a = sqrt(3 / n)
        a = np.sqrt(3.0 / norm)
        out = rng.uniform(-a, a, size=shape)
    elif kind == "msra":  # He et al.: N(0, 2 / n)
        out = rng.normal(0.0, np.sqrt(2.0 / norm), size=shape)
    else:  # the schema only admits the kinds above
        raise ValueError(f"unknown filler type {kind!r}")
    return np.ascontiguousarray(out, dtype=dtype)
