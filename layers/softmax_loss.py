"""SoftmaxWithLoss: L = −(1/n) Σ_i log softmax(x_i)[label_i] over the samples whose
label is not ``ignore_label`` (Caffe's VALID normalisation; BATCH_SIZE and NONE too).

bottoms: scores (N, K) or (N, K, H, W), labels (N,) or (N, H, W) stored as floats.
top: the scalar loss. Gradient: (softmax − onehot) / n."""
import numpy as np

from layers.softmax import softmax
from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    param_blocks = {"loss_param": Block(
        ignore_label=Field(int, None),
        normalization=Field(str, "VALID", choices=("VALID", "BATCH_SIZE", "FULL", "NONE")),
    )}
    num_bottoms = 2
    num_tops = (1, 2)
    is_loss = True

    def setup(self, bottoms, tops):
        p = self.block("loss_param")
        self.ignore, self.normalization = p.ignore_label, p.normalization

    def reshape(self, bottoms, tops):
        s, l = bottoms[0].shape, bottoms[1].shape
        expect = (s[0],) + tuple(s[2:])
        if int(np.prod(l)) != int(np.prod(expect)):
            raise self.error(f"label shape {l} does not match scores shape {s} (want {expect})", field="bottom")
        tops[0].reshape((), self.dtype)
        if len(tops) > 1:
            tops[1].reshape(s, self.dtype)
        if getattr(self, "prob", np.empty(0)).shape != s:
            self.prob = np.empty(s, self.dtype)

    def _labels(self, bottoms):
        scores = bottoms[0].data
        K = scores.shape[1]
        labels = bottoms[1].data.reshape(scores.shape[0], -1).astype(np.int64)
        valid = np.ones(labels.shape, bool) if self.ignore is None else labels != self.ignore
        bad = valid & ((labels < 0) | (labels >= K))
        if bad.any():
            raise self.error(f"label {labels[bad][0]} is outside [0, {K})", field="bottom")
        return labels, valid

    def _normalizer(self, valid):
        if self.normalization == "VALID":
            return max(int(valid.sum()), 1)
        if self.normalization == "BATCH_SIZE":
            return valid.shape[0]
        if self.normalization == "FULL":
            return valid.size
        return 1

    def forward(self, bottoms, tops):
        scores = bottoms[0].data
        N, K = scores.shape[:2]
        softmax(scores, 1, self.prob)
        labels, valid = self._labels(bottoms)
        p = self.prob.reshape(N, K, -1)
        picked = np.take_along_axis(p, np.where(valid, labels, 0)[:, None, :], axis=1)[:, 0, :]
        logs = np.log(np.maximum(picked, np.finfo(self.dtype).tiny))
        tops[0].data[...] = -(logs * valid).sum() / self._normalizer(valid)
        if len(tops) > 1:
            np.copyto(tops[1].data, self.prob)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[1:2] and propagate_down[1]:
            raise self.error("cannot backpropagate to the labels", field="propagate_down")
        if not propagate_down[0]:
            return
        N, K = bottoms[0].shape[:2]
        labels, valid = self._labels(bottoms)
        dx = bottoms[0].diff.reshape(N, K, -1)
        np.copyto(dx, self.prob.reshape(N, K, -1))
        n_idx, s_idx = np.nonzero(valid)
        dx[n_idx, labels[n_idx, s_idx], s_idx] -= 1
        dx *= valid[:, None, :]
        dx *= tops[0].diff.reshape(()) / self._normalizer(valid)
