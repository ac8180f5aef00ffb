"""Multiply accounting: each formula against a count by hand, the sparse counts against
brute force over small random tensors and masks, the totals, ``wincaffe mults``, and
the VGG-nagadomi figures of Liu et al. §4."""
import itertools
import json
import os

import numpy as np
import pytest

from wincaffe import counting
from wincaffe.cli import main
from wincaffe.testing import make_layer
from wincaffe.transforms import fft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sparse_input(shape, density, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * (rng.random(shape) < density)


# ----- dense formulas, by hand ------------------------------------------------------------

def test_convolution_direct_count_with_pad_stride_and_odd_sizes():
    layer, b, t = make_layer("Convolution", [(2, 2, 7, 5)], convolution_param={
        "num_output": 3, "kernel_size": 3, "pad": 1, "stride": 2})
    # output 4 x 3 (rows (7 + 2 - 3)//2 + 1, cols (5 + 2 - 3)//2 + 1): 3·2·9 products per output
    assert layer.count_mults()["direct"] == 3 * 2 * 9 * 4 * 3 == 648


def test_inner_product_direct_count():
    layer, b, t = make_layer("InnerProduct", [(4, 3, 2, 2)], inner_product_param={"num_output": 5})
    assert layer.count_mults()["direct"] == 5 * 12


@pytest.mark.parametrize("tile,r,pad,H,W,tiles", [(2, 3, 0, 7, 5, 3 * 2), (4, 3, 1, 9, 6, 3 * 2),
                                                   (4, 5, 2, 11, 13, 3 * 4), (6, 3, 0, 8, 8, 1)])
def test_winograd_counts_with_overhanging_tiles(tile, r, pad, H, W, tiles):
    layer, b, t = make_layer("WinogradConv", [(1, 3, H, W)], convolution_param={
        "num_output": 2, "kernel_size": r, "pad": pad}, winograd_param={"tile": tile})
    Ho, Wo = H + 2 * pad - r + 1, W + 2 * pad - r + 1
    assert (-(-Ho // tile)) * (-(-Wo // tile)) == tiles            # the last row/column overhangs
    a = tile + r - 1
    c = layer.count_mults()
    assert c["direct"] == 2 * 3 * r * r * Ho * Wo
    assert c["winograd"] == a * a * 2 * 3 * tiles


def test_winograd_transform_counts_for_f2_3():
    """F(2,3) with points 0, ±1, ∞: Bᵀ and Aᵀ hold only 0 and ±1 (no multiplies), G six halves:
    G W Gᵀ costs 6·(3 + 4) multiplies per kernel, and only when the weights are spatial."""
    for weights, kernel_part in (("spatial", 2 * 3 * 6 * 7), ("winograd", 0)):
        layer, b, t = make_layer("WinogradConv", [(1, 3, 6, 6)], convolution_param={
            "num_output": 2, "kernel_size": 3}, winograd_param={"tile": 2, "weights": weights})
        assert counting.nontrivial_entries(layer.transform.G_exact) == 6
        assert counting.nontrivial_entries(layer.transform.BT_exact) == 0
        assert layer.count_mults()["transforms"] == kernel_part


def test_winograd_transform_counts_for_f4_3():
    """F(4,3): the input and output transforms cost 2α·n(Bᵀ) per tile and channel and
    (α + m)·n(Aᵀ) per tile and filter; n counted on the float matrices here."""
    layer, b, t = make_layer("WinogradConv", [(1, 3, 8, 8)], convolution_param={
        "num_output": 2, "kernel_size": 3}, winograd_param={"tile": 4, "weights": "winograd"})
    AT, G, BT = (np.asarray(M, float) for M in layer.transform.matrices(np.float64))

    def n(M):
        return int(np.sum((np.abs(M) > 1e-12) & (np.abs(np.abs(M) - 1) > 1e-12)))
    T = 2 * 2                                  # 6 x 6 output, tiles of 4: 2 x 2 (overhanging)
    assert layer.count_mults()["transforms"] == 3 * T * 2 * 6 * n(BT) + 2 * T * (6 + 4) * n(AT)
    assert n(BT) > 0 and n(AT) > 0


def test_fft_counts():
    layer, b, t = make_layer("FFTConv", [(1, 2, 9, 8)], convolution_param={
        "num_output": 3, "kernel_size": 3, "pad": 1}, fft_param={"weights": "spatial_masked"})
    Fh, Fw = layer.fshape
    assert (Fh, Fw) == (9 + 2 + 2, 8 + 2 + 2)
    c = layer.count_mults()
    assert c["fft"] == 4 * 3 * 2 * Fh * (Fw // 2 + 1) == c["fft_masked"]
    assert c["direct"] == 3 * 2 * 9 * 9 * 8
    one = int(round(Fh * Fw * np.log2(Fh * Fw)))
    assert c["transforms"] == (2 + 3) * one + 3 * 2 * one      # inputs, outputs, kernels
    mask = (np.random.default_rng(0).random(layer.spectrum_shape) < 0.3).astype(float)
    partner = fft.conjugate_partners(Fh, Fw)
    mask = mask.reshape(3, 2, -1)[..., np.minimum(np.arange(partner.size), partner)].reshape(layer.spectrum_shape)
    layer.set_mask("spectral", mask)
    assert layer.count_mults()["fft_masked"] == 4 * int(mask.sum())


# ----- sparse counts against brute force ----------------------------------------------------------

def brute_conv_pairs(x, w, pad, stride=1, dilation=1):
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (H + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (W + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    total = 0
    for n, k, i, j, c, u, v in itertools.product(range(N), range(K), range(oh), range(ow), range(C),
                                                 range(kh), range(kw)):
        if w[k, c, u, v] != 0 and xp[n, c, i * stride + u * dilation, j * stride + v * dilation] != 0:
            total += 1
    return total


@pytest.mark.parametrize("pad,stride,dilation", [(0, 1, 1), (1, 2, 1), (2, 1, 2), (1, 3, 1)])
def test_direct_sparse_count_is_exact(pad, stride, dilation):
    x = sparse_input((2, 3, 7, 6), 0.4, 1)
    w = sparse_input((4, 3, 3, 3), 0.5, 2)
    assert counting.conv_nonzero_products(x, w, pad, stride, dilation) == brute_conv_pairs(x, w, pad, stride, dilation)
    layer, b, t = make_layer("Convolution", [x.shape], convolution_param={
        "num_output": 4, "kernel_size": 3, "pad": pad, "stride": stride, "dilation": dilation})
    layer.params[0].data[...] = w
    b[0].data[...] = x
    layer.forward(b, t)
    assert layer.count_sparse_mults(b)["direct_sparse"] == brute_conv_pairs(x, w, pad, stride, dilation)


def test_inner_product_sparse_count_is_exact():
    layer, b, t = make_layer("InnerProduct", [(3, 2, 2, 3)], inner_product_param={"num_output": 4})
    x = sparse_input((3, 2, 2, 3), 0.5, 3)
    w = sparse_input((4, 12), 0.6, 4)
    b[0].data[...] = x
    layer.params[0].data[...] = w
    layer.forward(b, t)
    brute = sum(1 for n in range(3) for k in range(4) for d in range(12) if x.reshape(3, -1)[n, d] and w[k, d])
    assert layer.count_sparse_mults(b)["direct_sparse"] == brute


@pytest.mark.parametrize("tile,r,pad,relu,weights", [(2, 3, 1, True, "spatial_masked"), (4, 3, 0, False, "winograd"),
                                                     (2, 5, 2, True, "winograd"), (4, 5, 1, False, "spatial_masked")])
def test_winograd_sparse_count_is_exact(tile, r, pad, relu, weights):
    """Against U = (G W Gᵀ) ⊙ mask and V = [ReLU](Bᵀ d B) rebuilt tile by tile in NumPy."""
    N, C, H, W, K = 2, 3, 7, 9, 2
    layer, b, t = make_layer("WinogradConv", [(N, C, H, W)], convolution_param={
        "num_output": K, "kernel_size": r, "pad": pad}, winograd_param={"tile": tile, "weights": weights,
                                                                        "winograd_relu": relu})
    a = layer.alpha
    mask = (np.random.default_rng(5).random((K, C, a, a)) < 0.4).astype(float)
    layer.set_mask("winograd", mask)
    b[0].data[...] = sparse_input((N, C, H, W), 0.5, 6)
    layer.forward(b, t)
    AT, G, BT = layer.transform.matrices(np.float64)
    if weights == "winograd":
        U = layer.params[0].data * mask
    else:
        U = np.einsum("ij,kcjl,ml->kcim", G, layer.params[0].data, G) * mask
    Ho, Wo = H + 2 * pad - r + 1, W + 2 * pad - r + 1
    th, tw = -(-Ho // tile), -(-Wo // tile)
    xp = np.zeros((N, C, th * tile + r - 1, tw * tile + r - 1))
    xp[:, :, pad:pad + H, pad:pad + W] = b[0].data
    brute = 0
    for n, c, i, j in itertools.product(range(N), range(C), range(th), range(tw)):
        V = BT @ xp[n, c, i * tile:i * tile + a, j * tile:j * tile + a] @ BT.T
        if relu:
            V = np.maximum(V, 0)
        nzV = np.abs(V) > 1e-12
        brute += int(sum(np.count_nonzero(U[k, c][nzV]) for k in range(K)))
    assert layer.count_sparse_mults(b)["winograd_sparse"] == brute
    if weights != "winograd":
        assert layer.count_sparse_mults(b)["direct_sparse"] == brute_conv_pairs(b[0].data, layer.params[0].data, pad)


# ----- totals and the command --------------------------------------------------------------------

def test_total_adds_stand_ins_for_layers_without_a_count():
    rows = [{"direct": 100, "direct_sparse": 40, "winograd": 50, "winograd_sparse": 10, "transforms": 7},
            {"direct": 20, "direct_sparse": 5}, {"direct": 30}]
    total = counting.total_row(rows)
    assert total["direct"] == 150 and total["winograd"] == 100 and total["direct_sparse"] == 75
    assert total["winograd_sparse"] == 10 + 5 + 30 and total["transforms"] == 7
    assert total["fft"] is None                      # no layer runs an FFT: no FFT total


def test_mults_json_parses_and_the_total_is_the_sum_of_its_layers(capsys):
    assert main(["mults", "--model", os.path.join(ROOT, "nets", "vgg_nagadomi_winograd.yaml"),
                 "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    layers, total = report["layers"], report["total"]
    assert [l["name"] for l in layers][:2] == ["conv1", "conv2"] and len(layers) == 11
    for key in ("direct", "winograd"):
        assert total[key] == sum(l[key] if l[key] is not None else l["direct"] for l in layers)
    assert all(isinstance(l["direct"], int) for l in layers)


def test_vgg_nagadomi_figures_of_liu_et_al(capsys):
    """Liu et al. §4: 2.3e8 multiplies dense and 1.1e8 with Winograd F(2x2, 3x3)."""
    assert main(["mults", "--model", os.path.join(ROOT, "nets", "vgg_nagadomi.yaml"), "--format", "json"]) == 0
    dense = json.loads(capsys.readouterr().out)["total"]["direct"]
    assert main(["mults", "--model", os.path.join(ROOT, "nets", "vgg_nagadomi_winograd.yaml"), "--format", "json"]) == 0
    wino = json.loads(capsys.readouterr().out)["total"]["winograd"]
    assert abs(dense / 2.3e8 - 1) < 0.03 and abs(wino / 1.1e8 - 1) < 0.10
    assert dense == 233_515_008 and wino == 106_702_848


def test_mults_table_and_csv(capsys):
    path = os.path.join(ROOT, "nets", "vgg_nagadomi.yaml")
    assert main(["mults", "--model", path]) == 0
    out = capsys.readouterr().out
    assert "233,515,008" in out and out.splitlines()[0].split()[:3] == ["layer", "type", "direct"]
    assert main(["mults", "--model", path, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,type,direct,direct_sparse,winograd") and lines[-1].startswith("total,")


def test_inner_product_with_axis_2_counts_every_row():
    layer, b, t = make_layer("InnerProduct", [(2, 3, 4)], inner_product_param={"num_output": 5, "axis": 2})
    assert layer.count_mults()["direct"] == 3 * 4 * 5          # 3 rows of 4 inputs per sample
    x = sparse_input((2, 3, 4), 0.5, 8)
    b[0].data[...] = x
    layer.forward(b, t)
    W = layer.params[0].data
    brute = sum(1 for n in range(2) for i in range(3) for k in range(5) for d in range(4)
                if x[n, i, d] and W[k, d])
    assert layer.count_sparse_mults(b)["direct_sparse"] == brute


def test_measured_counts_are_per_image_of_each_layers_own_batch():
    """count_net over 2 batches: a layer fed batch 4 divides its sums by 8 images, even when
    the net's first layer is an Input of batch 1."""
    from wincaffe.config import validate_net
    from wincaffe.layer import TEST
    from wincaffe.net import Net
    spec = validate_net({"name": "m", "layer": [
        {"name": "aux", "type": "Input", "top": "aux", "input_param": {"shape": [1, 2]}},
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [4, 2, 6, 5], "fill": "gaussian"}},
        {"name": "relu", "type": "ReLU", "bottom": "x", "top": "x"},
        {"name": "conv", "type": "Convolution", "bottom": "x", "top": "y",
         "convolution_param": {"num_output": 3, "kernel_size": 3, "pad": 1}},
        {"name": "ip", "type": "InnerProduct", "bottom": "y", "top": "z", "inner_product_param": {"num_output": 2}}]})
    net = Net(spec, TEST, dtype=np.float64)
    conv = net.layer_by_name("conv")
    conv.params[0].data[...] *= np.random.default_rng(1).random(conv.params[0].shape) < 0.5
    rows, total = counting.count_net(net, batches=2)
    by = {r["name"]: r for r in rows}
    x = net.blobs["x"].data                                     # the same input both times (Input)
    expected = brute_conv_pairs(x, conv.params[0].data, 1) / 4
    assert by["conv"]["direct_sparse"] == int(round(expected))
    assert by["conv"]["direct"] == 3 * 2 * 9 * 6 * 5
    assert 0 < by["conv"]["activation_density"] < 1 and by["conv"]["activation_density_std"] == 0
    assert total["direct_sparse"] == by["conv"]["direct_sparse"] + by["ip"]["direct_sparse"]
    assert total["direct"] == by["conv"]["direct"] + by["ip"]["direct"]


@pytest.mark.mnist
def test_mults_with_weights_measures_sparse_counts(tmp_path, capsys):
    net = os.path.join(ROOT, "nets", "lenet5_pad1_3x3_winograd.yaml")
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    from wincaffe.snapshot import save_weights
    n = Net(net, TRAIN)
    n.layer_by_name("conv2").set_mask("winograd", (np.random.default_rng(0).random((50, 20, 4, 4)) < 0.3))
    save_weights(n, str(tmp_path / "w.npz"))
    assert main(["mults", "--model", net, "--weights", str(tmp_path / "w.npz"), "--batches", "2",
                 "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["images"] == 200 and rep["batches"] == 2
    by = {r["name"]: r for r in rep["layers"]}
    c2 = by["conv2"]
    assert abs(c2["weight_density"] - 0.3) < 0.02
    # at most the weights' 30% (MNIST's blank borders make conv1's output, and so V, zero in places)
    assert 0.05 < c2["winograd_sparse"] / c2["winograd"] <= 0.32
    assert c2["activation_density"] < 1
    assert c2["direct_sparse"] <= c2["direct"] and by["conv1"]["direct_sparse"] < by["conv1"]["direct"]
    assert rep["total"]["winograd_sparse"] == sum(r["winograd_sparse"] if r["winograd_sparse"] is not None
                                                  else r["direct_sparse"] for r in rep["layers"])
    assert "reduction_transforms" not in rep["total"]


def test_gemm_flops_per_iteration_of_lenet5_by_hand():
    from wincaffe.counting import gemm_flops_per_iteration
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    net = Net(os.path.join(ROOT, "nets", "lenet5.yaml"), TRAIN)
    batch = 64
    per_image = {"conv1": 20 * 25 * 24 * 24, "conv2": 50 * 500 * 8 * 8, "ip1": 500 * 800, "ip2": 10 * 500}
    passes = {"conv1": 2, "conv2": 3, "ip1": 3, "ip2": 3}      # conv1 does not propagate to the data
    expect = sum(2 * per_image[n] * batch * passes[n] for n in per_image)
    assert gemm_flops_per_iteration(net) == expect == 843_648_000


def test_memory_traffic_of_lenet5_by_hand():
    """Bytes per pass (float32, batch 64): every array each pass reads or writes, counted
    by hand from the shapes."""
    from wincaffe.counting import memory_traffic
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    net = Net(os.path.join(ROOT, "nets", "lenet5.yaml"), TRAIN)
    t = {r["name"]: r for r in memory_traffic(net)}
    f4, B = 4, 64
    x, c1 = B * 28 * 28 * f4, B * 20 * 24 * 24 * f4                 # data, conv1's top
    w1 = (20 * 25 + 20) * f4
    col1, out1 = 25 * B * 576 * f4, c1                              # im2col (25, N·576), GEMM (20, N·576)
    # x read, col written and read, W and b read, (20, N·576) written and read, y written
    assert t["conv1"]["forward"] == x + 2 * col1 + w1 + 2 * out1 + c1
    # no input gradient (the data): dY read twice (layout, db), its layout written and read, col read,
    # dWᵀ written and read (20·25 floats), dW db written
    assert t["conv1"]["backward"] == 2 * c1 + 2 * out1 + col1 + 2 * 20 * 25 * f4 + w1
    p1 = B * 20 * 12 * 12 * f4
    c2, w2 = B * 50 * 8 * 8 * f4, (50 * 500 + 50) * f4
    col2, out2 = 500 * B * 64 * f4, c2
    # with an input gradient: W and the dY layout read again, dcol written and read, dx written
    assert t["conv2"]["backward"] == (2 * c2 + 2 * out2 + col2 + 2 * 50 * 500 * f4 + w2
                                      + (50 * 500 * f4 + out2 + 2 * col2 + p1))
    argmax1 = p1                                                     # int32, the top's shape
    assert t["pool1"] == {"name": "pool1", "type": "Pooling", "forward": c1 + p1 + argmax1,
                          "backward": p1 + argmax1 + c1}
    p2, i1 = B * 50 * 4 * 4 * f4, B * 500 * f4
    w_ip1 = (500 * 800 + 500) * f4
    assert t["ip1"]["forward"] == p2 + w_ip1 + i1 and t["ip1"]["backward"] == i1 + p2 + 2 * w_ip1 + p2
    assert t["relu1"]["forward"] == 2 * i1 and t["relu1"]["backward"] == 3 * i1   # in place: y, dy, dx
    assert t["mnist"]["backward"] == 0 and t["mnist"]["forward"] == x + B * f4


def test_memory_traffic_of_the_fft_and_winograd_conv2_by_hand():
    """LeNet-5's conv2 (20 → 50 channels, 12×12 → 8×8, batch 64) as FFTConv on the 16×16
    canvas (16 × 9 half spectra, complex64) and as WinogradConv F(4×4, 5×5) (α = 8, 2×2
    tiles per image, products as GEMMs since C > 2; conv1, C = 1, fused)."""
    from wincaffe.counting import memory_traffic
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    B, f4, c8 = 64, 4, 8
    x, y = B * 20 * 12 * 12 * f4, B * 50 * 8 * 8 * f4
    params = (50 * 20 * 25 + 50) * f4
    t = {r["name"]: r for r in memory_traffic(Net(os.path.join(ROOT, "nets", "lenet5_fft.yaml"), TRAIN))}
    xc, yc = B * 20 * 256 * f4, B * 50 * 256 * f4                   # real canvases
    X, Y, G = B * 20 * 144 * c8, B * 50 * 144 * c8, 50 * 20 * 144 * c8
    assert t["conv2"]["forward"] == x + 2 * xc + 2 * X + params + 2 * G + 2 * Y + yc + 2 * y
    # C ≤ K: X read, conjugated, read; then the input gradient
    assert t["conv2"]["backward"] == (2 * y + 2 * yc + Y + (3 * X + Y) + 2 * G + params
                                      + 3 * G + Y + 2 * X + xc + 2 * x)
    t = {r["name"]: r for r in memory_traffic(Net(os.path.join(ROOT, "nets", "lenet5_winograd.yaml"), TRAIN))}
    params = (50 * 20 * 64 + 50) * f4                               # Q in the Winograd domain
    V, M, U = 64 * 20 * B * 4 * f4, 64 * 50 * B * 4 * f4, 64 * 50 * 20 * f4
    assert t["conv2"]["forward"] == x + 2 * V + params + 2 * U + y + 2 * M
    assert t["conv2"]["backward"] == 2 * y + V + 2 * U + params + 2 * M + (U + M + 2 * V + x)
    x1, y1 = B * 28 * 28 * f4, B * 20 * 24 * 24 * f4                # conv1: fused, no input gradient
    V1, U1, p1 = 64 * 1 * B * 36 * f4, 64 * 20 * f4, (20 * 64 + 20) * f4
    assert t["conv1"]["forward"] == x1 + 2 * V1 + p1 + 2 * U1 + y1
    assert t["conv1"]["backward"] == 2 * y1 + V1 + 2 * U1 + p1


def test_memory_traffic_of_ave_pooling_and_an_fft_layer_with_more_inputs_than_outputs():
    from wincaffe.testing import make_layer
    layer, bottoms, tops = make_layer("Pooling", [(2, 3, 8, 8)], dtype=np.float32,
                                      pooling_param={"pool": "AVE", "kernel_size": 2, "stride": 2})
    x, y = 2 * 3 * 64 * 4, 2 * 3 * 16 * 4
    assert layer.memory_traffic(bottoms, tops, [True]) == (x + y, y + x)
    assert layer.memory_traffic(bottoms, tops, [False]) == (x + y, 0)
    layer, bottoms, tops = make_layer("FFTConv", [(2, 6, 8, 8)], dtype=np.float32,
                                      convolution_param={"num_output": 2, "kernel_size": 3})
    N, C, K, Fh, Fw2 = 2, 6, 2, 10, 6                                # linear canvas 10×10
    X, Y, G = N * C * Fh * Fw2 * 8, N * K * Fh * Fw2 * 8, K * C * Fh * Fw2 * 8
    fwd, bwd = layer.memory_traffic(bottoms, tops, [False])
    x, y, yc, params = N * C * 64 * 4, N * K * 36 * 4, N * K * 100 * 4, (K * C * 9 + K) * 4
    assert bwd == 2 * y + 2 * yc + Y + (X + 3 * Y) + 2 * G + params     # C > K: D conjugated instead of X
