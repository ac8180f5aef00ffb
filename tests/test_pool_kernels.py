"""The pooling kernel builds (wincaffe._kernels.pool): every build this machine can run,
forced one by one, against Caffe's loops and against each other, bit for bit.

The AVX2 build runs float32 2x2 windows at stride 2 tiling planes of a width W % 8 == 0
(LeNet's pool1 and pool2) as shuffles over eight windows; other cases share the scalar
code. The shapes below cover both: widths 8, 16, 24, 40 (vector path, odd and even
numbers of four-window chunks, chunks crossing row pairs and planes), 9 and 12 (not).
"""
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from layers.pooling import pool_output_size
from test_layers import caffe_pool_backward_reference, caffe_pool_reference  # Caffe's loops
from wincaffe._kernels import pool
from wincaffe.testing import make_layer, omp_threads

PATHS = pool.available_paths()


def _data(rng, shape, kind):
    if kind == "ties":                                       # many ties, NaN and signed zeros
        x = rng.integers(-2, 3, size=shape).astype(np.float32)
        x.flat[rng.choice(x.size, max(1, x.size // 9), replace=False)] = np.nan
        x.flat[rng.choice(x.size, max(1, x.size // 9), replace=False)] = -0.0
        return x
    return rng.standard_normal(shape).astype(np.float32)


def _run(k, x, pool_mode, window, dy):
    """One path's forward and backward: (y, argmax or None, dx)."""
    kk, s, pad = window
    N, C, H, W = x.shape
    oh, ow = pool_output_size(H, kk, pad, s), pool_output_size(W, kk, pad, s)
    y = np.full((N, C, oh, ow), 7, np.float32)               # garbage: every entry must be written
    dx = np.full(x.shape, 9, np.float32)
    if pool_mode == "MAX":
        arg = np.full((N, C, oh, ow), -5, np.int32)
        k.max_pool_forward(x, y, arg, kk, kk, s, s, pad)
        k.max_pool_backward(dy, arg, dx, kk, kk, s, s, pad)
        return y, arg, dx
    k.ave_pool_forward(x, y, kk, kk, s, s, pad)
    k.ave_pool_backward(dy, dx, kk, kk, s, s, pad)
    return y, None, dx


def test_the_best_build_is_chosen_and_builds_can_be_forced():
    assert PATHS[-1] == "baseline" and pool.KERNELS == PATHS[0]
    for path in PATHS:
        assert pool.kernels(path).SIMD == path
    with pytest.raises(ValueError, match="unknown kernel path"):
        pool.kernels("avx9000")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pool_mode", ["MAX", "AVE"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 4, 16), (2, 1, 6, 24), (1, 3, 2, 40),
                                   (3, 1, 2, 8), (2, 2, 8, 12), (1, 2, 6, 9)])
@pytest.mark.parametrize("window", [(2, 2, 0), (3, 2, 0), (3, 2, 1)])
@pytest.mark.parametrize("kind", ["ties", "normal"])
def test_each_build_equals_caffe_loops_bit_for_bit(path, pool_mode, shape, window, kind):
    """Forward (values, argmax, signs of zeros, NaN where Caffe keeps it) and backward
    (0 + dy at the winners, dy / size over AVE windows) exactly as Caffe's loops; a 3x3
    window at stride 2 gives the same output size as 2x2 on these planes, so the backward
    must not take the tiled path from the shapes alone."""
    rng = np.random.default_rng(zlib.crc32(repr((shape, window, kind)).encode()))   # hash() of a str varies per run
    x = _data(rng, shape, kind)
    y_ref, arg_ref = caffe_pool_reference(x, pool_mode, *window)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dy.flat[::4] = -0.0
    y, arg, dx = _run(pool.kernels(path), x, pool_mode, window, dy)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(y_ref))
    if pool_mode == "MAX":
        np.testing.assert_array_equal(arg, arg_ref)
    expect = caffe_pool_backward_reference(dy, arg_ref, pool_mode, *window, shape)
    np.testing.assert_array_equal(dx, expect)
    np.testing.assert_array_equal(np.signbit(dx), np.signbit(expect))


@pytest.mark.parametrize("pool_mode", ["MAX", "AVE"])
@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 4), half_h=st.integers(1, 5), w8=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_builds_give_the_same_bits_on_random_tiled_planes(pool_mode, N, C, half_h, w8, seed, ties):
    rng = np.random.default_rng(seed)
    shape = (N, C, 2 * half_h, 8 * w8)
    x = _data(rng, shape, "ties" if ties else "normal")
    dy = rng.standard_normal((N, C, half_h, 4 * w8)).astype(np.float32)
    runs = [_run(pool.kernels(path), x, pool_mode, (2, 2, 0), dy) for path in PATHS]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            if a is not None:
                assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("path", PATHS)
def test_large_tiled_input_is_the_same_on_one_and_two_threads(path):
    """Above the one-thread limit (2^18 elements) the chunks are split among the threads."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 20, 24, 96)).astype(np.float32)
    dy = rng.standard_normal((8, 20, 12, 48)).astype(np.float32)
    out = []
    for threads in (1, 2):
        with omp_threads(threads):
            out.append([_run(pool.kernels(path), x, mode, (2, 2, 0), dy) for mode in ("MAX", "AVE")])
    for a, b in zip(out[0], out[1]):
        for u, v in zip(a, b):
            if u is not None:
                np.testing.assert_array_equal(u, v)
    full = x.reshape(8, 20, 12, 2, 48, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(out[0][0][0], full)


@pytest.mark.parametrize("shape,window,dtype,expect", [
    ((2, 3, 8, 8), 2, np.float32, True), ((2, 3, 24, 24), 2, np.float32, True),
    ((2, 3, 12, 12), 2, np.float32, False), ((2, 3, 8, 8), 2, np.float64, False),
    ((2, 3, 9, 8), 2, np.float32, False), ((2, 3, 8, 8), 3, np.float32, False)])
def test_the_layer_reports_whether_its_windows_run_eight_at_a_time(shape, window, dtype, expect):
    layer, bottoms, tops = make_layer("Pooling", [shape], dtype=dtype,
                                      pooling_param={"pool": "MAX", "kernel_size": window, "stride": 2})
    vector = expect and "avx2" in PATHS
    assert layer.execution() == (f"{pool.KERNELS} x8" if vector else "scalar")


@pytest.mark.parametrize("path", PATHS)
def test_argmax_of_many_blocks_equals_a_numpy_reference(path):
    """1365 four-window chunks (an odd number, several work items of 512 chunks, chunks
    crossing row pairs and planes): every argmax is the flat index of Caffe's winner."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 26, 40)).astype(np.float32)   # no ties: np.argmax is Caffe's
    y = np.empty((3, 7, 13, 20), np.float32)
    arg = np.empty(y.shape, np.int32)
    pool.kernels(path).max_pool_forward(x, y, arg, 2, 2, 2, 2, 0)
    windows = x.reshape(3, 7, 13, 2, 20, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 7, 13, 20, 4)
    j = np.argmax(windows, axis=-1)                               # 0 a, 1 b, 2 c, 3 d
    expect = (2 * np.arange(13)[:, None] + j // 2) * 40 + 2 * np.arange(20)[None, :] + j % 2
    np.testing.assert_array_equal(arg, expect)
    np.testing.assert_array_equal(y, windows.max(axis=-1))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("planes", [1, 3])
def test_signed_zeros_in_the_last_chunk_and_underflowing_gradients(path, planes):
    """A window of four -0.0 in a lone last chunk gives +0 (((((0 + -0) + -0) + -0) + -0) / 4);
    AVE's backward of the smallest negative gradients gives +0 (dy / 4 rounds to -0, then
    0 + -0 = +0), in both dtypes and at widths on and off the vector path. A build compiled
    with FMA contraction fuses 0 + dy * 0.25 and keeps the -0."""
    k = pool.kernels(path)
    x = np.full((1, planes, 2, 8), -0.0, np.float32)
    y = np.full((1, planes, 1, 4), 7, np.float32)
    k.ave_pool_forward(x, y, 2, 2, 2, 2, 0)
    assert (y == 0).all() and not np.signbit(y).any()
    for dtype, tiny in ((np.float32, -1.4e-45), (np.float64, -5e-324)):
        for W in (8, 12):
            dy = np.full((1, planes, 1, W // 2), tiny, dtype)
            dx = np.full((1, planes, 2, W), 9, dtype)
            k.ave_pool_backward(dy, dx, 2, 2, 2, 2, 0)
            assert (dx == 0).all() and not np.signbit(dx).any(), (dtype, W)


@pytest.mark.parametrize("path", PATHS)
def test_max_backward_without_the_window_scatters_any_argmax(path):
    """3x3 windows at stride 2 on 8x16 planes give the 2x2 output shape: without the window
    (and with the right one) the backward must scatter to winners outside a 2x2 window."""
    rng = np.random.default_rng(1)
    k = pool.kernels(path)
    x = rng.standard_normal((2, 3, 8, 16)).astype(np.float32)
    y_ref, arg_ref = caffe_pool_reference(x, "MAX", 3, 2, 0)
    assert y_ref.shape == (2, 3, 4, 8)
    y = np.empty(y_ref.shape, np.float32)
    arg = np.empty(y.shape, np.int32)
    k.max_pool_forward(x, y, arg, 3, 3, 2, 2, 0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    expect = caffe_pool_backward_reference(dy, arg_ref, "MAX", 3, 2, 0, x.shape)
    for window in ((), (3, 3, 2, 2, 0)):
        dx = np.full(x.shape, 9, np.float32)
        k.max_pool_backward(dy, arg, dx, *window)
        np.testing.assert_array_equal(dx, expect)


def test_the_layer_backward_of_3x3_windows_on_tiled_planes():
    rng = np.random.default_rng(2)
    layer, bottoms, tops = make_layer("Pooling", [(2, 3, 8, 16)], dtype=np.float32,
                                      pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2})
    bottoms[0].data[...] = rng.standard_normal((2, 3, 8, 16))
    layer.forward(bottoms, tops)
    g = rng.standard_normal(tops[0].shape).astype(np.float32)
    tops[0].diff[...] = g
    layer.backward(tops, [True], bottoms)
    _, arg_ref = caffe_pool_reference(bottoms[0].data, "MAX", 3, 2, 0)
    np.testing.assert_array_equal(bottoms[0].diff,
                                  caffe_pool_backward_reference(g, arg_ref, "MAX", 3, 2, 0, (2, 3, 8, 16)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pool_mode", ["MAX", "AVE"])
def test_the_kernels_write_nothing_outside_their_arrays(path, pool_mode):
    """Outputs as views into larger buffers: the sentinels around them stay untouched
    (odd and even chunk counts, one and several work items)."""
    rng = np.random.default_rng(4)
    k = pool.kernels(path)
    for shape in ((1, 1, 2, 8), (1, 3, 2, 8), (2, 5, 26, 40)):
        N, C, H, W = shape
        n_in, n_out = N * C * H * W, N * C * H * W // 4
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal((N, C, H // 2, W // 2)).astype(np.float32)
        ybuf = np.full(n_out + 128, 5, np.float32)       # 64 sentinels on each side
        abuf = np.full(n_out + 128, -7, np.int32)
        dbuf = np.full(n_in + 128, 5, np.float32)
        y = ybuf[64:64 + n_out].reshape(dy.shape)
        dx = dbuf[64:64 + n_in].reshape(shape)
        if pool_mode == "MAX":
            arg = abuf[64:64 + n_out].reshape(dy.shape)
            k.max_pool_forward(x, y, arg, 2, 2, 2, 2, 0)
            k.max_pool_backward(dy, arg, dx, 2, 2, 2, 2, 0)
        else:
            k.ave_pool_forward(x, y, 2, 2, 2, 2, 0)
            k.ave_pool_backward(dy, dx, 2, 2, 2, 2, 0)
        for buf, fill, n in ((ybuf, 5, n_out), (abuf, -7, n_out), (dbuf, 5, n_in)):
            assert (buf[:64] == fill).all() and (buf[64 + n:] == fill).all(), shape


@pytest.mark.parametrize("path", PATHS)
def test_max_pooling_rejects_planes_its_int32_argmax_cannot_index(path):
    k = pool.kernels(path)
    x = np.empty((0, 1, 65536, 65536), np.float32)       # no memory: N = 0
    y = np.empty((0, 1, 32768, 32768), np.float32)
    arg = np.empty(y.shape, np.int32)
    with pytest.raises(ValueError, match="int32 argmax"):
        k.max_pool_forward(x, y, arg, 2, 2, 2, 2, 0)
    with pytest.raises(ValueError, match="int32 argmax"):
        k.max_pool_backward(y, arg, x, 2, 2, 2, 2, 0)
