"""Forward references and finite-difference gradient checks for the standard layers."""
import numpy as np
import pytest

from wincaffe.errors import ConfigError
from wincaffe.testing import check_gradients, make_layer, omp_threads


def conv(shape, K, k, pad=0, stride=1, dtype=np.float64, **extra):
    p = {"num_output": K, "kernel_size": k, "pad": pad, "stride": stride,
         "weight_filler": {"type": "gaussian", "std": 1.0},
         "bias_filler": {"type": "gaussian", "std": 1.0}}
    p.update(extra)
    return make_layer("Convolution", [shape], dtype=dtype, convolution_param=p)


@pytest.mark.parametrize("shape,K,k,pad,stride", [
    ((2, 3, 7, 9), 4, 3, 0, 1), ((3, 1, 11, 8), 5, 5, 2, 1), ((2, 2, 9, 9), 3, 3, 1, 2),
    ((1, 4, 6, 5), 2, 1, 0, 1), ((2, 3, 10, 7), 2, 4, 1, 3),
])
def test_convolution_matches_scipy(shape, K, k, pad, stride, ref_corr):
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        layer, bottoms, tops = conv(shape, K, k, pad, stride, dtype=dtype)
        layer.forward(bottoms, tops)
        ref = ref_corr(bottoms[0].data, layer.params[0].data, layer.params[1].data, pad, stride)
        assert tops[0].data.shape == ref.shape
        np.testing.assert_allclose(tops[0].data, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape,K,k,pad,stride", [((2, 3, 7, 6), 4, 3, 1, 1), ((2, 2, 9, 8), 3, 5, 2, 2)])
def test_convolution_gradients(shape, K, k, pad, stride):
    layer, bottoms, tops = conv(shape, K, k, pad, stride)
    check_gradients(layer, bottoms, tops)


def test_convolution_dilation_gradients():
    layer, bottoms, tops = conv((1, 2, 9, 9), 2, 3, 1, 1, dilation=2)
    assert tops[0].shape == (1, 2, 7, 7)
    check_gradients(layer, bottoms, tops)


def test_convolution_no_bias_and_errors():
    layer, bottoms, tops = conv((1, 2, 5, 5), 3, 3, bias_term=False)
    assert len(layer.params) == 1
    check_gradients(layer, bottoms, tops)
    with pytest.raises(ConfigError, match="kernel_size"):
        conv((1, 2, 5, 5), 3, 7)
    with pytest.raises(ConfigError, match="convolution_param.stride: must be >= 1"):
        conv((1, 2, 5, 5), 3, 3, stride=0)
    with pytest.raises(ConfigError, match="convolution_param.group"):
        conv((1, 2, 5, 5), 2, 3, group=2)


@pytest.mark.parametrize("pool,shape,k,s,pad", [
    ("MAX", (2, 3, 8, 8), 2, 2, 0), ("MAX", (2, 2, 7, 9), 3, 2, 1), ("MAX", (2, 2, 7, 9), 2, 2, 0), ("AVE", (2, 3, 8, 8), 2, 2, 0),
    ("AVE", (1, 2, 7, 6), 3, 2, 1),
])
def test_pooling_gradients(pool, shape, k, s, pad):
    layer, bottoms, tops = make_layer("Pooling", [shape],
                                      pooling_param={"pool": pool, "kernel_size": k, "stride": s, "pad": pad})
    check_gradients(layer, bottoms, tops)


def test_pooling_forward_reference():
    layer, bottoms, tops = make_layer("Pooling", [(2, 3, 8, 6)], pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
    layer.forward(bottoms, tops)
    x = bottoms[0].data
    np.testing.assert_array_equal(tops[0].data, x.reshape(2, 3, 4, 2, 3, 2).max(axis=(3, 5)))
    layer, bottoms, tops = make_layer("Pooling", [(2, 3, 8, 6)], pooling_param={"pool": "AVE", "kernel_size": 2, "stride": 2})
    layer.forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, bottoms[0].data.reshape(2, 3, 4, 2, 3, 2).mean(axis=(3, 5)))


def test_pooling_output_size_follows_caffe():
    # ceil mode: 7x7 input, k=2, s=2 -> 4x4 (Caffe), not 3x3
    layer, bottoms, tops = make_layer("Pooling", [(1, 1, 7, 7)], pooling_param={"kernel_size": 2, "stride": 2})
    assert tops[0].shape == (1, 1, 4, 4)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_stride_larger_than_kernel_has_no_empty_window(pool):
    # H = 5, k = 2, s = 5: Caffe's ceil rule gives a second window starting at 5 = H
    layer, bottoms, tops = make_layer("Pooling", [(2, 2, 5, 5)],
                                      pooling_param={"pool": pool, "kernel_size": 2, "stride": 5})
    assert tops[0].shape == (2, 2, 1, 1)
    layer.forward(bottoms, tops)
    window = bottoms[0].data[:, :, :2, :2]
    expected = window.max(axis=(2, 3)) if pool == "MAX" else window.mean(axis=(2, 3))
    np.testing.assert_allclose(tops[0].data[:, :, 0, 0], expected)
    check_gradients(layer, bottoms, tops)


def test_inner_product_forward_and_gradients():
    layer, bottoms, tops = make_layer("InnerProduct", [(4, 3, 2, 2)], inner_product_param={
        "num_output": 5, "bias_filler": {"type": "gaussian"}})
    layer.forward(bottoms, tops)
    W, b = layer.params[0].data, layer.params[1].data
    np.testing.assert_allclose(tops[0].data, bottoms[0].data.reshape(4, -1) @ W.T + b)
    check_gradients(layer, bottoms, tops)


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_gradients(slope):
    layer, bottoms, tops = make_layer("ReLU", [(3, 4, 5)], relu_param={"negative_slope": slope})
    check_gradients(layer, bottoms, tops)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_values(dtype):
    """y = x for x > 0, negative_slope · x elsewhere (the slope rounded to the dtype, as
    Caffe's); dx = dy times the same gain, NaN inputs taking the slope's branch."""
    layer, bottoms, tops = make_layer("ReLU", [(6,)], dtype=dtype, relu_param={"negative_slope": 0.1})
    x = np.array([-2.0, -0.5, -0.0, 0.0, 1.5, np.nan], dtype)
    bottoms[0].data[...] = x
    layer.forward(bottoms, tops)
    s = dtype(0.1)
    np.testing.assert_array_equal(tops[0].data, np.array([-2 * s, -0.5 * s, 0.0, 0.0, 1.5, np.nan], dtype))
    tops[0].diff[...] = np.array([3.0, 5.0, 7.0, 11.0, 13.0, 17.0], dtype)
    layer.backward(tops, [True], bottoms)
    np.testing.assert_array_equal(bottoms[0].diff, np.array([3 * s, 5 * s, 7 * s, 11 * s, 13.0, 17 * s], dtype))


def test_relu_in_place():
    from wincaffe.layer import Blob
    layer, bottoms, _ = make_layer("ReLU", [(2, 5)])
    x = bottoms[0].data.copy()
    layer.reshape(bottoms, bottoms)
    layer.forward(bottoms, bottoms)
    np.testing.assert_array_equal(bottoms[0].data, np.maximum(x, 0))
    bottoms[0].diff[...] = 1.0
    layer.backward(bottoms, [True], bottoms)
    np.testing.assert_array_equal(bottoms[0].diff, (x > 0).astype(float))


def test_softmax_gradients():
    layer, bottoms, tops = make_layer("Softmax", [(4, 6)])
    layer.forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data.sum(axis=1), 1.0)
    check_gradients(layer, bottoms, tops)


