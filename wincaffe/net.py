"""The layer graph: builds layers from a validated net spec, wires blobs, runs
forward and backward.

Blobs are named as in the net file. A blob read by several layers gets an
automatic ``Split`` (as Caffe's ``InsertSplits``) so each reader writes its own
gradient and the split sums them.
"""
import time

import numpy as np

from wincaffe.config import layer_in_phase, load_net_spec
from wincaffe.errors import ConfigError, WincaffeError
from wincaffe.layer import TRAIN, Blob, Layer, layer_class
from wincaffe.schema import Params


class _Split(Layer):
    """Internal: copies one bottom to several tops and sums the tops' gradients on
    the way back. A top shares the bottom's array, except one that an in-place
    layer will overwrite (``copy_tops``): it gets its own copy, so the other
    readers keep the values they saw."""

    type_name = "Split"

    def reshape(self, bottoms, tops):
        for t in tops:
            t.reshape(bottoms[0].shape, bottoms[0].data.dtype)

    def forward(self, bottoms, tops):
        for t, copy in zip(tops, self.spec["copy_tops"]):
            if copy:
                np.copyto(t.data, bottoms[0].data)
            else:
                t.data = bottoms[0].data

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            diff = bottoms[0].diff
            np.copyto(diff, tops[0].diff)
            for t in tops[1:]:
                diff += t.diff


def _insert_splits(specs):
    """Rewrite bottoms/tops so that no blob version is read by two layers
    (Caffe's InsertSplits). An in-place layer that reads a split top writes that
    split top (renamed), and later readers of the blob read the renamed one."""
    version = {}          # blob name -> (producer index, top index) as we walk
    consumers = {}        # (producer index, top index) -> [(layer index, bottom index)]
    for li, s in enumerate(specs):
        for bi, b in enumerate(s.bottom):
            if b in version:
                consumers.setdefault(version[b], []).append((li, bi))
        for ti, t in enumerate(s.top):
            version[t] = (li, ti)
    rename, splits = {}, {}  # (reader, bottom index) -> split top; producer -> [(top index, names, copies)]
    for (li, ti), readers in consumers.items():
        if len(readers) < 2:
            continue
        blob = specs[li].top[ti]
        names = [f"{blob}_{specs[li].name}_{ti}_split_{k}" for k in range(len(readers))]
        copies = [blob in specs[rli].top for rli, _ in readers]  # in-place readers overwrite their top
        splits.setdefault(li, []).append((ti, names, copies))
        for k, reader in enumerate(readers):
            rename[reader] = names[k]
    out, alias = [], {}
    for li, s in enumerate(specs):
        s = Params(s)
        new_bottom = [rename.get((li, bi), alias.get(b, b)) for bi, b in enumerate(s.bottom)]
        new_top = []
        for t in s.top:
            if t in s.bottom and new_bottom[s.bottom.index(t)] != t:
                nt = new_bottom[s.bottom.index(t)]  # in place on a renamed blob: keep writing it
                alias[t] = nt
                new_top.append(nt)
            else:
                alias.pop(t, None)
                new_top.append(t)
        s["bottom"], s["top"] = new_bottom, new_top
        out.append(s)
        for ti, names, copies in splits.get(li, []):
            out.append(Params(name=f"{specs[li].top[ti]}_{specs[li].name}_{ti}_split", type="Split",
                              bottom=[new_top[ti]], top=names, copy_tops=copies,
                              include=[], exclude=[], param=[], loss_weight=None, propagate_down=None))
    return out


