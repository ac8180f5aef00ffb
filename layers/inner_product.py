"""InnerProduct (fully connected): y = x W^T + b.

bottom (N, ...) is flattened to (N, D) from ``axis`` on; W (num_output, D), b (num_output,).
Pruning: the ``spatial`` domain, scores |W| (K, D): not pruned unless named."""
import numpy as np

from wincaffe import counting
from wincaffe.fillers import fill
from wincaffe.layer import Layer, SpatialPruning, register
from wincaffe.schema import Block, Field, filler_block


@register("InnerProduct")
class InnerProduct(SpatialPruning, Layer):
    param_blocks = {"inner_product_param": Block(
        num_output=Field(int, min=1),
        bias_term=Field(bool, True),
        weight_filler=filler_block("xavier"),
        bias_filler=filler_block("constant"),
        axis=Field(int, 1, min=1),
    )}
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottoms, tops):
        p = self.block("inner_product_param")
        shape = bottoms[0].shape
        if p.axis > len(shape) - 1 and len(shape) > 1:
            raise self.error(f"axis {p.axis} is out of range for bottom shape {shape}", field="inner_product_param.axis")
        self.axis = p.axis
        D = int(np.prod(shape[self.axis:]))
        self.add_param("weight", fill(p.weight_filler, (p.num_output, D), self.rng, self.dtype))
        if p.bias_term:
            self.add_param("bias", fill(p.bias_filler, (p.num_output,), self.rng, self.dtype))

    def reshape(self, bottoms, tops):
        shape = bottoms[0].shape
        D = int(np.prod(shape[self.axis:]))
        K, D_w = self.params[0].shape
        if D != D_w:
            raise self.error(f"bottom {shape} flattens to {D} inputs per sample but the weights take {D_w}",
                             field="bottom")
        tops[0].reshape(shape[:self.axis] + (K,), self.dtype)
        self._rows_per_sample = int(np.prod(shape[1:self.axis]))

    def forward(self, bottoms, tops):
        K, D = self.params[0].shape
        x = bottoms[0].data.reshape(-1, D)
        y = tops[0].data.reshape(-1, K)
        np.matmul(x, self.params[0].data.T, out=y)
        if len(self.params) > 1:
            y += self.params[1].data

    def backward(self, tops, propagate_down, bottoms):
        K, D = self.params[0].shape
        x = bottoms[0].data.reshape(-1, D)
        dy = tops[0].diff.reshape(-1, K)
        np.matmul(dy.T, x, out=self.params[0].diff)
        if len(self.params) > 1:
            np.sum(dy, axis=0, out=self.params[1].diff)
        if propagate_down[0]:
            np.matmul(dy, self.params[0].data, out=bottoms[0].diff.reshape(-1, D))

    def count_mults(self):
        W = self.params[0].data
        rows = self._rows_per_sample        # axis > 1: one K×D product per leading position
        return {"direct": W.size * rows, "weight_domain": "spatial",
                "weight_density": float(np.count_nonzero(W)) / W.size}

    def count_sparse_mults(self, bottoms):
        D = self.params[0].shape[1]
        return {"direct_sparse": counting.dense_nonzero_products(bottoms[0].data.reshape(-1, D),
                                                                 self.params[0].data)}

    def activation_density(self, bottoms):
        x = bottoms[0].data
        return "spatial", float(np.count_nonzero(x)) / x.size
