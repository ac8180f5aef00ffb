"""Quantized Winograd (QW, BQW; Chikin & Kryzhanovskiy, eq. A.1–A.4): the integer kernels on
every dispatch path against an int64 reference, the quantizer, the layer against a NumPy
reference of the same formula, balancing, static and dynamic scales, masks, the
straight-through backward, files and `wincaffe quantize`."""
import json
import os
import textwrap

import numpy as np
import pytest

from wincaffe._kernels import quant as qk
from wincaffe.errors import ConfigError, SnapshotError
from wincaffe.testing import make_layer
from wincaffe.transforms import quantization as qz
from test_solver import toy_net  # the toy data set's nets

PATHS = qk.available_paths()


def _pack_and_multiply(mod, U, V, s_u, s_v, extra, bits):
    n = qz.clip_level(bits)
    Uq = qz.quantize(U, s_u[:, None, :], bits)
    words, usum = qk.pack_weights(Uq, mod)
    pv = qk.packed_inputs_buffer(*V.shape, mod)
    mod.pack_inputs(V, s_v, extra, n, pv)
    out = np.empty((U.shape[0], U.shape[1], V.shape[2]), np.int32)
    mod.products(words, pv, usum, np.ones(U.shape[0], np.float32), U.shape[1], V.shape[2], outi=out)
    return Uq, out


# P, K, C, NT: odd sizes, K and C not multiples of the register blocks, C = 1, NT below one block
SHAPES = [(1, 1, 1, 1), (3, 5, 7, 37), (2, 9, 13, 200), (4, 4, 8, 64), (36, 20, 20, 130), (2, 3, 2, 1000)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", [8, 6, 4, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_int32_products_equal_an_int64_reference_bit_for_bit(path, bits, shape):
    P, K, C, NT = shape
    rng = np.random.default_rng(P * 1000 + K * 100 + C + bits)
    V = (rng.standard_normal((P, C, NT)) * 3).astype(np.float32)
    U = rng.standard_normal((P, K, C)).astype(np.float32)
    n = qz.clip_level(bits)
    s_v = rng.uniform(0.2, 1.5, (P, C)).astype(np.float32) * n / 3
    s_u = rng.uniform(0.2, 1.5, (P, C)).astype(np.float32) * n
    extra = rng.uniform(0.5, 2, (P, C)).astype(np.float32) if bits == 8 else None
    mod = qk.kernels(path)
    assert mod.SIMD == path
    Uq, out = _pack_and_multiply(mod, U, V, s_u, s_v, extra, bits)
    Vq = qz.quantize(V, s_v[:, :, None], bits, None if extra is None else extra[:, :, None])
    if V.size > 1000:                                                # the clip range is reached ...
        assert np.abs(Vq).max() == n and np.abs(Uq).max() == n
    np.testing.assert_array_equal(out, qz.integer_products(Uq, Vq))  # ... and the sums are exact


@pytest.mark.parametrize("path", PATHS)
def test_extreme_inputs_clip_at_plus_minus_n(path):
    mod = qk.kernels(path)
    V = np.array([[[1e30, -1e30, 3.4e38, -3.4e38, 0.49, 0.5, 1.5, -2.5, 126.6, 127.4]]], np.float32)
    U = np.ones((1, 1, 1), np.float32)
    s = np.ones((1, 1), np.float32)
    _, out = _pack_and_multiply(mod, U, V, np.ones((1, 1), np.float32), s, None, 8)
    # round half to even, as np.rint; clipped at ±127
    np.testing.assert_array_equal(out[0, 0], [127, -127, 127, -127, 0, 0, 2, -2, 127, 127])


def test_dispatch_is_forced_by_name_and_unknown_paths_are_refused(monkeypatch):
    assert PATHS[-1] == "baseline"
    assert qk.kernels("baseline").SIMD == "baseline"
    monkeypatch.setenv("WINCAFFE_QUANT_PATH", "baseline")
    assert qk.kernels().SIMD == "baseline"
    with pytest.raises(ValueError, match="unknown kernel path"):
        qk.kernels("avx9000")


def test_kernel_argument_checks():
    mod = qk.kernels("baseline")
    V = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match="clip level"):
        mod.pack_inputs(V, np.ones((2, 3), np.float32), None, 200, qk.packed_inputs_buffer(2, 3, 5, mod))
    with pytest.raises(ValueError, match="does not fit"):
        mod.pack_inputs(V, np.ones((2, 4), np.float32), None, 127, qk.packed_inputs_buffer(2, 3, 5, mod))