class Net:
    """A net for one phase.

    ``Net("nets/lenet5.yaml", phase="TRAIN", dtype=np.float32, seed=0)``

    Attributes: ``layers`` (in order), ``blobs`` (name -> Blob), ``params`` (every
    learnable Param, in layer order), ``outputs`` (names of blobs no layer reads:
    the loss, the accuracy ...), ``rng`` (the generator the layers draw from).
    """

    def __init__(self, source, phase=TRAIN, *, dtype=np.float32, seed=0, share_from=None):
        self.spec = source if isinstance(source, Params) and "layer" in source else load_net_spec(source)
        self.source = self.spec.source
        self.name = self.spec.name
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        specs = [s for s in self.spec.layer if layer_in_phase(s, phase)]
        self._check_wiring(specs)
        specs = _insert_splits(specs)
        self.layers, self.blobs = [], {}
        self.bottom_vecs, self.top_vecs = [], []
        self.workspaces = {}     # scratch arrays shared by this net's layers (Layer.workspace)
        for s in specs:
            cls = _Split if s.type == "Split" else layer_class(s.type)
            try:
                layer = cls(s, phase=phase, dtype=self.dtype, rng=self.rng)
            except ConfigError as exc:
                raise exc.located(source=self.source, layer=s.name, layer_type=s.type) from None
            layer.workspaces = self.workspaces
            bottoms = [self.blobs[b] for b in s.bottom]
            tops = []
            for t in s.top:
                if t not in self.blobs:
                    self.blobs[t] = Blob(t, self.dtype)
                tops.append(self.blobs[t])
            self._setup_layer(layer, bottoms, tops)
            self.layers.append(layer)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
        if share_from is not None:
            self.share_params_from(share_from)
        self._plan_backward(specs)
        self.params = [p for l in self.layers for p in l.params]

    # ----- construction ----------------------------------------------------------
    def _check_wiring(self, specs):
        available = set()
        for s in specs:
            for b in s.bottom:
                if b not in available:
                    raise ConfigError(f"bottom blob '{b}' is not produced by any earlier layer in phase {self.phase}",
                                      source=self.source, layer=s.name, layer_type=s.type, field="bottom")
            for t in s.top:
                if t in available and t not in s.bottom:
                    raise ConfigError(f"top blob '{t}' is already produced by an earlier layer "
                                      "(only in-place layers, with bottom == top, may reuse a name)",
                                      source=self.source, layer=s.name, layer_type=s.type, field="top")
            if len(set(s.top)) != len(s.top):
                raise ConfigError("the same top is listed twice", source=self.source, layer=s.name,
                                  layer_type=s.type, field="top")
            available.update(s.top)

    def _setup_layer(self, layer, bottoms, tops):
        try:
            layer.setup(bottoms, tops)
            layer.reshape(bottoms, tops)
        except ConfigError as exc:
            raise exc.located(source=self.source, layer=layer.name, layer_type=layer.type_name) from None
        except WincaffeError:
            raise
        except Exception as exc:  # a bug or an unforeseen shape problem: still name the layer
            shapes = ", ".join(f"{b.name}{b.shape}" for b in bottoms)
            raise ConfigError(f"setup failed with bottoms {shapes}: {type(exc).__name__}: {exc}",
                              source=self.source, layer=layer.name, layer_type=layer.type_name) from exc

    def _plan_backward(self, specs):
        needs_grad = set()  # blob names whose gradient someone wants
        self.layer_needs_backward = []
        self.propagate_down = []
        for layer, s in zip(self.layers, specs):
            learn = any(p.lr_mult > 0 for p in layer.params)
            from_below = [b in needs_grad for b in s.bottom]
            if s.propagate_down is not None:
                from_below = [f and pd for f, pd in zip(from_below, s.propagate_down + [True] * len(from_below))]
            need = layer.has_backward and (learn or any(from_below))
            self.layer_needs_backward.append(need)
            self.propagate_down.append(from_below if need else [False] * len(s.bottom))
            for t in s.top:
                if need:
                    needs_grad.add(t)
                else:
                    needs_grad.discard(t)
        # loss weights: the default is 1 for the first top of a loss layer
        self.loss_weights = []
        for layer, s in zip(self.layers, specs):
            w = list(s.loss_weight) if s.loss_weight else ([1.0] if layer.is_loss else [])
            w += [0.0] * (len(s.top) - len(w))
            self.loss_weights.append(w)
        read = {b for s in specs for b in s.bottom}
        self.outputs = [t for s in specs for t in s.top if t not in read]

    def share_params_from(self, other):
        """Make this net's params the same objects as ``other``'s, by layer name."""
        theirs = {l.name: l for l in other.layers}
        for layer in self.layers:
            src = theirs.get(layer.name)
            if src is None or not (layer.params or layer.buffers):
                continue
            if [p.shape for p in src.params] != [p.shape for p in layer.params] or \
                    {k: v.shape for k, v in src.buffers.items()} != {k: v.shape for k, v in layer.buffers.items()}:
                raise ConfigError("parameter shapes differ between the TRAIN and TEST nets",
                                  source=self.source, layer=layer.name, layer_type=layer.type_name)
            layer.params[:] = src.params
            layer.buffers = src.buffers  # the same dict: masks set later reach both nets
        self.params = [p for l in self.layers for p in l.params]

    # ----- running ------------------------------------------------------------------
    def _forward_layer(self, i):
        """Run layer ``i`` forward; returns its weighted loss contribution."""
        layer, tops = self.layers[i], self.top_vecs[i]
        layer.reshape(self.bottom_vecs[i], tops)
        layer.forward(self.bottom_vecs[i], tops)
        return sum(w * float(t.data.sum()) for t, w in zip(tops, self.loss_weights[i]) if w)

    def _backward_layer(self, i):
        """Run layer ``i`` backward, seeding its loss tops' diffs with their weights."""
        for t, w in zip(self.top_vecs[i], self.loss_weights[i]):
            if w:
                t.diff[...] = w
        self.layers[i].backward(self.top_vecs[i], self.propagate_down[i], self.bottom_vecs[i])

    def forward(self, observe=None):
        """Run every layer forward; returns the weighted sum of the loss tops.
        ``observe(layer, bottoms, tops)`` is called right after each layer's forward."""
        loss = 0.0
        for i in range(len(self.layers)):
            loss += self._forward_layer(i)
            if observe is not None:
                observe(self.layers[i], self.bottom_vecs[i], self.top_vecs[i])
        return loss

    def backward(self):
        """Backpropagate from the loss tops; fills param and blob diffs."""
        for i in range(len(self.layers) - 1, -1, -1):
            if self.layer_needs_backward[i]:
                self._backward_layer(i)

    def forward_backward(self):
        loss = self.forward()
        self.backward()
        return loss

    def evaluate(self, iterations, *, rewind=False, on_batch=None):
        """Mean of every scalar output over ``iterations`` forward passes, e.g.
        ``{"accuracy": 0.9912, "loss": 0.028}``. ``rewind``: data layers start over
        first (the same samples on every call). ``on_batch(i, {name: value})``."""
        if rewind:
            for layer in self.layers:
                layer.rewind()
        sums = {}
        for i in range(iterations):
            self.forward()
            batch = {name: float(self.blobs[name].data) for name in self.outputs
                     if self.blobs[name].data.size == 1}
            for name, value in batch.items():
                sums[name] = sums.get(name, 0.0) + value
            if on_batch is not None:
                on_batch(i, batch)
        return {name: total / iterations for name, total in sums.items()}

    def batch_size(self):
        """The first axis of the first top of the net's first layer (its data), or 0."""
        tops = self.top_vecs[0] if self.top_vecs else []
        return int(tops[0].shape[0]) if tops and tops[0].shape else 0

    def epoch_length(self):
        """Batches per epoch of the net's data layer (None without one)."""
        for layer in self.layers:
            n = layer.epoch_length()
            if n:
                return n
        return None

    def output_values(self):
        """{name: float or array} of the output blobs after a forward."""
        out = {}
        for name in self.outputs:
            d = self.blobs[name].data
            out[name] = float(d) if d.size == 1 else d.copy()
        return out

    def layer_by_name(self, name):
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def named_params(self):
        """[(key, Param)] with key ``"<layer>/<index>"``, the snapshot naming."""
        return [(f"{l.name}/{i}", p) for l in self.layers for i, p in enumerate(l.params)]

    # ----- timing (``wincaffe time``) -----------------------------------------------
    def time_layers(self, iterations=10):
        """Per-layer forward and backward milliseconds, averaged over ``iterations``."""
        n = len(self.layers)
        fwd, bwd = np.zeros(n), np.zeros(n)
        self.forward_backward()  # warm up (allocations, plans)
        for _ in range(iterations):
            for i in range(n):
                t0 = time.perf_counter()
                self._forward_layer(i)
                fwd[i] += time.perf_counter() - t0
            for i in range(n - 1, -1, -1):
                if self.layer_needs_backward[i]:
                    t0 = time.perf_counter()
                    self._backward_layer(i)
                    bwd[i] += time.perf_counter() - t0
        return fwd * 1000 / iterations, bwd * 1000 / iterations
