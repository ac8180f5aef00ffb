"""Every malformed net or solver file gets one clear error naming file, layer and field."""
import textwrap

import numpy as np
import pytest

from wincaffe.config import load_net_spec, load_solver_spec
from wincaffe.errors import ConfigError
from wincaffe.layer import TEST, TRAIN
from wincaffe.net import Net

SMALL_NET = """
name: small
layer:
  - {name: input, type: Input, top: data, input_param: {shape: [2, 1, 8, 8]}}
  - {name: labels, type: Input, top: label, input_param: {shape: [2]}}
  - name: conv1
    type: Convolution
    bottom: data
    top: conv1
    convolution_param: {num_output: 3, kernel_size: 3}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - name: ip
    type: InnerProduct
    bottom: conv1
    top: ip
    inner_product_param: {num_output: 4}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
"""


def write(tmp_path, text, name="net.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def net_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Net(path, TRAIN)
    return str(info.value), path


def test_small_net_builds(tmp_path):
    net = Net(write(tmp_path, SMALL_NET), TRAIN)
    assert [l.name for l in net.layers] == ["input", "labels", "conv1", "relu1", "ip", "loss"]
    assert net.blobs["ip"].shape == (2, 4)
    assert net.outputs == ["loss"]
    assert np.isfinite(net.forward_backward())


def test_malformed_yaml_names_line(tmp_path):
    msg, path = net_error(tmp_path, "name: x\nlayer: [\n  - {name: a\n")
    assert path in msg and "malformed YAML" in msg and "line" in msg


def test_top_level_must_be_mapping(tmp_path):
    msg, _ = net_error(tmp_path, "- 1\n- 2\n")
    assert "mapping" in msg


def test_unknown_layer_type(tmp_path):
    msg, path = net_error(tmp_path, SMALL_NET.replace("type: ReLU", "type: ReLu"))
    assert path in msg and "layer 'relu1'" in msg and "unknown layer type 'ReLu'" in msg and "ReLU" in msg


def test_unknown_field(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("kernel_size: 3}", "kernel_size: 3, kernal: 2}"))
    assert "layer 'conv1' (Convolution)" in msg and "convolution_param.kernal: unknown field" in msg


def test_unknown_top_level_layer_field(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("top: loss}", "top: loss, bogus_param: {}}"))
    assert "layer 'loss'" in msg and "bogus_param" in msg


def test_missing_required_field(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("{num_output: 3, kernel_size: 3}", "{num_output: 3}"))
    assert "convolution_param.kernel_size: is required" in msg


@pytest.mark.parametrize("bad,field,words", [
    ("kernel_size: -3", "convolution_param.kernel_size", "must be >= 1, got -3"),
    ("kernel_size: 3, stride: 0", "convolution_param.stride", "must be >= 1, got 0"),
    ("kernel_size: three", "convolution_param.kernel_size", "must be an integer"),
])
def test_bad_values(tmp_path, bad, field, words):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("kernel_size: 3", bad))
    assert f"layer 'conv1' (Convolution): {field}: {words}" in msg


def test_dangling_bottom(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("bottom: [ip, label]", "bottom: [ipp, label]"))
    assert "layer 'loss'" in msg and "bottom blob 'ipp'" in msg


def test_duplicate_top(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("top: label,", "top: data,"))
    assert "layer 'labels'" in msg and "top blob 'data' is already produced" in msg


def test_duplicate_layer_name_same_phase(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("name: ip\n", "name: conv1\n"))
    assert "duplicate layer name" in msg


def test_same_name_in_different_phases_is_fine(tmp_path):
    text = SMALL_NET.replace(
        "  - {name: labels, type: Input, top: label, input_param: {shape: [2]}}",
        "  - {name: labels, type: Input, top: label, input_param: {shape: [2]}, include: {phase: TRAIN}}\n"
        "  - {name: labels, type: Input, top: label, input_param: {shape: [2]}, include: {phase: TEST}}")
    Net(write(tmp_path, text), TEST)


def test_inner_product_shape_mismatch_at_setup(tmp_path):
    # a TEST-phase Input of another size feeding the same InnerProduct weights
    path = write(tmp_path, SMALL_NET)
    net = Net(path, TRAIN)
    net.blobs["data"].reshape((2, 1, 9, 9))
    with pytest.raises(ConfigError, match=r"layer 'ip' \(InnerProduct\): bottom: .*flattens to 147 inputs"):
        net.layers[2].reshape([net.blobs["data"]], [net.blobs["conv1"]])
        net.layers[4].reshape([net.blobs["conv1"]], [net.blobs["ip"]])


