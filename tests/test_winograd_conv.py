"""The WinogradConv layer: gradients, forward against direct correlation, the gradient note
identity (preconditioned SGD on Q == SGD on W), masks, Winograd-ReLU, errors."""
import numpy as np
import pytest

from wincaffe.errors import ConfigError
from wincaffe.testing import check_gradients, make_layer
from wincaffe.transforms.winograd import transform


def wconv(shape, K, r, *, pad=0, tile=2, weights="spatial", gradient="preconditioned", relu=False,
          points=None, dtype=np.float64, seed=0, **conv_extra):
    cp = {"num_output": K, "kernel_size": r, "pad": pad,
          "weight_filler": {"type": "gaussian", "std": 1.0},
          "bias_filler": {"type": "gaussian", "std": 1.0}}
    cp.update(conv_extra)
    wp = {"tile": tile, "weights": weights, "gradient": gradient, "winograd_relu": relu}
    if points is not None:
        wp["points"] = points
    return make_layer("WinogradConv", [shape], dtype=dtype, seed=seed, convolution_param=cp, winograd_param=wp)


def random_mask(layer, density=0.7, seed=0):
    K, C = layer.params[0].shape[:2]
    a = layer.alpha
    return (np.random.default_rng(seed).random((K, C, a, a)) < density).astype(np.float64)


# Each parametrization × tile 2, 4, 6 × kernel 3, 5 × pad 0, 1, 2 × odd H, W × ReLU × mask.
GRAD_CASES = [
    # weights, gradient, tile, r, pad, shape (N, C, H, W), K, relu, masked
    ("spatial", "preconditioned", 2, 3, 1, (2, 3, 7, 9), 4, False, False),
    ("spatial", "preconditioned", 4, 3, 0, (1, 2, 9, 11), 3, True, False),
    ("spatial", "preconditioned", 6, 3, 2, (2, 2, 7, 5), 2, False, False),
    ("spatial", "preconditioned", 2, 5, 2, (2, 2, 9, 7), 3, False, False),
    ("spatial", "preconditioned", 4, 5, 1, (1, 3, 8, 11), 2, True, False),
    ("spatial_masked", "preconditioned", 2, 3, 0, (2, 3, 9, 7), 3, False, True),
    ("spatial_masked", "preconditioned", 4, 3, 1, (2, 2, 7, 7), 3, True, True),
    ("spatial_masked", "preconditioned", 6, 3, 1, (1, 2, 11, 9), 2, False, True),
    ("spatial_masked", "preconditioned", 2, 5, 1, (1, 2, 9, 9), 2, True, False),
    ("spatial_masked", "preconditioned", 6, 5, 2, (1, 2, 7, 9), 2, False, True),
    ("winograd", "raw", 2, 3, 1, (2, 3, 7, 5), 3, False, True),
    ("winograd", "preconditioned", 4, 3, 2, (2, 2, 5, 9), 3, True, True),
    ("winograd", "preconditioned", 6, 3, 0, (1, 2, 11, 13), 2, False, False),
    ("winograd", "raw", 2, 5, 0, (2, 2, 9, 7), 2, True, False),
    ("winograd", "preconditioned", 4, 5, 2, (1, 3, 7, 9), 2, False, True),
]


@pytest.mark.parametrize("weights,gradient,tile,r,pad,shape,K,relu,masked", GRAD_CASES)
def test_gradients(weights, gradient, tile, r, pad, shape, K, relu, masked):
    layer, bottoms, tops = wconv(shape, K, r, pad=pad, tile=tile, weights=weights, gradient=gradient,
                                 relu=relu)
    if masked:
        layer.set_mask("winograd", random_mask(layer))
    check_gradients(layer, bottoms, tops, max_checks=40)


def test_gradients_without_bias_and_with_own_points():
    layer, bottoms, tops = wconv((2, 2, 6, 7), 2, 3, pad=1, tile=3, bias_term=False,
                                 points=["0", "1", "-1", "1/2"])
    assert len(layer.params) == 1
    check_gradients(layer, bottoms, tops)


