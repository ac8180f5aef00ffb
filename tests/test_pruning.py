"""Pruning: exact counts per scope with ties, shrinking masks, conjugate pairs, the AGP
schedule, the walk over a net, and ``wincaffe prune`` / ``wincaffe density`` end to end
on a small synthetic data set (errors included)."""
import json
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wincaffe import pruning
from wincaffe.cli import main
from wincaffe.errors import ConfigError
from wincaffe.layer import TRAIN
from wincaffe.net import Net
from wincaffe.snapshot import load_npz
from wincaffe.transforms import fft
from test_solver import toy_net  # the toy data set's nets



# ----- the selection rule ------------------------------------------------------------------

def round_half_up(rate, n):
    """round(R·n), halves up, in exact rational arithmetic on R as written."""
    x = Fraction(repr(rate)) * n
    return int(x) + (1 if x - int(x) >= Fraction(1, 2) else 0)


def brute_force_mask(scores, rate):
    """Plain reference: sort (score, index) pairs, prune the first round(R·n)."""
    flat = scores.reshape(-1)
    n = flat.size
    k = round_half_up(rate, n)
    order = sorted(range(n), key=lambda i: (flat[i], i))
    keep = np.ones(n)
    keep[order[:k]] = 0
    return keep.reshape(scores.shape)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.55, 0.9, 1.0])
def test_layer_scope_is_exact_and_equals_a_plain_sort(rate):
    scores = np.abs(np.random.default_rng(1).standard_normal((4, 3, 3, 3)))
    scores[0, 0, :2] = 0.5                               # ties: the first entries go first
    mask = pruning.magnitude_mask(scores, rate, scope="layer")
    np.testing.assert_array_equal(mask, brute_force_mask(scores, rate))
    assert (mask == 0).sum() == round_half_up(rate, scores.size)


def test_counts_round_halves_up_exactly():
    """0.58 of 25 is 14.5: 15 pruned (floor(0.58·25 + 0.5) in binary floating point gives 14)."""
    assert pruning.prune_count(0.58, 25) == 15 and pruning.prune_count(0.145, 100) == 15
    assert pruning.prune_count(0.5, 9) == 5 and pruning.prune_count(0.5, 8) == 4
    for n in (7, 9, 16, 25, 36, 64, 100, 150, 144, 320):
        for rate in [i / 1000 for i in range(0, 1001, 7)] + [i / 100 for i in range(101)]:
            assert pruning.prune_count(rate, n) == round_half_up(rate, n), (rate, n)
    mask = pruning.magnitude_mask(np.arange(18.0).reshape(1, 2, 3, 3), 0.5, scope="kernel")
    assert [(mask[0, c] == 0).sum() for c in range(2)] == [5, 5]


def test_ties_are_broken_by_position():
    scores = np.ones((2, 1, 2, 2))
    mask = pruning.magnitude_mask(scores, 0.5, scope="layer")
    np.testing.assert_array_equal(mask.reshape(-1), [0, 0, 0, 0, 1, 1, 1, 1])
    mask = pruning.magnitude_mask(scores, 0.5, scope="kernel")
    np.testing.assert_array_equal(mask.reshape(-1), [0, 0, 1, 1, 0, 0, 1, 1])


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.8])
def test_kernel_scope_prunes_round_R_n_in_every_kernel(rate):
    scores = np.abs(np.random.default_rng(2).standard_normal((5, 4, 6, 6)))
    mask = pruning.magnitude_mask(scores, rate, scope="kernel")
    per_kernel = (mask.reshape(20, -1) == 0).sum(axis=1)
    assert np.all(per_kernel == round_half_up(rate, 36))
    for k in range(5):
        for c in range(4):
            np.testing.assert_array_equal(mask[k, c], brute_force_mask(scores[k, c], rate))


def test_filter_scope_removes_the_filters_of_smallest_norm():
    rng = np.random.default_rng(3)
    scores = np.abs(rng.standard_normal((6, 3, 2, 2)))
    scores[4] *= 0.01                                    # the two weakest filters
    scores[1] *= 0.02
    mask = pruning.magnitude_mask(scores, 0.34, scope="filter")      # round(2.04) = 2 filters
    assert [k for k in range(6) if not mask[k].any()] == [1, 4]
    assert all(mask[k].all() for k in (0, 2, 3, 5))
    # a filter pruned earlier stays pruned and counts toward the rate
    again = pruning.magnitude_mask(scores * mask, 0.34, scope="filter", current=mask)
    np.testing.assert_array_equal(again, mask)


