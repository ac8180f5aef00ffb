"""Input: tops of fixed shapes filled by the caller (Caffe's ``Input`` layer).

``input_param: {shape: [64, 1, 28, 28]}``; a test or a benchmark writes
``net.blobs[name].data`` before calling ``forward``. With ``fill: gaussian`` the
tops start as N(0, 1) noise from the net's generator (``wincaffe time`` uses it).
"""
from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field


@register("Input")
class Input(Layer):
    param_blocks = {"input_param": Block(
        shape=Field(int, list_of=True, min=1, doc="the shape of every top, e.g. [64, 1, 28, 28]"),
        fill=Field(str, "zeros", choices=("zeros", "gaussian")),
    )}
    num_bottoms = 0
    num_tops = (1, None)
    has_backward = False

    def setup(self, bottoms, tops):
        shape = self.block("input_param").shape
        self.shapes = [tuple(shape)] * len(tops)

    def reshape(self, bottoms, tops):
        for t, s in zip(tops, self.shapes):
            if t.shape != s:
                t.reshape(s, self.dtype)
                if self.block("input_param").fill == "gaussian":
                    t.data[...] = self.rng.standard_normal(s)

    def forward(self, bottoms, tops):
        pass