@pytest.mark.parametrize("tile,r,pad,shape", [
    (2, 3, 1, (2, 3, 13, 11)), (4, 3, 1, (2, 4, 15, 17)), (6, 3, 0, (1, 3, 17, 13)),
    (2, 5, 2, (3, 2, 12, 12)), (4, 5, 0, (2, 3, 13, 12)), (6, 5, 1, (1, 2, 9, 14)),
])
def test_forward_matches_direct_correlation_float32(tile, r, pad, shape, ref_corr):
    layer, bottoms, tops = wconv(shape, 5, r, pad=pad, tile=tile, dtype=np.float32)
    assert layer.params[0].data.dtype == np.float32 and tops[0].data.dtype == np.float32
    layer.forward(bottoms, tops)
    ref = ref_corr(bottoms[0].data.astype(np.float64), layer.params[0].data.astype(np.float64),
                   layer.params[1].data.astype(np.float64), pad)
    assert tops[0].shape == ref.shape
    scale = np.abs(ref).max()
    np.testing.assert_allclose(tops[0].data, ref, rtol=0, atol=2e-5 * scale * tile)


def test_spatial_gradients_equal_direct_convolution():
    shape, K, r, pad = (2, 3, 9, 8), 4, 3, 1
    w, wb, wt = wconv(shape, K, r, pad=pad, tile=4)
    c, cb, ct = make_layer("Convolution", [shape], convolution_param={"num_output": K, "kernel_size": r, "pad": pad})
    c.params[0].data[...] = w.params[0].data
    c.params[1].data[...] = w.params[1].data
    cb[0].data[...] = wb[0].data
    dy = np.random.default_rng(2).standard_normal(wt[0].shape)
    for layer, b, t in ((w, wb, wt), (c, cb, ct)):
        layer.forward(b, t)
        t[0].diff[...] = dy
        layer.backward(t, [True], b)
    np.testing.assert_allclose(wt[0].data, ct[0].data, atol=1e-11)
    np.testing.assert_allclose(wb[0].diff, cb[0].diff, atol=1e-11)
    np.testing.assert_allclose(w.params[0].diff, c.params[0].diff, atol=1e-10)
    np.testing.assert_allclose(w.params[1].diff, c.params[1].diff, atol=1e-10)


def test_all_parametrizations_compute_the_same_convolution():
    shape, K, r = (2, 3, 10, 9), 4, 3
    sp, b, t = wconv(shape, K, r, pad=1, tile=4, weights="spatial")
    sm, _, t2 = wconv(shape, K, r, pad=1, tile=4, weights="spatial_masked")
    wq, _, t3 = wconv(shape, K, r, pad=1, tile=4, weights="winograd")
    # same seed -> same W0; Q0 = G W0 Gᵀ (the gradient note, Q = G W Gᵀ)
    G = transform(4, 3).matrices()[1]
    np.testing.assert_allclose(sm.params[0].data, sp.params[0].data)
    np.testing.assert_allclose(wq.params[0].data, G @ sp.params[0].data @ G.T, atol=1e-14)
    for layer, top in ((sp, t), (sm, t2), (wq, t3)):
        layer.forward(b, top)
    np.testing.assert_allclose(t2[0].data, t[0].data, atol=1e-11)
    np.testing.assert_allclose(t3[0].data, t[0].data, atol=1e-11)
    np.testing.assert_allclose(sp.transformed_weights(), wq.params[0].data, atol=1e-14)


def test_spatial_mask_equals_pruned_winograd_weights():
    shape, K, r = (2, 2, 8, 7), 3, 3
    sm, b, t = wconv(shape, K, r, pad=1, tile=2, weights="spatial_masked")
    wq, _, t2 = wconv(shape, K, r, pad=1, tile=2, weights="winograd")
    mask = random_mask(sm, 0.5)
    sm.set_mask("winograd", mask)
    wq.set_mask("winograd", mask)
    assert wq.params[0].mask is not None and np.all(wq.params[0].data[mask == 0] == 0)
    np.testing.assert_allclose(wq.params[0].data, sm.transformed_weights(), atol=1e-14)
    sm.forward(b, t)
    wq.forward(b, t2)
    np.testing.assert_allclose(t[0].data, t2[0].data, atol=1e-11)
    # the spatial_masked mask is a layer buffer (saved with the weights), changed in place
    buf = sm.buffers["winograd_mask"]
    np.testing.assert_array_equal(buf, mask)
    np.testing.assert_array_equal(sm.mask("winograd"), mask)
    sm.set_mask("winograd", None)
    assert sm.buffers["winograd_mask"] is buf and buf.min() == 1