def _with_labels(layer_type, scores_shape, K, seed=0, **blocks):
    layer, bottoms, tops = make_layer(layer_type, [scores_shape, (scores_shape[0],)], **blocks)
    bottoms[1].data[...] = np.random.default_rng(seed).integers(0, K, scores_shape[0])
    layer.reshape(bottoms, tops)
    return layer, bottoms, tops


def test_softmax_with_loss_value_and_gradients():
    layer, bottoms, tops = _with_labels("SoftmaxWithLoss", (5, 4), 4)
    layer.forward(bottoms, tops)
    x, y = bottoms[0].data, bottoms[1].data.astype(int)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    assert np.isclose(float(tops[0].data), -logp[np.arange(5), y].mean())
    check_gradients(layer, bottoms, tops, check_bottoms=[0])


def test_softmax_with_loss_ignore_label():
    layer, bottoms, tops = _with_labels("SoftmaxWithLoss", (6, 3), 3, loss_param={"ignore_label": 1})
    check_gradients(layer, bottoms, tops, check_bottoms=[0])


def test_softmax_with_loss_rejects_bad_label():
    layer, bottoms, tops = _with_labels("SoftmaxWithLoss", (3, 3), 3)
    bottoms[1].data[0] = 7
    with pytest.raises(ConfigError, match="outside"):
        layer.forward(bottoms, tops)


