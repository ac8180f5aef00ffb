"""Convolution (Caffe's cross-correlation) as im2col + one GEMM over the batch.

    y[n, k, i, j] = Σ_c Σ_u Σ_v W[k, c, u, v] · x_pad[n, c, i·s + u·d, j·s + v·d] + b[k]

bottom (N, C, H, W) -> top (N, K, oh, ow), oh = (H + 2p − d(k−1) − 1) // s + 1.
Weights W (K, C, k, k), bias b (K,). Workspaces are kept between calls.

The batch runs in chunks of images: per chunk, col = im2col(x) is (R, n·P),
R = C·k·k, P = oh·ow (Caffe's layout), and each product is one GEMM, (K, R) @ (R, n·P)
forward. A chunk is L2-sized (``CHUNK_BYTES`` of col) unless that would leave the
GEMMs fewer than ``MIN_CHUNK_COLUMNS`` columns, below which they run slowly: so
LeNet's conv1 (R = 25) runs in chunks of 17 images and conv2 (R = 500) in one.
Forward leaves each chunk's col in place for backward. With a bias, col carries
one more row of ones and the left operand one more column, b: the same product
adds the bias, and the dW product returns db in that column (db = Σ_{n,p} dY).
"""
import numpy as np

from wincaffe._kernels.im2col import col2im, im2col
from wincaffe import counting
from wincaffe.conv_geometry import conv_output_shape, require_4d
from wincaffe.fillers import fill
from wincaffe.layer import Layer, SpatialPruning, register
from wincaffe.schema import convolution_block


# im2col bytes per chunk of images (with the GEMM's output and operands, about L2) ...
CHUNK_BYTES = 1 << 20
# ... but never fewer columns than this: below it the GEMMs run slower than the memory saves
MIN_CHUNK_COLUMNS = 4096