@pytest.mark.parametrize("tile,r,relu", [(2, 3, False), (4, 3, True), (4, 5, False), (6, 3, False)])
def test_preconditioned_step_on_Q_equals_step_on_W(tile, r, relu):
    """The gradient note, eq. 15-19: Q₀ = G W₀ Gᵀ, Q₁ = Q₀ − lr·(G Gᵀ) dL/dQ (G Gᵀ) == G W₁ Gᵀ with
    W₁ = W₀ − lr·dL/dW, for the same batch and the same top diff (plain SGD, by hand)."""
    shape, K, lr = (2, 3, 9, 11), 4, 0.1
    sp, b, t = wconv(shape, K, r, pad=1, tile=tile, weights="spatial", relu=relu)
    wq, _, t2 = wconv(shape, K, r, pad=1, tile=tile, weights="winograd", relu=relu)
    G = transform(tile, r).matrices()[1]
    W0 = sp.params[0].data.copy()
    np.testing.assert_allclose(wq.params[0].data, G @ W0 @ G.T, atol=1e-14)
    dy = np.random.default_rng(9).standard_normal(t[0].shape)
    for layer, top in ((sp, t), (wq, t2)):
        layer.forward(b, top)
        top[0].diff[...] = dy
        layer.backward(top, [False], b)
    W1 = W0 - lr * sp.params[0].diff
    dQ = wq.params[0].diff                          # Param.diff is dL/dQ ...
    step = np.empty_like(dQ)
    wq.params[0].step_direction(step)                # ... the solver steps along (G Gᵀ) dL/dQ (G Gᵀ)
    GGT = G @ G.T
    np.testing.assert_allclose(step, GGT @ dQ @ GGT, rtol=1e-12, atol=1e-12)
    Q1 = wq.params[0].data - lr * step
    np.testing.assert_allclose(Q1, G @ W1 @ G.T, rtol=1e-12, atol=1e-12)
    # raw dL/dQ would not do this (the update-step explosion of the gradient note, section 3)
    Q1_raw = wq.params[0].data - lr * dQ
    assert not np.allclose(Q1_raw, G @ W1 @ G.T, atol=1e-6)
    # and the weight decay term: (G Gᵀ)(λ G W Gᵀ ... ) is λQ (the gradient note, eq. 24): G (λ W) Gᵀ = λ Q
    np.testing.assert_allclose(G @ (0.01 * W0) @ G.T, 0.01 * wq.params[0].data, atol=1e-14)


def test_raw_gradient_mode_steps_along_dL_dQ():
    layer, b, t = wconv((1, 2, 6, 6), 2, 3, pad=1, tile=2, weights="winograd", gradient="raw")
    assert layer.params[0].preconditioner is None
    layer.forward(b, t)
    t[0].diff[...] = 1.0
    layer.backward(t, [True], b)
    step = np.empty_like(layer.params[0].diff)
    np.testing.assert_array_equal(layer.params[0].step_direction(step), layer.params[0].diff)