# ----- the quantizer ----------------------------------------------------------------------------

def test_quantize_dequantize_round_trip_and_levels():
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, 10000).astype(np.float32)
    for bits in (2, 4, 6, 8, 16):
        n = qz.clip_level(bits)
        q = qz.quantize(z, n, bits)
        assert q.min() >= -n and q.max() <= n
        assert np.abs(q / n - z).max() <= 0.5 / n + 1e-7      # within half a step
    assert qz.clip_level(8) == 127 and qz.clip_level(4) == 7
    for bad in (1, 17):
        with pytest.raises(ValueError, match="bits must be"):
            qz.clip_level(bad)


def test_balance_equalizes_the_two_ranges_per_channel():
    rv = np.array([[4.0, 1.0, 0.0], [9.0, 0.25, 2.0]])
    ru = np.array([[1.0, 4.0, 3.0], [1.0, 1.0, 0.0]])
    omega = qz.balance(rv, ru)
    np.testing.assert_allclose(omega, [[2, 0.5, 1], [3, 0.5, 1]])     # dead channels keep Ω = 1
    ok = (rv > 0) & (ru > 0)
    np.testing.assert_allclose((rv / omega)[ok], (ru * omega)[ok], rtol=1e-6)


# ----- the layer ----------------------------------------------------------------------------------

def qconv(shape=(2, 5, 9, 11), K=6, *, tile=4, r=3, pad=1, weights="spatial", phase="TEST", dtype=np.float32,
          seed=0, relu=False, **quantize):
    cp = {"num_output": K, "kernel_size": r, "pad": pad,
          "weight_filler": {"type": "gaussian", "std": 0.5}, "bias_filler": {"type": "gaussian", "std": 0.1}}
    wp = {"tile": tile, "weights": weights, "winograd_relu": relu}
    if quantize:
        wp["quantize"] = quantize
    return make_layer("WinogradConv", [shape], dtype=dtype, seed=seed, phase=phase,
                      convolution_param=cp, winograd_param=wp)


def _calibrate(layer, bottoms, tops):
    layer.calibrate(True)
    layer.forward(bottoms, tops)
    layer.calibrate(False)


def _float_top(qlayer, bottoms):
    """The float layer of the same weights on the same input."""
    f, _, ftops = qconv(bottoms[0].shape, qlayer.params[0].shape[0], tile=qlayer.m, r=qlayer.r,
                        pad=qlayer.pad, weights=qlayer.weights_mode, dtype=qlayer.dtype,
                        relu=qlayer.winograd_relu)
    for p, q in zip(f.params, qlayer.params):
        p.data[...] = q.data
    f.forward(bottoms, ftops)
    return ftops[0].data.copy()


def test_16_bit_layer_matches_the_float_layer_closely():
    layer, bottoms, tops = qconv(bits=16, scales="tile", balance=True)
    assert layer.quantization()["path"] == "float64"
    _calibrate(layer, bottoms, tops)
    layer.forward(bottoms, tops)
    ref = _float_top(layer, bottoms)
    err16 = np.linalg.norm(tops[0].data - ref) / np.linalg.norm(ref)
    assert err16 < 1e-3
    layer8, b8, t8 = qconv(bits=8, scales="tile", balance=True)
    _calibrate(layer8, b8, t8)
    layer8.forward(b8, t8)
    err8 = np.linalg.norm(t8[0].data - ref) / np.linalg.norm(ref)
    assert 30 * err16 < err8 < 0.15                 # 8 bits: a few percent at F(4,3)


