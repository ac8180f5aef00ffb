"""Sparse execution of pruned transform-domain weights: the kernels on every dispatch path
against dense products, the layers' sparse path against their dense path (every weight mode,
float32 and float64, Winograd-ReLU, empty rows and positions, 0% and 100%), gradients with
the sparse path on, when the compressed layout is rebuilt, and what `auto` picks."""
import numpy as np
import pytest

from wincaffe._kernels import sparse as sk
from wincaffe.sparse_stage import BREAK_EVEN, SparseProducts
from wincaffe.testing import check_gradients, make_layer

PATHS = sk.available_paths()


def _sparse(rng, shape, density, dtype):
    S = rng.standard_normal(shape).astype(dtype)
    S *= rng.random(shape) < density
    if shape[1] > 2:
        S[:, 1] = 0                 # an empty row in every matrix
    if shape[0] > 1:
        S[0] = 0                    # an empty matrix (a tile position fully pruned)
    return S


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,n", [((3, 5, 7), 37), ((2, 9, 13), 300), ((4, 17, 6), 1030), ((1, 1, 1), 1),
                                     ((2, 3, 4), 0), ((36, 8, 8), 65)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_kernels_equal_dense_products(path, dtype, shape, n, density):
    rng = np.random.default_rng(hash((shape, n, int(10 * density))) % 2**32)
    P, R, Q = shape
    S = _sparse(rng, shape, density, dtype)
    X = rng.standard_normal((P, Q, n)).astype(dtype)
    A = rng.standard_normal((P, R, n)).astype(dtype)
    k = sk.kernels(path)
    assert k.SIMD == path
    csr = sk.CSR(S)
    out = np.full((P, R, n), np.nan, dtype)
    k.spmm(csr.rowptr, csr.cols, csr.vals, X, out)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(out, S @ X, **tol)
    vals = np.full(csr.nnz, np.nan, dtype)
    k.sampled_dot(csr.rowptr, csr.cols, A, X, vals)
    np.testing.assert_allclose(vals, (A @ X.transpose(0, 2, 1)).reshape(-1)[csr.index], **tol)
    t = csr.transposed(S)
    outT = np.full((P, Q, n), np.nan, dtype)
    k.spmm(t.rowptr, t.cols, t.vals, A, outT)
    np.testing.assert_allclose(outT, S.transpose(0, 2, 1) @ A, **tol)


