"""Softmax along ``axis`` (default 1, the channels): y = exp(x − max) / Σ exp(x − max)."""
import numpy as np

from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field

SOFTMAX_BLOCK = Block(axis=Field(int, 1, min=0))


def softmax(x, axis, out):
    """Numerically stable softmax of ``x`` into ``out`` (may be the same array)."""
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


@register("Softmax")
class Softmax(Layer):
    param_blocks = {"softmax_param": SOFTMAX_BLOCK}
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottoms, tops):
        self.axis = self.block("softmax_param").axis
        if self.axis >= len(bottoms[0].shape):
            raise self.error(f"axis {self.axis} out of range for shape {bottoms[0].shape}", field="softmax_param.axis")

    def reshape(self, bottoms, tops):
        if tops[0] is not bottoms[0]:
            tops[0].reshape(bottoms[0].shape, self.dtype)

    def forward(self, bottoms, tops):
        softmax(bottoms[0].data, self.axis, tops[0].data)

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        y, dy = tops[0].data, tops[0].diff
        # dx = y ⊙ (dy − Σ_axis dy ⊙ y)
        dot = (dy * y).sum(axis=self.axis, keepdims=True)
        np.multiply(y, dy - dot, out=bottoms[0].diff)
