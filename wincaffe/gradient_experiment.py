"""The gradient note's experiment (§3–4): Winograd-domain weights Q trained with the raw
gradient dL/dQ need a far smaller learning rate than with the preconditioned gradient
(G Gᵀ) dL/dQ (G Gᵀ) (eq. 18). Used by ``benchmarks/experiment_winograd_gradient.py``
and by the test that checks the claim on every run."""
import copy

from wincaffe.config import load_solver_spec, read_yaml, validate_net


def train_with_gradient(net_path, solver_path, gradient, lr, iters, test_images, seed=1):
    """Train the net of ``net_path`` (its WinogradConv layers switched to ``gradient``:
    raw | preconditioned) for ``iters`` iterations at ``lr`` under the solver of
    ``solver_path``; return the accuracy on the first ``test_images`` test images, or
    None if the loss diverged."""
    from wincaffe.errors import TrainingError
    from wincaffe.solver import Solver
    net = copy.deepcopy(read_yaml(net_path))
    for layer in net["layer"]:
        if layer["type"] == "WinogradConv":
            layer.setdefault("winograd_param", {})["gradient"] = gradient
        if layer["type"] == "Data" and layer.get("include", {}).get("phase") == "TEST":
            layer["data_param"]["num_samples"] = test_images
    spec = load_solver_spec(solver_path)
    spec.update(net=validate_net(net, net_path), max_iter=iters, base_lr=lr, test_iter=max(1, test_images // 100),
                test_interval=0, display=0, snapshot=0, random_seed=seed)
    solver = Solver(spec, progress=False)
    try:
        solver.step(iters)
    except TrainingError:
        return None
    return solver.test(rewind=True)["accuracy"]
