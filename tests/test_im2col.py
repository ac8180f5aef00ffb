"""im2col / col2im / gemm_to_nchw against plain NumPy references, exactly (the kernels move values and add
them in a fixed order, so no tolerance is needed).

The widths of the output rows run over 1..19, 24, 31, 32, 33 and 40 so every branch of the chunked
row copy is taken: runs of 1–3, 4–7 (two overlapping chunks of 4), 8, and 9 or more
(chunks of 8, the last one overlapping), inside the image and cut by the padding.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wincaffe._kernels.im2col import col2im, gemm_to_nchw, im2col


def _out(size, k, pad, stride, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def im2col_reference(x, k, pad, stride, dilation):
    """col (C·k², N·oh·ow) from zero-padded slices, one kernel offset (i, j) at a time."""
    N, C, H, W = x.shape
    oh, ow = _out(H, k, pad, stride, dilation), _out(W, k, pad, stride, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    col = np.empty((C, k, k, N, oh, ow), x.dtype)
    for i in range(k):
        for j in range(k):
            rows = slice(i * dilation, i * dilation + stride * (oh - 1) + 1, stride)
            cols = slice(j * dilation, j * dilation + stride * (ow - 1) + 1, stride)
            col[:, i, j] = xp[:, :, rows, cols].transpose(1, 0, 2, 3)
    return col.reshape(C * k * k, N * oh * ow)


def col2im_reference(col, shape, k, pad, stride, dilation):
    """The adjoint: each offset (i, j), in ascending order, adds its block into a zero-padded
    dx, which is then cropped."""
    N, C, H, W = shape
    oh, ow = _out(H, k, pad, stride, dilation), _out(W, k, pad, stride, dilation)
    blocks = col.reshape(C, k, k, N, oh, ow)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), col.dtype)
    for i in range(k):
        for j in range(k):
            rows = slice(i * dilation, i * dilation + stride * (oh - 1) + 1, stride)
            cols = slice(j * dilation, j * dilation + stride * (ow - 1) + 1, stride)
            dxp[:, :, rows, cols] += blocks[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, pad:pad + H, pad:pad + W]


def _check(shape, k, pad, stride, dilation, dtype, seed=0):
    rng = np.random.default_rng(seed)
    N, C, H, W = shape
    oh, ow = _out(H, k, pad, stride, dilation), _out(W, k, pad, stride, dilation)
    x = rng.standard_normal(shape).astype(dtype)
    col = np.full((C * k * k, N * oh * ow), np.nan, dtype)      # every element must be written
    im2col(x, col, k, k, pad, stride, dilation, oh, ow)
    np.testing.assert_array_equal(col, im2col_reference(x, k, pad, stride, dilation))
    g = rng.standard_normal(col.shape).astype(dtype)
    dx = np.full(shape, np.nan, dtype)
    col2im(g, dx, k, k, pad, stride, dilation, oh, ow)
    np.testing.assert_array_equal(dx, col2im_reference(g, shape, k, pad, stride, dilation))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", list(range(1, 20)) + [24, 31, 32, 33, 40])
@pytest.mark.parametrize("k, pad", [(1, 0), (3, 0), (3, 1), (5, 2)])
def test_im2col_col2im_match_reference_at_every_row_width(width, k, pad, dtype):
    W = width + k - 1 - 2 * pad             # stride 1: ow == width
    if W < 1:
        pytest.skip("no such input")
    _check((2, 3, 6, W), k, pad, 1, 1, dtype)


@settings(max_examples=150, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 14), W=st.integers(1, 14),
       k=st.integers(1, 5), pad=st.integers(0, 3), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       double=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_im2col_col2im_match_reference_on_random_geometry(N, C, H, W, k, pad, stride, dilation, double, seed):
    if _out(H, k, pad, stride, dilation) < 1 or _out(W, k, pad, stride, dilation) < 1:
        return
    _check((N, C, H, W), k, pad, stride, dilation, np.float64 if double else np.float32, seed)


def test_lenet_shapes_match_reference():
    """LeNet-5's conv1 (1→20, 28×28, 5×5) and conv2 (20→50, 12×12, 5×5: rows of 8)."""
    _check((8, 1, 28, 28), 5, 0, 1, 1, np.float32)
    _check((8, 20, 12, 12), 5, 0, 1, 1, np.float32)


@pytest.mark.parametrize("col_shape", [(27, 31), (26, 32), (28, 32)])   # columns, then rows off by one
def test_wrong_col_shape_is_an_error(col_shape):
    x = np.zeros((2, 3, 6, 6), np.float32)
    with pytest.raises(ValueError, match="col has shape"):
        im2col(x, np.zeros(col_shape, np.float32), 3, 3, 0, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="col has shape"):
        col2im(np.zeros(col_shape, np.float32), x, 3, 3, 0, 1, 1, 4, 4)


@pytest.mark.parametrize("k, pad, stride, dilation, oh, ow, match", [
    (3, 0, 0, 1, 4, 4, "bad geometry"), (3, 0, -1, 1, 4, 4, "bad geometry"), (0, 0, 1, 1, 7, 7, "bad geometry"),
    (3, -1, 1, 1, 2, 2, "bad geometry"), (3, 0, 1, 0, 4, 4, "bad geometry"),
    (3, 0, 1, 1, 5, 4, "does not follow"), (3, 1, 1, 1, 4, 4, "does not follow"),
])
def test_bad_geometry_is_an_error_not_a_crash(k, pad, stride, dilation, oh, ow, match):
    x = np.zeros((2, 3, 6, 6), np.float32)
    col = np.zeros((3 * max(k, 1) ** 2, 2 * max(oh, 0) * max(ow, 0)), np.float32)
    with pytest.raises(ValueError, match=match):
        im2col(x, col, k, k, pad, stride, dilation, oh, ow)
    with pytest.raises(ValueError, match=match):
        col2im(col, x, k, k, pad, stride, dilation, oh, ow)
    with pytest.raises(TypeError):
        im2col(None, col, 3, 3, 0, 1, 1, 4, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, K, P", [(1, 1, 1), (3, 5, 7), (64, 20, 576), (4, 50, 64)])
def test_gemm_to_nchw_matches_numpy(N, K, P, dtype):
    rng = np.random.default_rng(N * K * P)
    out2d = rng.standard_normal((K, N * P)).astype(dtype)
    bias = rng.standard_normal(K).astype(dtype)
    y = np.full((N, K, P), np.nan, dtype)
    gemm_to_nchw(out2d, bias, y)
    np.testing.assert_array_equal(y, out2d.reshape(K, N, P).transpose(1, 0, 2) + bias[None, :, None])
    y[...] = np.nan
    gemm_to_nchw(out2d, None, y)
    np.testing.assert_array_equal(y, out2d.reshape(K, N, P).transpose(1, 0, 2))


def test_gemm_to_nchw_shape_errors():
    y = np.zeros((2, 3, 4), np.float32)
    for rows, cols in ((3, 9), (2, 8), (4, 8)):
        with pytest.raises(ValueError, match="out2d has shape"):
            gemm_to_nchw(np.zeros((rows, cols), np.float32), None, y)
    for n in (2, 4):
        with pytest.raises(ValueError, match=f"bias has {n} elements"):
            gemm_to_nchw(np.zeros((3, 8), np.float32), np.zeros(n, np.float32), y)
    with pytest.raises(TypeError):
        gemm_to_nchw(np.zeros((3, 8), np.float32), None, None)
