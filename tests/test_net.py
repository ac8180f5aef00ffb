"""Graph mechanics: automatic splits, backward planning, parameter sharing, lr policies."""
import numpy as np
import pytest

from wincaffe.config import validate_net
from wincaffe.layer import TEST, TRAIN
from wincaffe.lr_policy import learning_rate
from wincaffe.net import Net
from wincaffe.schema import Params


def two_headed_net():
    # 'h' is read by two InnerProducts: the net must sum both gradients
    return validate_net({"name": "two", "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [3, 4], "fill": "gaussian"}},
        {"name": "h", "type": "InnerProduct", "bottom": "x", "top": "h",
         "inner_product_param": {"num_output": 5, "weight_filler": {"type": "gaussian"}}},
        {"name": "a", "type": "InnerProduct", "bottom": "h", "top": "a", "inner_product_param": {"num_output": 2}},
        {"name": "b", "type": "InnerProduct", "bottom": "h", "top": "b", "inner_product_param": {"num_output": 2}},
        {"name": "la", "type": "Input", "top": "la", "input_param": {"shape": [3]}},
        {"name": "lossa", "type": "SoftmaxWithLoss", "bottom": ["a", "la"], "top": "lossa"},
        {"name": "lossb", "type": "SoftmaxWithLoss", "bottom": ["b", "la"], "top": "lossb",
         "loss_weight": 0.5},
    ]})


def test_split_sums_gradients():
    net = Net(two_headed_net(), TRAIN, dtype=np.float64)
    assert any(l.type_name == "Split" for l in net.layers)
    net.forward_backward()
    h = net.layer_by_name("h").params[0]
    analytic = h.diff.copy()
    eps = 1e-6
    for idx in [(0, 0), (2, 3), (4, 1)]:
        old = h.data[idx]
        h.data[idx] = old + eps
        lp = net.forward()
        h.data[idx] = old - eps
        lm = net.forward()
        h.data[idx] = old
        assert np.isclose(analytic[idx], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_backward_skips_data_gradients():
    net = Net(two_headed_net(), TRAIN)
    i = [l.name for l in net.layers].index("h")
    assert net.layer_needs_backward[i] and net.propagate_down[i] == [False]
    assert not net.layer_needs_backward[0]


def test_test_net_shares_params():
    train = Net(two_headed_net(), TRAIN)
    test = Net(two_headed_net(), TEST, share_from=train)
    assert test.layer_by_name("h").params[0] is train.layer_by_name("h").params[0]


def test_outputs_and_loss_weights():
    net = Net(two_headed_net(), TRAIN, dtype=np.float64)
    loss = net.forward()
    out = net.output_values()
    assert set(out) == {"lossa", "lossb"}
    assert np.isclose(loss, out["lossa"] + 0.5 * out["lossb"])


@pytest.mark.parametrize("policy,extra,it,expected", [
    ("fixed", {}, 50, 0.1),
    ("step", {"gamma": 0.5, "stepsize": 10}, 25, 0.1 * 0.25),
    ("multistep", {"gamma": 0.1, "stepvalue": [10, 20]}, 20, 0.1 * 0.01),
    ("exp", {"gamma": 0.9}, 3, 0.1 * 0.9 ** 3),
    ("inv", {"gamma": 1e-4, "power": 0.75}, 1000, 0.1 * (1 + 0.1) ** -0.75),
    ("poly", {"power": 2.0}, 50, 0.1 * 0.25),
    ("sigmoid", {"gamma": 0.1, "stepsize": 50}, 50, 0.05),
])
def test_lr_policies(policy, extra, it, expected):
    spec = Params(base_lr=0.1, lr_policy=policy, max_iter=100, gamma=None, power=None, stepsize=None,
                  stepvalue=None)
    spec.update(extra)
    assert np.isclose(learning_rate(spec, it), expected)


def test_unknown_type_mentions_broken_plugins(monkeypatch):
    from wincaffe import layer as layer_mod
    from wincaffe.errors import ConfigError
    monkeypatch.setitem(layer_mod._BROKEN, "layers.fancy", ImportError("no module named fancy_kernels"))
    with pytest.raises(ConfigError, match=r"unknown layer type 'Fancy'.*layers.fancy failed to import"):
        layer_mod.layer_class("Fancy")


def _net_grad_check(spec, param_layers, eps=1e-6):
    """Every param of ``param_layers`` vs central differences of the net's loss."""
    net = Net(spec, TRAIN, dtype=np.float64)
    net.forward_backward()
    for name in param_layers:
        for p in net.layer_by_name(name).params:
            analytic = p.diff.copy()
            flat = p.data.reshape(-1)
            for j in range(0, flat.size, max(1, flat.size // 7)):
                old = flat[j]
                flat[j] = old + eps
                lp = net.forward()
                flat[j] = old - eps
                lm = net.forward()
                flat[j] = old
                assert np.isclose(analytic.reshape(-1)[j], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-8), \
                    f"{p.name}[{j}]"


def _layers(*extra):
    base = [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [3, 4], "fill": "gaussian"}},
        {"name": "lab", "type": "Input", "top": "lab", "input_param": {"shape": [3]}},
        {"name": "ip1", "type": "InnerProduct", "bottom": "x", "top": "ip1",
         "inner_product_param": {"num_output": 5, "weight_filler": {"type": "gaussian"},
                                 "bias_filler": {"type": "gaussian"}}},
    ]
    return validate_net({"name": "t", "layer": base + list(extra)})


def test_in_place_reader_of_a_split_does_not_change_the_other_readers_input():
    # ipB reads ip1 *before* the in-place ReLU runs; its gradient must use pre-ReLU values
    spec = _layers(
        {"name": "ipB", "type": "InnerProduct", "bottom": "ip1", "top": "b", "inner_product_param": {"num_output": 3}},
        {"name": "relu", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "a", "inner_product_param": {"num_output": 3}},
        {"name": "la", "type": "SoftmaxWithLoss", "bottom": ["a", "lab"], "top": "la"},
        {"name": "lb", "type": "SoftmaxWithLoss", "bottom": ["b", "lab"], "top": "lb"})
    _net_grad_check(spec, ["ip1", "ipB", "ip2"])


def test_blob_written_in_place_on_a_split_and_read_twice():
    # relu (in place on a split top) feeds two readers: a second split must read the relu's output
    spec = _layers(
        {"name": "acc", "type": "Accuracy", "bottom": ["ip1", "lab"], "top": "acc"},
        {"name": "relu", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "a", "inner_product_param": {"num_output": 3}},
        {"name": "loss2", "type": "SoftmaxWithLoss", "bottom": ["ip1", "lab"], "top": "l2"},
        {"name": "la", "type": "SoftmaxWithLoss", "bottom": ["a", "lab"], "top": "la"})
    _net_grad_check(spec, ["ip1", "ip2"])
