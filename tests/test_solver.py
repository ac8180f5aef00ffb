"""Solver: the update rule, masks, NaN handling, atomic snapshots and bit-exact resume."""
import os
import re
import textwrap

import numpy as np
import pytest

from wincaffe.data import DATASETS
from wincaffe.errors import SnapshotError, TrainingError
from wincaffe.snapshot import load_npz, load_weights, save_npz
from wincaffe.solver import Solver

def toy_net(name, body, features):
    """The YAML of a toy-data net: its TRAIN and TEST Data layers (batches of 8 and 10),
    ``body`` (layer entries, indented as list items under ``layer:``), then a 3-class
    InnerProduct on the blob ``features`` with accuracy (TEST) and softmax loss."""
    return f"""
name: {name}
layer:
  - {{name: data, type: Data, top: [data, label], include: {{phase: TRAIN}},
     data_param: {{source: toy, split: train, batch_size: 8}}, transform_param: {{scale: 0.0625}}}}
  - {{name: data, type: Data, top: [data, label], include: {{phase: TEST}},
     data_param: {{source: toy, split: test, batch_size: 10}}, transform_param: {{scale: 0.0625}}}}
{body.strip(chr(10))}
  - {{name: ip, type: InnerProduct, bottom: {features}, top: ip, inner_product_param: {{num_output: 3}}}}
  - {{name: acc, type: Accuracy, bottom: [ip, label], top: accuracy, include: {{phase: TEST}}}}
  - {{name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}}
"""


NET = toy_net("toy", """
  - name: conv
    type: Convolution
    bottom: data
    top: conv
    param: [{lr_mult: 1}, {lr_mult: 2}]
    convolution_param: {num_output: 4, kernel_size: 3, weight_filler: {type: xavier}}
  - {name: pool, type: Pooling, bottom: conv, top: pool, pooling_param: {pool: MAX, kernel_size: 2, stride: 2}}
  - {name: relu, type: ReLU, bottom: pool, top: pool}
  - {name: drop, type: Dropout, bottom: pool, top: pool, dropout_param: {dropout_ratio: 0.2}}
""", "pool")

SOLVER = """
net: net.yaml
base_lr: 0.05
momentum: 0.9
weight_decay: 0.001
lr_policy: inv
gamma: 0.001
power: 0.75
max_iter: 40
test_iter: 3
test_interval: 20
display: 10
snapshot: 20
snapshot_prefix: toy
random_seed: 7
type: {kind}
"""