def test_winograd_relu_zeroes_negative_transformed_inputs():
    layer, b, t = wconv((1, 1, 6, 6), 1, 3, pad=0, tile=2, relu=True, bias_term=False)
    layer.forward(b, t)
    assert layer.V.min() == 0.0 and (layer.V == 0).any()
    # equivalent NumPy: Aᵀ[(G W Gᵀ) ⊙ ReLU(Bᵀ d B)]A per tile
    AT, G, BT = transform(2, 3).matrices()
    W, x = layer.params[0].data[0, 0], b[0].data[0, 0]
    U = G @ W @ G.T
    for ty in range(2):
        for tx in range(2):
            d = x[2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
            y = AT @ (U * np.maximum(BT @ d @ BT.T, 0)) @ AT.T
            np.testing.assert_allclose(t[0].data[0, 0, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2], y, atol=1e-12)


def test_reshape_to_another_batch_and_size():
    layer, b, t = wconv((2, 2, 7, 7), 3, 3, pad=1, tile=4, dtype=np.float32)
    layer.forward(b, t)
    b[0].reshape((5, 2, 10, 13))
    b[0].data[...] = np.random.default_rng(1).standard_normal(b[0].shape)
    layer.reshape(b, t)
    assert t[0].shape == (5, 3, 10, 13)
    layer.forward(b, t)
    layer.backward(t, [True], b)
    assert np.isfinite(b[0].diff).all()


@pytest.mark.parametrize("extra,winograd,field", [
    ({"stride": 2}, {}, "convolution_param.stride"),
    ({"group": 2}, {}, "convolution_param.group"),
    ({"dilation": 2}, {}, "convolution_param.dilation"),
    ({}, {"weights": "fourier"}, "winograd_param.weights"),
    ({}, {"gradient": "natural"}, "winograd_param.gradient"),
    ({}, {"tile": 0}, "winograd_param.tile"),
    ({}, {"tile": 30}, "winograd_param.tile"),
    ({}, {"points": [0, 1]}, "winograd_param.points"),
    ({}, {"points": [0, 1, 1]}, "winograd_param.points"),
])
def test_clear_config_errors(extra, winograd, field):
    cp = {"num_output": 2, "kernel_size": 3, "pad": 1}
    cp.update(extra)
    with pytest.raises(ConfigError) as exc:
        make_layer("WinogradConv", [(1, 4, 8, 8)], convolution_param=cp, winograd_param=winograd)
    assert exc.value.field == field
    assert "winogradconv" in str(exc.value)  # names the layer


def test_mask_protocol_errors():
    layer, _, _ = wconv((1, 2, 6, 6), 2, 3)
    assert layer.prune_domains() == ("spatial",)
    with pytest.raises(ConfigError, match=r"cannot be pruned in the 'winograd' domain \(its domains: spatial\)"):
        layer.set_mask("winograd", np.ones((2, 2, 4, 4)))
    layer, _, _ = wconv((1, 2, 6, 6), 2, 3, weights="spatial_masked")
    assert layer.prune_domains() == ("winograd", "spatial")
    with pytest.raises(ConfigError, match="mask shape"):
        layer.set_mask("winograd", np.ones((2, 2, 3, 3)))
    with pytest.raises(ConfigError, match="mask shape"):
        layer.set_mask("spatial", np.ones((2, 2, 4, 4)))
    with pytest.raises(ConfigError, match="'spectral' domain"):
        layer.prune_scores("spectral")


@pytest.mark.parametrize("weights", ["spatial", "spatial_masked", "winograd"])
def test_prune_scores_are_the_magnitudes_the_products_use(weights):
    layer, b, t = wconv((1, 2, 6, 6), 3, 3, pad=1, tile=2, weights=weights)
    domain = layer.prune_domains()[0]
    scores = layer.prune_scores(domain)
    if domain == "winograd":
        np.testing.assert_array_equal(scores, np.abs(layer.transformed_weights()))
        assert scores.shape == (3, 2, 4, 4)
    else:
        np.testing.assert_array_equal(scores, np.abs(layer.params[0].data))
    mask = (np.random.default_rng(2).random(scores.shape) > 0.5).astype(np.float64)
    layer.set_mask(domain, mask)
    np.testing.assert_array_equal(layer.mask(domain), mask)
    assert np.all(layer.prune_scores(domain)[mask == 0] == 0)


def _small_net(weights):
    from wincaffe.config import validate_net
    return validate_net({"name": "w", "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [2, 3, 9, 9], "fill": "gaussian"}},
        {"name": "conv", "type": "WinogradConv", "bottom": "x", "top": "y",
         "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1},
         "winograd_param": {"tile": 4, "weights": weights}},
        {"name": "ip", "type": "InnerProduct", "bottom": "y", "top": "z", "inner_product_param": {"num_output": 2}},
        {"name": "lab", "type": "Input", "top": "lab", "input_param": {"shape": [2]}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "lab"], "top": "loss"},
    ]})


