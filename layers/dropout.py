"""Dropout (inverted, as Caffe): in TRAIN y = x · m / (1 − p), m ~ Bernoulli(1 − p); in TEST y = x."""
import numpy as np

from wincaffe.layer import TRAIN, Layer, register
from wincaffe.schema import Block, Field


@register("Dropout")
class Dropout(Layer):
    in_place = True
    param_blocks = {"dropout_param": Block(dropout_ratio=Field(float, 0.5, min=0.0, max=0.999))}
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottoms, tops):
        self.ratio = self.block("dropout_param").dropout_ratio
        self.scale = 1.0 / (1.0 - self.ratio)

    def reshape(self, bottoms, tops):
        if tops[0] is not bottoms[0]:
            tops[0].reshape(bottoms[0].shape, self.dtype)

    def forward(self, bottoms, tops):
        if self.phase != TRAIN or self.ratio == 0.0:
            if tops[0] is not bottoms[0]:
                np.copyto(tops[0].data, bottoms[0].data)
            return
        keep = self.rng.random(bottoms[0].shape, dtype=np.float32) >= self.ratio
        self.mask = keep.astype(self.dtype) * self.dtype.type(self.scale)
        np.multiply(bottoms[0].data, self.mask, out=tops[0].data)

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        if self.phase != TRAIN or self.ratio == 0.0:
            if tops[0] is not bottoms[0]:
                np.copyto(bottoms[0].diff, tops[0].diff)
            return
        np.multiply(tops[0].diff, self.mask, out=bottoms[0].diff)