def test_filter_scope_ranks_by_the_frobenius_norm():
    """Filter 0 has one large weight (norm 3), filter 1 four ones (norm 2): the Frobenius
    norm prunes filter 1; a sum of magnitudes or of square roots would prune filter 0."""
    scores = np.array([[3.0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]]).reshape(3, 1, 2, 2)
    mask = pruning.magnitude_mask(scores, 0.34, scope="filter")        # round(1.02) = 1 filter
    assert mask[0].all() and not mask[1].any() and mask[2].all()


def test_a_pair_that_would_overshoot_takes_the_next_single_or_trades_one():
    partner = np.array([0, 2, 1, 4, 3, 5])       # singles 0 and 5, pairs {1, 2} and {3, 4}
    scores = np.array([[0.1, 0.2, 0.2, 0.3, 0.3, 0.4]])
    none = np.zeros_like(scores, bool)
    # target 2: single 0, then pair {1,2} would make 3: the next single (5) instead
    np.testing.assert_array_equal(pruning.select(scores, none, 2, partner)[0], [1, 0, 0, 0, 0, 1])
    # target 4 with singles gone: {0}, {1,2}, then {3,4} would make 5, {5} is single: take it
    np.testing.assert_array_equal(pruning.select(scores, none, 4, partner)[0], [1, 1, 1, 0, 0, 1])
    # only pairs left after the singles: the last single taken is traded for the pair
    partner = np.array([0, 2, 1, 4, 3])          # single 0, pairs {1,2}, {3,4}
    scores = np.array([[0.1, 0.2, 0.2, 0.3, 0.3]])
    np.testing.assert_array_equal(pruning.select(scores, np.zeros_like(scores, bool), 2, partner)[0],
                                  [0, 1, 1, 0, 0])


@settings(max_examples=40, deadline=None)
@given(fh=st.integers(1, 7), fw=st.integers(1, 7), rate=st.floats(0, 1), seed=st.integers(0, 10 ** 6),
       scope=st.sampled_from(["layer", "kernel", "global"]))
def test_layer_kernel_and_global_masks_never_split_pairs(fh, fw, rate, seed, scope):
    partner = fft.conjugate_partners(fh, fw)
    rng = np.random.default_rng(seed)
    shapes = [(2, 3, fh, fw // 2 + 1), (3, 1, fh, fw // 2 + 1)]
    scores = [rng.random(s) for s in shapes]          # pairs NOT of equal score: the map must hold them
    if scope == "global":
        masks = pruning.global_masks(scores, rate, partners=[partner, partner])
    else:
        masks = [pruning.magnitude_mask(s, rate, scope=scope, partner=partner) for s in scores]
    for m in masks:
        flat = m.reshape(m.shape[0] * m.shape[1], -1)
        np.testing.assert_array_equal(flat, flat[:, partner])


def test_global_scope_uses_one_threshold_over_layers():
    a = np.arange(8, dtype=float).reshape(2, 1, 2, 2)          # 0..7
    b = np.arange(8, 16, dtype=float).reshape(2, 2, 2) - 7.5   # -> abs below
    b = np.abs(b)                                               # 0.5 .. 7.5
    ma, mb = pruning.global_masks([a, b], 0.5)
    pruned = np.concatenate([a.reshape(-1)[ma.reshape(-1) == 0], b.reshape(-1)[mb.reshape(-1) == 0]])
    kept = np.concatenate([a.reshape(-1)[ma.reshape(-1) == 1], b.reshape(-1)[mb.reshape(-1) == 1]])
    assert pruned.size == 8 and pruned.max() <= kept.min()


def test_masks_only_shrink_across_rounds():
    rng = np.random.default_rng(4)
    scores = np.abs(rng.standard_normal((3, 2, 4, 4)))
    mask = None
    last = np.ones_like(scores)
    for rate in (0.3, 0.5, 0.7, 0.9):
        scores = scores * last + rng.random(scores.shape) * 0.1 * last   # retraining moves the kept ones
        mask = pruning.magnitude_mask(scores, rate, scope="layer", current=last)
        assert np.all(mask <= last)                              # nothing pruned comes back
        assert (mask == 0).sum() == round_half_up(rate, scores.size)
        last = mask
    # a lower rate than the current one changes nothing
    np.testing.assert_array_equal(pruning.magnitude_mask(scores * last, 0.2, current=last), last)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), rows=st.integers(1, 4), rate=st.floats(0, 1), seed=st.integers(0, 10 ** 6),
       pin=st.floats(0, 0.5))