def _reference_layer_output(layer, bottoms, mode):
    """Eq. A.1–A.4 in NumPy: V from the float layer's transform, the integers from
    qz.quantize, int64 sums, dequantization, then the layer's own output transform."""
    from wincaffe._kernels.winograd import gather_transform, transform_scatter
    q = layer.quant
    a = layer.alpha
    U = np.ascontiguousarray(layer._compute_U(), np.float32)
    V = np.empty_like(layer.V)
    gather_transform(np.ascontiguousarray(bottoms[0].data), layer._BT, layer.m, layer.pad, layer.th, layer.tw,
                     V, layer.winograd_relu)
    omega, s_u, s_v = q.derive(U)
    if mode == "dynamic":
        s_v = qz.scales(np.abs(V).max(axis=2) / omega, q.bits, q.kind)
    Uq = qz.quantize(U, (s_u[:, None] * omega)[:, None, :], q.bits)
    if q.balanced and not q.fused:
        Vq = qz.quantize(V, s_v[:, None, None], q.bits, (1 / omega)[:, :, None])
    else:
        Vq = qz.quantize(V, (s_v[:, None] / omega)[:, :, None], q.bits)
    M = (qz.integer_products(Uq, Vq) * (1 / (s_u * s_v)).astype(np.float32)[:, None, None]).astype(np.float32)
    out = np.empty_like(bottoms[0].data, shape=(bottoms[0].shape[0], U.shape[1], layer.Ho, layer.Wo))
    transform_scatter(M, layer._A, layer.m, 0, layer.th, layer.tw, out, layer.params[1].data)
    assert a * a == U.shape[0]
    return out


@pytest.mark.parametrize("tile,scales,balance,fuse,mode,relu", [
    (4, "tile", False, True, "static", False),
    (4, "tensor", True, True, "static", True),
    (6, "tile", True, False, "static", False),
    (2, "tile", True, True, "dynamic", False),
    (6, "tensor", False, True, "dynamic", True),
])
def test_layer_forward_equals_the_numpy_reference(tile, scales, balance, fuse, mode, relu):
    layer, bottoms, tops = qconv(tile=tile, relu=relu, bits=8, scales=scales, balance=balance,
                                 fuse_balance=fuse, mode=mode)
    _calibrate(layer, bottoms, tops)
    bottoms[0].data[...] = np.random.default_rng(5).standard_normal(bottoms[0].shape)   # a new batch
    layer.forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, _reference_layer_output(layer, bottoms, mode), rtol=1e-5, atol=1e-6)


def test_balancing_with_omega_one_is_exactly_qw():
    outs = {}
    for variant, kw in [("qw", dict(balance=False)), ("bqw_fused", dict(balance=True)),
                        ("bqw", dict(balance=True, fuse_balance=False))]:
        layer, bottoms, tops = qconv(bits=6, scales="tile", **kw)
        _calibrate(layer, bottoms, tops)
        U = layer._compute_U()
        layer.buffers["quant_range_v"][...] = qz.weight_ranges(U)   # r_v = r_u: Ω = sqrt(1) = 1 exactly
        layer.forward(bottoms, tops)
        assert layer.quantization()["variant"] == variant
        assert np.all(layer.buffers["quant_balance"] == 1)
        outs[variant] = tops[0].data.copy()
    np.testing.assert_array_equal(outs["qw"], outs["bqw_fused"])
    np.testing.assert_array_equal(outs["qw"], outs["bqw"])


def test_balancing_lowers_the_error_with_unequal_channel_ranges():
    layer_q, bottoms, tops = qconv(shape=(2, 8, 12, 12), K=8, bits=6, scales="tile", balance=False)
    layer_b, _, tops_b = qconv(shape=(2, 8, 12, 12), K=8, bits=6, scales="tile", balance=True)
    gains = np.geomspace(0.02, 1, 8).reshape(1, 8, 1, 1)          # input channel ranges over 50x ...
    bottoms[0].data *= gains
    layer_q.params[0].data /= gains                                 # ... and the weights' the other way
    for p, q in zip(layer_b.params, layer_q.params):
        p.data[...] = q.data
    ref = _float_top(layer_q, bottoms)
    errs = []
    for layer, t in ((layer_q, tops), (layer_b, tops_b)):
        _calibrate(layer, bottoms, t)
        layer.forward(bottoms, t)
        errs.append(np.linalg.norm(t[0].data - ref) / np.linalg.norm(ref))
    assert errs[1] < 0.7 * errs[0]


