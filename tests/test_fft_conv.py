"""FFTConv (Liu & Turakhia, §3.1 eq. 1, §4.2) and the FFT backends of wincaffe.transforms.fft.

References written plainly here: a direct correlation (conftest.reference_correlation,
scipy.signal per (n, k, c)) and Liu & Turakhia's F⁻¹(F(f)·F(g)·M) with numpy.fft.
"""
import sys
import warnings

import numpy as np
import pytest

from wincaffe.errors import ConfigError
from wincaffe.testing import check_gradients, make_layer
from wincaffe.transforms import fft

from conftest import reference_correlation


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """FFTW wisdom goes to a temporary folder; fast planning keeps the file quick."""
    monkeypatch.setenv("WINCAFFE_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("WINCAFFE_FFTW_PLANNER", "FFTW_ESTIMATE")


def conv(shape, K, k, pad=0, dtype=np.float32, seed=0, **fft_param):
    return make_layer("FFTConv", [shape], dtype=dtype, seed=seed,
                      convolution_param={"num_output": K, "kernel_size": k, "pad": pad,
                                         "bias_filler": {"type": "gaussian", "std": 0.5}},
                      fft_param=fft_param)


def random_mask(layer, keep=0.6, seed=3):
    """A random 0/1 half-spectrum mask that keeps or prunes conjugate pairs together."""
    K, C, Fh, Fw2 = layer.spectrum_shape
    m = (np.random.default_rng(seed).random((K, C, Fh * Fw2)) < keep)
    partner = fft.conjugate_partners(*layer.fshape)
    return m[..., np.minimum(np.arange(Fh * Fw2), partner)].reshape(layer.spectrum_shape).astype(np.float64)


def seed002_reference(x, w, b, pad, fshape, mask):
    """y = F⁻¹(F(x_pad) · conj(F(w) ⊙ M)) summed over c, cropped, + b; numpy.fft, one
    (n, k, c) at a time. conj: Caffe's correlation (see layers/fft_conv.py)."""
    N, C, H, W = x.shape
    K, _, k, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    y = np.zeros((N, K, Ho, Wo))
    for n in range(N):
        for kk in range(K):
            acc = np.zeros(fshape)
            for c in range(C):
                Fx = np.fft.rfft2(xp[n, c], s=fshape)
                Fg = np.fft.rfft2(w[kk, c].astype(np.float64), s=fshape) * mask[kk, c]
                acc += np.fft.irfft2(Fx * np.conj(Fg), s=fshape)
            y[n, kk] = acc[:Ho, :Wo] + b[kk]
    return y


# ----- forward equals a direct correlation ---------------------------------------------------

@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("C,K", [(1, 4), (3, 2), (8, 5)])
def test_forward_matches_direct_correlation(k, pad, C, K):
    layer, bottoms, tops = conv((2, C, 9, 11), K, k, pad)   # odd H and W
    layer.forward(bottoms, tops)
    ref = reference_correlation(bottoms[0].data, layer.params[0].data, layer.params[1].data, pad=pad)
    assert tops[0].shape == ref.shape
    np.testing.assert_allclose(tops[0].data, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("size", ["linear", "auto", "min", [15, 16], 13])
def test_every_fft_size_rule_is_exact(size):
    layer, bottoms, tops = conv((2, 3, 9, 11), 4, 3, 1, dtype=np.float64, fft_size=size)
    layer.forward(bottoms, tops)
    ref = reference_correlation(bottoms[0].data, layer.params[0].data, layer.params[1].data, pad=1)
    np.testing.assert_allclose(tops[0].data, ref, rtol=1e-10, atol=1e-10)


def test_fft_sizes_follow_seed002_lenet():
    """Liu & Turakhia, §4.2: masks 20×1×32×17 (conv1) and 50×20×16×9 (conv2)."""
    conv1 = conv((1, 1, 28, 28), 20, 5)[0]
    conv2 = conv((1, 20, 12, 12), 50, 5)[0]
    assert conv1.spectrum_shape == (20, 1, 32, 17)
    assert conv2.spectrum_shape == (50, 20, 16, 9)
    # auto and min: 5-smooth sizes, the same whichever backend runs the FFTs
    for backend in fft.BACKENDS:
        assert conv((1, 1, 28, 28), 2, 5, fft_size="min", backend=backend)[0].fshape == (30, 30)  # 28 → 30
        assert conv((1, 1, 28, 28), 2, 5, fft_size="auto", backend=backend)[0].fshape == (32, 32)
        assert conv((1, 1, 9, 9), 2, 5, fft_size="auto", backend=backend)[0].fshape == (15, 15)  # 13 → 15


def test_large_spectra_use_the_staged_layout(monkeypatch):
    """Above STRIDED_MAX_FREQS the FFTW plans stage through contiguous arrays."""
    monkeypatch.setattr(fft, "STRIDED_MAX_FREQS", 0)
    layer, bottoms, tops = conv((2, 3, 9, 11), 4, 3, 1, dtype=np.float64)
    layer.forward(bottoms, tops)
    ref = reference_correlation(bottoms[0].data, layer.params[0].data, layer.params[1].data, pad=1)
    np.testing.assert_allclose(tops[0].data, ref, rtol=1e-10, atol=1e-10)
    check_gradients(layer, bottoms, tops, max_checks=20)


# ----- the masked forward is Liu & Turakhia's eq. (1) -----------------------------------------------

@pytest.mark.parametrize("weights", ["spatial_masked", "spectral"])
@pytest.mark.parametrize("C", [1, 3])
def test_masked_forward_matches_seed002_equation(weights, C):
    layer, bottoms, tops = conv((2, C, 7, 8), 3, 3, 1, dtype=np.float64, weights=weights)
    W = np.asarray(np.random.default_rng(5).standard_normal((3, C, 3, 3)))
    if weights == "spectral":
        S = np.fft.rfft2(W, s=layer.fshape)
        layer.params[0].data[...] = np.stack([S.real, S.imag], axis=-1)
    else:
        layer.params[0].data[...] = W
    mask = random_mask(layer, keep=0.5)
    layer.set_mask("spectral", mask)
    layer.forward(bottoms, tops)
    ref = seed002_reference(bottoms[0].data, W, layer.params[1].data, 1, layer.fshape, mask)
    np.testing.assert_allclose(tops[0].data, ref, rtol=1e-10, atol=1e-10)
    # the mask matters, and spectrum() is what it prunes: rfft2(W) ⊙ M
    assert not np.allclose(ref, reference_correlation(bottoms[0].data, W, layer.params[1].data, pad=1))
    np.testing.assert_allclose(layer.spectrum(), np.fft.rfft2(W, s=layer.fshape) * mask, atol=1e-12)


def test_all_ones_mask_changes_nothing():
    layer, bottoms, tops = conv((2, 3, 7, 7), 4, 5, 2, weights="spatial_masked")
    layer.forward(bottoms, tops)
    ref = reference_correlation(bottoms[0].data, layer.params[0].data, layer.params[1].data, pad=2)
    np.testing.assert_allclose(tops[0].data, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert layer.mask("spectral").shape == (4, 3, 15, 8) and layer.mask("spectral").all()


def test_spectral_weights_start_from_the_filler_kernel():
    spatial, bottoms, tops = conv((2, 3, 8, 8), 4, 3, 1, dtype=np.float64, seed=7)
    spectral, b2, t2 = conv((2, 3, 8, 8), 4, 3, 1, dtype=np.float64, seed=7, weights="spectral")
    assert spectral.params[0].shape == (4, 3, 12, 7, 2)
    np.testing.assert_allclose(spectral.spectrum(), np.fft.rfft2(spatial.params[0].data, s=(12, 12)), atol=1e-12)
    spatial.forward(bottoms, tops)
    spectral.forward(b2, t2)
    np.testing.assert_allclose(t2[0].data, tops[0].data, atol=1e-12)


# ----- exact gradients -----------------------------------------------------------------------

@pytest.mark.parametrize("weights", ["spatial", "spatial_masked", "spectral"])
@pytest.mark.parametrize("shape,K,k,pad", [((2, 1, 6, 7), 3, 3, 1), ((2, 3, 5, 6), 2, 3, 0), ((2, 2, 5, 5), 4, 5, 2)])
def test_gradients(weights, shape, K, k, pad):
    layer, bottoms, tops = conv(shape, K, k, pad, dtype=np.float64, weights=weights)
    if weights != "spatial":
        layer.set_mask("spectral", random_mask(layer))
    check_gradients(layer, bottoms, tops, max_checks=40)


def test_spectral_gradient_every_entry_including_ignored_components():
    """Even Fw: the v = 0 and v = Fw/2 columns count once, the others twice; the parts
    irfft2 ignores (e.g. Im of the DC entry) get exactly zero gradient."""
    layer, bottoms, tops = conv((2, 2, 4, 5), 2, 3, 1, dtype=np.float64, weights="spectral")
    assert layer.fshape == (8, 9)
    layer.set_mask("spectral", random_mask(layer, keep=0.7))
    check_gradients(layer, bottoms, tops, max_checks=10 ** 6, check_bottoms=[])
    layer2, b2, t2 = conv((2, 2, 4, 5), 2, 3, 1, dtype=np.float64, weights="spectral", fft_size=[6, 8])
    check_gradients(layer2, b2, t2, max_checks=10 ** 6)
    t2[0].diff[...] = np.random.default_rng(0).standard_normal(t2[0].shape)
    layer2.backward(t2, [False], b2)
    assert np.all(layer2.params[0].diff[:, :, 0, 0, 1] == 0)   # Im G[0, 0]


def test_masked_gradient_is_not_the_unmasked_one():
    layer, bottoms, tops = conv((2, 3, 6, 6), 2, 3, 1, dtype=np.float64, weights="spatial_masked")
    tops[0].diff[...] = 1.0
    layer.forward(bottoms, tops)
    layer.backward(tops, [True], bottoms)
    dx_full, dw_full = bottoms[0].diff.copy(), layer.params[0].diff.copy()
    layer.set_mask("spectral", random_mask(layer, keep=0.5))
    layer.forward(bottoms, tops)
    layer.backward(tops, [True], bottoms)
    assert not np.allclose(bottoms[0].diff, dx_full)
    assert not np.allclose(layer.params[0].diff, dw_full)


# ----- backends ------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", ["spatial", "spectral"])
def test_backends_agree(weights):
    outs = {}
    for backend in ("pyfftw", "scipy", "numpy"):
        layer, bottoms, tops = conv((3, 4, 9, 10), 5, 3, 1, backend=backend, weights=weights)
        if weights == "spectral":
            layer.set_mask("spectral", random_mask(layer))
        assert layer.backend.name == backend
        layer.forward(bottoms, tops)
        tops[0].diff[...] = np.random.default_rng(2).standard_normal(tops[0].shape)
        layer.backward(tops, [True], bottoms)
        outs[backend] = (tops[0].data.copy(), bottoms[0].diff.copy(), layer.params[0].diff.copy())
    for backend in ("scipy", "numpy"):
        for a, b in zip(outs["pyfftw"], outs[backend]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_float64_layers_compute_in_complex128():
    layer, bottoms, tops = conv((1, 2, 6, 6), 2, 3, dtype=np.float64)
    layer.forward(bottoms, tops)
    assert layer._Gc.dtype == np.complex128 and tops[0].data.dtype == np.float64
    layer32, b32, t32 = conv((1, 2, 6, 6), 2, 3)
    layer32.forward(b32, t32)
    assert layer32._Gc.dtype == np.complex64 and t32[0].data.dtype == np.float32


def test_backend_transforms_are_unnormalised_and_plans_are_reused():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6))
    for name in fft.BACKENDS:
        be = fft.get_backend(name)
        X = be.rfft2(x, (7, 8), offset=(1, 2))
        canvas = np.zeros((2, 3, 7, 8))
        canvas[..., 1:6, 2:8] = x
        np.testing.assert_allclose(X, np.fft.rfft2(canvas), atol=1e-12)
        np.testing.assert_allclose(be.irfft2(X, (7, 8)), 56 * canvas, atol=1e-10)
        fm = be.plan_r2c((2, 3), (7, 8), np.float64, freq_major=True)
        assert fm is be.plan_r2c((2, 3), (7, 8), np.float64, freq_major=True)
        fm.input[...] = canvas
        np.testing.assert_allclose(fm(), np.moveaxis(X, (0, 1), (2, 3)), atol=1e-12)
    assert list(fft.hermitian_weights(8)) == [1, 2, 2, 2, 1]
    assert list(fft.hermitian_weights(7)) == [1, 2, 2, 2]
    assert [fft.next_fast_len(n) for n in (1, 7, 13, 28, 49, 97)] == [1, 8, 15, 30, 50, 100]
    import scipy.fft
    for n in range(1, 300):
        assert fft.next_fast_len(n) == scipy.fft.next_fast_len(n, real=True)


def test_wisdom_is_saved_in_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WINCAFFE_DATA", str(tmp_path / "wisdom_here"))
    be = fft.get_backend("pyfftw")
    be.plan_r2c((3,), (10, 14), np.float32, cached=False)   # a new plan saves the wisdom
    path = tmp_path / "wisdom_here" / "fftw_wisdom"
    assert path.exists() and not be.save_wisdom()           # nothing new: no rewrite
    assert path.read_bytes().count(b"\0") == 2 and b"fftw" in path.read_bytes()
    assert not [p for p in path.parent.iterdir() if p.name != "fftw_wisdom"]  # no temp files left


def test_missing_pyfftw_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyfftw", None)   # makes `import pyfftw` raise ImportError
    fft._reset_for_tests()
    try:
        with pytest.warns(RuntimeWarning, match="pyFFTW is not available") as record:
            layer, bottoms, tops = conv((2, 3, 6, 7), 2, 3, 1)
            conv((2, 3, 6, 7), 2, 3, 1, threads=2)
            fft.get_backend("pyfftw")
        assert len([w for w in record if "pyFFTW" in str(w.message)]) == 1
        assert layer.backend.name == "scipy"
        layer.forward(bottoms, tops)
        ref = reference_correlation(bottoms[0].data, layer.params[0].data, layer.params[1].data, pad=1)
        np.testing.assert_allclose(tops[0].data, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fft.get_backend("pyfftw", threads=3)  # still no second warning
    finally:
        fft._reset_for_tests()


# ----- configuration errors and the pruning API -----------------------------------------------

@pytest.mark.parametrize("field,value", [("stride", 2), ("dilation", 2), ("group", 2)])
def test_unsupported_convolution_options(field, value):
    with pytest.raises(ConfigError, match=rf"convolution_param\.{field}: FFTConv supports only {field} 1"):
        make_layer("FFTConv", [(1, 2, 8, 8)], convolution_param={"num_output": 2, "kernel_size": 3, field: value})


def test_fft_size_too_small():
    with pytest.raises(ConfigError, match=r"fft_param\.fft_size: FFT size 9x12 is smaller than the padded input 10x10"):
        conv((1, 2, 8, 8), 2, 3, 1, fft_size=[9, 12])
    layer, bottoms, tops = conv((1, 2, 8, 8), 2, 3, 1, fft_size=10)
    bottoms[0].reshape((1, 2, 9, 8))
    with pytest.raises(ConfigError, match="fft_size"):
        layer.reshape(bottoms, tops)


@pytest.mark.parametrize("fft_param,match", [
    ({"backend": "cufft"}, r"fft_param\.backend: must be one of pyfftw, scipy, numpy"),
    ({"weights": "winograd"}, r"fft_param\.weights: must be one of"),
    ({"fft_size": "big"}, r"fft_param\.fft_size: must be linear, auto, min"),
    ({"fft_size": [8, 8, 8]}, r"fft_param\.fft_size"),
    ({"threads": -1}, r"fft_param\.threads: must be >= 0"),
])
def test_bad_fft_param(fft_param, match):
    with pytest.raises(ConfigError, match=match) as info:
        conv((1, 2, 8, 8), 2, 3, **fft_param)
    assert "layer 'fftconv' (FFTConv)" in str(info.value)


def test_mask_protocol():
    spatial = conv((1, 2, 8, 8), 3, 3)[0]
    assert spatial.prune_domains() == ("spatial",)
    with pytest.raises(ConfigError, match=r"layer 'fftconv' \(FFTConv\): cannot be pruned in the 'spectral' domain"):
        spatial.set_mask("spectral", np.ones(spatial.spectrum_shape))
    masked = conv((1, 2, 8, 8), 3, 3, weights="spatial_masked")[0]
    assert masked.prune_domains() == ("spectral", "spatial")
    with pytest.raises(ConfigError, match="mask shape"):
        masked.set_mask("spectral", np.ones((3, 2, 10, 10)))
    mask = random_mask(masked)
    masked.set_mask("spectral", mask)
    np.testing.assert_array_equal(masked.mask("spectral"), mask)
    np.testing.assert_array_equal(masked.buffers["spectral_mask"], mask)  # saved with the weights
    assert masked.prune_scores("spectral").shape == mask.shape
    assert np.all(masked.prune_scores("spectral")[mask == 0] == 0)
    masked.set_mask("spectral", None)
    assert masked.mask("spectral").all()
    spectral = conv((1, 2, 8, 8), 3, 3, weights="spectral")[0]
    spectral.set_mask("spectral", mask)
    p = spectral.params[0]
    assert p.mask.shape == p.shape and np.all(p.data[mask == 0] == 0)
    np.testing.assert_array_equal(spectral.mask("spectral"), mask)
    # the spatial domain of spatial_masked: a Param.mask on W
    wmask = np.random.default_rng(1).random(masked.params[0].shape) > 0.5
    masked.set_mask("spatial", wmask)
    assert np.all(masked.params[0].data[~wmask] == 0)
    np.testing.assert_array_equal(masked.mask("spatial"), wmask)


@pytest.mark.parametrize("fshape", [(8, 8), (7, 9), (6, 7), (9, 8)])
def test_conjugate_pairs_must_be_pruned_together(fshape):
    layer = conv((1, 2, 4, 4), 2, 3, 1, dtype=np.float64, weights="spatial_masked", fft_size=list(fshape))[0]
    partner = fft.conjugate_partners(*fshape)
    pairs = [i for i in range(partner.size) if partner[i] != i]
    assert pairs, "every size here has conjugate pairs in column 0"
    mask = np.ones(layer.spectrum_shape)
    mask.reshape(2, 2, -1)[0, 1, pairs[0]] = 0
    with pytest.raises(ConfigError, match="conjugate pair"):
        layer.set_mask("spectral", mask)
    mask.reshape(2, 2, -1)[0, 1, partner[pairs[0]]] = 0
    layer.set_mask("spectral", mask)
    # the pruned kernel stays real: the masked half spectrum is Hermitian where it must be
    G = layer.spectrum(masked=True)
    np.testing.assert_allclose(fft.hermitian_part(G, fshape[1]), G, atol=1e-12)
    full = np.fft.irfft2(G, s=fshape)
    np.testing.assert_allclose(np.fft.rfft2(full), G, atol=1e-12)


def test_hermitian_part_and_partners_against_numpy():
    rng = np.random.default_rng(0)
    for fh, fw in [(4, 4), (5, 6), (6, 5), (3, 3), (8, 2), (2, 1)]:
        X = rng.standard_normal((fh, fw // 2 + 1)) + 1j * rng.standard_normal((fh, fw // 2 + 1))
        H = fft.hermitian_part(X, fw)
        # what irfft2 reads of X is exactly H: same real output, and H is a real array's spectrum
        np.testing.assert_allclose(np.fft.irfft2(H, s=(fh, fw)), np.fft.irfft2(X, s=(fh, fw)), atol=1e-12)
        np.testing.assert_allclose(np.fft.rfft2(np.fft.irfft2(X, s=(fh, fw))), H, atol=1e-12)
        partner = fft.conjugate_partners(fh, fw).reshape(fh, -1)
        Xr = np.fft.rfft2(rng.standard_normal((fh, fw)))
        for u in range(fh):
            for v in range(fw // 2 + 1):
                j = partner[u, v]
                assert partner.reshape(-1)[j] == u * (fw // 2 + 1) + v         # an involution
                if j != u * (fw // 2 + 1) + v:
                    assert np.isclose(Xr.reshape(-1)[j], np.conj(Xr[u, v]))


def test_fft_size_is_checked_when_weights_are_loaded(tmp_path):
    from wincaffe.config import validate_net
    from wincaffe.errors import SnapshotError
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights, save_weights

    def spec(size):
        return validate_net({"name": "f", "layer": [
            {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [1, 2, 9, 9]}},
            {"name": "conv", "type": "FFTConv", "bottom": "x", "top": "y",
             "convolution_param": {"num_output": 3, "kernel_size": 3},
             "fft_param": {"weights": "spatial", "fft_size": size}}]})
    save_weights(Net(spec("linear"), TRAIN), str(tmp_path / "w.npz"))      # 11 x 11
    load_weights(Net(spec([11, 11]), TRAIN), str(tmp_path / "w.npz"))       # the same size: fine
    with pytest.raises(SnapshotError) as info:
        load_weights(Net(spec("auto"), TRAIN), str(tmp_path / "w.npz"))    # 12 x 12
    assert str(info.value) == (f"{tmp_path / 'w.npz'}: layer 'conv' (FFTConv): fft_param.fft_size is "
                               "[11, 11] in the file but [12, 12] in the net")


def test_small_kernel_dfts_match_the_ffts():
    rng = np.random.default_rng(4)
    for fshape, kshape in [((11, 13), (3, 3)), ((16, 16), (5, 5)), ((7, 8), (2, 4))]:
        w = rng.standard_normal((6,) + kshape)
        G = fft.rfft2_small(w, fshape)
        np.testing.assert_allclose(G, np.moveaxis(np.fft.rfft2(w, s=fshape), 0, 2), atol=1e-12)
        np.testing.assert_allclose(fft.rfft2_small(w, fshape, conjugate=True), np.conj(G), atol=1e-12)
        Z = rng.standard_normal(G.shape) + 1j * rng.standard_normal(G.shape)   # not Hermitian
        ref = np.fft.irfft2(np.moveaxis(Z, 2, 0), s=fshape, norm="forward")[:, :kshape[0], :kshape[1]]
        np.testing.assert_allclose(fft.irfft2_small(Z, fshape, kshape), ref, atol=1e-11)
        np.testing.assert_allclose(fft.irfft2_small(np.conj(Z), fshape, kshape, conjugate=True), ref, atol=1e-11)
        G32 = fft.rfft2_small(w.astype(np.float32), fshape)
        assert G32.dtype == np.complex64
        np.testing.assert_allclose(G32, G, rtol=1e-5, atol=1e-5)


def test_fftw_threads_give_the_same_numbers():
    layer1, bottoms, tops = conv((4, 6, 12, 12), 5, 3, 1, seed=9, threads=1)
    layer2, b2, t2 = conv((4, 6, 12, 12), 5, 3, 1, seed=9, threads=2)
    assert (layer1.backend.threads, layer2.backend.threads) == (1, 2)
    layer1.forward(bottoms, tops)
    layer2.forward(b2, t2)
    np.testing.assert_allclose(t2[0].data, tops[0].data, rtol=1e-5, atol=1e-5)


def test_spectral_mask_reaches_test_net_and_weights_file(tmp_path):
    """The spatial_masked mask is a buffer: the TEST net sees it and --weights restores it."""
    from wincaffe.config import validate_net
    from wincaffe.layer import TEST, TRAIN
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights, save_weights
    spec = validate_net({"name": "f", "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [2, 2, 9, 9], "fill": "gaussian"}},
        {"name": "conv", "type": "FFTConv", "bottom": "x", "top": "y",
         "convolution_param": {"num_output": 3, "kernel_size": 3},
         "fft_param": {"weights": "spatial_masked"}}]})
    train = Net(spec, TRAIN, dtype=np.float64)
    test = Net(spec, TEST, dtype=np.float64, share_from=train)
    layer = train.layer_by_name("conv")
    mask = random_mask(layer, keep=0.5, seed=0)
    layer.set_mask("spectral", mask)
    np.testing.assert_array_equal(test.layer_by_name("conv").mask("spectral"), mask)
    test.blobs["x"].data[...] = train.blobs["x"].data
    train.forward()
    test.forward()
    np.testing.assert_array_equal(train.blobs["y"].data, test.blobs["y"].data)
    save_weights(train, str(tmp_path / "w.npz"))
    fresh = Net(spec, TEST, dtype=np.float64)
    load_weights(fresh, str(tmp_path / "w.npz"), strict=True)
    np.testing.assert_array_equal(fresh.layer_by_name("conv").mask("spectral"), mask)


def test_fft_threads_follow_the_net_by_default():
    """fft_param.threads 0 (the default) takes the thread count of wincaffe's kernels
    (``--threads``) when the layer is set up; an explicit count stands."""
    from wincaffe.threads import get_num_threads, set_num_threads
    before = get_num_threads()
    try:
        for n in (1, 2):
            set_num_threads(n)
            assert conv((1, 2, 8, 8), 2, 3)[0].backend.threads == n
            assert conv((1, 2, 8, 8), 2, 3, threads=3)[0].backend.threads == 3
    finally:
        set_num_threads(before)


_FFTW_RUNTIME_AFTER_ONE_THREAD = """
import json, os
import numpy as np
import wincaffe
from threadpoolctl import threadpool_info
from wincaffe.threads import set_num_threads
from wincaffe.transforms import fft
set_num_threads(1)
fft.get_backend("pyfftw", 1).plan_r2c((2, 3), (8, 8), np.float32, cached=False)    # loads pyFFTW
set_num_threads(2)
print(json.dumps({os.path.basename(i["filepath"]): i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "openmp"}))
"""


def test_set_num_threads_reaches_pyfftws_own_openmp_runtime(tmp_path):
    """pyFFTW's wheel brings a libgomp of its own, which takes its thread count from
    OMP_NUM_THREADS when it is loaded; FFTW's threaded plans run on that many threads.
    A later set_num_threads(2) must raise it too (before, it stayed at 1 and every
    2-thread FFT ran on one thread)."""
    import json
    import os
    import subprocess
    pytest.importorskip("pyfftw")
    env = dict(os.environ, WINCAFFE_DATA=str(tmp_path), WINCAFFE_FFTW_PLANNER="FFTW_ESTIMATE")
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _FFTW_RUNTIME_AFTER_ONE_THREAD], env=env, capture_output=True,
                         text=True, check=True).stdout
    runtimes = json.loads(out)
    if len(runtimes) < 2:
        pytest.skip(f"one OpenMP runtime in the process ({runtimes}): pyFFTW shares wincaffe's")
    assert set(runtimes.values()) == {2}, runtimes


@pytest.mark.parametrize("C,K,pad", [(3, 4, 1), (5, 2, 0), (1, 3, 2)])   # C ≤ K, C > K, the outer path
def test_float64_gradients_equal_the_direct_ones(C, K, pad):
    """dW and dx of the unmasked layer in float64 equal the direct correlation's to 1e-10
    (a scale or conjugation slip of 1e-7 fails here, not only in a finite-difference check)."""
    from scipy.signal import convolve, correlate
    layer, bottoms, tops = conv((2, C, 7, 6), K, 3, pad, dtype=np.float64, seed=4)
    rng = np.random.default_rng(5)
    bottoms[0].data[...] = rng.standard_normal(bottoms[0].shape)
    layer.forward(bottoms, tops)
    tops[0].diff[...] = rng.standard_normal(tops[0].shape)
    layer.backward(tops, [True], bottoms)
    x, dy, W = bottoms[0].data, tops[0].diff, layer.params[0].data
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dW = np.array([[sum(correlate(xp[n, c], dy[n, k], mode="valid") for n in range(2)) for c in range(C)]
                   for k in range(K)])
    dxp = np.array([[sum(convolve(dy[n, k], W[k, c], mode="full") for k in range(K)) for c in range(C)]
                    for n in range(2)])
    dx = dxp[:, :, pad:pad + 7, pad:pad + 6]
    np.testing.assert_allclose(layer.params[0].diff, dW, rtol=1e-10, atol=1e-10 * np.abs(dW).max())
    np.testing.assert_allclose(layer.params[1].diff, dy.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bottoms[0].diff, dx, rtol=1e-10, atol=1e-10 * np.abs(dx).max())


# ----- planes into and out of canvases (wincaffe._kernels.canvas) -----------------------------

def _special_values(shape, dtype, seed):
    """Noise with NaNs of several payloads, infinities and signed zeros mixed in."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    bits = _bits(x.reshape(-1))
    special = (np.array([0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000, 0x7F800000, 0xFF800000], np.uint32)
               if dtype == np.float32 else
               np.array([0x7FF8000000000001, 0xFFF8000000012345, 0x7FF0000000000001, 0x8000000000000000,
                         0x7FF0000000000000, 0xFFF0000000000000], np.uint64))
    idx = rng.choice(bits.size, size=min(bits.size, 3 * special.size), replace=False)
    bits[idx] = np.resize(special, idx.size)
    return x


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N,C,H,W,Fh,Fw,top,left", [
    (2, 3, 5, 4, 9, 8, 2, 1),          # small: one thread whatever the count
    (64, 20, 24, 24, 32, 32, 0, 0),    # LeNet conv1's output canvas: above SERIAL_BELOW
    (8, 40, 28, 28, 32, 32, 2, 2),     # padded input at an offset, threaded
    (3, 2, 6, 6, 6, 6, 0, 0),          # planes filling the canvas
])
def test_place_and_crop_equal_numpy_bit_for_bit(dtype, threads, N, C, H, W, Fh, Fw, top, left):
    from wincaffe._kernels import canvas
    from wincaffe.testing import omp_threads
    src = _special_values((N, C, H, W), dtype, seed=N * C)
    bias = _special_values((C,), dtype, seed=C)
    canvas_k = np.full((N, C, Fh, Fw), 7, dtype)              # the border must stay as it was
    canvas_np = canvas_k.copy()
    canvas_np[:, :, top:top + H, left:left + W] = src
    with np.errstate(invalid="ignore"):                         # inf + -inf
        out_np = np.add(canvas_np[:, :, top:top + H, left:left + W], bias[None, :, None, None])
    with omp_threads(threads):
        canvas.place(src, canvas_k, top, left)
        out_k = np.full((N, C, H, W), 5, dtype)
        canvas.crop(canvas_k, top, left, out_k, bias)
        copy_k = np.full((N, C, H, W), 5, dtype)
        canvas.crop(canvas_k, top, left, copy_k)
    np.testing.assert_array_equal(_bits(canvas_k), _bits(canvas_np))
    np.testing.assert_array_equal(_bits(out_k), _bits(out_np))
    np.testing.assert_array_equal(_bits(copy_k), _bits(src))


@pytest.mark.parametrize("call, match", [
    (lambda c: c.place(np.zeros((2, 3, 5, 5), np.float32), np.zeros((2, 3, 6, 6), np.float32), 2, 0),
     r"place: planes \(2, 3, 5, 5\) at offset \(2, 0\) do not fit the canvases \(2, 3, 6, 6\)"),
    (lambda c: c.place(np.zeros((2, 3, 5, 5), np.float32), np.zeros((2, 4, 8, 8), np.float32), 0, 0),
     r"place: planes .* do not fit"),
    (lambda c: c.crop(np.zeros((2, 3, 6, 6), np.float32), -1, 0, np.zeros((2, 3, 5, 5), np.float32)),
     r"crop: planes .* at offset \(-1, 0\)"),
    (lambda c: c.crop(np.zeros((2, 3, 6, 6), np.float32), 0, 0, np.zeros((2, 3, 5, 5), np.float32),
                      np.zeros(4, np.float32)),
     r"crop: bias has 4 elements, expected 3"),
])
def test_canvas_misfits_are_clear_errors(call, match):
    from wincaffe._kernels import canvas
    with pytest.raises(ValueError, match=match):
        call(canvas)


def test_canvas_helpers_fall_back_to_numpy_for_other_layouts():
    """Strided or mixed-dtype arrays take NumPy's slices, with the same results."""
    rng = np.random.default_rng(1)
    src = rng.standard_normal((2, 3, 8, 5)).astype(np.float32)[:, :, ::2]       # not contiguous
    can = np.zeros((2, 3, 6, 7), np.float32)
    fft.place(src, can, 1, 2)
    np.testing.assert_array_equal(can[:, :, 1:5, 2:7], src)
    assert not can[:, :, :1].any() and not can[:, :, :, :2].any()
    out = np.empty((2, 3, 4, 5), np.float32)
    fft.crop(can, 1, 2, out, np.arange(3, dtype=np.float64))                    # float64 bias
    np.testing.assert_array_equal(out, src + np.arange(3, dtype=np.float32)[None, :, None, None])
    fft.crop(can[:, :, ::-1], 1, 0, out)                                        # reversed rows
    np.testing.assert_array_equal(out, can[:, :, ::-1][:, :, 1:5, :5])


def test_canvas_helpers_handle_overlap_like_numpy():
    """Source and destination sharing memory go to NumPy, which copies as if through a
    temporary (the kernel copies row by row and would smear rows)."""
    can = np.arange(48, dtype=np.float32).reshape(2, 1, 6, 4)
    ref = can.copy()
    ref[:, :, 1:4] = ref[:, :, 0:3].copy()
    fft.place(can[:1, :, 0:3], can[:1], 1, 0)
    fft.place(can[1:, :, 0:3], can[1:], 1, 0)
    np.testing.assert_array_equal(can, ref)
    can = np.arange(24, dtype=np.float32).reshape(1, 1, 6, 4)
    expected = can[:, :, 0:3] + 1
    fft.crop(can, 0, 0, can[:, :, 1:4], np.ones(1, np.float32))
    np.testing.assert_array_equal(can[:, :, 1:4], expected)


@pytest.mark.parametrize("src", [np.ones((1, 1, 2, 3), np.float32),                  # the kernel's path
                                 np.ones((1, 1, 2, 6), np.float32)[..., ::2]])       # NumPy's path
def test_canvas_helpers_check_offsets_and_bias_on_every_path(src):
    can = np.zeros((1, 1, 6, 6), np.float32)
    for top, left in [(-4, 0), (0, -1), (5, 0), (0, 4)]:
        with pytest.raises(ValueError, match=r"place: planes \(1, 1, 2, 3\) at offset .* do not fit"):
            fft.place(src, can, top, left)
        with pytest.raises(ValueError, match=r"crop: planes \(1, 1, 2, 3\) at offset .* do not fit"):
            fft.crop(can, top, left, np.empty_like(src))
    with pytest.raises(ValueError, match=r"crop: bias has shape \(2,\), expected \(1,\)"):
        fft.crop(can, 0, 0, np.empty((1, 1, 2, 3), np.float32), np.ones(2, np.float32))
    big = np.zeros((2, 3, 6, 6), np.float32)
    big[:, :, 1:3, 2:5] = np.arange(2 * 3 * 2 * 3, dtype=np.float32).reshape(2, 3, 2, 3)
    bias = np.arange(6, dtype=np.float32)[::2]                                        # not contiguous
    out = np.empty((2, 3, 2, 3), np.float32)
    fft.crop(big, 1, 2, out, bias)
    np.testing.assert_array_equal(out, big[:, :, 1:3, 2:5] + bias[None, :, None, None])


@pytest.mark.parametrize("C,K,pad", [(3, 4, 1), (5, 2, 0), (1, 3, 2)])
def test_two_thread_layer_equals_one_thread_layer(monkeypatch, C, K, pad):
    """On two OpenMP threads the three products take the OpenMP path (each frequency one
    single-threaded BLAS gemm; for C = 1 there are no matrix products) and the crops
    the threaded kernel; the outputs and every gradient equal the one-thread layer's
    in float64 to rounding."""
    from wincaffe._kernels import gemm
    from wincaffe.testing import omp_threads
    calls = []
    if gemm.BACKEND != "numpy":
        kernel = gemm._omp_batched_matmul
        monkeypatch.setattr(gemm, "_omp_batched_matmul", lambda *a: calls.append(a[0].dtype) or kernel(*a))
    shape = (6, C, 30, 30)
    results = []
    for threads in (1, 2):
        with omp_threads(threads):
            layer, bottoms, tops = conv(shape, K, 3, pad, dtype=np.float64, seed=4, threads=threads,
                                            weights="spatial_masked")
            layer.set_mask("spectral", random_mask(layer))
            layer.forward(bottoms, tops)
            tops[0].diff[...] = np.random.default_rng(5).standard_normal(tops[0].shape)
            layer.backward(tops, [True], bottoms)
            results.append([tops[0].data.copy(), bottoms[0].diff.copy()] + [p.diff.copy() for p in layer.params])
        if threads == 1:
            assert calls == []
    if gemm.BACKEND != "numpy":     # C = 1: outer product and matrix-vector products (gemv)
        assert set(calls) == (set() if C == 1 else {np.dtype(np.complex128)}) and len(calls) == 3 * (C > 1)
    for one, two in zip(*results):
        np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-12 * np.abs(one).max())
