"""Solvers (SGD, Nesterov, Adam), the training loop, testing and snapshots.

Per parameter, each iteration (Caffe's ApplyUpdate, with preconditioners and masks
added), in this order:
    g  = M ⊙ P(M ⊙ diff)      the param's mask M and preconditioner P (Param.step_direction;
                              either may be absent; Param.diff itself stays dL/d(data)):
                              pruned entries get no step and no share of the clipping norm,
                              and with P positive semi-definite the step still descends
    g ·= c / ‖g‖              clip_gradients c: one global L2 norm over all params' g
                              (Caffe clips before normalising and regularising)
    g /= iter_size
    g += weight_decay · decay_mult · data    (L2; sign(data) for L1; not preconditioned:
                              with P the gradient note's (G Gᵀ)·(G Gᵀ), this is its eq. 27,
                              and without clipping every SGD or Nesterov step of Q is
                              G (the spatial twin's step of W) Gᵀ; clipping breaks that
                              identity, since ‖P(dL/dQ)‖ is not ‖dL/dW‖)
    SGD:      h = momentum · h + lr · lr_mult · g;  data −= h
    Nesterov: h' = momentum · h + lr · lr_mult · g; data −= (1 + momentum) h' − momentum · h
    Adam:     m, v moments; data −= lr · lr_mult · √(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + δ)
    data ⊙= mask, and the momentum (Adam: both moments) ⊙= mask
"""
import json
import math
import os
import sys
import time

import numpy as np

from wincaffe._kernels.sgd import sgd_momentum_step
from wincaffe.config import load_solver_spec
from wincaffe.errors import SnapshotError, TrainingError
from wincaffe.layer import TEST, TRAIN
from wincaffe.log import get_logger
from wincaffe.lr_policy import learning_rate
from wincaffe.net import Net
from wincaffe.schema import Params
from wincaffe.fileio import ensure_writable_dir
from wincaffe.snapshot import load_npz, load_weights, save_npz_pair, weights_arrays

log = get_logger("solver")


def _fusable(*arrays):
    """The fused SGD kernel takes C-contiguous float32/float64 arrays of one dtype."""
    return (arrays[0].dtype in (np.float32, np.float64) and all(a.dtype == arrays[0].dtype for a in arrays)
            and all(a.flags.c_contiguous for a in arrays))


