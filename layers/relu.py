"""ReLU: y = max(x, 0) (Caffe's ``negative_slope`` gives a leaky ReLU). Works in place."""
import numpy as np

from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field


@register("ReLU")
class ReLU(Layer):
    in_place = True
    param_blocks = {"relu_param": Block(negative_slope=Field(float, 0.0))}
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottoms, tops):
        self.slope = self.block("relu_param").negative_slope

    def reshape(self, bottoms, tops):
        if tops[0] is not bottoms[0]:
            tops[0].reshape(bottoms[0].shape, bottoms[0].data.dtype)

    def forward(self, bottoms, tops):
        x, y = bottoms[0].data, tops[0].data
        if self.slope == 0.0:
            np.maximum(x, 0, out=y)
        else:
            np.multiply(x, self._gain(x), out=y)

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        # For an in-place layer bottoms[0].data is y; y > 0 exactly where x > 0.
        y = tops[0].data
        np.multiply(tops[0].diff, self._gain(y), out=bottoms[0].diff)

    def _gain(self, x):
        """dy/dx where x is the input (or, in place, the output): the mask x > 0 (bool), or
        1 there and negative_slope elsewhere (x's dtype), in the net's scratch."""
        positive = self.workspace("relu_positive", x.shape, np.bool_)
        np.greater(x, 0, out=positive)
        if self.slope == 0.0:
            return positive
        gain = self.workspace("relu_gain", x.shape, x.dtype)
        gain.fill(self.slope)
        np.copyto(gain, 1, where=positive)
        return gain