def test_dynamic_scales_follow_the_batch_static_scales_do_not():
    for mode in ("dynamic", "static"):
        layer, bottoms, tops = qconv(bits=8, scales="tile", mode=mode, balance=mode == "static")
        layer.params[1].data[...] = 0
        _calibrate(layer, bottoms, tops)
        layer.forward(bottoms, tops)
        y1 = tops[0].data.copy()
        bottoms[0].data *= 4                        # a power of two: exact in float
        layer.forward(bottoms, tops)
        if mode == "dynamic":                       # the same integers, scales / 4: exactly 4 y
            np.testing.assert_array_equal(tops[0].data, 4 * y1)
        else:                                       # calibrated scales: the larger batch clips
            assert not np.allclose(tops[0].data, 4 * y1, rtol=1e-3)


def test_uncalibrated_static_layer_is_one_clear_error():
    layer, bottoms, tops = qconv(bits=8, mode="static")
    with pytest.raises(ConfigError, match="not calibrated: run `wincaffe quantize`"):
        layer.forward(bottoms, tops)
    dyn, b2, t2 = qconv(bits=8, mode="dynamic", balance=False)
    dyn.forward(b2, t2)                             # dynamic QW needs no calibration


@pytest.mark.parametrize("bad,match", [(1, "0 \\(off\\) or 2..16"), (17, "must be <= 16")])
def test_bad_bits_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        qconv(bits=bad)


def test_pruned_entries_stay_exact_zeros_through_quantization_and_qat():
    layer, bottoms, tops = qconv(weights="winograd", phase="TRAIN", bits=4, scales="tile", balance=True)
    K, C = layer.params[0].shape[:2]
    mask = (np.random.default_rng(1).random((K, C, 6, 6)) < 0.3).astype(np.float32)
    layer.set_mask("winograd", mask)
    p = layer.params[0]
    for _ in range(5):                              # quantization-aware steps through the STE
        layer.forward(bottoms, tops)
        np.testing.assert_array_equal(layer.buffers["quant_weights"][mask == 0], 0)
        tops[0].diff[...] = np.random.default_rng(2).standard_normal(tops[0].shape)
        layer.backward(tops, [True], bottoms)
        step = np.empty_like(p.diff)
        p.step_direction(step)
        p.data -= 0.01 * step
        np.testing.assert_array_equal(p.data[mask == 0], 0)
    assert np.count_nonzero(layer.buffers["quant_weights"]) > 0


def test_straight_through_backward():
    """At 16 bits the STE gradients are the float gradients; entries the quantizer clipped get none."""
    layer, bottoms, tops = qconv(phase="TRAIN", bits=16, balance=False, mode="dynamic", dtype=np.float64)
    layer.forward(bottoms, tops)
    g = np.random.default_rng(3).standard_normal(tops[0].shape)
    tops[0].diff[...] = g
    layer.backward(tops, [True], bottoms)
    f, _, ftops = qconv(phase="TRAIN", dtype=np.float64)
    for a, b in zip(f.params, layer.params):
        a.data[...] = b.data
    f.forward(bottoms, ftops)
    ftops[0].diff[...] = g
    fb = [type(bottoms[0])("in0", np.float64)]
    fb[0].reshape(bottoms[0].shape)
    fb[0].data[...] = bottoms[0].data
    f.backward(ftops, [True], fb)
    for a, b in zip(f.params, layer.params):
        np.testing.assert_allclose(b.diff, a.diff, rtol=1e-3, atol=1e-3 * np.abs(a.diff).max())
    np.testing.assert_allclose(bottoms[0].diff, fb[0].diff, rtol=1e-3, atol=1e-3 * np.abs(fb[0].diff).max())
    # clipping: static scales calibrated on a small batch, then a large one clips
    layer, bottoms, tops = qconv(phase="TRAIN", bits=8, mode="static", balance=False)
    layer.forward(bottoms, tops)                    # the first TRAIN batch calibrates
    bottoms[0].data *= 50
    layer.forward(bottoms, tops)
    mask_v = layer.quant.ste_mask()
    assert 0 < mask_v.mean() < 1
    tops[0].diff[...] = np.random.default_rng(4).standard_normal(tops[0].shape)
    layer.backward(tops, [True], bottoms)
    dV = next(v for k, v in layer.workspaces.items() if k[0] == "dV")
    clipped = ~mask_v
    assert clipped.any() and np.all(dV[clipped] == 0) and np.count_nonzero(dV[~clipped]) > 0.5 * (~clipped).sum()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("variant", [dict(balance=False), dict(balance=True), dict(balance=True, fuse_balance=False)])
