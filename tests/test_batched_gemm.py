"""Batched products for WinogradConv and FFTConv: the OpenMP + single-threaded BLAS kernel equals np.matmul."""
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

    def draw(shape):
        x = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)
    return draw((P, m, k)), draw((P, k, n))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("kernel", [omp_batched_matmul, gemm.batched_matmul])
def test_equals_numpy_matmul(two_threads, dtype, trans_a, trans_b, kernel):
    a, b = operands(dtype)
    a_in = np.ascontiguousarray(a.transpose(0, 2, 1)) if trans_a else a
    b_in = np.ascontiguousarray(b.transpose(0, 2, 1)) if trans_b else b
    out = np.full((6, 7, 9), np.nan, dtype)
    kernel(a_in, b_in, out, trans_a, trans_b)
    tol = 1e-5 if dtype in (np.float32, np.complex64) else 1e-12
    np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol)


def test_complex_operands_are_transposed_not_conjugated(two_threads):
    """op(x) is xᵀ for complex dtypes too (FFTConv conjugates explicitly where it must)."""
    a, b = operands(np.complex128, seed=2)
    out = np.empty((6, 7, 9), np.complex128)
    omp_batched_matmul(np.ascontiguousarray(a.transpose(0, 2, 1)), np.ascontiguousarray(b.transpose(0, 2, 1)),
                       out, True, True)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    assert not np.allclose(out, np.conj(a) @ np.conj(b))


@pytest.mark.parametrize("m, n", [(1, 9), (7, 1)])
def test_matrix_vector_products_go_to_numpy(two_threads, monkeypatch, m, n):
    """m or n = 1: np.matmul (its gemv, faster than a gemm per product), bit for bit."""
    if gemm.BACKEND == "numpy":
        pytest.skip("the OpenMP path is off here")
    monkeypatch.setattr(gemm, "_omp_batched_matmul", lambda *args: pytest.fail("OpenMP path taken"))
    a, b = operands(np.complex64, m=m, n=n, seed=3)
    out = np.empty((6, m, n), np.complex64)
    gemm.batched_matmul(a, b, out)
    np.testing.assert_array_equal(out, np.matmul(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_dispatcher_takes_the_openmp_path_on_two_threads_only(monkeypatch, dtype):
    if gemm.BACKEND == "numpy":
        pytest.skip("the OpenMP path is off here")
    calls = []
    kernel = gemm._omp_batched_matmul
    monkeypatch.setattr(gemm, "_omp_batched_matmul", lambda *args: calls.append(1) or kernel(*args))
    a, b = operands(dtype, seed=4)
    out = np.empty((6, 7, 9), dtype)
    with omp_threads(1):
        gemm.batched_matmul(a, b, out)
    assert calls == []
    with omp_threads(2):
        gemm.batched_matmul(a, b, out)
    assert calls == [1]
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


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
    big_a, big_b = operands(np.float32, P=4, m=96, k=96, n=96, seed=6)   # in place, large enough that
    expected = big_a @ big_b                                            # a gemm reading its output fails
    gemm.batched_matmul(big_a, big_b, big_a)
    np.testing.assert_allclose(big_a, expected, rtol=1e-4, atol=1e-3)
    plain = np.empty((5, 9))                                            # 2-D: np.matmul's broadcasting
    np.testing.assert_allclose(gemm.batched_matmul(a[0], b[0], plain), a[0] @ b[0])


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
