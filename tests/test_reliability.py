"""Bad input, diverging runs and damaged files: one clear line each, and no lost work."""
import os
import re

import numpy as np
import pytest

from wincaffe.cli import main
from wincaffe.config import validate_net
from wincaffe.errors import ConfigError, SnapshotError, TrainingError
from wincaffe.snapshot import load_npz
from wincaffe.solver import Solver

from test_solver import toy  # noqa: F401  (the fixture)


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    return err[-1]


@pytest.mark.parametrize("argv,words", [
    (["train", "--solver", "S", "--max-iter", "-5"], "wincaffe: error: --max-iter: must be >= 0, got -5"),
    (["train", "--solver", "S", "--threads", "0"], "wincaffe: error: --threads: must be >= 1, got 0"),
    (["test", "--model", "M", "--iterations", "0"], "wincaffe: error: --iterations: must be >= 1, got 0"),
    (["test", "--model", "M", "--iterations", "-3"], "wincaffe: error: --iterations: must be >= 1, got -3"),
    (["time", "--model", "M", "--iterations", "0"], "wincaffe: error: --iterations: must be >= 1, got 0"),
])
def test_nonsense_numbers_are_refused_in_one_line(capsys, argv, words):
    assert main(argv) == 1
    assert one_error_line(capsys) == words


def test_the_final_line_is_the_test_of_the_final_weights(toy, tmp_path, capsys, monkeypatch):  # noqa: F811
    """max_iter 30 is not a multiple of test_interval 20: the last test must be at 30."""
    solver = toy(**{"max_iter: 40": "max_iter: 30"})
    tested_at = []
    real_test = Solver.test

    def spy(self, *a, **k):
        tested_at.append(self.iter)
        return real_test(self, *a, **k)
    monkeypatch.setattr(Solver, "test", spy)
    assert main(["train", "--solver", solver, "--output", str(tmp_path / "o"), "--no-progress"]) == 0
    assert tested_at == [0, 20, 30]
    printed = capsys.readouterr().out
    s = Solver(solver, output_dir=str(tmp_path / "x"), progress=False)
    from wincaffe.snapshot import load_weights
    load_weights(s.test_net, str(tmp_path / "o" / "toy_iter_30.npz"))
    acc = real_test(s)["accuracy"]
    assert f"accuracy = {acc:.4f}" in printed


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_run_never_writes_non_finite_snapshots(toy, tmp_path):  # noqa: F811
    solver = toy(**{"base_lr: 0.05": "base_lr: 1000", "snapshot: 20": "snapshot: 1"})
    s = Solver(solver, output_dir=str(tmp_path), progress=False)
    with pytest.raises(TrainingError) as info:
        s.solve()
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".npz") and "solverstate" not in f)
    for name in names:
        arrays = load_npz(str(tmp_path / name))
        assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("param/")), name
    if s.last_snapshot:
        assert os.path.basename(s.last_snapshot) in names and s.last_snapshot in str(info.value)


def test_damaged_weights_files_say_what_they_are_not(toy, tmp_path):  # noqa: F811
    (tmp_path / "random.npz").write_bytes(os.urandom(2000))
    with pytest.raises(SnapshotError, match=r"random.npz: not a wincaffe weights or solver-state file"):
        load_npz(str(tmp_path / "random.npz"))
    os.mkdir(tmp_path / "folder.npz")
    with pytest.raises(SnapshotError, match=r"a folder, not a weights file"):
        load_npz(str(tmp_path / "folder.npz"))


def test_layers_that_cannot_run_in_place_say_so_at_validation():
    with pytest.raises(ConfigError, match=r"layer 'conv' \(Convolution\): top: cannot run in place: top 'x'"):
        validate_net({"name": "n", "layer": [
            {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [1, 1, 5, 5]}},
            {"name": "conv", "type": "Convolution", "bottom": "x", "top": "x",
             "convolution_param": {"num_output": 1, "kernel_size": 3}}]})
    validate_net({"name": "n", "layer": [                    # ReLU may
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [1, 1, 5, 5]}},
        {"name": "relu", "type": "ReLU", "bottom": "x", "top": "x"}]})