def test_csr_keeps_a_given_pattern_with_zero_values_and_refills():
    S = np.array([[[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]])
    pattern = np.array([[[True, True, False], [False, False, True]]])
    csr = sk.CSR(S, pattern=pattern)
    assert csr.nnz == 3 and list(csr.rowptr) == [0, 2, 3] and list(csr.cols) == [0, 1, 2]
    csr.refill(S * 10)
    np.testing.assert_array_equal(csr.dense(), [[[10, 0, 0], [0, 0, 30]]])


@pytest.mark.parametrize("shape", [(1, 2, 3), (3, 4, 5), (2, 7, 1)])
def test_transposed_csr_refills_from_the_untransposed_stack(shape):
    rng = np.random.default_rng(sum(shape))
    S = rng.standard_normal(shape)
    pattern = rng.random(shape) < 0.5
    t = sk.CSR(S, pattern=pattern).transposed(S)
    np.testing.assert_array_equal(t.dense(), np.where(pattern, S, 0).transpose(0, 2, 1))
    S2 = rng.standard_normal(shape)
    t.refill(S2)                                  # S itself, not Sᵀ: no transposed copy
    np.testing.assert_array_equal(t.dense(), np.where(pattern, S2, 0).transpose(0, 2, 1))


def test_same_bytes():
    from wincaffe._kernels.same_bytes import same_bytes
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert same_bytes(a, a.copy()) and same_bytes(np.zeros(0), np.zeros(0))
    raw = a.view(np.uint8).reshape(-1)
    for i in range(raw.size):                     # a one-bit difference in any byte
        b = a.copy()
        b.view(np.uint8).reshape(-1)[i] ^= 1
        assert not same_bytes(a, b), i
    assert not same_bytes(a, a.reshape(4, 3)) and not same_bytes(a, a.astype(np.float64))
    n = np.full(3, np.nan)
    assert same_bytes(n, n.copy()) and not np.array_equal(n, n.copy())   # "unchanged" holds for NaN
    with pytest.raises(ValueError, match="C-contiguous"):
        same_bytes(a.T, a.T.copy())


def test_kernel_argument_checks():
    k = sk.kernels("baseline")
    csr = sk.CSR(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        k.spmm(csr.rowptr, csr.cols, csr.vals, np.ones((2, 4, 5), np.float32), np.ones((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="unknown kernel path"):
        sk.kernels("avx9000")


# ----- WinogradConv -------------------------------------------------------------------------------

def wconv(shape, K, *, weights, sparse, tile=4, r=3, pad=1, relu=False, dtype=np.float32, seed=0):
    return make_layer("WinogradConv", [shape], dtype=dtype, seed=seed,
                      convolution_param={"num_output": K, "kernel_size": r, "pad": pad,
                                         "weight_filler": {"type": "gaussian", "std": 1.0},
                                         "bias_filler": {"type": "gaussian", "std": 1.0}},
                      winograd_param={"tile": tile, "weights": weights, "winograd_relu": relu, "sparse": sparse})


def _mask(layer, density, seed):
    K, C = layer.params[0].shape[:2]
    a = layer.alpha
    m = (np.random.default_rng(seed).random((K, C, a, a)) < density).astype(np.float64)
    if K > 1:
        m[1] = 0                    # a filter pruned away entirely
    m[:, :, 0, 1] = 0               # a tile position pruned in every kernel
    return m


def _run(layer, bottoms, tops, g):
    layer.forward(bottoms, tops)
    tops[0].diff[...] = g
    bottoms[0].diff[...] = 0
    layer.backward(tops, [True], bottoms)
    return tops[0].data.copy(), bottoms[0].diff.copy(), [p.diff.copy() for p in layer.params]


@pytest.mark.parametrize("weights", ["spatial_masked", "winograd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.4, 1.0])
def test_winograd_sparse_path_equals_the_dense_path(weights, dtype, relu, density):
    shape, K = (2, 5, 9, 11), 6
    outs = []
    for sparse in ("on", "off"):
        layer, bottoms, tops = wconv(shape, K, weights=weights, sparse=sparse, relu=relu, dtype=dtype)
        mask = _mask(layer, density, 3)
        layer.set_mask("winograd", mask)
        g = np.random.default_rng(4).standard_normal(tops[0].shape)
        y, dx, dp = _run(layer, bottoms, tops, g)
        if weights == "winograd":     # the sparse path computes dL/dQ at unmasked entries only
            dp[0] *= mask             # (the solver steps along the masked gradient anyway)
        outs.append((y, dx, dp))
        assert layer.execution().startswith("sparse" if sparse == "on" else "dense")
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    (y1, dx1, dp1), (y0, dx0, dp0) = outs
    np.testing.assert_allclose(y1, y0, **tol)
    np.testing.assert_allclose(dx1, dx0, **tol)
    for a, b in zip(dp1, dp0):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("weights,tile,r", [("spatial_masked", 2, 3), ("winograd", 4, 3), ("winograd", 2, 5)])
def test_gradients_with_the_sparse_path(weights, tile, r):
    layer, bottoms, tops = wconv((2, 3, 8, 7), 4, weights=weights, sparse="on", tile=tile, r=r, dtype=np.float64)
    layer.set_mask("winograd", _mask(layer, 0.4, 5))
    check_gradients(layer, bottoms, tops, max_checks=40)
    assert layer.execution().startswith("sparse")


def test_layout_is_rebuilt_when_the_mask_changes_refilled_when_the_weights_do_and_kept_otherwise():
    layer, bottoms, tops = wconv((1, 4, 8, 8), 4, weights="winograd", sparse="on")
    layer.set_mask("winograd", _mask(layer, 0.3, 1))
    sp = layer.sparse
    layer.forward(bottoms, tops)
    assert (sp.builds, sp.refills) == (1, 0)
    layer.forward(bottoms, tops)
    layer.forward(bottoms, tops)
    assert (sp.builds, sp.refills) == (1, 0)                 # nothing changed: nothing rebuilt
    layer.params[0].data *= 1.5                              # a weight update
    layer.forward(bottoms, tops)
    assert (sp.builds, sp.refills) == (1, 1)
    layer.set_mask("winograd", _mask(layer, 0.2, 2))         # pruning again
    layer.forward(bottoms, tops)
    assert (sp.builds, sp.refills) == (2, 1)
    ref, _, rtops = wconv((1, 4, 8, 8), 4, weights="winograd", sparse="off")
    ref.params[0].data[...] = layer.params[0].data
    ref.params[1].data[...] = layer.params[1].data
    ref.set_mask("winograd", layer.mask("winograd"))
    ref.forward(bottoms, rtops)
    np.testing.assert_allclose(tops[0].data, rtops[0].data, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("weights", ["spatial_masked", "winograd"])
def test_re_pruning_between_passes_keeps_the_sparse_path_equal_to_the_dense_one(weights):
    """Forward and backward, prune again to more or fewer nonzeros, forward and backward:
    the kept backward buffers follow the new layout (0.4 -> 0.2 -> 0.6 -> 0.2)."""
    shape, K = (2, 5, 9, 11), 6
    layers = [wconv(shape, K, weights=weights, sparse=sparse, dtype=np.float64) for sparse in ("on", "off")]
    g = np.random.default_rng(4).standard_normal(layers[0][2][0].shape)
    for step, density in enumerate((0.4, 0.2, 0.6, 0.2)):
        mask = _mask(layers[0][0], density, 10 + step)
        outs = []
        for layer, bottoms, tops in layers:
            layer.set_mask("winograd", mask)
            y, dx, dp = _run(layer, bottoms, tops, g)
            if weights == "winograd":
                dp[0] *= mask
            outs.append((y, dx, dp))
        assert layers[0][0].execution().startswith("sparse")
        (y1, dx1, dp1), (y0, dx0, dp0) = outs
        np.testing.assert_allclose(y1, y0, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx1, dx0, rtol=1e-10, atol=1e-10)
        for a, b in zip(dp1, dp0):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert layers[0][0].sparse.builds == 4


def test_refill_refuses_an_array_of_another_shape():
    S = np.arange(24.0).reshape(2, 3, 4)
    csr = sk.CSR(S)
    for bad in (S[:, :2], S.transpose(0, 2, 1), S.reshape(2, 4, 3)):
        with pytest.raises(ValueError, match="this CSR was made from"):
            csr.refill(bad)
        with pytest.raises(ValueError, match="this CSR was made from"):
            csr.transposed(S).refill(bad)          # a transposed CSR refills from S, not Sᵀ


def test_auto_picks_dense_above_the_break_even_and_without_a_mask():
    layer, bottoms, tops = wconv((1, 4, 8, 8), 4, weights="winograd", sparse="auto")
    layer.forward(bottoms, tops)
    assert layer.execution() == "dense 100.0%"                # no mask
    for density, path in ((min(1.0, BREAK_EVEN + 0.3), "dense"), (BREAK_EVEN / 3, "sparse")):
        m = (np.random.default_rng(0).random(layer.params[0].shape) < density).astype(float)
        layer.set_mask("winograd", m)
        layer.forward(bottoms, tops)
        assert layer.execution().startswith(path), (density, layer.execution())
    sp = SparseProducts("auto", break_even=0.5)
    assert sp.decide(np.ones((2, 2, 2), bool)) is False and sp.decide(np.eye(2, dtype=bool)[None]) is True
    assert SparseProducts("off").decide(np.zeros((1, 2, 2), bool)) is False
    with pytest.raises(ValueError, match="sparse must be one of"):
        SparseProducts("sometimes")


def test_time_command_shows_the_path_and_density(tmp_path, capsys):
    import textwrap
    from wincaffe.cli import main
    (tmp_path / "net.yaml").write_text(textwrap.dedent("""
        name: t
        layer:
          - {name: in, type: Input, top: data, input_param: {shape: [2, 4, 10, 10]}}
          - name: conv
            type: WinogradConv
            bottom: data
            top: conv
            convolution_param: {num_output: 4, kernel_size: 3}
            winograd_param: {tile: 2, weights: spatial_masked, sparse: on}
        """))
    assert main(["time", "--model", str(tmp_path / "net.yaml"), "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "path" in out.splitlines()[0] and "sparse 100.0%" in out


def test_bad_sparse_settings_are_config_errors_and_yaml_on_off_work():
    from wincaffe.errors import ConfigError
    with pytest.raises(ConfigError, match="winograd_param.sparse: must be one of auto, on, off"):
        wconv((1, 3, 6, 6), 2, weights="winograd", sparse="sometimes")
    layer, _, _ = wconv((1, 3, 6, 6), 2, weights="winograd", sparse=True)      # YAML's bare `on`
    assert layer.sparse.setting == "on"


# ----- FFTConv ----------------------------------------------------------------------------------

def fconv(shape, K, *, sparse, weights="spatial_masked", dtype=np.float32, k=3, pad=1):
    return make_layer("FFTConv", [shape], dtype=dtype, seed=1,
                      convolution_param={"num_output": K, "kernel_size": k, "pad": pad,
                                         "weight_filler": {"type": "gaussian", "std": 1.0}},
                      fft_param={"weights": weights, "sparse": sparse, "backend": "numpy"})


def _prune_spectral(layer, rate):
    from wincaffe.pruning import magnitude_mask
    layer.set_mask("spectral", magnitude_mask(layer.prune_scores("spectral"), rate,
                                              partner=layer.prune_partners("spectral")))


@pytest.mark.parametrize("weights", ["spatial_masked", "spectral"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("density", [0.0, 0.25, 1.0])
def test_fft_sparse_forward_equals_the_dense_forward(weights, dtype, density):
    outs = []
    for sparse in ("on", "off"):
        layer, bottoms, tops = fconv((3, 4, 9, 10), 5, sparse=sparse, weights=weights, dtype=dtype)
        _prune_spectral(layer, 1 - density)
        layer.forward(bottoms, tops)
        assert layer.execution().startswith("sparse" if sparse == "on" else "dense")
        if sparse == "on":    # [Re G, Im G]: each kept frequency of each (k, c) twice, no more
            assert layer.sparse._csr.nnz == 2 * np.count_nonzero(layer._Mfm)
        outs.append(tops[0].data.copy())
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(outs[0], outs[1], **tol)


def test_fft_gradients_with_the_sparse_forward():
    layer, bottoms, tops = fconv((2, 3, 7, 8), 4, sparse="on", dtype=np.float64)
    _prune_spectral(layer, 0.6)
    check_gradients(layer, bottoms, tops, max_checks=30)
    assert layer.execution().startswith("sparse")


def test_transposed_layout_is_refilled_after_a_weight_update():
    """dX uses the transposed CSR: after a weight change it must carry the new values."""
    outs = []
    for sparse in ("on", "off"):
        layer, bottoms, tops = wconv((2, 4, 8, 9), 5, weights="winograd", sparse=sparse)
        layer.set_mask("winograd", _mask(layer, 0.3, 6))
        g = np.random.default_rng(8).standard_normal(tops[0].shape)
        _run(layer, bottoms, tops, g)
        layer.params[0].data *= 1.5
        outs.append(_run(layer, bottoms, tops, g)[1])
    np.testing.assert_allclose(outs[0], outs[1], rtol=2e-4, atol=2e-4)


def test_csr_errors_and_environment_path(monkeypatch):
    k = sk.kernels("baseline")
    S = np.ones((1, 2, 3), np.float32)
    X = np.ones((1, 3, 4), np.float32)
    out = np.empty((1, 2, 4), np.float32)
    csr = sk.CSR(S)
    bad_cols = csr.cols.copy()
    bad_cols[2] = 3
    with pytest.raises(ValueError, match="column index is outside"):
        k.spmm(csr.rowptr, bad_cols, csr.vals, X, out)
    with pytest.raises(ValueError, match="column index is outside"):     # a CSR for Q = 3, X with 2 rows
        k.spmm(csr.rowptr, csr.cols, csr.vals, np.ones((1, 2, 4), np.float32), out)
    bad_ptr = csr.rowptr.copy()
    bad_ptr[1] = 7
    with pytest.raises(ValueError, match="rowptr must start at 0"):
        k.spmm(bad_ptr, csr.cols, csr.vals, X, out)
    with pytest.raises(ValueError, match="rowptr must start at 0"):
        k.sampled_dot(bad_ptr, csr.cols, out, X, np.empty(csr.nnz, np.float32))
    monkeypatch.setenv("WINCAFFE_SPARSE_PATH", "baseline")
    assert sk.kernels().SIMD == "baseline"
    monkeypatch.setenv("WINCAFFE_SPARSE_PATH", "bogus")
    layer, bottoms, tops = wconv((1, 3, 6, 6), 2, weights="winograd", sparse="off")   # never sparse: fine
    layer.forward(bottoms, tops)
    with pytest.raises(ValueError, match="unknown kernel path"):
        SparseProducts("on").kernels


def test_path_notes_and_the_break_even_boundary():
    from wincaffe.sparse_stage import sparse_setting
    layer, bottoms, tops = wconv((1, 1, 8, 8), 3, weights="winograd", sparse="on")     # C = 1: fused dense
    layer.set_mask("winograd", _mask(layer, 0.3, 1))
    layer.forward(bottoms, tops)
    assert layer.execution() == "dense fused"
    q, qb, qt = make_layer("WinogradConv", [(1, 3, 8, 8)], dtype=np.float32,
                           convolution_param={"num_output": 2, "kernel_size": 3},
                           winograd_param={"tile": 2, "weights": "winograd", "sparse": "on",
                                           "quantize": {"bits": 8, "mode": "dynamic"}})
    q.forward(qb, qt)
    assert q.execution().startswith("int8")
    sp = SparseProducts("auto", break_even=0.25)
    edge = np.zeros((1, 2, 2), bool)
    edge[0, 0, 0] = True                               # density exactly 25%: sparse
    assert sp.decide(edge) is True
    assert SparseProducts("auto", break_even=None).decide(edge) is False
    assert sparse_setting(layer, False, "f") == "off" and sparse_setting(layer, True, "f") == "on"