def test_accuracy():
    layer, bottoms, tops = _with_labels("Accuracy", (4, 3), 3)
    bottoms[0].data[...] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    bottoms[1].data[...] = [0, 1, 0, 2]
    layer.forward(bottoms, tops)
    assert float(tops[0].data) == 0.5
    layer, bottoms, tops = _with_labels("Accuracy", (4, 3), 3, accuracy_param={"top_k": 2})
    bottoms[0].data[...] = [[3, 2, 1], [3, 2, 1], [3, 2, 1], [3, 2, 1]]
    bottoms[1].data[...] = [0, 1, 2, 2]
    layer.forward(bottoms, tops)
    assert float(tops[0].data) == 0.5


def test_accuracy_ties_count_against_the_label():
    # Caffe's rule: hit when (#scores >= label's score) - 1 < top_k; a constant output scores 0
    layer, bottoms, tops = _with_labels("Accuracy", (3, 4), 4)
    bottoms[0].data[...] = [[0, 0, 0, 0], [1, 1, 0, 0], [2, 2, 2, 0]]
    bottoms[1].data[...] = [0, 1, 2]
    layer.forward(bottoms, tops)
    assert float(tops[0].data) == 0.0
    layer, bottoms, tops = _with_labels("Accuracy", (3, 4), 4, accuracy_param={"top_k": 2})
    bottoms[0].data[...] = [[0, 0, 0, 0], [1, 1, 0, 0], [2, 2, 2, 0]]
    bottoms[1].data[...] = [0, 1, 2]
    layer.forward(bottoms, tops)
    assert np.isclose(float(tops[0].data), 1 / 3)


def test_dropout_train_and_test():
    layer, bottoms, tops = make_layer("Dropout", [(200, 50)], dropout_param={"dropout_ratio": 0.3})
    layer.forward(bottoms, tops)
    kept = tops[0].data != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(tops[0].data[kept], bottoms[0].data[kept] / 0.7)
    tops[0].diff[...] = 1.0
    layer.backward(tops, [True], bottoms)
    np.testing.assert_allclose(bottoms[0].diff, kept / 0.7)
    layer, bottoms, tops = make_layer("Dropout", [(3, 4)], phase="TEST")
    layer.forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, bottoms[0].data)


# ----- pooling's fast paths against Caffe's loops -----

def caffe_pool_reference(x, pool, k, s, pad):
    """Caffe's pooling, written as its loops: MAX scans each window row by row and
    takes a later value only if strictly greater (returns the flat index too); AVE sums
    in the same order and divides by the window clipped to the padded input."""
    from layers.pooling import pool_output_size
    N, C, H, W = x.shape
    oh, ow = pool_output_size(H, k, pad, s), pool_output_size(W, k, pad, s)
    y = np.zeros((N, C, oh, ow), x.dtype)
    arg = np.zeros((N, C, oh, ow), np.int64)
    for n in range(N):
        for c in range(C):
            for py in range(oh):
                for px in range(ow):
                    hs, ws = py * s - pad, px * s - pad
                    he, we = min(hs + k, H + pad), min(ws + k, W + pad)
                    size = (he - hs) * (we - ws)
                    hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                    if pool == "MAX":
                        best, idx = x[n, c, hs, ws], hs * W + ws
                        for iy in range(hs, he):
                            for ix in range(ws, we):
                                if x[n, c, iy, ix] > best:
                                    best, idx = x[n, c, iy, ix], iy * W + ix
                        y[n, c, py, px], arg[n, c, py, px] = best, idx
                    else:
                        acc = x.dtype.type(0)
                        for iy in range(hs, he):
                            for ix in range(ws, we):
                                acc = x.dtype.type(acc + x[n, c, iy, ix])
                        y[n, c, py, px] = x.dtype.type(acc / size)
    return y, arg