def test_straight_through_gradients_equal_a_reference_at_4_bits(relu, variant):
    """dQ = dM V̂ᵀ and dX = Σ B (Ûᵀ dM ⊙ [not clipped] ⊙ [V > 0]) Bᵀ, with Û, V̂ the values the
    integer products multiplied and V the input before quantization."""
    from wincaffe._kernels.winograd import gather_transform, transform_scatter
    layer, bottoms, tops = qconv(shape=(2, 4, 9, 10), K=5, weights="winograd", phase="TRAIN", relu=relu,
                                 dtype=np.float32, bits=4, scales="tile", mode="static", **variant)
    layer.forward(bottoms, tops)                    # the first TRAIN batch calibrates
    bottoms[0].data *= 3                            # a wider batch: some of V clips
    layer.forward(bottoms, tops)
    q = layer.quant
    U_hat, V_hat = q.dequantized()
    passes = q.ste_mask()
    assert 0 < passes.mean() < 1
    V = q._ste[1]
    omega, s_u, s_v = q.derive(q._ste[0])                   # Û and V̂ from the formula itself
    mult_v = (s_v[:, None] / omega)[:, :, None]
    np.testing.assert_allclose(V_hat, qz.quantize(V, mult_v, 4) / mult_v, rtol=1e-5, atol=1e-6)
    mult_u = (s_u[:, None] * omega)[:, None, :]
    np.testing.assert_allclose(U_hat, qz.quantize(q._ste[0], mult_u, 4) / mult_u, rtol=1e-5, atol=1e-6)
    if q.balanced:
        assert not np.all(layer.buffers["quant_balance"] == 1)
    g = np.random.default_rng(7).standard_normal(tops[0].shape).astype(np.float32)
    tops[0].diff[...] = g
    layer.backward(tops, [True], bottoms)
    a = layer.alpha
    dM = np.empty((a * a, 5, layer.NT), np.float32)
    gather_transform(g, layer._A, layer.m, 0, layer.th, layer.tw, dM)
    dQ = dM @ V_hat.transpose(0, 2, 1)                                     # (P, K, C)
    np.testing.assert_allclose(layer.params[0].diff, dQ.reshape(a * a, -1).T.reshape(layer.params[0].shape),
                               rtol=1e-4, atol=1e-4 * np.abs(dQ).max())
    dV = U_hat.transpose(0, 2, 1) @ dM * passes
    if relu:
        dV *= V > 0
    dX = np.zeros(bottoms[0].shape, np.float32)
    transform_scatter(np.ascontiguousarray(dV), layer._BT, layer.m, layer.pad, layer.th, layer.tw, dX)
    np.testing.assert_allclose(bottoms[0].diff, dX, rtol=1e-4, atol=1e-4 * np.abs(dX).max())


def test_ste_mask_cuts_exactly_where_the_clip_changed_the_rounded_value():
    layer, bottoms, tops = qconv(phase="TRAIN", bits=4, mode="dynamic", balance=False)
    layer.forward(bottoms, tops)
    q = layer.quant
    U, V, omega, s_u, mult_v, extra, Uq = q._ste
    z = np.array([6.9, 7.4, 7.6, -7.49, -7.51, 100.0], np.float32)          # n = 7
    V = np.zeros_like(V)
    V[0, 0, :6] = z / mult_v[0, 0]
    q._ste = (U, V, omega, s_u, mult_v, extra, Uq)
    np.testing.assert_array_equal(q.ste_mask()[0, 0, :6], [True, True, False, True, False, False])