def toy_data(split):
    """3 classes of 1x10x10 byte images: a bright bar in one of three rows, plus noise."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = 60 if split == "train" else 30
    labels = rng.integers(0, 3, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 1, 10, 10)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 2 + 3 * c, :] = 250
    return images, labels


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "toy", toy_data)

    def make(kind="SGD", **edits):
        """Write net.yaml and solver.yaml with each ``old=new`` text edit applied to both."""
        net, text = textwrap.dedent(NET), SOLVER.format(kind=kind)
        for k, v in edits.items():
            net, text = net.replace(k, v), text.replace(k, v)
        (tmp_path / "net.yaml").write_text(net)
        path = tmp_path / "solver.yaml"
        path.write_text(text)
        return str(path)

    return make


def all_params(solver):
    return [p.data.copy() for p in solver.net.params]


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "Adam"])
def test_resume_is_bit_identical(toy, tmp_path, kind):
    solver_path = toy(kind)
    straight = Solver(solver_path, output_dir=str(tmp_path / "a"), progress=False)
    straight.solve()
    first = Solver(solver_path, output_dir=str(tmp_path / "b"), progress=False, max_iter=20)
    first.solve()
    state = tmp_path / "b" / "toy_iter_20.solverstate.npz"
    assert state.exists() and (tmp_path / "b" / "toy_iter_20.npz").exists()
    resumed = Solver(solver_path, output_dir=str(tmp_path / "b"), progress=False)
    resumed.solve(resume_from=str(state))
    assert resumed.iter == straight.iter == 40
    for a, b in zip(all_params(straight), all_params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert straight.last_test == resumed.last_test


def test_resume_with_random_shift_is_bit_identical(toy, tmp_path):
    solver_path = toy(**{"batch_size: 8}, transform_param: {scale: 0.0625}":
                         "batch_size: 8}, transform_param: {scale: 0.0625, random_shift: 2}"})
    straight = Solver(solver_path, output_dir=str(tmp_path / "a"), progress=False)
    straight.solve()
    first = Solver(solver_path, output_dir=str(tmp_path / "b"), progress=False, max_iter=20)
    first.solve()
    resumed = Solver(solver_path, output_dir=str(tmp_path / "b"), progress=False)
    resumed.solve(resume_from=str(tmp_path / "b" / "toy_iter_20.solverstate.npz"))
    for a, b in zip(all_params(straight), all_params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert "random_shift: 2" in (tmp_path / "net.yaml").read_text()


def test_training_learns_toy_problem(toy, tmp_path):
    s = Solver(toy(), output_dir=str(tmp_path / "out"), progress=False)
    result = s.solve()
    assert result["accuracy"] >= 0.9
    assert sorted(os.listdir(tmp_path / "out")) == ["toy_iter_20.npz", "toy_iter_20.solverstate.npz",
                                             "toy_iter_40.npz", "toy_iter_40.solverstate.npz"]


def test_sgd_update_matches_formula(toy, tmp_path):
    s = Solver(toy(), output_dir=str(tmp_path), progress=False)
    s.net.forward_backward()
    p = s.net.layer_by_name("conv").params[1]  # bias: lr_mult 2
    before, grad = p.data.copy(), p.diff.copy()
    lr = s.apply_update()
    expected = before - lr * 2 * (grad + 0.001 * before)  # first step: history was zero
    np.testing.assert_allclose(p.data, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "Adam"])
@pytest.mark.parametrize("clip", [False, True])
def test_mask_keeps_pruned_weights_zero(toy, tmp_path, kind, clip):
    """Through momentum, weight decay (L2 and L1), clipping and every solver type."""
    edits = {"gamma: 0.001": "gamma: 0.001\nclip_gradients: 0.01"} if clip else {}
    s = Solver(toy(kind, **edits), output_dir=str(tmp_path), progress=False, max_iter=15)
    w = s.net.layer_by_name("conv").params[0]
    s.step(5)                                   # some momentum first, then prune mid-training
    mask = np.random.default_rng(3).random(w.shape) > 0.5
    w.set_mask(mask)
    s.step(10)
    assert np.all(w.data[~mask] == 0) and np.all(w.data[mask] != 0)
    assert np.all(s.history[s.params.index(w)][~mask] == 0)       # no stale momentum left
    if kind == "Adam":
        assert np.all(s.history2[s.params.index(w)][~mask] == 0)  # nor a stale second moment
    s.snapshot()
    # masks travel with the weights file
    arrays = load_npz(str(tmp_path / "toy_iter_15.npz"))
    np.testing.assert_array_equal(arrays["mask/conv/0"], mask.astype(np.float32))


def test_l1_decay_keeps_masked_weights_zero(toy, tmp_path):
    s = Solver(toy(**{"gamma: 0.001": "gamma: 0.001\nregularization_type: L1"}), output_dir=str(tmp_path),
               progress=False, max_iter=10)
    w = s.net.layer_by_name("ip").params[0]
    mask = np.random.default_rng(4).random(w.shape) > 0.3
    w.set_mask(mask)
    s.step(10)
    assert np.all(w.data[~mask] == 0) and np.all(w.data[mask] != 0)


def _winograd_twin(toy, kind, weights, **edits):
    cp = "convolution_param: {num_output: 4, kernel_size: 3, weight_filler: {type: xavier}}"
    wp = f"{cp}\n    winograd_param: {{tile: 2, weights: {weights}}}"
    return toy(kind, **{"type: Convolution": "type: WinogradConv", cp: wp,
                        "dropout_ratio: 0.2": "dropout_ratio: 0.0"}, **edits)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov"])
def test_preconditioned_Q_tracks_G_W_Gt_of_the_spatial_twin(toy, tmp_path, kind):
    """The gradient note, eq. 15-19 and 27, through the solver: with the preconditioner,
    momentum and weight decay, every step keeps Q_t = G W_t Gᵀ of the spatial twin."""
    from wincaffe.transforms.winograd import transform
    G = transform(2, 3).matrices()[1]
    sp = Solver(_winograd_twin(toy, kind, "spatial"), output_dir=str(tmp_path / "s"), progress=False,
                dtype=np.float64)
    wq = Solver(_winograd_twin(toy, kind, "winograd"), output_dir=str(tmp_path / "w"), progress=False,
                dtype=np.float64)
    W, Q = sp.net.layer_by_name("conv").params[0], wq.net.layer_by_name("conv").params[0]
    assert Q.preconditioner is not None and W.preconditioner is None
    W0 = W.data.copy()
    for _ in range(4):
        np.testing.assert_allclose(Q.data, G @ W.data @ G.T, rtol=1e-10, atol=1e-12)
        sp.step(1)
        wq.step(1)
    np.testing.assert_allclose(Q.data, G @ W.data @ G.T, rtol=1e-10, atol=1e-12)
    assert np.abs(W.data - W0).max() > 1e-3                                           # it moved


def test_preconditioned_diff_stays_the_gradient(toy, tmp_path):
    """Param.diff is dL/dQ after the update; clipping acts on the preconditioned step."""
    s = Solver(_winograd_twin(toy, "SGD", "winograd", **{"gamma: 0.001": "gamma: 0.001\nclip_gradients: 1e-3"}),
               output_dir=str(tmp_path), progress=False, dtype=np.float64)
    Q = s.net.layer_by_name("conv").params[0]
    s.net.forward_backward()
    grad = Q.diff.copy()
    step = Q.step_direction(np.empty_like(grad))
    before = Q.data.copy()
    lr = s.apply_update()
    np.testing.assert_array_equal(Q.diff, grad)
    steps = [p.step_direction(np.empty_like(p.data)) for p in s.params]
    norm = np.sqrt(sum((g ** 2).sum() for g in steps))
    assert norm > 1e-3                               # clipping was active
    expected = before - lr * (step * 1e-3 / norm + 0.001 * before)
    np.testing.assert_allclose(Q.data, expected, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_is_a_clear_error(toy, tmp_path):
    s = Solver(toy(**{"base_lr: 0.05": "base_lr: 1e30"}), output_dir=str(tmp_path), progress=False)
    with pytest.raises(TrainingError, match=r"Iteration \d+: the loss is nan"):
        s.solve()


def test_weights_roundtrip_and_mismatch(toy, tmp_path):
    s = Solver(toy(), output_dir=str(tmp_path), progress=False, max_iter=5)
    s.solve()
    other = Solver(toy(), output_dir=str(tmp_path / "o"), progress=False)
    load_weights(other.net, str(tmp_path / "toy_iter_5.npz"), strict=True)
    for a, b in zip(all_params(s), all_params(other)):
        np.testing.assert_array_equal(a, b)
    arrays = load_npz(str(tmp_path / "toy_iter_5.npz"))
    arrays["param/ip/0"] = arrays["param/ip/0"][:, :-1]
    save_npz(str(tmp_path / "bad.npz"), arrays)
    with pytest.raises(SnapshotError, match=r"layer 'ip' param 0 has shape"):
        load_weights(other.net, str(tmp_path / "bad.npz"))


def test_corrupt_and_truncated_snapshots(toy, tmp_path):
    s = Solver(toy(), output_dir=str(tmp_path), progress=False, max_iter=5)
    s.solve()
    path = tmp_path / "toy_iter_5.solverstate.npz"
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="not a readable"):
        s.restore(str(tmp_path / "trunc.npz"))
    with pytest.raises(SnapshotError, match="not a solver state"):
        s.restore(str(tmp_path / "toy_iter_5.npz"))
    # a pickled object array is refused, not unpickled
    np.savez(tmp_path / "evil.npz", x=np.array([object()], dtype=object))
    with pytest.raises(SnapshotError):
        load_npz(str(tmp_path / "evil.npz"))


def test_atomic_write_leaves_no_partial_file(tmp_path):
    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError):
        save_npz(str(tmp_path / "w.npz"), {"a": np.zeros(3), "b": Boom()})
    assert os.listdir(tmp_path) == []


def test_iter_size_accumulates_gradients(toy, tmp_path):
    """iter_size 2 with batch 4 takes the same steps as iter_size 1 with batch 8
    (same samples, mean loss and mean gradient)."""
    no_dropout = {"dropout_ratio: 0.2": "dropout_ratio: 0.0", "momentum: 0.9": "momentum: 0.0",
                  "batch_size: 8": "batch_size: 4"}
    half = Solver(toy(**no_dropout, **{"type: SGD": "type: SGD\niter_size: 2"}), output_dir=str(tmp_path / "a"),
                  progress=False, max_iter=6)
    half.spec["test_interval"] = 0
    half.solve()
    full = Solver(toy(**{k: v for k, v in no_dropout.items() if k != "batch_size: 8"}),
                  output_dir=str(tmp_path / "b"), progress=False, max_iter=6)
    full.spec["test_interval"] = 0
    full.solve()
    for a, b in zip(all_params(half), all_params(full)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_resume_needs_the_same_solver_type(toy, tmp_path):
    s = Solver(toy("SGD"), output_dir=str(tmp_path / "s"), progress=False, max_iter=3)
    s.solve()
    adam = Solver(toy("Adam"), output_dir=str(tmp_path / "a"), progress=False)
    with pytest.raises(SnapshotError, match="written by a SGD solver, cannot resume a Adam"):
        adam.restore(str(tmp_path / "s" / "toy_iter_3.solverstate.npz"))


@pytest.mark.parametrize("corrupt,words", [
    (lambda a: a.update({"param/ip/0": np.array(["x"] * a["param/ip/0"].size).reshape(a["param/ip/0"].shape)}),
     "holds <U1 data, not numbers"),
    (lambda a: a.update({"mask/ip/0": np.ones(3)}), "entry 'mask/ip/0' has shape (3,)"),
])
def test_odd_weights_files_are_clear_errors(toy, tmp_path, corrupt, words):
    s = Solver(toy(), output_dir=str(tmp_path), progress=False, max_iter=2)
    s.solve()
    arrays = load_npz(str(tmp_path / "toy_iter_2.npz"))
    corrupt(arrays)
    save_npz(str(tmp_path / "odd.npz"), arrays)
    with pytest.raises(SnapshotError, match=re.escape(words)):
        load_weights(s.net, str(tmp_path / "odd.npz"))


def test_snapshot_files_are_readable_by_others(toy, tmp_path):
    s = Solver(toy(), output_dir=str(tmp_path / "o"), progress=False, max_iter=1)
    s.solve()
    mode = os.stat(tmp_path / "o" / "toy_iter_1.npz").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_masked_preconditioned_step_always_descends():
    """With a mask M, the step is M P M ∇ (positive semi-definite), never M P ∇, which
    points uphill for about one random gradient in five with one kernel (F(2,3) and
    F(4,5), 90% pruned; summed over many kernels the uphill ones hide). The step is also
    checked against M·P(M·∇) written out, entry by entry."""
    from wincaffe.testing import make_layer
    for tile, r in ((2, 3), (4, 5)):
        layer, b, t = make_layer("WinogradConv", [(1, 1, 8, 8)], convolution_param={"num_output": 1, "kernel_size": r},
                                 winograd_param={"tile": tile, "weights": "winograd"})
        Q = layer.params[0]
        rng = np.random.default_rng(0)
        for _ in range(200):
            Q.set_mask(rng.random(Q.shape) < 0.1)
            Q.diff[...] = rng.standard_normal(Q.shape)
            step = Q.step_direction(np.empty_like(Q.diff))
            assert float((Q.diff * step).sum()) >= -1e-9
            assert np.all(step[Q.mask == 0] == 0)
            expect = np.empty_like(Q.diff)
            Q.preconditioner(Q.diff * Q.mask, expect)
            np.testing.assert_array_equal(step, expect * Q.mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decay", [0.0, 5e-4])
def test_fused_sgd_step_equals_the_numpy_statements_bit_for_bit(dtype, decay):
    from wincaffe._kernels.sgd import sgd_momentum_step
    rng = np.random.default_rng(0)
    w, g, h = (rng.standard_normal(10007).astype(dtype) for _ in range(3))
    w[:5] = [0.0, -0.0, np.inf, 1e-40, np.nan]
    rate, momentum = 0.0123, 0.9
    w_ref, g_ref, h_ref = w.copy(), g.copy(), h.copy()
    with np.errstate(invalid="ignore"):          # inf − inf: the NaN is part of the check
        if decay:
            g_ref += decay * w_ref
        h_ref *= momentum
        h_ref += rate * g_ref
        w_ref -= h_ref
    sgd_momentum_step(w, g, h, rate, decay, momentum)
    for got, want in ((w, w_ref), (g, g_ref), (h, h_ref)):
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
    with pytest.raises(ValueError, match="entries"):
        sgd_momentum_step(w, g[:-1], h, rate, decay, momentum)