@register("Convolution")
class Convolution(SpatialPruning, Layer):
    prune_by_default = True
    param_blocks = {"convolution_param": convolution_block()}
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottoms, tops):
        p = self.block("convolution_param")
        if p.group != 1:
            raise self.error("groups are not supported yet (use group: 1)", field="convolution_param.group")
        shape = bottoms[0].shape
        require_4d(self, shape)
        self.k, self.pad, self.stride, self.dilation = p.kernel_size, p.pad, p.stride, p.dilation
        C = shape[1]
        w = fill(p.weight_filler, (p.num_output, C, self.k, self.k), self.rng, self.dtype)
        self.add_param("weight", w)
        if p.bias_term:
            self.add_param("bias", fill(p.bias_filler, (p.num_output,), self.rng, self.dtype))
        self._shape = None

    def reshape(self, bottoms, tops):
        N, C, H, W = bottoms[0].shape
        K, Cw = self.params[0].shape[:2]
        _, _, oh, ow = conv_output_shape(self, bottoms[0].shape, K, Cw, self.k, self.pad, self.stride, self.dilation)
        tops[0].reshape((N, K, oh, ow), self.dtype)
        if self._shape != (N, C, H, W):
            self._shape, self.oh, self.ow = (N, C, H, W), oh, ow
            R, has_bias, P = C * self.k * self.k, len(self.params) > 1, oh * ow
            columns = max(MIN_CHUNK_COLUMNS, CHUNK_BYTES // ((R + has_bias) * np.dtype(self.dtype).itemsize))
            self.chunk = max(1, min(N, columns // max(1, P)))
            self._buffers = {}                                        # name -> flat workspace
            self.w_aug = np.empty((K, R + has_bias), self.dtype)      # [W | b]
            self.dw_aug = np.empty_like(self.w_aug)                   # [dW | db]
            self.dw_chunk = np.empty_like(self.w_aug)                 # one chunk's share of it

    def _chunks(self, N):
        """(images, columns) of each chunk of the batch: the image slice and n·P."""
        P = self.oh * self.ow
        for n0 in range(0, N, self.chunk):
            yield slice(n0, min(N, n0 + self.chunk)), (min(N, n0 + self.chunk) - n0) * P

    def _buffer(self, name, rows, cols, first_image=0):
        """A C-contiguous (rows, cols) view of workspace ``name``; ``col`` holds the whole
        batch, chunk after chunk, so that backward finds each chunk's im2col(x) where
        forward left it; the others are sized by their first (largest) use."""
        if name == "col":
            size = rows * self.chunk * self.oh * self.ow
            start = (first_image // self.chunk) * size
            buf = self._buffers.get(name)
            if buf is None:
                buf = self._buffers[name] = np.empty(rows * self._shape[0] * self.oh * self.ow, self.dtype)
        else:
            start, buf = 0, self._buffers.get(name)
            if buf is None or buf.size < rows * cols:
                buf = self._buffers[name] = np.empty(rows * cols, self.dtype)
        return buf[start:start + rows * cols].reshape(rows, cols)

    def _pieces(self, images, rows):
        """L2-sized runs of images within a chunk (``CHUNK_BYTES`` of a (rows, n·P) matrix),
        as (image slice, column slice of the chunk's matrices)."""
        P = self.oh * self.ow
        size = rows * P * np.dtype(self.dtype).itemsize
        step = max(1, min(images.stop - images.start, CHUNK_BYTES // max(1, size)))
        for a in range(images.start, images.stop, step):
            b = min(images.stop, a + step)
            yield slice(a, b), slice((a - images.start) * P, (b - images.start) * P)

    def forward(self, bottoms, tops):
        N, K = bottoms[0].shape[0], self.params[0].shape[0]
        R, has_bias = self.params[0].data[0].size, len(self.params) > 1
        self.w_aug[:, :R] = self.params[0].data.reshape(K, R)
        if has_bias:
            self.w_aug[:, R] = self.params[1].data
        x, y = bottoms[0].data, tops[0].data.reshape(N, K, -1)
        for images, cols in self._chunks(N):
            col = self._buffer("col", R + has_bias, cols, images.start)
            if has_bias:
                col[R] = 1
            out = self._buffer("out", K, cols)
            # im2col, GEMM and the copy to the top piece by piece: each reads what the last wrote, in L2
            for piece, pcols in self._pieces(images, R + has_bias):
                im2col(x[piece], col[:, pcols], self.k, self.k, self.pad, self.stride, self.dilation, self.oh, self.ow)
                np.matmul(self.w_aug, col[:, pcols], out=out[:, pcols])
                np.copyto(y[piece], out[:, pcols].reshape(K, -1, y.shape[2]).transpose(1, 0, 2))

    def backward(self, tops, propagate_down, bottoms):
        N, K = bottoms[0].shape[0], self.params[0].shape[0]
        w = self.params[0]
        R, has_bias = w.data[0].size, len(self.params) > 1
        dy = tops[0].diff.reshape(N, K, -1)
        for images, cols in self._chunks(N):
            col = self._buffer("col", R + has_bias, cols, images.start)   # forward's im2col(x)
            dy2d = self._buffer("out", K, cols)
            np.copyto(dy2d.reshape(K, -1, dy.shape[2]), dy[images].transpose(1, 0, 2))
            if images.start == 0:
                np.matmul(dy2d, col.T, out=self.dw_aug)
            else:
                self.dw_aug += np.matmul(dy2d, col.T, out=self.dw_chunk)
            if propagate_down[0]:     # dX piece by piece: col2im reads dcol while it is in L2
                for piece, pcols in self._pieces(images, R):
                    dcol = self._buffer("dcol", R, pcols.stop - pcols.start)
                    np.matmul(w.data.reshape(K, R).T, dy2d[:, pcols], out=dcol)
                    col2im(dcol, bottoms[0].diff[piece], self.k, self.k, self.pad, self.stride,
                           self.dilation, self.oh, self.ow)
        w.diff.reshape(K, R)[...] = self.dw_aug[:, :R]
        if has_bias:
            self.params[1].diff[...] = self.dw_aug[:, R]

    def activation_density(self, bottoms):
        x = bottoms[0].data
        return "spatial", float(np.count_nonzero(x)) / x.size

    def count_mults(self):
        K, C = self.params[0].shape[:2]
        W = self.params[0].data
        return {"direct": K * C * self.k * self.k * self.oh * self.ow, "weight_domain": "spatial",
                "weight_density": float(np.count_nonzero(W)) / W.size}

    def count_sparse_mults(self, bottoms):
        return {"direct_sparse": counting.conv_nonzero_products(bottoms[0].data, self.params[0].data, self.pad,
                                                                self.stride, self.dilation)}