def test_select_properties(n, rows, rate, seed, pin):
    """Exactly round(R·n) per row (or the pinned ones if more), pinned kept pruned, and
    every pruned free entry scores at most every kept entry."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, (rows, n)).astype(float)           # many ties
    pinned = rng.random((rows, n)) < pin
    target = int(np.floor(rate * n + 0.5))
    out = pruning.select(scores, pinned, target)
    for r in range(rows):
        assert out[r][pinned[r]].all()
        assert out[r].sum() == max(target, pinned[r].sum())
        free = out[r] & ~pinned[r]
        if free.any() and (~out[r]).any():
            assert scores[r][free].max() <= scores[r][~out[r]].min()


@settings(max_examples=60, deadline=None)
@given(fh=st.integers(1, 9), fw=st.integers(1, 9), rate=st.floats(0, 1), seed=st.integers(0, 10 ** 6))
def test_conjugate_pairs_are_never_split(fh, fw, rate, seed):
    partner = fft.conjugate_partners(fh, fw)
    n = partner.size
    scores = np.random.default_rng(seed).random((3, n))
    scores = np.maximum(scores, scores[:, partner])                  # pairs have equal moduli
    target = int(np.floor(rate * n + 0.5))
    out = pruning.select(scores, np.zeros_like(scores, bool), target, partner)
    np.testing.assert_array_equal(out, out[:, partner])
    singles = (partner == np.arange(n)).sum()
    if singles:                                                      # the count is exact
        assert np.all(out.sum(axis=1) == target)
    else:
        assert np.all(np.abs(out.sum(axis=1) - target) <= 1)


def test_agp_needs_room_for_its_steps():
    with pytest.raises(ConfigError, match=r"--retrain-iters: the agp schedule needs at least 2 x --agp-steps = 20"):
        pruning.agp_plan(0.9, 19, steps=10)
    with pytest.raises(ConfigError, match=r"--agp-steps: must be >= 1"):
        pruning.agp_plan(0.9, 100, steps=0)
    plan = pruning.agp_plan(0.9, 20, steps=10)
    assert [t for t, _ in plan] == list(range(1, 11)) and plan[-1] == (10, 0.9)


def test_agp_schedule_values():
    """Zhu & Gupta: s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³."""
    kw = dict(initial=0.1, final=0.9, start=100, steps=4, interval=50)
    assert pruning.agp_rate(0, **kw) == 0.1 and pruning.agp_rate(100, **kw) == 0.1
    assert pruning.agp_rate(300, **kw) == 0.9 and pruning.agp_rate(1000, **kw) == 0.9
    assert np.isclose(pruning.agp_rate(150, **kw), 0.9 - 0.8 * 0.75 ** 3)
    assert np.isclose(pruning.agp_rate(200, **kw), 0.9 - 0.8 * 0.5 ** 3)
    plan = pruning.agp_plan(0.8, 1000, steps=5)
    assert [t for t, _ in plan] == [100, 200, 300, 400, 500]          # the first half
    assert np.allclose([r for _, r in plan], [0.8 - 0.8 * (1 - j / 5) ** 3 for j in range(1, 6)])
    assert plan[-1][1] == 0.8 and all(a < b for (_, a), (_, b) in zip(plan, plan[1:]))


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x", float("nan")])
def test_bad_rates_are_clear_errors(bad):
    with pytest.raises(ConfigError, match=r"--rate: must be"):
        pruning.check_rate(bad)


# ----- layers and nets --------------------------------------------------------------------------

NET = toy_net("tiny", """
  - name: conv1
    type: WinogradConv
    bottom: data
    top: conv1
    convolution_param: {num_output: 4, kernel_size: 3, pad: 1}
    winograd_param: {tile: 2, weights: spatial_masked}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - name: conv2
    type: FFTConv
    bottom: conv1
    top: conv2
    convolution_param: {num_output: 4, kernel_size: 3}
    fft_param: {weights: spatial_masked}
  - {name: pool, type: Pooling, bottom: conv2, top: pool, pooling_param: {pool: MAX, kernel_size: 2, stride: 2}}
  - name: conv3
    type: Convolution
    bottom: pool
    top: conv3
    convolution_param: {num_output: 5, kernel_size: 2}
