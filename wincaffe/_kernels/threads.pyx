# cython: language_level=3
"""The OpenMP thread count used by every ``prange`` in wincaffe's kernels."""
cimport openmp


def set_omp_threads(int n):
    """Use ``n`` OpenMP threads in later parallel regions (n >= 1)."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    openmp.omp_set_num_threads(n)


def get_omp_threads():
    return openmp.omp_get_max_threads()
