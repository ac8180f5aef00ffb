"""Data: serves (data, label) batches from a dataset known to :mod:`wincaffe.data`.

``data_param: {source: mnist, split: train|test, batch_size: 64, shuffle: true,
num_samples: 0}`` and ``transform_param: {scale: 0.00390625}``.
tops: data (B, C, H, W) as floats = raw bytes · scale, label (B,) as floats.
With shuffle the order is a fresh permutation each epoch, drawn from the layer's
own generator (seeded from the net's), and the cursor, permutation and generator
are part of the solver snapshot so a resumed run sees the same batches.
``num_samples`` > 0 keeps only the first that many samples (quick experiments).
``transform_param: {random_shift: s}`` (not in Caffe; TRAIN phase only) moves each
image by a random integer offset (dy, dx) in [−s, s]², one per image for all its
channels, filling with raw zeros (before ``scale`` and ``mean_value``, so the fill is
the background value): the usual translation augmentation for MNIST. The offsets
come from the layer's generator, so runs stay deterministic under the seed and
resume exactly.
"""
import json

import numpy as np

from wincaffe.layer import TRAIN, Layer, register
from wincaffe.schema import Block, Field


@register("Data")
class Data(Layer):
    param_blocks = {
        "data_param": Block(
            source=Field(str),
            split=Field(str, None, choices=("train", "test")),
            batch_size=Field(int, min=1),
            shuffle=Field(bool, None),
            num_samples=Field(int, 0, min=0),
        ),
        "transform_param": Block(
            scale=Field(float, 1.0),
            mean_value=Field(float, 0.0),
            random_shift=Field(int, 0, min=0,
                               doc="TRAIN only: translate by a random offset in [-s, s] per axis"),
        ),
    }
    num_bottoms = 0
    num_tops = (1, 2)
    has_backward = False

    def setup(self, bottoms, tops):
        from wincaffe.data import load  # the dataset registry (core)
        p = self.block("data_param")
        split = p.split or ("train" if self.phase == TRAIN else "test")
        images, labels = load(p.source, split)
        if p.num_samples:
            images, labels = images[:p.num_samples], labels[:p.num_samples]
        self.images, self.labels = images, labels
        self.batch_size = p.batch_size
        self.shuffle = (self.phase == TRAIN) if p.shuffle is None else p.shuffle
        t = self.block("transform_param")
        self.scale, self.mean = self.dtype.type(t.scale), self.dtype.type(t.mean_value)
        if t.random_shift >= min(self.images.shape[-2:]):
            raise self.error(f"random_shift {t.random_shift} must be smaller than the image "
                             f"size {self.images.shape[-2:]}", field="transform_param.random_shift")
        self.random_shift = t.random_shift if self.phase == TRAIN else 0
        s = self.random_shift
        if s:   # the shift canvas, kept: only its interior is ever written, so its border stays zero
            H, W = self.images.shape[-2:]
            self._canvas = np.zeros((self.batch_size,) + self.images.shape[1:-2] + (H + 2 * s, W + 2 * s),
                                    self.images.dtype)
        self.own_rng = np.random.default_rng(self.rng.integers(2**63))
        self.cursor = 0
        self.order = self._new_order()

    def _new_order(self):
        n = len(self.labels)
        return self.own_rng.permutation(n) if self.shuffle else np.arange(n)

    def reshape(self, bottoms, tops):
        shape = (self.batch_size,) + self.images.shape[1:]
        tops[0].reshape(shape, self.dtype)
        if len(tops) > 1:
            tops[1].reshape((self.batch_size,), self.dtype)

    def _next_indices(self):
        out = np.empty(self.batch_size, np.int64)
        filled = 0
        while filled < self.batch_size:
            take = min(self.batch_size - filled, len(self.order) - self.cursor)
            out[filled:filled + take] = self.order[self.cursor:self.cursor + take]
            filled += take
            self.cursor += take
            if self.cursor == len(self.order):
                self.cursor = 0
                self.order = self._new_order()
        return out

    def forward(self, bottoms, tops):
        idx = self._next_indices()
        x = tops[0].data
        batch = self.workspace("data_raw", x.shape, self.images.dtype)
        np.take(self.images, idx, axis=0, out=batch, mode="clip")   # valid indices; "raise" would buffer
        if self.random_shift:
            batch = self._shifted(batch)
        np.multiply(batch, self.scale, out=x, casting="unsafe")
        if self.mean:
            x -= self.mean * self.scale
        if len(tops) > 1:
            tops[1].data[...] = self.labels[idx]

    def _shifted(self, batch):
        """(B, C, H, W) -> the same images, each translated by its own random (dy, dx)."""
        s = self.random_shift
        H, W = batch.shape[-2:]
        padded = self._canvas
        padded[..., s:s + H, s:s + W] = batch
        offsets = self.own_rng.integers(0, 2 * s + 1, size=(len(batch), 2))
        out = self.workspace("data_shifted", batch.shape, batch.dtype)
        for i, (oy, ox) in enumerate(offsets):     # out[i] = padded window at (oy, ox)
            out[i] = padded[i, ..., oy:oy + H, ox:ox + W]
        return out

    def epoch_length(self):
        return -(-len(self.labels) // self.batch_size)

    def rewind(self):
        if not self.shuffle:
            self.cursor = 0

    def get_state(self):
        return {"cursor": np.array(self.cursor), "order": self.order,
                "rng": np.array(json.dumps(self.own_rng.bit_generator.state))}

    def set_state(self, state):
        n = len(self.labels)
        order = np.asarray(state["order"])
        if order.dtype.kind not in "iu" or order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise ValueError(f"'order' is not an order of this data set's {n} samples")
        cursor = state["cursor"]
        if np.shape(cursor) != () or np.asarray(cursor).dtype.kind not in "iu" or not 0 <= int(cursor) <= n:
            raise ValueError(f"'cursor' must be an integer in [0, {n}], got {cursor!r}")
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(str(state["rng"]))      # ValueError if broken
        self.cursor, self.order, self.own_rng = int(cursor), order.astype(np.int64), rng
