# cython: language_level=3
# distutils: extra_compile_args = -ffp-contract=off
"""The SGD step with momentum and L2 weight decay in one pass over the weights:

    g <- g + λ·w;   h <- μ·h + η·g;   w <- w − h          (Caffe's SGDSolver, Jia et al.)

element by element in exactly the order (and precision: λ, μ, η rounded to the
weights' type) of the NumPy statements it replaces, so results are bit for bit the
same; -ffp-contract=off keeps the compiler from fusing them into FMAs. One pass
instead of six over each parameter (LeNet-5's 431k weights: 1.7 MB per array).
Serial: a parallel region costs more than the pass at these sizes (measured ~130 µs
per region on 2 threads here, the whole LeNet-5 pass ~0.2 ms on one).
"""
ctypedef fused real:
    float
    double


def sgd_momentum_step(real[::1] w, real[::1] g, real[::1] h, double rate, double decay, double momentum):
    """In place: g += decay·w (when decay != 0), h = momentum·h + rate·g, w -= h.
    w, g and h must be three different arrays (NumPy's ``h *= m`` would also scale g if
    g were h)."""
    cdef Py_ssize_t i, n = w.shape[0]
    if g.shape[0] != n or h.shape[0] != n:
        raise ValueError(f"sgd_momentum_step: w, g, h have {n}, {g.shape[0]}, {h.shape[0]} entries")
    cdef real r = <real>rate, d = <real>decay, m = <real>momentum, gi, hi
    cdef bint with_decay = decay != 0
    with nogil:
        for i in range(n):
            gi = g[i]
            if with_decay:
                gi = gi + d * w[i]
                g[i] = gi
            hi = h[i] * m
            hi = hi + r * gi
            h[i] = hi
            w[i] = w[i] - hi
