"""Pooling (MAX with argmax, AVE) over (N, C, H, W), Caffe's output-size rule:
oh = ceil((H + 2p − k) / s) + 1, minus one if the last window would start in the padding
or past the input."""
import math

import numpy as np

from wincaffe._kernels.pool import (KERNELS, ave_pool_backward, ave_pool_forward, max_pool_backward,
                                   max_pool_forward, vectorised)
from wincaffe.conv_geometry import require_4d
from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field


def pool_output_size(size, kernel, pad, stride):
    """Caffe's ceil rule, then drop a last window that would start in the padding or
    past the input (Caffe checks this only when pad > 0; with stride > kernel and no
    pad its last window can be empty, which we never produce)."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(Layer):
    param_blocks = {"pooling_param": Block(
        pool=Field(str, "MAX", choices=("MAX", "AVE")),
        kernel_size=Field(int, None, min=1),
        stride=Field(int, 1, min=1),
        pad=Field(int, 0, min=0),
        global_pooling=Field(bool, False),
    )}
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottoms, tops):
        p = self.block("pooling_param")
        require_4d(self, bottoms[0].shape)
        if p.kernel_size is None and not p.global_pooling:
            raise self.error("is required (or set global_pooling: true)", field="pooling_param.kernel_size")
        if p.pad and p.kernel_size and p.pad >= p.kernel_size:
            raise self.error(f"pad {p.pad} must be smaller than kernel_size {p.kernel_size}",
                             field="pooling_param.pad")
        self.mode = p.pool

    def reshape(self, bottoms, tops):
        p = self.block("pooling_param")
        N, C, H, W = bottoms[0].shape
        if p.global_pooling:
            self.kh, self.kw, self.sh, self.sw, self.pad = H, W, 1, 1, 0
        else:
            self.kh = self.kw = p.kernel_size
            self.sh = self.sw = p.stride
            self.pad = p.pad
        if self.kh > H + 2 * self.pad or self.kw > W + 2 * self.pad:
            raise self.error(f"kernel {self.kh}x{self.kw} is larger than the {H}x{W} input",
                             field="pooling_param.kernel_size")
        oh = pool_output_size(H, self.kh, self.pad, self.sh)
        ow = pool_output_size(W, self.kw, self.pad, self.sw)
        tops[0].reshape((N, C, oh, ow), self.dtype)
        self._vectorised = vectorised(self.dtype == np.float32, H, W, oh, ow, self.kh, self.kw,
                                      self.sh, self.sw, self.pad)
        if self.mode == "MAX" and getattr(self, "argmax", np.empty(0)).shape != (N, C, oh, ow):
            self.argmax = np.empty((N, C, oh, ow), np.int32)

    def execution(self):
        """``avx2 x8`` when the kernels pool eight windows per step (float32 2×2 windows at
        stride 2 tiling planes of a width W % 8 == 0, on the AVX2 build), else ``scalar``."""
        if not hasattr(self, "_vectorised"):
            return None
        return f"{KERNELS} x8" if self._vectorised else "scalar"

    def memory_traffic(self, bottoms, tops, propagate_down):
        """Forward reads x and writes y (MAX: and the argmax, int32 of y's shape); backward
        reads dY (and the argmax) and writes dx; neither reads x again."""
        x, y = bottoms[0].data.nbytes, tops[0].data.nbytes
        arg = self.argmax.nbytes if self.mode == "MAX" else 0
        return x + y + arg, (y + arg + x) if propagate_down[0] else 0

    def forward(self, bottoms, tops):
        if self.mode == "MAX":
            max_pool_forward(bottoms[0].data, tops[0].data, self.argmax, self.kh, self.kw, self.sh, self.sw, self.pad)
        else:
            ave_pool_forward(bottoms[0].data, tops[0].data, self.kh, self.kw, self.sh, self.sw, self.pad)

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        if self.mode == "MAX":
            max_pool_backward(tops[0].diff, self.argmax, bottoms[0].diff, self.kh, self.kw, self.sh, self.sw, self.pad)
        else:
            ave_pool_backward(tops[0].diff, bottoms[0].diff, self.kh, self.kw, self.sh, self.sw, self.pad)