def test_dynamic_bqw_needs_calibrated_ranges_for_its_balance():
    layer, bottoms, tops = qconv(bits=8, mode="dynamic", balance=True)
    with pytest.raises(ConfigError, match="not calibrated"):
        layer.forward(bottoms, tops)
    _calibrate(layer, bottoms, tops)
    layer.forward(bottoms, tops)
    assert not np.all(layer.buffers["quant_balance"] == 1)


def test_range_tracking_running_mean_then_moving_average_and_calibration_restarts():
    from wincaffe.quantized_stage import RANGE_BATCHES
    layer, bottoms, tops = qconv(bits=8, mode="static")
    q = layer.quant
    q._observe(np.full((q.P, q.C), 2.0, np.float32))
    q._observe(np.full((q.P, q.C), 4.0, np.float32))
    np.testing.assert_allclose(layer.buffers["quant_range_v"], 3.0)           # mean of the first batches
    for _ in range(RANGE_BATCHES):
        q._observe(np.full((q.P, q.C), 3.0, np.float32))
    q._observe(np.full((q.P, q.C), 3.0 + RANGE_BATCHES, np.float32))
    np.testing.assert_allclose(layer.buffers["quant_range_v"], 4.0, rtol=1e-5)   # then weight 1/RANGE_BATCHES
    from wincaffe.quantization import calibrate

    class OneLayerNet:
        layers = [layer]

        def forward(self):
            layer.forward(bottoms, tops)
    bottoms[0].data[...] = 0.01
    calibrate(OneLayerNet(), 1)                     # starts over: only this batch counts
    assert layer.buffers["quant_batches"][0] == 1
    assert layer.buffers["quant_range_v"].max() < 1


def test_derived_buffers_and_the_weight_cache_follow_the_weights():
    layer, bottoms, tops = qconv(bits=6, scales="tile", balance=True, weights="winograd")
    _calibrate(layer, bottoms, tops)
    layer.forward(bottoms, tops)
    omega, s_u, s_v = layer.quant.derive(layer._compute_U())
    np.testing.assert_array_equal(layer.buffers["quant_balance"], omega)
    np.testing.assert_array_equal(layer.buffers["quant_scale_u"], s_u)
    np.testing.assert_array_equal(layer.buffers["quant_scale_v"], s_v)
    y0 = tops[0].data.copy()
    Q = layer.params[0].data
    small = np.abs(Q) < 0.5 * np.abs(Q).max(axis=0, keepdims=True)    # below each (c, ξ)'s max over k:
    Q[small] *= 0.5                                                     # Ω and s_u stay, U changes
    omega2, s_u2, _ = layer.quant.derive(layer._compute_U())
    np.testing.assert_array_equal(omega2, omega)
    np.testing.assert_array_equal(s_u2, s_u)
    layer.forward(bottoms, tops)
    assert not np.allclose(tops[0].data, y0)
    np.testing.assert_allclose(tops[0].data, _reference_layer_output(layer, bottoms, "static"), rtol=1e-5, atol=1e-6)


def test_quantizer_rounds_half_to_even_and_zero_ranges_scale_one():
    np.testing.assert_array_equal(qz.quantize([0.5, 1.5, 2.5, -0.5, -1.5], 1, 8), [0, 2, 2, 0, -2])
    np.testing.assert_array_equal(qz.scales(np.zeros((2, 3)), 8, "tile"), [1, 1])
    np.testing.assert_array_equal(qz.scales([[0.0, 2.0], [0.5, 0.0]], 8, "tensor"), [63.5, 63.5])


