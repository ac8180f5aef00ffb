"""Accuracy: fraction of samples whose label is among the top_k scores.
bottoms: scores (N, K), labels (N,); top: a scalar."""
import numpy as np

from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field


@register("Accuracy")
class Accuracy(Layer):
    param_blocks = {"accuracy_param": Block(top_k=Field(int, 1, min=1), ignore_label=Field(int, None))}
    num_bottoms = 2
    num_tops = 1
    has_backward = False

    def setup(self, bottoms, tops):
        p = self.block("accuracy_param")
        self.top_k, self.ignore = p.top_k, p.ignore_label
        K = int(np.prod(bottoms[0].shape[1:]))
        if self.top_k > K:
            raise self.error(f"top_k {self.top_k} exceeds the {K} classes", field="accuracy_param.top_k")

    def reshape(self, bottoms, tops):
        if bottoms[1].data.size != bottoms[0].shape[0]:
            raise self.error(f"{bottoms[1].data.size} labels for {bottoms[0].shape[0]} samples", field="bottom")
        tops[0].reshape((), self.dtype)

    def forward(self, bottoms, tops):
        scores = bottoms[0].data.reshape(bottoms[0].shape[0], -1)
        labels = bottoms[1].data.reshape(-1).astype(np.int64)
        valid = np.ones(labels.shape, bool) if self.ignore is None else labels != self.ignore
        # Caffe's rule: a hit when fewer than top_k other scores are >= the label's
        # (ties count against the label, so a constant output scores 0, not 1)
        own = scores[np.arange(len(labels)), np.clip(labels, 0, scores.shape[1] - 1)]
        hit = (scores >= own[:, None]).sum(axis=1) - 1 < self.top_k
        tops[0].data[...] = (hit & valid).sum() / max(int(valid.sum()), 1)