@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_an_unwritable_output_is_refused_before_the_first_iteration(toy, tmp_path, capsys, where):  # noqa: F811
    (tmp_path / "a_file").write_text("not a folder")
    solver = toy()
    assert main(["train", "--solver", solver, "--output", str(tmp_path / where), "--no-progress"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"wincaffe: error: --output: cannot write to {tmp_path / where}")
    assert "Iteration 0" not in capsys.readouterr().err


def test_a_full_disk_keeps_the_last_complete_pair(toy, tmp_path, capsys, monkeypatch):  # noqa: F811
    """The disk fills at the second snapshot, while writing the solver state: the weights
    of that iteration must not land alone, the first pair stays, and it resumes."""
    import errno
    from wincaffe import fileio
    solver = toy()
    real = fileio._write_temp
    calls = []

    def full_disk(path, write, binary=True):
        calls.append(path)
        if "iter_40.solverstate" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, binary)
    monkeypatch.setattr(fileio, "_write_temp", full_disk)
    out = tmp_path / "o"
    assert main(["train", "--solver", solver, "--output", str(out), "--no-progress"]) == 1
    line = one_error_line(capsys)
    assert "cannot write" in line and "toy_iter_40.solverstate.npz: No space left on device" in line
    files = sorted(os.listdir(out))
    assert files == ["toy_iter_20.npz", "toy_iter_20.solverstate.npz"]      # no half pair, no temp files
    monkeypatch.setattr(fileio, "_write_temp", real)
    assert main(["train", "--solver", solver, "--output", str(out), "--snapshot",
                 str(out / "toy_iter_20.solverstate.npz"), "--no-progress"]) == 0
    assert "toy_iter_40.npz" in os.listdir(out)


@pytest.mark.parametrize("damage,words", [
    (lambda a: a.update(iter=np.array(2.5)), "entry 'iter' must be an integer >= 0"),
    (lambda a: a.update(iter=np.array("ten")), "entry 'iter' must be an integer >= 0"),
    (lambda a: a.update(weights=np.array("../elsewhere.npz")), "entry 'weights' must name a file beside it"),
    (lambda a: a.update({"rng/train": np.array("{not json")}), "entry 'rng/train' is not a generator state"),
    (lambda a: a.update({"layer/train/data/rng": np.array("[1, 2]")}), "entries 'layer/train/data/*' do not fit"),
    (lambda a: a.update({"layer/train/data/order": np.arange(7)}), "'order' is not an order of this data set"),
])
def test_damaged_solver_states_name_the_entry(toy, tmp_path, damage, words):  # noqa: F811
    from wincaffe.snapshot import save_npz
    solver = toy()
    Solver(solver, output_dir=str(tmp_path), progress=False, max_iter=20).solve()
    arrays = load_npz(str(tmp_path / "toy_iter_20.solverstate.npz"))
    damage(arrays)
    save_npz(str(tmp_path / "bad.solverstate.npz"), arrays)
    s = Solver(solver, output_dir=str(tmp_path / "r"), progress=False)
    with pytest.raises(SnapshotError, match=re.escape(words)):
        s.restore(str(tmp_path / "bad.solverstate.npz"))


def test_a_state_of_a_smaller_data_set_is_refused(toy, tmp_path):  # noqa: F811
    small = toy(**{"split: train, batch_size: 8}": "split: train, batch_size: 8, num_samples: 30}"})
    Solver(small, output_dir=str(tmp_path), progress=False, max_iter=20).solve()
    full = toy()
    s = Solver(full, output_dir=str(tmp_path / "r"), progress=False)
    with pytest.raises(SnapshotError, match=r"do not fit layer 'data' of this net: 'order' is not an order of "
                                            r"this data set's 60 samples"):
        s.restore(str(tmp_path / "toy_iter_20.solverstate.npz"))


def test_two_nets_do_not_share_winograd_scratch_and_it_goes_with_the_net():
    import gc
    import weakref
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    spec = validate_net({"name": "w", "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [2, 3, 9, 9], "fill": "gaussian"}},
        {"name": "conv", "type": "WinogradConv", "bottom": "x", "top": "y",
         "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1}, "winograd_param": {"tile": 2}}]})
    a, b = Net(spec, TRAIN), Net(spec, TRAIN)
    a.forward()
    b.forward()
    assert a.workspaces and b.workspaces and a.workspaces is not b.workspaces
    assert a.layer_by_name("conv").workspaces is a.workspaces
    for key in a.workspaces:
        assert a.workspaces[key] is not b.workspaces[key]
    ref = weakref.ref(next(iter(a.workspaces.values())))
    del a
    gc.collect()
    assert ref() is None


def test_absurd_sizes_are_config_errors_not_allocations():
    from wincaffe.layer import TRAIN
    from wincaffe.net import Net
    for num_output in (10 ** 12, -3):
        with pytest.raises(ConfigError):
            Net(validate_net({"name": "n", "layer": [
                {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": [1, 100000, 3, 3]}},
                {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
                 "inner_product_param": {"num_output": num_output}}]}), TRAIN)


@pytest.mark.parametrize("edit,words", [
    ({"lr_policy": "exp", "gamma": 10.0}, "lr_policy exp gives the learning rate inf"),
    ({"lr_policy": "inv", "gamma": -1.0, "power": 0.75}, "lr_policy inv gives the learning rate"),
])
def test_learning_rate_policies_that_leave_the_reals_are_training_errors(edit, words):
    from wincaffe.config import validate_solver
    from wincaffe.lr_policy import learning_rate
    spec = validate_solver(dict({"net": "n.yaml", "base_lr": 0.01, "max_iter": 1000}, **edit))
    with pytest.raises(TrainingError, match=re.escape(words)):
        learning_rate(spec, 999)