class Solver:
    """``Solver("nets/lenet5_solver.yaml", output_dir="runs/lenet5").solve()``.

    ``spec`` is a solver file path or a validated spec (``config.load_solver_spec``).
    ``max_iter`` overrides the file's. ``progress``: show a tqdm bar (default: when
    stderr is a terminal).
    """

    def __init__(self, spec, *, output_dir=".", dtype=np.float32, max_iter=None, progress=None):
        self.spec = spec if isinstance(spec, Params) else load_solver_spec(spec)
        if max_iter is not None:
            self.spec["max_iter"] = int(max_iter)
        self.output_dir = output_dir
        self.dtype = np.dtype(dtype)
        self.progress = sys.stderr.isatty() if progress is None else progress
        seed = self.spec.random_seed
        self.net = Net(self.spec.net, TRAIN, dtype=self.dtype, seed=seed)
        self.test_net = None
        if self.spec.test_iter:
            test_source = self.spec.test_net or self.spec.net
            self.test_net = Net(test_source, TEST, dtype=self.dtype, seed=seed + 1, share_from=self.net)
        self.iter = 0
        self.params = self.net.params
        self.history = [np.zeros_like(p.data) for p in self.params]
        self.history2 = [np.zeros_like(p.data) for p in self.params] if self.spec.type == "Adam" else None
        self.losses = []            # smoothed over average_loss iterations, as Caffe
        self.last_test = {}
        self.last_snapshot = None
        self._steps = None          # per-param step directions (scratch)

    # ----- the update rule ------------------------------------------------------------
    def learning_rate(self):
        return learning_rate(self.spec, self.iter)

    def apply_update(self):
        s = self.spec
        lr = self.learning_rate()
        if self._steps is None:
            self._steps = [np.empty_like(p.data) for p in self.params]
        # M·P(M·diff): pruned entries get no step and no share of the clipping norm
        steps = [p.step_direction(g) for p, g in zip(self.params, self._steps)]
        self._clip(steps)
        for k, (p, g) in enumerate(zip(self.params, steps)):
            if s.iter_size > 1:
                g /= s.iter_size
            rate = lr * p.lr_mult
            decay = s.weight_decay * p.decay_mult
            h = self.history[k]
            if s.type == "SGD" and (not decay or s.regularization_type == "L2") and _fusable(p.data, g, h):
                # the NumPy statements of _step for this case, fused into one pass, bit for bit
                sgd_momentum_step(p.data.reshape(-1), g.reshape(-1), h.reshape(-1), rate, decay, s.momentum)
            else:
                self._step(k, p, g, h, rate, decay)
            if p.mask is not None:     # pruned entries: zero weights, no stale momentum
                p.data *= p.mask
                h *= p.mask
                if self.history2 is not None:
                    self.history2[k] *= p.mask
        return lr

    def _step(self, k, p, g, h, rate, decay):
        """One parameter's update from its step direction g and history h (Caffe's solvers)."""
        s = self.spec
        if decay:                 # a masked weight is 0, so its decay term is 0 too
            if s.regularization_type == "L2":
                g += decay * p.data
            else:
                g += decay * np.sign(p.data)
        if s.type == "SGD":
            h *= s.momentum
            h += rate * g
            p.data -= h
        elif s.type == "Nesterov":
            prev = h.copy()
            h *= s.momentum
            h += rate * g
            p.data -= (1 + s.momentum) * h - s.momentum * prev
        else:  # Adam
            v = self.history2[k]
            t = self.iter + 1
            h *= s.momentum
            h += (1 - s.momentum) * g
            v *= s.momentum2
            v += (1 - s.momentum2) * g * g
            corr = math.sqrt(1 - s.momentum2 ** t) / (1 - s.momentum ** t)
            p.data -= rate * corr * h / (np.sqrt(v) + s.delta)

    def _clip(self, steps):
        """Scale every step direction by c/‖g‖ when their global L2 norm exceeds c."""
        c = self.spec.clip_gradients
        if c <= 0:
            return
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in steps))
        if norm > c:
            log.info(f"Gradient clipping: scaling down gradients (L2 norm {norm:.4g} > {c:.4g}) by scale factor {c / norm:.4g}")
            for g in steps:
                g *= c / norm

    # ----- training loop ----------------------------------------------------------------
    def step(self, iters, bar=None):
        """Run ``iters`` iterations (testing, displaying and snapshotting on schedule)."""
        s = self.spec
        stop = self.iter + iters
        t_last, it_last = time.perf_counter(), self.iter
        while self.iter < stop:
            if s.test_interval and self.iter % s.test_interval == 0 and (self.iter > 0 or s.test_initialization):
                self.test()
            loss = self._forward_backward()
            if not math.isfinite(loss):
                hint = f" The last good snapshot is {self.last_snapshot}." if self.last_snapshot else ""
                raise TrainingError(f"Iteration {self.iter}: the loss is {loss} (lr = {self.learning_rate():.6g}). "
                                    f"Lower base_lr or check the data.{hint}")
            self.losses.append(loss)
            del self.losses[:-s.average_loss]
            if s.display and self.iter % s.display == 0:
                now = time.perf_counter()
                speed = (self.iter - it_last) / (now - t_last) if self.iter > it_last else 0.0
                t_last, it_last = now, self.iter
                log.info(f"Iteration {self.iter} ({speed:.3g} iter/s), loss = {np.mean(self.losses):.6g}")
                for i, (name, val) in enumerate(self._train_outputs().items()):
                    log.info(f"    Train net output #{i}: {name} = {val:.6g}")
            lr = self.apply_update()
            if s.display and self.iter % s.display == 0:
                log.info(f"Iteration {self.iter}, lr = {lr:.6g}")
            self.iter += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(self.losses):.4f}", refresh=False)
            if s.snapshot and self.iter % s.snapshot == 0 and self.iter < s.max_iter:
                self.snapshot()

    def _forward_backward(self):
        """One iteration's loss and gradients; with ``iter_size`` > 1 the gradients of
        that many batches are summed (layers write their diffs, so the sum is kept
        here) and ``apply_update`` divides by ``iter_size``."""
        n = self.spec.iter_size
        if n == 1:
            return self.net.forward_backward()
        if getattr(self, "_grad_sum", None) is None:
            self._grad_sum = [np.zeros_like(p.diff) for p in self.params]
        loss = 0.0
        for i in range(n):
            loss += self.net.forward_backward()
            for acc, p in zip(self._grad_sum, self.params):
                if i == 0:
                    np.copyto(acc, p.diff)
                else:
                    acc += p.diff
        for acc, p in zip(self._grad_sum, self.params):
            np.copyto(p.diff, acc)
        return loss / n

    def _train_outputs(self):
        out = {}
        for name in self.net.outputs:
            d = self.net.blobs[name].data
            if d.size == 1:
                out[name] = float(d)
        return out

    def solve(self, resume_from=None):
        """Train to ``max_iter``; snapshot and test at the end. Returns the last test outputs."""
        ensure_writable_dir(self.output_dir)    # before the first iteration, not at the first snapshot
        if resume_from:
            self.restore(resume_from)
        s = self.spec
        log.info(f"Solving {self.net.name}")
        log.info(f"Learning Rate Policy: {s.lr_policy}")
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=s.max_iter, initial=self.iter, unit="it", desc="train", dynamic_ncols=True,
                       file=sys.stderr, leave=False)
        try:
            self.step(max(s.max_iter - self.iter, 0), bar)
        finally:
            if bar is not None:
                bar.close()
        self.snapshot()
        if s.display and self.iter % s.display == 0 and self.losses:
            log.info(f"Iteration {self.iter}, loss = {np.mean(self.losses):.6g}")
        if self.test_net is not None:     # the final weights, whatever test_interval is (as Caffe)
            self.test()
        log.info("Optimization Done.")
        return self.last_test

    # ----- testing -------------------------------------------------------------------------
    def test(self, iterations=None, *, rewind=False):
        """Average every output of the test net over ``test_iter`` batches (or
        ``iterations``); ``rewind``: from the start of the test data."""
        if self.test_net is None:
            return {}
        n = iterations or self.spec.test_iter
        log.info(f"Iteration {self.iter}, Testing net (#0)")
        means = self.test_net.evaluate(n, rewind=rewind)
        weights = {t.name: w for tops, ws in zip(self.test_net.top_vecs, self.test_net.loss_weights)
                   for t, w in zip(tops, ws)}
        self.last_test = means
        for i, (name, mean) in enumerate(means.items()):
            w = weights.get(name, 0.0)
            extra = f" (* {w:g} = {mean * w:.6g} loss)" if w else ""
            log.info(f"    Test net output #{i}: {name} = {mean:.6g}{extra}")
        return self.last_test

    # ----- snapshots ------------------------------------------------------------------------
    def snapshot_paths(self, it=None):
        it = self.iter if it is None else it
        base = os.path.join(self.output_dir, f"{self.spec.snapshot_prefix}_iter_{it}")
        return base + ".npz", base + ".solverstate.npz"

    def snapshot(self):
        """Write the weights and the solver state of this iteration; refuse weights that
        are not finite (a diverged run), so the last snapshot named is always a good one."""
        bad = [p.name for p in self.params if not np.isfinite(p.data).all()]
        if bad:
            hint = f" The last good snapshot is {self.last_snapshot}." if self.last_snapshot else ""
            raise TrainingError(f"Iteration {self.iter}: the weights of {', '.join(bad[:3])} are not finite "
                                f"(NaN or infinite); no snapshot written (lr = {self.learning_rate():.6g}). "
                                f"Lower base_lr or check the data.{hint}")
        weights_path, state_path = self.snapshot_paths()
        log.info(f"Snapshotting to {weights_path}")
        state = {"iter": np.array(self.iter), "weights": np.array(os.path.basename(weights_path)),
                 "solver_type": np.array(self.spec.type)}
        for (key, _), h in zip(self.net.named_params(), self.history):
            state[f"history/0/{key}"] = h
        if self.history2 is not None:
            for (key, _), h in zip(self.net.named_params(), self.history2):
                state[f"history/1/{key}"] = h
        for tag, net in (("train", self.net), ("test", self.test_net)):
            if net is None:
                continue
            state[f"rng/{tag}"] = np.array(json.dumps(net.rng.bit_generator.state))
            for layer in net.layers:
                for name, arr in layer.get_state().items():
                    state[f"layer/{tag}/{layer.name}/{name}"] = arr
        log.info(f"Snapshotting solver state to {state_path}")
        save_npz_pair((weights_path, weights_arrays(self.net)), (state_path, state))   # both or neither
        self.last_snapshot = weights_path
        return weights_path, state_path

    def restore(self, state_path):
        """Resume from a ``.solverstate.npz`` (the weights file beside it is loaded too)."""
        state = load_npz(state_path)
        for key in ("iter", "weights"):
            if key not in state:
                raise SnapshotError(f"{state_path}: not a solver state (no '{key}'); "
                                    "pass a *.solverstate.npz to --snapshot, or a weights file to --weights")
        saved_type = str(state.get("solver_type", self.spec.type))
        if saved_type != self.spec.type:
            raise SnapshotError(f"{state_path}: written by a {saved_type} solver, cannot resume a "
                                f"{self.spec.type} solver from it (use --weights to start from its weights)")
        it = state["iter"]
        if it.shape != () or it.dtype.kind not in "iu" or int(it) < 0:
            raise SnapshotError(f"{state_path}: entry 'iter' must be an integer >= 0, got {it!r}")
        name = state["weights"]
        if name.dtype.kind != "U" or name.shape != () or os.path.basename(str(name)) != str(name):
            raise SnapshotError(f"{state_path}: entry 'weights' must name a file beside it, got {name!r}")
        weights_path = os.path.join(os.path.dirname(os.path.abspath(state_path)), str(name))
        log.info(f"Restoring previous solver status from {state_path}")
        load_weights(self.net, weights_path, strict=True)
        slots = [self.history] + ([self.history2] if self.history2 is not None else [])
        for slot, histories in enumerate(slots):
            for (key, _), h in zip(self.net.named_params(), histories):
                src = state.get(f"history/{slot}/{key}")
                if src is None or src.shape != h.shape or src.dtype.kind not in "iuf":
                    raise SnapshotError(f"{state_path}: no solver history for param {key} (numbers of shape "
                                        f"{h.shape}): a state of another net?")
                h[...] = src
        for tag, net in (("train", self.net), ("test", self.test_net)):
            if net is None:
                continue
            key = f"rng/{tag}"
            if key in state:
                try:
                    net.rng.bit_generator.state = json.loads(str(state[key]))
                except (ValueError, TypeError, KeyError) as exc:
                    raise SnapshotError(f"{state_path}: entry '{key}' is not a generator state ({exc})") from None
            for layer in net.layers:
                prefix = f"layer/{tag}/{layer.name}/"
                ls = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                if ls:
                    try:
                        layer.set_state(ls)
                    except (ValueError, TypeError, KeyError, IndexError) as exc:
                        raise SnapshotError(f"{state_path}: entries '{prefix}*' do not fit layer '{layer.name}' "
                                            f"of this net: {exc}") from None
        self.iter = int(state["iter"])
        self.last_snapshot = weights_path