@pytest.mark.parametrize("weights", ["spatial_masked", "winograd"])
def test_mask_is_shared_with_the_test_net_and_saved_with_the_weights(weights, tmp_path):
    from wincaffe.layer import TEST, TRAIN
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights, save_weights
    train = Net(_small_net(weights), TRAIN, dtype=np.float64)
    test = Net(_small_net(weights), TEST, dtype=np.float64, share_from=train)
    layer, tlayer = train.layer_by_name("conv"), test.layer_by_name("conv")
    mask = random_mask(layer, 0.5, seed=4)
    layer.set_mask("winograd", mask)
    np.testing.assert_array_equal(tlayer.mask("winograd"), mask)
    train.forward_backward()
    test.forward()
    np.testing.assert_allclose(test.blobs["y"].data, train.blobs["y"].data)
    path = str(tmp_path / "w.npz")
    save_weights(train, path)
    fresh = Net(_small_net(weights), TRAIN, dtype=np.float64, seed=1)
    assert not np.array_equal(fresh.layer_by_name("conv").mask("winograd"), mask)
    load_weights(fresh, path)
    np.testing.assert_array_equal(fresh.layer_by_name("conv").mask("winograd"), mask)


# ----- few input channels: the products fused into the tiling kernels ---------------------
@pytest.mark.parametrize("C,tile,r,pad,relu,weights", [
    (1, 4, 5, 0, False, "winograd"), (1, 2, 3, 1, True, "spatial_masked"),
    (2, 4, 3, 2, False, "spatial"), (2, 6, 5, 1, True, "winograd"),
])
def test_fused_small_channel_path_gradients(C, tile, r, pad, relu, weights):
    import layers.winograd_conv as wc
    assert C <= wc.FUSED_MAX_C
    layer, bottoms, tops = wconv((2, C, 9, 11), 3, r, pad=pad, tile=tile, weights=weights, relu=relu)
    check_gradients(layer, bottoms, tops, max_checks=40)


@pytest.mark.parametrize("C", [1, 2])
@pytest.mark.parametrize("propagate", [False, True])
def test_fused_small_channel_path_matches_gemm_path(C, propagate, monkeypatch):
    import layers.winograd_conv as wc
    rng = np.random.default_rng(3)
    results = []
    for fused_max_c in (wc.FUSED_MAX_C, 0):        # fused, then the GEMM path
        monkeypatch.setattr(wc, "FUSED_MAX_C", fused_max_c)
        layer, bottoms, tops = wconv((5, C, 17, 14), 7, 5, tile=4, weights="winograd", dtype=np.float32)
        assert not layer.workspaces                # fresh (NaN) buffers: each path writes its own
        bottoms[0].data[...] = np.random.default_rng(1).standard_normal(bottoms[0].shape)
        layer.forward(bottoms, tops)
        tops[0].diff[...] = rng.standard_normal(tops[0].shape) if not results else results[0][3]
        bottoms[0].diff[...] = 0
        layer.backward(tops, [propagate], bottoms)
        results.append((tops[0].data.copy(), layer.params[0].diff.copy(), bottoms[0].diff.copy(),
                        tops[0].diff.copy(), layer.params[1].diff.copy()))
    (y1, dq1, dx1, _, db1), (y2, dq2, dx2, _, db2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5 * np.abs(y2).max())
    np.testing.assert_allclose(dq1, dq2, rtol=1e-5, atol=1e-5 * np.abs(dq2).max())
    np.testing.assert_array_equal(db1, db2)
    if propagate:
        np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-5 * np.abs(dx2).max())
    else:
        assert not dx1.any()                       # the input gradient is skipped