def test_wrong_bottom_count(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("bottom: [ip, label]", "bottom: [ip]"))
    assert "layer 'loss'" in msg and "takes exactly 2 bottom" in msg


def test_kernel_larger_than_input(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("kernel_size: 3", "kernel_size: 9"))
    assert "layer 'conv1'" in msg and "does not fit" in msg


def test_layers_alias_and_phase_filter(tmp_path):
    text = SMALL_NET.replace("layer:", "layers:")
    text = text.replace("{name: relu1, type: ReLU, bottom: conv1, top: conv1}",
                        "{name: relu1, type: ReLU, bottom: conv1, top: conv1, include: {phase: TEST}}")
    assert "relu1" not in [l.name for l in Net(write(tmp_path, text), TRAIN).layers]
    assert "relu1" in [l.name for l in Net(write(tmp_path, text), TEST).layers]


SOLVER = """
net: net.yaml
base_lr: 0.01
lr_policy: step
gamma: 0.1
stepsize: 100
max_iter: 10
"""


def test_solver_ok_and_relative_net(tmp_path):
    write(tmp_path, SMALL_NET)
    spec = load_solver_spec(write(tmp_path, SOLVER, "solver.yaml"))
    assert spec.net == str(tmp_path / "net.yaml") and spec.type == "SGD" and spec.momentum == 0.0


@pytest.mark.parametrize("edit,words", [
    (("stepsize: 100\n", ""), "lr_policy step needs 'stepsize'"),
    (("base_lr: 0.01", "base_lr: -1"), "base_lr: must be > 0.0"),
    (("max_iter: 10", "max_iter: 10\nmomentun: 0.9"), "momentun: unknown field"),
    (("max_iter: 10", "max_iter: 10\ntype: Adagrad"), "type: must be one of SGD, Nesterov, Adam"),
    (("max_iter: 10", "max_iter: 10\ntest_interval: 5"), "test_interval is set but test_iter is 0"),
])
def test_solver_errors(tmp_path, edit, words):
    path = write(tmp_path, SOLVER.replace(*edit), "solver.yaml")
    with pytest.raises(ConfigError) as info:
        load_solver_spec(path)
    assert path in str(info.value) and words in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="no/such.yaml: file not found"):
        load_net_spec("no/such.yaml")


def test_solver_with_default_fixed_policy(tmp_path):
    write(tmp_path, SMALL_NET)
    spec = load_solver_spec(write(tmp_path, "net: net.yaml\nbase_lr: 0.1\nmax_iter: 3\n", "solver.yaml"))
    assert spec.lr_policy == "fixed"


def test_non_utf8_file(tmp_path):
    p = tmp_path / "net.yaml"
    p.write_bytes(b"name: \xff\xfe\x00bad\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_net_spec(str(p))


def test_include_and_exclude_together(tmp_path):
    msg, _ = net_error(tmp_path, SMALL_NET.replace("top: conv1}", "top: conv1, include: {phase: TRAIN}, "
                                                                   "exclude: {phase: TEST}}"))
    assert "layer 'relu1'" in msg and "either 'include' or 'exclude'" in msg


def test_param_sharing_by_name_is_refused(tmp_path):
    text = SMALL_NET.replace("    convolution_param: {num_output: 3, kernel_size: 3}",
                             "    param: [{name: shared}]\n    convolution_param: {num_output: 3, kernel_size: 3}")
    msg, _ = net_error(tmp_path, text)
    assert "param[0].name: sharing parameters by name is not supported" in msg


def test_test_net_resolves_next_to_the_solver(tmp_path, monkeypatch):
    write(tmp_path, SMALL_NET)
    path = write(tmp_path, SOLVER + "test_net: net.yaml\ntest_iter: 1\n", "solver.yaml")
    monkeypatch.chdir("/")
    assert load_solver_spec(path).test_net == str(tmp_path / "net.yaml")


def test_force_backward_is_refused_not_ignored(tmp_path):
    msg, _ = net_error(tmp_path, "force_backward: true\n" + SMALL_NET)
    assert "force_backward: force_backward is not supported yet" in msg
