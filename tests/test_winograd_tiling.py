"""The Cython tiling kernels against a plain NumPy reference, on odd shapes."""
import numpy as np
import pytest

from wincaffe._kernels import winograd as dispatch
from wincaffe._kernels import winograd_tiles
from wincaffe.transforms.winograd import transform

try:
    from wincaffe._kernels import winograd_tiles_avx2
    HAVE_AVX2 = dispatch._cpu_has_avx2_fma()
except ImportError:
    winograd_tiles_avx2, HAVE_AVX2 = None, False

gather_transform, transform_scatter = dispatch.gather_transform, dispatch.transform_scatter
MODULES = [pytest.param(winograd_tiles, id="baseline"),
           pytest.param(winograd_tiles_avx2, id="avx2",
                        marks=pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2+FMA CPU or build"))]


def col(N, th, tw, ty, tx):
    """GEMM columns of tile (ty, tx) of images 0..N-1: (ty·N + n)·tw + tx."""
    return (ty * N + np.arange(N)) * tw + tx


def ref_gather(x, L, m, pad, th, tw):
    """out[i·α+l, p, col(n, ty, tx)] = (L · tile · Lᵀ)[i, l], tile = s×s window of the
    zero-padded plane at (ty·m, tx·m)."""
    N, P, H, W = x.shape
    A, S = L.shape
    Hp, Wp = (th - 1) * m + S, (tw - 1) * m + S
    xp = np.zeros((N, P, max(Hp, pad + H), max(Wp, pad + W)))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    out = np.zeros((A * A, P, N * th * tw))
    for ty in range(th):
        for tx in range(tw):
            tile = xp[:, :, ty * m:ty * m + S, tx * m:tx * m + S]
            o = np.einsum("ij,npjk,lk->ilpn", L, tile, L).reshape(A * A, P, N)
            out[:, :, col(N, th, tw, ty, tx)] = o
    return out


def ref_scatter(inp, L, m, pad, th, tw, out_shape, bias=None):
    """Σ_tiles Lᵀ · in_tile · L placed at (ty·m − pad, tx·m − pad), cropped, + bias."""
    N, P, Ho, Wo = out_shape
    A, S = L.shape
    Hp, Wp = (th - 1) * m + S, (tw - 1) * m + S
    big = np.zeros((N, P, max(Hp, pad + Ho), max(Wp, pad + Wo)))
    for ty in range(th):
        for tx in range(tw):
            t = inp[:, :, col(N, th, tw, ty, tx)].reshape(A, A, P, N)
            big[:, :, ty * m:ty * m + S, tx * m:tx * m + S] += np.einsum("ij,ilpn,lk->npjk", L, t, L)
    out = big[:, :, pad:pad + Ho, pad:pad + Wo].copy()
    if bias is not None:
        out += np.asarray(bias)[None, :, None, None]
    return out


CASES = [  # m, r, pad, H, W, N, P
    (2, 3, 1, 7, 9, 2, 3),
    (2, 3, 0, 5, 4, 1, 2),
    (4, 3, 0, 11, 6, 1, 2),
    (4, 3, 1, 3, 3, 2, 1),     # one partial tile
    (6, 3, 2, 13, 17, 2, 2),
    (2, 5, 2, 9, 8, 3, 1),
    (4, 5, 1, 10, 13, 2, 3),
    (6, 5, 0, 7, 19, 1, 2),
    (3, 2, 1, 6, 5, 2, 2),     # odd m, even r
    (1, 3, 1, 4, 5, 1, 2),     # m = 1
]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m,r,pad,H,W,N,P", CASES)
def test_kernels_match_numpy_reference(m, r, pad, H, W, N, P, dtype, mod):
    gather_transform, transform_scatter = mod.gather_transform, mod.transform_scatter
    rng = np.random.default_rng(m * 100 + r * 10 + pad)
    t = transform(m, r)
    AT, G, BT = t.matrices(dtype)
    A = np.ascontiguousarray(AT.T)
    a = t.alpha
    Ho, Wo = H + 2 * pad - r + 1, W + 2 * pad - r + 1
    th, tw = -(-Ho // m), -(-Wo // m)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=2e-4 * a ** 2)
    # input transform V = Bᵀ d B (with and without Winograd-ReLU)
    x = rng.standard_normal((N, P, H, W)).astype(dtype)
    ref = ref_gather(x.astype(np.float64), BT.astype(np.float64), m, pad, th, tw)
    for relu in (False, True):
        out = np.full((a * a, P, N * th * tw), np.nan, dtype)
        gather_transform(x, BT, m, pad, th, tw, out, relu)
        np.testing.assert_allclose(out, np.maximum(ref, 0) if relu else ref, **tol)
    # input gradient: scatter-add of B dV Bᵀ, padding cropped
    v = rng.standard_normal((a * a, P, N * th * tw)).astype(dtype)
    dx = np.full((N, P, H, W), np.nan, dtype)
    transform_scatter(v, BT, m, pad, th, tw, dx)
    np.testing.assert_allclose(dx, ref_scatter(v.astype(np.float64), BT.astype(np.float64), m, pad, th, tw,
                                               (N, P, H, W)), **tol)
    # output transform Y = Aᵀ M A + b, cropped to Ho×Wo
    bias = rng.standard_normal(P)
    y = np.full((N, P, Ho, Wo), np.nan, dtype)
    transform_scatter(v, A, m, 0, th, tw, y, bias)
    np.testing.assert_allclose(y, ref_scatter(v.astype(np.float64), A.astype(np.float64), m, 0, th, tw,
                                              (N, P, Ho, Wo), bias), **tol)
    # output-gradient transform dM = A dY Aᵀ (zeros past the crop)
    dy = rng.standard_normal((N, P, Ho, Wo)).astype(dtype)
    dm = np.full((a * a, P, N * th * tw), np.nan, dtype)
    gather_transform(dy, A, m, 0, th, tw, dm)
    np.testing.assert_allclose(dm, ref_gather(dy.astype(np.float64), A.astype(np.float64), m, 0, th, tw), **tol)


@pytest.mark.parametrize("m,r,pad,H,W,N,P", CASES[:6])
def test_scatter_is_the_adjoint_of_gather(m, r, pad, H, W, N, P):
    # <gather(x), v> == <x, scatter(v)> for both operator pairs (exact up to rounding)
    rng = np.random.default_rng(3)
    t = transform(m, r)
    AT, G, BT = t.matrices()
    a = t.alpha
    Ho, Wo = H + 2 * pad - r + 1, W + 2 * pad - r + 1
    th, tw = -(-Ho // m), -(-Wo // m)
    for L, p, shape in ((BT, pad, (N, P, H, W)), (np.ascontiguousarray(AT.T), 0, (N, P, Ho, Wo))):
        x = rng.standard_normal(shape)
        v = rng.standard_normal((a * a, P, N * th * tw))
        gx = np.empty_like(v)
        gather_transform(x, L, m, p, th, tw, gx)
        sv = np.empty_like(x)
        transform_scatter(v, L, m, p, th, tw, sv)
        assert np.isclose((gx * v).sum(), (x * sv).sum(), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 5, 17, 14), (64, 1, 40, 40), (2, 3, 130, 129), (3, 1, 260, 200)])
def test_threads_and_work_splits_give_identical_results(shape):
    # work items: several channels of all images (small planes), all images of one channel,
    # chunks of images (a 1-channel input: the batch is split between threads), one image
    rng = np.random.default_rng(5)
    t = transform(4, 3)
    AT, G, BT = t.matrices(np.float32)
    N, P, H, W = shape
    x = rng.standard_normal(shape).astype(np.float32)
    th, tw = -(-H // 4), -(-W // 4)
    outs, backs = [], []
    for nt in (1, 2, 3):
        o = np.empty((36, P, N * th * tw), np.float32)
        gather_transform(x, BT, 4, 1, th, tw, o, False, nt)
        outs.append(o)
        dx = np.empty_like(x)
        transform_scatter(o, BT, 4, 1, th, tw, dx, None, nt)
        backs.append(dx)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    assert all(np.array_equal(backs[0], o) for o in backs[1:])
    if N * P * H * W < 200000:  # and the values are right
        ref = ref_gather(x[:2].astype(np.float64), BT.astype(np.float64), 4, 1, th, tw)
        got = outs[0].reshape(36, P, th, N, tw)[:, :, :, :2].reshape(36, P, -1)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_dispatch_picks_a_build():
    assert dispatch.KERNELS in ("winograd_tiles", "winograd_tiles_avx2")
    if HAVE_AVX2:
        assert dispatch.KERNELS == "winograd_tiles_avx2"


def test_shape_errors():
    t = transform(2, 3)
    BT = t.matrices()[2]
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ValueError, match="expected"):
        gather_transform(x, BT, 2, 1, 3, 3, np.zeros((16, 2, 8)))
    with pytest.raises(ValueError, match="expected"):
        transform_scatter(np.zeros((16, 2, 8)), BT, 2, 1, 3, 3, x)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m,r,pad,H,W,N,C,K", [
    (4, 5, 0, 28, 28, 64, 1, 20), (2, 3, 1, 9, 11, 3, 2, 5), (4, 3, 2, 13, 7, 5, 3, 4),
    (6, 3, 0, 5, 5, 1, 1, 3), (2, 5, 2, 8, 8, 7, 2, 33), (4, 5, 0, 12, 12, 64, 20, 50),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_product_kernels_match_gemm_path(m, r, pad, H, W, N, C, K, dtype, mod, threads):
    """product_transform_scatter = transform_scatter(U @ V); gather_transform_grads = the
    products of gather_transform's dM with V and U."""
    AT, _, BT = transform(m, r).matrices(dtype)
    A_, BT = np.ascontiguousarray(AT.T), np.ascontiguousarray(BT)
    a, Ho, Wo = m + r - 1, H + 2 * pad - r + 1, W + 2 * pad - r + 1
    th, tw = -(-Ho // m), -(-Wo // m)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    V = np.empty((a * a, C, N * th * tw), dtype)
    mod.gather_transform(x, BT, m, pad, th, tw, V)
    U = rng.standard_normal((a * a, K, C)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    dy = rng.standard_normal((N, K, Ho, Wo)).astype(dtype)
    eps = 1e-5 if dtype == np.float32 else 1e-12   # × the largest entry: long float32 sums

    def close(got, ref):
        np.testing.assert_allclose(got, ref, rtol=eps, atol=eps * np.abs(ref).max())

    y_ref, y = np.empty((N, K, Ho, Wo), dtype), np.empty((N, K, Ho, Wo), dtype)
    mod.transform_scatter(np.matmul(U, V), A_, m, 0, th, tw, y_ref, b)
    mod.product_transform_scatter(U, V, A_, m, 0, th, tw, y, b, num_threads=threads)
    close(y, y_ref)

    dM = np.empty((a * a, K, N * th * tw), dtype)
    mod.gather_transform(dy, A_, m, 0, th, tw, dM)
    dU, dV = np.empty((a * a, K, C), dtype), np.full_like(V, np.nan)
    mod.gather_transform_grads(dy, A_, m, 0, th, tw, V, U, dU, dV, num_threads=threads)
    close(dU, dM @ V.transpose(0, 2, 1))
    close(dV, U.transpose(0, 2, 1) @ dM)
    dU_only = np.empty_like(dU)
    mod.gather_transform_grads(dy, A_, m, 0, th, tw, V, U, dU_only, num_threads=threads)
    np.testing.assert_array_equal(dU_only, dU)