""", "conv3")

SOLVER = """
net: net.yaml
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: fixed
max_iter: 60
test_iter: 3
test_interval: 60
display: 0
snapshot: 0
snapshot_prefix: tiny
random_seed: 3
"""


@pytest.fixture
def tiny(train_toy, monkeypatch):
    """A trained tiny net on the toy data: (solver path, weights path)."""
    monkeypatch.setenv("WINCAFFE_FFTW_PLANNER", "FFTW_ESTIMATE")
    d = train_toy(NET, SOLVER)
    return str(d / "solver.yaml"), str(d / "dense" / "tiny_iter_60.npz")


def test_default_targets_are_the_conv_layers_in_their_own_domains(tiny, tmp_path):
    net = Net(str(tmp_path / "net.yaml"), TRAIN)
    targets = pruning.select_targets(net)
    assert [(t.name, t.domain) for t in targets] == [("conv1", "winograd"), ("conv2", "spectral"),
                                                    ("conv3", "spatial")]
    assert [t.name for t in pruning.select_targets(net, skip_first=True)] == ["conv2", "conv3"]
    assert [(t.name, t.domain) for t in pruning.select_targets(net, ["conv2", "ip"], domain="spatial")] == \
        [("conv2", "spatial"), ("ip", "spatial")]
    with pytest.raises(ConfigError, match=r"layer 'conv3' \(Convolution\): --domain: cannot be pruned in the "
                                          r"'winograd' domain \(its domains: spatial\)"):
        pruning.select_targets(net, ["conv1", "conv3"], domain="winograd")


def test_every_domain_prunes_exactly_and_fft_kernels_stay_real(tiny, tmp_path):
    net = Net(str(tmp_path / "net.yaml"), TRAIN, dtype=np.float64)
    targets = pruning.select_targets(net)
    rows = pruning.prune(targets, 0.7)
    for t, row in zip(targets, rows):
        n = t.layer.prune_scores(t.domain).size
        expected = int(np.floor(0.7 * n + 0.5))
        # exact, except a conjugate pair may make the FFT layer one over when no single is left
        assert row["pruned"] == expected and row["entries"] == n
        assert row["nonzero"] == n - expected
    fftl = net.layer_by_name("conv2")
    G = fftl.spectrum(masked=True)
    np.testing.assert_allclose(np.fft.rfft2(np.fft.irfft2(G, s=fftl.fshape)), G, atol=1e-12)  # real kernel
    mask = fftl.mask("spectral").reshape(4, 4, -1)
    np.testing.assert_array_equal(mask, mask[..., fft.conjugate_partners(*fftl.fshape)])
    # the forward now multiplies by the pruned transform-domain weights
    net.forward()
    w = net.layer_by_name("conv1")
    assert np.all(w.transformed_weights()[w.mask("winograd") == 0] == 0)


def test_cross_domain_global_scope_is_refused(tiny, tmp_path):
    net = Net(str(tmp_path / "net.yaml"), TRAIN)
    with pytest.raises(ConfigError, match=r"--scope: global scope over layers of different domains: "
                                          r"conv1 \(winograd\), conv2 \(spectral\), conv3 \(spatial\)"):
        pruning.compute_masks(pruning.select_targets(net), 0.5, "global")
    with pytest.raises(ConfigError, match=r"global scope over layers of different domains: "
                                          r"conv1 \(winograd\), conv3 \(spatial\)"):
        pruning.compute_masks(pruning.select_targets(net, ["conv1", "conv3"]), 0.5, "global")
    assert len(pruning.select_targets(net, ["conv3", "conv3"])) == 1       # a layer named twice is one


def test_non_finite_weights_are_an_error_and_masks_give_exact_zeros(tiny, tmp_path):
    from wincaffe.layer import Param
    p = Param("w", np.array([np.inf, np.nan, 1.0, 2.0], np.float32))
    p.set_mask([0, 0, 1, 1])
    np.testing.assert_array_equal(p.data, [0, 0, 1, 2])
    net = Net(str(tmp_path / "net.yaml"), TRAIN)
    net.layer_by_name("conv3").params[0].data[0, 0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match=r"layer 'conv3' \(Convolution\): has non-finite spatial weights"):
        pruning.compute_masks(pruning.select_targets(net, ["conv3"]), 0.5)


def test_a_param_mask_cannot_be_changed_in_place():
    """Writing into the kept mask would leave the newly pruned weights nonzero (set_mask
    zeroes them): the mask is read-only, and the input array is copied, not kept."""
    from wincaffe.layer import Param
    p = Param("w", np.array([1.0, 2.0, 3.0], np.float32))
    given = np.array([1, 1, 0], np.float32)
    p.set_mask(given)
    with pytest.raises(ValueError, match="read-only"):
        p.mask[0] = 0
    given[0] = 0                                      # the caller's array is not the mask
    np.testing.assert_array_equal(p.mask, [1, 1, 0])
    np.testing.assert_array_equal(p.data, [1, 2, 0])
    p.set_mask([0, 1, 0])                             # the way to change it
    np.testing.assert_array_equal(p.data, [0, 2, 0])


def test_weights_files_with_broken_masks_are_refused(tiny, tmp_path):
    from wincaffe.errors import SnapshotError
    from wincaffe.snapshot import load_weights, save_npz
    solver, weights = tiny
    arrays = load_npz(weights)
    net = Net(str(tmp_path / "net.yaml"), TRAIN)
    cases = {
        "buffer/conv1/winograd_mask": (lambda a: a * 0.5, "the winograd_mask buffer holds values other than 0 and 1"),
        "buffer/conv2/spectral_mask": (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 4 * 7, 0, a),
                                       "conjugate pair"),
    }
    for key, (edit, words) in cases.items():
        bad = dict(arrays)
        bad[key] = edit(arrays[key]).astype(arrays[key].dtype)
        path = str(tmp_path / "bad.npz")
        save_npz(path, bad)
        with pytest.raises(SnapshotError, match=words):
            load_weights(net, path)
    # masks without the FFT size they were made for
    bad = {k: v for k, v in arrays.items() if k != "const/conv2/fft_size"}
    save_npz(str(tmp_path / "noconst.npz"), bad)
    with pytest.raises(SnapshotError, match=r"layer 'conv2' \(FFTConv\): the file has masks but no "
                                            r"fft_param.fft_size"):
        load_weights(net, str(tmp_path / "noconst.npz"))
    targets = pruning.select_targets(net, ["conv2", "conv3"], domain="spatial")
    masks = pruning.compute_masks(targets, 0.5, "global")
    total = sum(m.size for m in masks.values())
    assert sum((m == 0).sum() for m in masks.values()) == int(np.floor(0.5 * total + 0.5))


# ----- the command line ---------------------------------------------------------------------------

def test_prune_retrain_then_test_reproduces_the_accuracy(tiny, tmp_path, capsys):
    solver, weights = tiny
    out = tmp_path / "pruned"
    assert main(["prune", "--solver", solver, "--weights", weights, "--rate", "0.6", "--retrain-iters", "20",
                 "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "net_pruned.json").read_text())
    assert {"accuracy_dense", "accuracy_pruned", "accuracy_retrained"} <= set(report)
    assert [r["name"] for r in report["layers"]] == ["conv1", "conv2", "conv3"]
    for r in report["layers"]:
        assert {"name", "domain", "entries", "nonzero", "density"} <= set(r)
        assert abs(r["density"] - 0.4) < 0.05
    assert f"accuracy_retrained = {report['accuracy_retrained']:.4f}" in printed
    csv_lines = (out / "net_pruned.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,type,domain,entries,pruned,nonzero,density") and len(csv_lines) == 5
    # an ordinary weights file with the masks inside: `test` gives the reported accuracy
    arrays = load_npz(str(out / "net_pruned.npz"))
    assert "buffer/conv1/winograd_mask" in arrays and "mask/conv3/0" in arrays
    assert "const/conv2/fft_size" in arrays
    assert main(["test", "--model", str(tmp_path / "net.yaml"), "--weights", str(out / "net_pruned.npz"),
                 "--iterations", "3"]) == 0
    assert f"accuracy = {report['accuracy_retrained']:.4f}" in capsys.readouterr().out
    # without retraining the pruned accuracy drops, and `test` reproduces that one too
    assert main(["prune", "--solver", solver, "--weights", weights, "--rate", "0.9", "--retrain-iters", "0",
                 "--output", str(tmp_path / "p90"), "--no-progress"]) == 0
    capsys.readouterr()
    p90 = json.loads((tmp_path / "p90" / "net_pruned.json").read_text())
    assert p90["accuracy_pruned"] < p90["accuracy_dense"] - 0.1
    assert main(["test", "--model", str(tmp_path / "net.yaml"), "--weights", str(tmp_path / "p90" / "net_pruned.npz"),
                 "--iterations", "3"]) == 0
    assert f"accuracy = {p90['accuracy_pruned']:.4f}" in capsys.readouterr().out
    # and `train --weights` continues with the masks fixed
    assert main(["train", "--solver", solver, "--weights", str(out / "net_pruned.npz"), "--max-iter", "10",
                 "--output", str(tmp_path / "again"), "--no-progress"]) == 0
    again = load_npz(str(tmp_path / "again" / "tiny_iter_10.npz"))
    np.testing.assert_array_equal(again["buffer/conv1/winograd_mask"], arrays["buffer/conv1/winograd_mask"])
    assert np.all(again["param/conv3/0"][arrays["mask/conv3/0"] == 0] == 0)


@pytest.mark.parametrize("schedule,extra", [("rounds", ["--rates", "0.3,0.5,0.7"]),
                                            ("agp", ["--rate", "0.7", "--agp-steps", "4"])])
def test_schedules_reach_the_final_rate(tiny, tmp_path, schedule, extra):
    solver, weights = tiny
    out = tmp_path / schedule
    assert main(["prune", "--solver", solver, "--weights", weights, "--schedule", schedule, *extra,
                 "--retrain-iters", "16", "--output", str(out), "--no-progress", "--scope", "kernel"]) == 0
    report = json.loads((out / "net_pruned.json").read_text())
    assert report["rate"] == 0.7 and report["schedule"] == schedule
    if schedule == "rounds":
        assert [r["rate"] for r in report["rounds"]] == [0.3, 0.5, 0.7]
    arrays = load_npz(str(out / "net_pruned.npz"))
    per_kernel = (arrays["mask/conv3/0"].reshape(20, -1) == 0).sum(axis=1)
    assert np.all(per_kernel == 3)                           # round(0.7 · 4) in every (k, c) kernel
    wmask = arrays["buffer/conv1/winograd_mask"].reshape(4, -1)
    assert np.all((wmask == 0).sum(axis=1) == int(np.floor(0.7 * 16 + 0.5)))


def test_sensitivity_scan_writes_a_table_and_a_plot(tiny, tmp_path, capsys):
    solver, weights = tiny
    out = tmp_path / "sens"
    assert main(["prune", "--solver", solver, "--weights", weights, "--sensitivity", "--rates", "0.5,1.0",
                 "--layers", "conv1,conv3", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "conv1 (winograd)" in printed and "conv3 (spatial)" in printed
    report = json.loads((out / "net_sensitivity.json").read_text())
    assert report["rates"] == [0.5, 1.0] and set(report["accuracy"]) == {"conv1", "conv3"}
    png = (out / "net_sensitivity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # the scan leaves the weights as they were: a dense test gives the dense accuracy again
    assert main(["test", "--model", str(tmp_path / "net.yaml"), "--weights", weights, "--iterations", "3"]) == 0
    assert f"accuracy = {report['accuracy_dense']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--rate", "1.5"], "wincaffe: error: --rate: must be in [0, 1]"),
    (["--rate", "0.5", "--layers", "conv9"], "wincaffe: error: --layers: no layer named 'conv9' in net 'tiny' "
                                             "(prunable layers: conv1, conv2, conv3, ip)"),
    (["--rate", "0.5", "--layers", "pool"], "wincaffe: error: layer 'pool' (Pooling): --layers: has no "
                                            "prunable domain"),
    (["--rate", "0.5", "--scope", "global"], "wincaffe: error: --scope: global scope over layers of different "
                                             "domains"),
    (["--rate", "0.5", "--layers", "ip", "--scope", "kernel"], "wincaffe: error: layer 'ip' (InnerProduct): "
                                                               "--scope: kernel scope needs kernels"),
    (["--rate", "0.5", "--layers", "conv3", "--domain", "spectral"], "wincaffe: error: layer 'conv3' "
                                                                     "(Convolution): --domain: cannot be pruned"),
    (["--schedule", "rounds", "--rates", "0.5,0.3"], "wincaffe: error: --rates: must not decrease"),
    (["--schedule", "agp"], "wincaffe: error: --agp: the agp schedule needs --rate"),
    (["--schedule", "agp", "--rate", "0.7", "--retrain-iters", "0"], "wincaffe: error: --retrain-iters: the agp "
                                                                     "schedule needs at least 2 x --agp-steps"),
    (["--schedule", "agp", "--rate", "0.7", "--agp-steps", "0"], "wincaffe: error: --agp-steps: must be >= 1"),
    (["--rate", "0.5", "--retrain-epochs", "nan"], "wincaffe: error: --retrain-epochs: must be a number"),
    (["--rate", "0.5", "--retrain-epochs", "inf"], "wincaffe: error: --retrain-epochs: must be a number"),
    (["--rate", "0.5", "--retrain-epochs", "-1"], "wincaffe: error: --retrain-epochs: must be a number"),
    (["--rate", "0.5", "--retrain-iters", "-1"], "wincaffe: error: --retrain-iters: must be >= 0"),
    (["--rate", "0.5", "--test-iterations", "0"], "wincaffe: error: --test-iterations: must be >= 1"),
    (["--rate", "0.5", "--layers", ","], "wincaffe: error: --layers: names no layer"),
    (["--schedule", "rounds", "--rates", ""], "wincaffe: error: --rates: needs at least one rate"),
])
def test_bad_prune_arguments_are_one_line(tiny, tmp_path, capsys, args, message):
    solver, weights = tiny
    code = main(["prune", "--solver", solver, "--weights", weights, "--output", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(message.replace("--agp: ", "--rate: ")), err[-1]
    assert not any("Traceback" in line for line in err)
    assert not os.path.exists(tmp_path / "x" / "net_pruned.npz")


def test_agp_from_already_pruned_weights_starts_at_their_sparsity(tiny, tmp_path, capsys):
    solver, weights = tiny
    assert main(["prune", "--solver", solver, "--weights", weights, "--rate", "0.5", "--retrain-iters", "0",
                 "--output", str(tmp_path / "p50"), "--no-progress"]) == 0
    assert main(["prune", "--solver", solver, "--weights", str(tmp_path / "p50" / "net_pruned.npz"),
                 "--schedule", "agp", "--rate", "0.8", "--agp-steps", "3", "--retrain-iters", "12",
                 "--output", str(tmp_path / "agp"), "--no-progress"]) == 0
    plan = json.loads((tmp_path / "agp" / "net_pruned.json").read_text())["rounds"][0]["agp_plan"]
    assert [t for t, _ in plan] == [2, 4, 6]
    s_i = 0.5
    assert np.allclose([r for _, r in plan], [0.8 + (s_i - 0.8) * (1 - j / 3) ** 3 for j in (1, 2, 3)], atol=2e-3)


def test_sensitivity_treats_global_scope_as_one_layer_at_a_time(tiny, tmp_path, capsys):
    solver, weights = tiny
    assert main(["prune", "--solver", solver, "--weights", weights, "--sensitivity", "--scope", "global",
                 "--rates", "0.5", "--output", str(tmp_path / "s")]) == 0


def test_density_command(tiny, tmp_path, capsys):
    solver, weights = tiny
    assert main(["density", "--model", str(tmp_path / "net.yaml"), "--weights", weights, "--iterations", "3",
                 "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["conv1"]["domain"] == "winograd" and rows["conv3"]["domain"] == "spatial"
    assert rows["conv3"]["batches"] == 3
    # conv3 reads max-pooled ReLU outputs... of an FFT conv without ReLU: dense, unlike a ReLU's output
    assert 0 < rows["conv1"]["mean"] <= 1 and rows["conv1"]["std"] >= 0