def test_default_path_is_the_best_and_kernel_arguments_are_checked(monkeypatch):
    monkeypatch.delenv("WINCAFFE_QUANT_PATH", raising=False)
    assert qk.kernels().SIMD == PATHS[0]
    for path in PATHS:
        mod = qk.kernels(path)
        V = np.zeros((2, 3, 5), np.float32)
        s = np.ones((2, 3), np.float32)
        pv = qk.packed_inputs_buffer(2, 3, 5, mod)
        with pytest.raises(ValueError, match="clip level 128"):
            mod.pack_inputs(V, s, None, 128, pv)
        with pytest.raises(ValueError, match="extra .* does not fit"):
            mod.pack_inputs(V, s, np.ones((2, 4), np.float32), 127, pv)
        with pytest.raises(ValueError, match="out .* does not fit"):
            mod.pack_inputs(V, s, None, 127, np.empty((2, pv.shape[1], pv.shape[2] + 1), np.uint32))
        words, usum = qk.pack_weights(np.ones((2, 4, 3), np.int32), mod)
        with pytest.raises(ValueError, match="usum must be"):
            mod.products(words, pv, usum[:, :1].copy(), np.ones(2, np.float32), 4, 5,
                         outi=np.empty((2, 4, 5), np.int32))
        big = np.empty((1, 4, -(-70000 // mod.GROUP)), np.uint32)
        with pytest.raises(ValueError, match="overflow"):
            mod.products(big, np.empty((1, big.shape[2], mod.COLS), np.uint32), np.zeros((1, 4), np.int32),
                         np.ones(1, np.float32), 4, 1, outi=np.empty((1, 4, 1), np.int32))
    with pytest.raises(ValueError, match="integers in \\[-127, 127\\]"):
        qk.pack_weights(np.full((1, 1, 1), 200), qk.kernels("baseline"))


@pytest.mark.parametrize("path", PATHS)
def test_non_finite_inputs_quantize_alike_on_every_path(path):
    mod = qk.kernels(path)
    V = np.tile(np.array([np.nan, 1.0, np.inf, -np.inf], np.float32), 10)[None, None]
    _, out = _pack_and_multiply(mod, np.ones((1, 1, 1), np.float32), V, np.ones((1, 1), np.float32),
                                np.ones((1, 1), np.float32), None, 8)
    np.testing.assert_array_equal(out[0, 0], np.tile([0, 1, 127, -127], 10))
    r = np.empty((1, 1), np.float32)
    mod.row_absmax(V, r)
    assert r[0, 0] == 1                              # ranges leave NaN and inf out


# ----- files and the command line --------------------------------------------------------------------

NET = toy_net("qtiny", """
  - name: conv1
    type: WinogradConv
    bottom: data
    top: conv1
    convolution_param: {num_output: 4, kernel_size: 3, pad: 1}
    winograd_param: {tile: 4, weights: spatial}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - name: conv2
    type: WinogradConv
    bottom: conv1
    top: conv2
    convolution_param: {num_output: 4, kernel_size: 3}
    winograd_param: {tile: 2, weights: winograd}
  - {name: pool, type: Pooling, bottom: conv2, top: pool, pooling_param: {pool: MAX, kernel_size: 2, stride: 2}}
""", "pool")

SOLVER = """
net: net.yaml
base_lr: 0.05
momentum: 0.9
lr_policy: fixed
max_iter: 40
test_iter: 3
test_interval: 40
display: 0
snapshot: 0
snapshot_prefix: qtiny
random_seed: 3
"""


@pytest.fixture
def qtiny(train_toy):
    d = train_toy(NET, SOLVER)
    return str(d / "net.yaml"), str(d / "dense" / "qtiny_iter_40.npz")


def test_quantize_command_writes_a_net_that_test_reproduces_and_train_continues(qtiny, tmp_path, capsys):
    from wincaffe.cli import main
    net, weights = qtiny
    out = str(tmp_path / "q" / "qtiny_q6.npz")
    assert main(["quantize", "--model", net, "--weights", weights, "--bits", "6", "--balance",
                 "--calib-batches", "3", "--test-iterations", "3", "--output", out, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"float", "qw", "bqw", "layers", "written"}
    assert [l["name"] for l in report["layers"]] == ["conv1", "conv2"]
    assert all(l["variant"] == "bqw_fused" and l["calibrated"] for l in report["layers"])
    qyaml, qnpz = report["written"]["model"], report["written"]["weights"]
    assert qyaml.endswith("qtiny_q6.yaml") and os.path.exists(qnpz)
    from wincaffe.snapshot import load_npz
    arrays = load_npz(qnpz)
    ints = arrays["buffer/conv1/quant_weights"]
    assert np.array_equal(ints, np.round(ints)) and np.abs(ints).max() == 31     # 6-bit integers
    assert main(["test", "--model", qyaml, "--weights", qnpz, "--iterations", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy = {report['bqw']:.4f}" in printed
    # quantization-aware training continues from the written net through the normal command
    solver = tmp_path / "qsolver.yaml"
    solver.write_text(textwrap.dedent(SOLVER).replace("net: net.yaml", f"net: {qyaml}").replace("max_iter: 40", "max_iter: 5"))
    assert main(["train", "--solver", str(solver), "--weights", qnpz, "--output", str(tmp_path / "qat"),
                 "--no-progress"]) == 0
    trained = capsys.readouterr().out
    assert "accuracy = " in trained
    snap = str(tmp_path / "qat" / "qtiny_iter_5.npz")          # a QAT snapshot loads and tests again
    assert main(["test", "--model", qyaml, "--weights", snap, "--iterations", "3"]) == 0
    assert trained.split("accuracy = ")[1][:6] in capsys.readouterr().out


def test_damaged_calibration_state_is_refused_and_derived_integers_are_recomputed(qtiny, tmp_path):
    from wincaffe import quantization
    from wincaffe.layer import TEST
    from wincaffe.net import Net
    from wincaffe.snapshot import load_npz, load_weights, save_npz
    net, weights = qtiny
    report = quantization.run(net, weights, bits=8, calib_batches=2, test_iterations=2,
                              output=str(tmp_path / "q8.npz"))
    good = dict(load_npz(report["written"]["weights"]))
    for key, value, match in [("buffer/conv2/quant_range_v", np.nan, "must be finite and >= 0"),
                              ("buffer/conv2/quant_range_v", -1.0, "must be finite and >= 0"),
                              ("buffer/conv1/quant_batches", -3.0, "whole number >= 0")]:
        arrays = dict(good)
        arrays[key] = np.full_like(arrays[key], value)
        save_npz(str(tmp_path / "bad.npz"), arrays)
        with pytest.raises(SnapshotError, match=match):
            load_weights(Net(report["written"]["model"], TEST), str(tmp_path / "bad.npz"))
    arrays = dict(good)                      # edited integers do not run: they follow from W
    arrays["buffer/conv2/quant_weights"] = arrays["buffer/conv2/quant_weights"] + 1
    save_npz(str(tmp_path / "edited.npz"), arrays)
    qnet = Net(report["written"]["model"], TEST)
    load_weights(qnet, str(tmp_path / "edited.npz"))
    assert qnet.evaluate(2, rewind=True)["accuracy"] == pytest.approx(report["qw"])
    np.testing.assert_array_equal(qnet.layers[[l.name for l in qnet.layers].index("conv2")].buffers["quant_weights"],
                                  good["buffer/conv2/quant_weights"])


def test_requantizing_a_quantized_net_reports_the_float_twin(qtiny, tmp_path):
    from wincaffe import quantization
    net, weights = qtiny
    first = quantization.run(net, weights, bits=8, calib_batches=2, test_iterations=2, output=str(tmp_path / "a.npz"))
    again = quantization.run(first["written"]["model"], first["written"]["weights"], bits=4, calib_batches=2,
                             test_iterations=2)
    assert again["float"] == first["float"]


@pytest.mark.parametrize("args,message", [
    (["--bits", "1"], "--bits: must be in 2..16, got 1"),
    (["--layers", "ip"], "layer 'ip' (InnerProduct) cannot run quantized"),
    (["--layers", "conv7"], "no layer named conv7"),
    (["--calib-batches", "0"], "--calib-batches: must be >= 1"),
    (["--layers", ""], "--layers: give at least one layer name"),
    (["--output", "somewhere/"], "--output: needs a file name"),
])
def test_bad_quantize_arguments_are_one_line(qtiny, capsys, args, message):
    from wincaffe.cli import main
    net, weights = qtiny
    assert main(["quantize", "--model", net, "--weights", weights, "--test-iterations", "1"] + args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("wincaffe: error:") and message in err and "\n" not in err