def caffe_pool_backward_reference(g, arg, pool, k, s, pad, shape):
    """Caffe's pooling backward as its loops, into a zeroed dx of ``shape``: MAX adds each
    dy to its window's winner (``arg``, flat indices); AVE adds dy / size to the window's
    (clipped) inputs, size counted as in the forward."""
    dtype = g.dtype.type
    expect = np.zeros(shape, g.dtype)
    if pool == "MAX":
        for n, c, q in np.ndindex(shape[0], shape[1], g[0, 0].size):
            expect[n, c].flat[arg[n, c].flat[q]] += g[n, c].flat[q]
        return expect
    H, W = shape[2:]
    for n, c, py, px in np.ndindex(*g.shape):
        hs, ws = py * s - pad, px * s - pad
        he, we = min(hs + k, H + pad), min(ws + k, W + pad)
        share = dtype(g[n, c, py, px] / ((he - hs) * (we - ws)))
        expect[n, c, max(hs, 0):min(he, H), max(ws, 0):min(we, W)] += share
    return expect


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,k,s,pad", [
    ((2, 3, 8, 8), 2, 2, 0), ((2, 2, 7, 9), 2, 2, 0), ((1, 2, 9, 6), 2, 2, 0), ((2, 2, 8, 9), 2, 2, 0),
    ((2, 2, 8, 7), 2, 2, 0), ((2, 2, 7, 9), 3, 2, 1), ((1, 3, 8, 10), 3, 3, 0),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_equals_caffe_loops_with_ties_nan_and_signed_zeros(pool, shape, k, s, pad, dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, size=shape).astype(dtype)           # many ties
    x.flat[rng.choice(x.size, 5, replace=False)] = np.nan
    x.flat[rng.choice(x.size, 5, replace=False)] = -0.0
    if shape[2] >= 2 and shape[3] >= 4:
        x[0, 0, :2, 2:4] = -0.0                                    # a window of four -0.0
    layer, bottoms, tops = make_layer("Pooling", [shape], dtype=dtype,
                                      pooling_param={"pool": pool, "kernel_size": k, "stride": s, "pad": pad})
    bottoms[0].data[...] = x
    layer.forward(bottoms, tops)
    y, arg = caffe_pool_reference(x, pool, k, s, pad)
    np.testing.assert_array_equal(tops[0].data, y)
    np.testing.assert_array_equal(np.signbit(tops[0].data), np.signbit(y))
    g = rng.standard_normal(tops[0].shape).astype(dtype)
    g.flat[:3] = -0.0
    tops[0].diff[...] = g
    layer.backward(tops, [True], bottoms)
    if pool == "MAX":
        np.testing.assert_array_equal(layer.argmax, arg)
    expect = caffe_pool_backward_reference(g, arg, pool, k, s, pad, shape)
    np.testing.assert_array_equal(bottoms[0].diff, expect)
    np.testing.assert_array_equal(np.signbit(bottoms[0].diff), np.signbit(expect))


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 8, 9), (2, 3, 7, 8)])
def test_float32_ave_pooling_sums_in_float32_like_caffe(shape):
    # non-integer inputs: a sum in double (then rounded) differs from Caffe's float32 sum
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, :2, :2] = np.float32(3e38)                              # overflows to inf in float32
    layer, bottoms, tops = make_layer("Pooling", [shape], dtype=np.float32,
                                      pooling_param={"pool": "AVE", "kernel_size": 2, "stride": 2})
    bottoms[0].data[...] = x
    layer.forward(bottoms, tops)
    with np.errstate(over="ignore"):
        y, _ = caffe_pool_reference(x, "AVE", 2, 2, 0)
    assert np.isinf(y[0, 0, 0, 0])
    np.testing.assert_array_equal(tops[0].data, y)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("shape", [(4, 16, 64, 66), (2, 8, 130, 129)])   # above the one-thread limit
def test_pooling_of_large_inputs_is_the_same_on_one_and_two_threads(pool, shape):
    """Inputs of 2^18 elements or more are split among the OpenMP threads (smaller ones run
    on one); the planes are independent, so the results must not depend on the split.
    The 2×2 MAX forward is also checked against a NumPy reshape-max."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(np.float32)
    g = None
    results = []
    for threads in (1, 2):
        with omp_threads(threads):
            layer, bottoms, tops = make_layer("Pooling", [shape], dtype=np.float32,
                                              pooling_param={"pool": pool, "kernel_size": 2, "stride": 2})
            bottoms[0].data[...] = x
            layer.forward(bottoms, tops)
            if g is None:
                g = rng.standard_normal(tops[0].shape).astype(np.float32)
            tops[0].diff[...] = g
            layer.backward(tops, [True], bottoms)
            results.append((tops[0].data.copy(), bottoms[0].diff.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    if pool == "MAX":
        N, C, H, W = shape
        h, w = H // 2 * 2, W // 2 * 2
        full = x[:, :, :h, :w].reshape(N, C, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        np.testing.assert_array_equal(results[1][0][:, :, :h // 2, :w // 2], full)
