# cython: language_level=3
"""Moving planes into and out of FFT canvases, the planes shared among OpenMP threads.

FFTConv transforms each (N, C) plane on an Fh × Fw canvas whose border stays zero:

    place(src, canvas, top, left)        canvas[n, c, top + i, left + j] = src[n, c, i, j]
    crop(canvas, top, left, out, bias)   out[n, k, i, j] = canvas[n, k, top + i, left + j] (+ bias[k])

src and out (N, C, H, W), canvas (N, C, Fh, Fw), all C-contiguous of one float dtype.
The same copies and one addition per element as NumPy's slice assignment and broadcast
add, so the results are NumPy's bit for bit; NumPy runs them on one thread. Passes over
fewer than SERIAL_BELOW elements stay on one thread (serial_below.pxi).
"""
cimport openmp
from cython.parallel cimport prange
from libc.string cimport memcpy

include "serial_below.pxi"

ctypedef fused real:
    float
    double


cdef _check(str name, const Py_ssize_t* p, const Py_ssize_t* c, Py_ssize_t top, Py_ssize_t left):
    """The planes p (N, C, H, W) fit the canvases c (N, C, Fh, Fw) at (top, left)."""
    plane, canvas = (p[0], p[1], p[2], p[3]), (c[0], c[1], c[2], c[3])
    if (plane[:2] != canvas[:2] or top < 0 or left < 0
            or top + plane[2] > canvas[2] or left + plane[3] > canvas[3]):
        raise ValueError(f"{name}: planes {plane} at offset ({top}, {left}) do not fit "
                         f"the canvases {canvas}")


def place(const real[:, :, :, ::1] src not None, real[:, :, :, ::1] canvas not None,
          Py_ssize_t top, Py_ssize_t left):
    """canvas[:, :, top:top + H, left:left + W] = src; the rest of the canvas is untouched."""
    cdef Py_ssize_t N = src.shape[0], C = src.shape[1], H = src.shape[2], W = src.shape[3]
    _check("place", &src.shape[0], &canvas.shape[0], top, left)
    cdef Py_ssize_t nc, i
    if N * C * H * W == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads(N * C * H * W)):
            for i in range(H):
                memcpy(&canvas[nc // C, nc % C, top + i, left], &src[nc // C, nc % C, i, 0],
                       W * sizeof(real))


def crop(const real[:, :, :, ::1] canvas not None, Py_ssize_t top, Py_ssize_t left,
         real[:, :, :, ::1] out not None, const real[::1] bias=None):
    """out = canvas[:, :, top:top + Ho, left:left + Wo] (+ bias[k] on plane k; None: no bias)."""
    cdef Py_ssize_t N = out.shape[0], K = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    _check("crop", &out.shape[0], &canvas.shape[0], top, left)
    cdef bint has_bias = bias is not None
    if has_bias and bias.shape[0] != K:
        raise ValueError(f"crop: bias has {bias.shape[0]} elements, expected {K}")
    cdef Py_ssize_t nk, n, k, i, j
    cdef real b
    if N * K * Ho * Wo == 0:
        return
    with nogil:
        for nk in prange(N * K, schedule="static", num_threads=_threads(N * K * Ho * Wo)):
            n = nk // K
            k = nk % K
            if has_bias:
                b = bias[k]
                for i in range(Ho):
                    for j in range(Wo):
                        out[n, k, i, j] = canvas[n, k, top + i, left + j] + b
            else:
                for i in range(Ho):
                    memcpy(&out[n, k, i, 0], &canvas[n, k, top + i, left], Wo * sizeof(real))
