"""Batched products for WinogradConv: the OpenMP + single-threaded BLAS kernel equals np.matmul."""
import numpy as np
import pytest

from wincaffe._kernels import gemm
from wincaffe._kernels.batched_gemm import batched_matmul as omp_batched_matmul
from wincaffe._kernels.threads import get_omp_threads
from wincaffe.testing import omp_threads


@pytest.fixture
def two_threads():
    with omp_threads(2):
        yield


def operands(dtype, P=6, m=7, k=5, n=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((P, m, k)).astype(dtype), rng.standard_normal((P, k, n)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("kernel", [omp_batched_matmul, gemm.batched_matmul])
def test_equals_numpy_matmul(two_threads, dtype, trans_a, trans_b, kernel):
    a, b = operands(dtype)
    a_in = np.ascontiguousarray(a.transpose(0, 2, 1)) if trans_a else a
    b_in = np.ascontiguousarray(b.transpose(0, 2, 1)) if trans_b else b
    out = np.full((6, 7, 9), np.nan, dtype)
    kernel(a_in, b_in, out, trans_a, trans_b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol)


def test_large_products_equal_numpy_on_two_threads(two_threads):
    # WinogradConv's F(4,3) forward at C = K = 64: 36 products 64×64 @ 64×1024
    a, b = operands(np.float32, P=36, m=64, k=64, n=1024, seed=1)
    out = np.empty((36, 64, 1024), np.float32)
    omp_batched_matmul(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-3)


def test_empty_inner_dimension_gives_zeros(two_threads):
    out = np.full((2, 3, 4), np.nan)
    omp_batched_matmul(np.empty((2, 3, 0)), np.empty((2, 0, 4)), out)
    np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize("a_shape, b_shape, out_shape, trans", [
    ((5, 7, 5), (6, 5, 9), (6, 7, 9), (False, False)),    # a's batch
    ((6, 7, 5), (5, 5, 9), (6, 7, 9), (False, False)),    # b's batch
    ((6, 7, 5), (6, 5, 9), (5, 7, 9), (False, False)),    # out's batch
    ((6, 7, 5), (6, 5, 9), (6, 7, 8), (False, False)),    # n
    ((6, 7, 5), (6, 9, 4), (6, 7, 9), (False, True)),     # k under trans_b
    ((6, 5, 6), (6, 5, 9), (6, 7, 9), (True, False)),     # m under trans_a (k matches)
    ((6, 7, 5), (6, 5, 9), (6, 7, 9), (True, False)),     # a not transposed as claimed
])
def test_shape_mismatch_is_a_clear_error(a_shape, b_shape, out_shape, trans):
    with pytest.raises(ValueError, match="does not give out"):
        omp_batched_matmul(np.ones(a_shape), np.ones(b_shape), np.empty(out_shape), *trans)


def test_dispatcher_falls_back_to_matmul_for_odd_arrays(two_threads):
    a, b = operands(np.float64, m=5, k=5)
    expected = a @ b[:, :, :5]
    np.testing.assert_allclose(gemm.batched_matmul(a, b[:, :, :5], np.empty((6, 5, 5))), expected)
    np.testing.assert_allclose(gemm.batched_matmul(a.astype(np.float32), b[:, :, :5],
                                                   np.empty((6, 5, 5))), expected, rtol=1e-5, atol=1e-6)
    square = a.copy()
    gemm.batched_matmul(square, b[:, :5, :5].copy(), square)          # out is an input
    np.testing.assert_allclose(square, a @ b[:, :5, :5])


def test_scipy_blas_stays_at_one_thread_after_set_num_threads():
    if gemm.BACKEND == "numpy":
        pytest.skip("SciPy's BLAS is shared with NumPy here: the OpenMP path is off")
    from threadpoolctl import threadpool_info

    from wincaffe.threads import set_num_threads
    before = get_omp_threads()
    try:
        set_num_threads(2)
        pools = {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        scipy_pool = gemm._scipy_pool.info()[0]["filepath"]
        assert pools[scipy_pool] == 1
        assert any(n == 2 for path, n in pools.items() if path != scipy_pool)   # NumPy's keeps 2
    finally:
        set_num_threads(before)
