# Passes over fewer than this many elements (1 MB of float32) run on one thread. Such a
# pass takes ~0.1 ms on one core; at 2 threads it waits for the second one, which may be
# asleep after BLAS work or busy with another process: LeNet's pool2 (64x50x8x8, 0.8 MB)
# in `wincaffe time --threads 2` with the other core loaded took 0.73 / 0.67 ms forward /
# backward on 2 threads and 0.28 / 0.19 ms on one (medians of 6 alternating runs); on a
# quiet machine 2 threads win a little (forward + backward 0.28 against 0.35 ms).
# Used by the pooling kernels, gemm_to_nchw (im2col.pyx) and the FFT canvas passes
# (canvas.pyx), through _threads; the including module cimports openmp.
cdef Py_ssize_t SERIAL_BELOW = 1 << 18


cdef inline int _threads(Py_ssize_t elements) noexcept nogil:
    """The thread count for a pass over ``elements`` elements."""
    return 1 if elements < SERIAL_BELOW else openmp.omp_get_max_threads()
