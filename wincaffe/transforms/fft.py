"""Real 2-D FFTs for FFT convolution: backends, reusable plans, fast sizes.

Pure math, no layer state. Liu & Turakhia, section 3.1, eq. (1) computes a
convolution as F⁻¹(F(f) · F(g) · M); section 4.2 does it with numpy's
``rfftn``/``irfftn`` on an Fh × Fw canvas (H + h − 1 per axis), so spectra of
real (..., Fh, Fw) arrays are half spectra (..., Fh, Fw//2 + 1). This module
provides those two transforms over the last two axes of batched arrays such as
(N, C, H, W), through one of three backends:

  ``pyfftw`` (default) -- FFTW through pyFFTW; one plan per (shape, dtype, size),
                          built once and reused; planner wisdom is kept in the
                          cache folder (``$WINCAFFE_DATA`` or ``~/.cache/wincaffe``)
                          as ``fftw_wisdom`` so later runs skip the planning.
  ``scipy``            -- ``scipy.fft`` (pocketfft, ``workers=threads``).
  ``numpy``            -- ``numpy.fft`` (pocketfft without the multi-axis
                          optimisations: several times slower than scipy's).

If pyFFTW cannot be imported, asking for ``pyfftw`` warns once per process and
falls back to ``scipy`` (or ``numpy`` if SciPy is missing too).

Conventions (FFTW's): both transforms are UNNORMALISED,

    r2c:  X[..., u, v] = Σ_{i<Fh, j<Fw} x[..., i, j] · exp(−2πi (u·i/Fh + v·j/Fw)),   v ≤ Fw//2
    c2r:  x[..., i, j] = Re Σ_{u<Fh, v≤Fw//2} ω_v · X[..., u, v] · exp(+2πi (u·i/Fh + v·j/Fw))

with ω_v = 2 except ω = 1 for v = 0 and v = Fw/2 (:func:`hermitian_weights`): the
half spectrum stands for its Hermitian extension, and whatever part of the v = 0
and v = Fw/2 columns no Hermitian extension can hold is ignored (numpy's
``irfft2`` and FFTW's c2r both behave so; the tests check it, masked spectra rely
on it). So ``c2r(r2c(x)) == Fh·Fw·x``; callers fold 1/(Fh·Fw) into their
smallest operand.

A plan (:meth:`Backend.plan_r2c`, :meth:`Backend.plan_c2r`) owns an ``input``
array the caller fills in place and returns its result from ``plan()``:

    p = backend.plan_r2c((N, C), (Fh, Fw), np.float32, freq_major=True)
    p.input[..., pad:pad + H, pad:pad + W] = x   # the rest stays zero
    X = p()                                        # (Fh, Fw//2 + 1, N, C) complex64

:func:`place` and :func:`crop` move (N, C, H, W) planes into and out of such canvases
(a crop may add a bias per plane) on the OpenMP threads, with NumPy's bits.

``freq_major`` lays the half spectrum out frequency-first, (Fh, Fw', *batch),
ready for one small GEMM per frequency; FFTW writes (reads) that layout directly
when a spectrum has at most ``STRIDED_MAX_FREQS`` entries, else through a
contiguous staging array and one transposing copy. An r2c plan never writes its
input, so a zero border filled once stays zero. A c2r plan may destroy its input.
The returned array may be owned by the plan and overwritten by its next call.

:func:`rfft2_small` / :func:`irfft2_small` compute the same transforms for a
small k × k array on the big canvas (a convolution kernel) as two matrix
products each: the kernel's spectrum F(g) and the kernel gradient (into buffers
the caller keeps, if it passes them).

Measured (benchmarks/bench_fft.py, LeNet conv2 spectra, one thread): FFTW with
plans ≈ 2× scipy.fft, and numpy.fft ≈ 5–7× slower than scipy.fft.
"""
import os
import threading
import warnings

import numpy as np

from wincaffe._kernels import canvas as _canvas

BACKENDS = ("pyfftw", "scipy", "numpy")

_WISDOM_NAME = "fftw_wisdom"
_PLANNER_ENV = "WINCAFFE_FFTW_PLANNER"  # FFTW_ESTIMATE | FFTW_MEASURE (default) | FFTW_PATIENT
_PLANNER_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")

_lock = threading.Lock()
_backends = {}
_fallback_warned = False


# ----- dtypes and sizes ------------------------------------------------------------------

def complex_dtype(real_dtype):
    """complex64 for float32, complex128 for float64."""
    return np.result_type(np.dtype(real_dtype), np.complex64)


def half_width(fw):
    """Columns of a real FFT's half spectrum: Fw//2 + 1 (Liu & Turakhia, §4.2: 32 → 17, 16 → 9)."""
    return int(fw) // 2 + 1


def hermitian_weights(fw, dtype=np.float64):
    """Multiplicity of each half-spectrum column v in the full spectrum, shape (Fw//2 + 1,).

    1 for v = 0 and (Fw even) v = Fw/2, 2 for the other columns, which stand for
    themselves and their mirror Fw − v. This is the factor between the adjoint of
    the c2r transform and r2c: c2r*(y) = weights · r2c(y), and the one to apply to
    a gradient with respect to the half spectrum itself.
    """
    w = np.full(half_width(fw), 2.0, dtype)
    w[0] = 1.0
    if fw % 2 == 0:
        w[-1] = 1.0
    return w


def _smooth(n, primes):
    for p in primes:
        while n % p == 0:
            n //= p
    return n == 1


def next_fast_len(n):
    """The smallest 5-smooth size (2^a·3^b·5^c) ≥ n.

    Every backend transforms these fast (FFTW and pocketfft both have radix-2, 3
    and 5 codelets; this is ``scipy.fft.next_fast_len(n, real=True)``). The rule
    is the same whichever FFT library is installed, so an FFT size, and with it
    the shape of every spectral mask, never depends on the backend.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"FFT size must be >= 1, got {n}")
    while not _smooth(n, (2, 3, 5)):
        n += 1
    return n


def conjugate_partners(fh, fw):
    """partner (Fh·Fw',) int: for each entry (u, v) of a half spectrum (flattened
    row-major), the flat index of the entry holding its complex conjugate when both
    are stored, else its own index.

    The half spectrum of a real Fh × Fw array stores columns v = 0 .. Fw//2. Columns
    v = 0 and (Fw even) v = Fw/2 are their own mirror, so X[u, v] = conj(X[−u mod Fh, v])
    there: entries (u, v) and (−u mod Fh, v) are a conjugate pair (u = 0 and, Fh
    even, u = Fh/2 are real and their own partner). Every other column is single.
    """
    fw2 = half_width(fw)
    u = np.arange(fh)[:, None]
    v = np.arange(fw2)[None, :]
    mirrored = np.isin(v, self_mirrored_columns(fw))
    pu = np.where(mirrored, (-u) % fh, u)
    return (pu * fw2 + v).reshape(-1).astype(np.intp)


def self_mirrored_columns(fw):
    """The half-spectrum columns that are their own mirror: [0] and, Fw even, Fw/2."""
    return [0] + ([fw // 2] if fw % 2 == 0 and fw > 1 else [])


def hermitian_part(X, fw):
    """The half spectrum X (..., Fh, Fw') as a real array's spectrum sees it: on the
    self-mirrored columns (v = 0, v = Fw/2) each entry is replaced by
    (X[u, v] + conj(X[−u mod Fh, v])) / 2, which is all a c2r transform reads of them
    (the rest, anti-Hermitian, is ignored). Other columns are unchanged. A new array."""
    out = np.array(X, copy=True)
    fh = out.shape[-2]
    mirror = (-np.arange(fh)) % fh
    for v in self_mirrored_columns(fw):
        col = out[..., :, v].copy()
        out[..., :, v] = (col + np.conj(col[..., mirror])) / 2
    return out


# ----- small arrays on a large canvas: DFTs as matrix products ---------------------------------

_twiddles = {}


def _twiddle(key, make):
    t = _twiddles.get(key)
    if t is None:
        t = _twiddles[key] = make()
    return t


def _dft_rows(n, m, sign, cdtype):
    """(n, m) matrix exp(sign · 2πi · a·b / n), a < n, b < m (float64 angles)."""
    a = np.arange(n)[:, None]
    b = np.arange(m)[None, :]
    return np.exp(sign * 2j * np.pi * ((a * b) % n) / n).astype(cdtype)


def rfft2_small(w, fshape, conjugate=False, *, scale=None, out=None, work=None):
    """The unnormalised half spectrum of kernels w (B, kh, kw) placed at the origin of
    an Fh × Fw canvas, frequency-major (Fh, Fw//2 + 1, B), as two matrix products:

        G[u, v, b] = Σ_i Σ_j exp(−2πi u·i/Fh) · exp(−2πi v·j/Fw) · w[b, i, j]

    Equal to ``r2c`` of the zero-padded canvas, at kh·kw/(Fh·Fw) of its input size:
    the kernel transform of Liu & Turakhia, eq. (1), F(g), for small g (BLAS instead of an FFT
    of mostly zeros). ``conjugate=True`` returns conj(G) at no extra cost; ``scale``
    (a scalar of w's dtype) transforms scale·w instead, rounded as ``w * scale``.

    A caller transforming every iteration passes ``out`` (Fh, Fw', B) and ``work``
    (at least kh·(kw + Fw')·B entries, 1-D), both complex, and nothing is allocated;
    the result is ``out``.
    """
    sign = +1 if conjugate else -1
    w = np.asarray(w)
    B, kh, kw = w.shape
    Fh, Fw = int(fshape[0]), int(fshape[1])
    Fw2 = half_width(Fw)
    cd = complex_dtype(w.dtype)
    Aw = _twiddle(("fw", Fw, kw, sign, cd.str), lambda: _dft_rows(Fw, kw, sign, cd)[:Fw2])   # (Fw', kw)
    Ah = _twiddle(("fh", Fh, kh, sign, cd.str), lambda: _dft_rows(Fh, kh, sign, cd))         # (Fh, kh)
    if work is None:
        work = np.empty(kh * (kw + Fw2) * B, cd)
    if out is None:
        out = np.empty((Fh, Fw2, B), cd)
    wt = work[:kh * kw * B].reshape(kh, kw, B)
    T = work[kh * kw * B:kh * (kw + Fw2) * B].reshape(kh, Fw2, B)
    if scale is None:
        np.copyto(wt, w.transpose(1, 2, 0))
    else:
        np.multiply(w.transpose(1, 2, 0), scale, out=wt)      # the real product, then exact to complex
    np.matmul(Aw, wt, out=T)
    np.matmul(Ah, T.reshape(kh, -1), out=out.reshape(Fh, -1))
    return out


def irfft2_small(Z, fshape, kshape, conjugate=False, *, out=None, work=None):
    """The top-left kh × kw corner of the unnormalised c2r of Z (Fh, Fw//2 + 1, B)
    (frequency-major), as (B, kh, kw) real, by two matrix products:

        w[b, i, j] = Re Σ_u Σ_v ω_v · exp(2πi u·i/Fh) · exp(2πi v·j/Fw) · Z[u, v, b]

    with ω = :func:`hermitian_weights` — exactly what ``c2r`` computes (it, too, drops
    the imaginary parts of the v = 0 and v = Fw/2 columns after the transform along Fh).
    It is the adjoint of :func:`rfft2_small` up to ω, i.e. the kernel gradient.
    ``conjugate=True``: Z holds conj(Z) (the result is the same real array).
    ``out`` (B, kh, kw) real and ``work`` (at least kh·(Fw' + kw)·B entries, 1-D,
    complex), when given, receive the result and the intermediates.
    """
    sign = -1 if conjugate else +1
    Z = np.asarray(Z)
    Fh, Fw = int(fshape[0]), int(fshape[1])
    kh, kw = int(kshape[0]), int(kshape[1])
    Fw2, B = Z.shape[1], Z.shape[2]
    cd = Z.dtype
    Bh = _twiddle(("ih", Fh, kh, sign, cd.str), lambda: _dft_rows(Fh, kh, sign, cd).T.copy())     # (kh, Fh)
    Cw = _twiddle(("iw", Fw, kw, sign, cd.str), lambda: (_dft_rows(Fw, kw, sign, np.complex128)[:Fw2].T
                                                         * hermitian_weights(Fw)).astype(cd))  # (kw, Fw')
    if work is None:
        work = np.empty(kh * (Fw2 + kw) * B, cd)
    if out is None:
        out = np.empty((B, kh, kw), cd.type(0).real.dtype)
    P = work[:kh * Fw2 * B].reshape(kh, Fw2, B)
    Q = work[kh * Fw2 * B:kh * (Fw2 + kw) * B].reshape(kh, kw, B)
    np.matmul(Bh, Z.reshape(Fh, -1), out=P.reshape(kh, -1))
    np.matmul(Cw, P, out=Q)
    np.copyto(out, Q.real.transpose(2, 0, 1))
    return out


# ----- planes into and out of canvases ----------------------------------------------------

def _check_canvas_fit(name, planes, canvas, top, left):
    """planes (N, C, H, W) must fit the canvases (N, C, Fh, Fw) at (top, left)."""
    if (planes.ndim != 4 or canvas.ndim != 4 or planes.shape[:2] != canvas.shape[:2] or top < 0 or left < 0
            or top + planes.shape[2] > canvas.shape[2] or left + planes.shape[3] > canvas.shape[3]):
        raise ValueError(f"{name}: planes {planes.shape} at offset ({top}, {left}) do not fit "
                         f"the canvases {canvas.shape}")


def _canvas_kernel_fits(dst, src):
    """The Cython kernel takes C-contiguous 4-D float arrays of one dtype that do not
    overlap (it copies row by row); anything else goes to NumPy."""
    return (dst.flags.c_contiguous and src.flags.c_contiguous and dst.dtype in (np.float32, np.float64)
            and src.dtype == dst.dtype and not np.shares_memory(dst, src))


def place(src, canvas, top, left):
    """canvas[:, :, top:top + H, left:left + W] = src (N, C, H, W); the rest untouched.
    On the OpenMP threads for C-contiguous float arrays (:mod:`wincaffe._kernels.canvas`,
    the same bits), else NumPy's slice assignment."""
    _check_canvas_fit("place", src, canvas, top, left)
    if _canvas_kernel_fits(canvas, src):
        _canvas.place(src, canvas, top, left)
    else:
        canvas[:, :, top:top + src.shape[2], left:left + src.shape[3]] = src


def crop(canvas, top, left, out, bias=None):
    """out (N, K, Ho, Wo) = canvas[:, :, top:top + Ho, left:left + Wo] (+ bias (K,) per
    plane), in one pass; on the OpenMP threads like :func:`place`."""
    _check_canvas_fit("crop", out, canvas, top, left)
    if bias is not None and bias.shape != (out.shape[1],):
        raise ValueError(f"crop: bias has shape {bias.shape}, expected ({out.shape[1]},)")
    Ho, Wo = out.shape[2:]
    if _canvas_kernel_fits(out, canvas) and (bias is None or bias.dtype == out.dtype):
        _canvas.crop(canvas, top, left, out, None if bias is None else np.ascontiguousarray(bias))
    elif bias is None:
        np.copyto(out, canvas[:, :, top:top + Ho, left:left + Wo])
    else:
        np.add(canvas[:, :, top:top + Ho, left:left + Wo], bias[None, :, None, None], out=out)


# ----- the cache folder and FFTW wisdom -----------------------------------------------------

def wisdom_path():
    from wincaffe.fileio import cache_dir
    return os.path.join(cache_dir(), _WISDOM_NAME)


# ----- plans -----------------------------------------------------------------------------------

# FFTW reads/writes a frequency-major spectrum directly (strided) when one image's
# half spectrum has at most this many entries; above it, a contiguous transform
# plus a transposing copy measured faster (benchmarks/bench_fft.py shapes).
STRIDED_MAX_FREQS = 1024


def _natural_to_freq_major(src, dst):
    """(*batch, Fh, Fw') -> dst (Fh, Fw', *batch), one copying pass."""
    b = int(np.prod(src.shape[:-2]))
    np.copyto(dst.reshape(-1, b), src.reshape(b, -1).T)


def _freq_major_to_natural(src, dst):
    """(Fh, Fw', *batch) -> dst (*batch, Fh, Fw'), one copying pass."""
    b = int(np.prod(dst.shape[:-2]))
    np.copyto(dst.reshape(b, -1), src.reshape(-1, b).T)


class _Plan:
    """A reusable transform of fixed shapes; see the module docstring.

    ``input`` and the array ``plan()`` returns: for r2c, real (*batch, Fh, Fw) in and
    the half spectrum out; for c2r, the other way round. The half spectrum is
    (*batch, Fh, Fw') or, with ``freq_major``, (Fh, Fw', *batch): reshaped to
    (F, *batch) it is ready for one batched GEMM per frequency.
    """

    kind = None  # "r2c" or "c2r"

    def __init__(self, kind, batch, fshape, real_dtype, freq_major):
        self.kind = kind
        self.batch = tuple(int(b) for b in batch)
        self.fshape = (int(fshape[0]), int(fshape[1]))
        self.freq_major = bool(freq_major)
        self.real_dtype = np.dtype(real_dtype)
        self.complex_dtype = complex_dtype(real_dtype)
        self.real_shape = self.batch + self.fshape
        half = (self.fshape[0], half_width(self.fshape[1]))
        self.natural_shape = self.batch + half
        self.spectrum_shape = half + self.batch if self.freq_major else self.natural_shape

    def __call__(self):
        raise NotImplementedError

    def __repr__(self):
        return (f"{type(self).__name__}({self.kind}, batch={self.batch}, fshape={self.fshape}, "
                f"{self.real_dtype}, freq_major={self.freq_major})")


class _PocketPlan(_Plan):
    """scipy.fft / numpy.fft: no real plans, only the fixed shapes and buffers."""

    def __init__(self, module, workers, kind, batch, fshape, real_dtype, freq_major):
        super().__init__(kind, batch, fshape, real_dtype, freq_major)
        self._fft, self._workers = module, workers
        if kind == "r2c":
            self.input = np.zeros(self.real_shape, self.real_dtype)
            self._out = np.empty(self.spectrum_shape, self.complex_dtype) if self.freq_major else None
        else:
            self.input = np.zeros(self.spectrum_shape, self.complex_dtype)
            self._nat = np.empty(self.natural_shape, self.complex_dtype) if self.freq_major else None

    def __call__(self):
        kw = {"workers": self._workers} if self._workers else {}
        if self.kind == "r2c":
            out = self._fft.rfft2(self.input, axes=(-2, -1), **kw)
            if self.freq_major:
                _natural_to_freq_major(out, self._out)
                return self._out
            return out if out.dtype == self.complex_dtype else out.astype(self.complex_dtype)
        spec = self.input
        if self.freq_major:
            _freq_major_to_natural(spec, self._nat)
            spec = self._nat
        # norm="forward" puts 1/n on the forward transform: the inverse is unnormalised
        out = self._fft.irfft2(spec, s=self.fshape, axes=(-2, -1), norm="forward", **kw)
        return out if out.dtype == self.real_dtype else out.astype(self.real_dtype)


class _FFTWPlan(_Plan):
    """An FFTW plan on arrays it owns (planned with the backend's effort and threads)."""

    def __init__(self, backend, kind, batch, fshape, real_dtype, freq_major):
        super().__init__(kind, batch, fshape, real_dtype, freq_major)
        pyfftw = backend.pyfftw
        half = self.spectrum_shape[-2:] if not self.freq_major else self.spectrum_shape[:2]
        strided = self.freq_major and half[0] * half[1] <= STRIDED_MAX_FREQS
        real = pyfftw.zeros_aligned(self.real_shape, self.real_dtype)
        if self.freq_major:
            spec = pyfftw.zeros_aligned(self.spectrum_shape, self.complex_dtype)
            nb = len(self.batch)
            # the (*batch, Fh, Fw') view FFTW works on, or a contiguous staging array
            nat = spec.transpose(tuple(range(2, 2 + nb)) + (0, 1)) if strided else \
                pyfftw.zeros_aligned(self.natural_shape, self.complex_dtype)
        else:
            spec = nat = pyfftw.zeros_aligned(self.natural_shape, self.complex_dtype)
        self._stage = None if (nat is spec or strided) else nat
        effort = backend.planner_effort()
        if kind == "r2c":
            self.input, self.output = real, spec
            self._fftw = pyfftw.FFTW(real, nat, axes=(-2, -1), direction="FFTW_FORWARD",
                                     flags=(effort,), threads=backend.threads)
            real.fill(0)  # planning with FFTW_MEASURE scribbles on the arrays
        else:
            self.input, self.output = spec, real
            self._fftw = pyfftw.FFTW(nat, real, axes=(-2, -1), direction="FFTW_BACKWARD",
                                     flags=(effort, "FFTW_DESTROY_INPUT"), threads=backend.threads)

    def __call__(self):
        # execute(): unnormalised (FFTW.__call__ would rescale the c2r)
        if self.kind == "r2c":
            self._fftw.execute()
            if self._stage is not None:
                _natural_to_freq_major(self._stage, self.output)
        else:
            if self._stage is not None:
                _freq_major_to_natural(self.input, self._stage)
            self._fftw.execute()
        return self.output


# ----- backends --------------------------------------------------------------------------------

class Backend:
    """One FFT library with a thread count. Plans are cached by their shapes."""

    name = None

    def __init__(self, threads=1):
        self.threads = int(threads)
        self._plans = {}

    def _make_plan(self, kind, batch, fshape, real_dtype, freq_major):
        raise NotImplementedError

    def _plan(self, kind, batch, fshape, real_dtype, cached, freq_major):
        key = (kind, tuple(int(b) for b in batch), (int(fshape[0]), int(fshape[1])),
               np.dtype(real_dtype).str, bool(freq_major))
        if not cached:
            with _lock:
                return self._make_plan(kind, key[1], key[2], real_dtype, key[4])
        plan = self._plans.get(key)
        if plan is None:
            with _lock:
                plan = self._plans.get(key)
                if plan is None:
                    plan = self._plans[key] = self._make_plan(kind, key[1], key[2], real_dtype, key[4])
        return plan

    def plan_r2c(self, batch, fshape, real_dtype=np.float32, *, freq_major=False, cached=True):
        """A reusable r2c of (*batch, Fh, Fw) real → half spectrum, (*batch, Fh, Fw//2 + 1)
        complex, or (Fh, Fw//2 + 1, *batch) with ``freq_major``.

        ``cached=True`` shares one plan (and its input canvas) per shape with every
        caller; ``cached=False`` makes a private one (for a caller that relies on
        the zero border of its own canvas)."""
        return self._plan("r2c", batch, fshape, real_dtype, cached, freq_major)

    def plan_c2r(self, batch, fshape, real_dtype=np.float32, *, freq_major=False, cached=True):
        """A reusable unnormalised c2r of a half spectrum laid out as for :meth:`plan_r2c`
        → (*batch, Fh, Fw) real. Its input may be destroyed."""
        return self._plan("c2r", batch, fshape, real_dtype, cached, freq_major)

    # --- one-shot conveniences (plans are still cached) ---
    def rfft2(self, x, fshape, offset=(0, 0)):
        """Unnormalised half spectrum (..., Fh, Fw//2 + 1) of x (..., h, w) placed at
        ``offset`` on a zero Fh × Fw canvas. Returns a new array."""
        x = np.asarray(x)
        h, w = x.shape[-2:]
        oy, ox = offset
        if oy + h > fshape[0] or ox + w > fshape[1]:
            raise ValueError(f"array {h}x{w} at offset {tuple(offset)} does not fit an FFT size {tuple(fshape)}")
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        plan = self.plan_r2c(x.shape[:-2], fshape, dtype)
        plan.input[..., oy:oy + h, ox:ox + w] = x
        out = np.array(plan(), copy=True)
        plan.input[..., oy:oy + h, ox:ox + w] = 0
        return out

    def irfft2(self, X, fshape, start=(0, 0), size=None):
        """The unnormalised c2r of X (..., Fh, Fw//2 + 1), cropped to ``size`` rows and
        columns from ``start`` (default: the whole Fh × Fw). Returns a new array."""
        X = np.asarray(X)
        if X.shape[-2:] != (fshape[0], half_width(fshape[1])):
            raise ValueError(f"half spectrum of shape {X.shape[-2:]} does not match FFT size {tuple(fshape)}")
        real = np.float32 if X.dtype == np.complex64 else np.float64
        plan = self.plan_c2r(X.shape[:-2], fshape, real)
        plan.input[...] = X
        out = plan()
        sy, sx = start
        h, w = size if size is not None else (fshape[0] - sy, fshape[1] - sx)
        return np.array(out[..., sy:sy + h, sx:sx + w], copy=True)

    def __repr__(self):
        return f"{type(self).__name__}(threads={self.threads})"


class NumpyBackend(Backend):
    name = "numpy"

    def _make_plan(self, kind, batch, fshape, real_dtype, freq_major):
        return _PocketPlan(np.fft, 0, kind, batch, fshape, real_dtype, freq_major)


class ScipyBackend(Backend):
    name = "scipy"

    def __init__(self, threads=1):
        super().__init__(threads)
        import scipy.fft
        self._module = scipy.fft

    def _make_plan(self, kind, batch, fshape, real_dtype, freq_major):
        return _PocketPlan(self._module, self.threads, kind, batch, fshape, real_dtype, freq_major)


class PyFFTWBackend(Backend):
    """FFTW plans built once per shape; wisdom loaded from and saved to the cache folder."""

    name = "pyfftw"
    _wisdom_loaded = False
    _wisdom_saved = None

    def __init__(self, threads=1):
        super().__init__(threads)
        self.pyfftw = _import_pyfftw()

    @staticmethod
    def planner_effort():
        effort = os.environ.get(_PLANNER_ENV, "FFTW_MEASURE").upper()
        if not effort.startswith("FFTW_"):
            effort = "FFTW_" + effort
        if effort not in _PLANNER_EFFORTS:
            raise ValueError(f"${_PLANNER_ENV} must be one of {', '.join(_PLANNER_EFFORTS)}, got {effort!r}")
        return effort

    def load_wisdom(self):
        """Import the saved wisdom once per process (a missing or bad file is ignored)."""
        cls = PyFFTWBackend
        if cls._wisdom_loaded:
            return
        cls._wisdom_loaded = True
        try:
            with open(wisdom_path(), "rb") as fh:
                parts = tuple(fh.read().split(b"\0"))
            if len(parts) == 3:
                self.pyfftw.import_wisdom(parts)
        except OSError:
            pass
        except Exception:  # corrupt wisdom only costs planning time
            pass

    def save_wisdom(self):
        """Write the accumulated wisdom (atomically) if it changed since the last save."""
        cls = PyFFTWBackend
        wisdom, path = tuple(self.pyfftw.export_wisdom()), wisdom_path()
        if (path, wisdom) == cls._wisdom_saved:
            return False
        from wincaffe.errors import WincaffeError
        from wincaffe.fileio import atomic_write, remove_stale_temps
        payload = b"\0".join(wisdom)
        try:
            atomic_write(path, lambda fh: fh.write(payload))
            remove_stale_temps(os.path.dirname(path))
        except (OSError, WincaffeError) as exc:
            warnings.warn(f"could not save FFTW wisdom to {path}: {exc}", RuntimeWarning, stacklevel=2)
            return False
        cls._wisdom_saved = (path, wisdom)
        return True

    def _make_plan(self, kind, batch, fshape, real_dtype, freq_major):
        self.load_wisdom()
        plan = _FFTWPlan(self, kind, batch, fshape, real_dtype, freq_major)
        self.save_wisdom()
        return plan


def _import_pyfftw():
    import pyfftw  # noqa: deferred so that a missing pyFFTW only matters when asked for
    return pyfftw


def pyfftw_available():
    try:
        _import_pyfftw()
        return True
    except ImportError:
        return False


def get_backend(name="pyfftw", threads=1):
    """The shared backend ``name`` (one of BACKENDS) with ``threads`` threads.

    ``pyfftw`` falls back to ``scipy`` (then ``numpy``) with one RuntimeWarning
    per process when pyFFTW cannot be imported; check ``.name`` for what you got.
    """
    global _fallback_warned
    if name not in BACKENDS:
        raise ValueError(f"unknown FFT backend {name!r} (choose from {', '.join(BACKENDS)})")
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    key = (name, threads)
    backend = _backends.get(key)
    if backend is not None:
        return backend
    if name == "pyfftw":
        try:
            backend = PyFFTWBackend(threads)
        except ImportError as exc:
            try:
                backend = ScipyBackend(threads)
            except ImportError:
                backend = NumpyBackend(threads)
            if not _fallback_warned:
                _fallback_warned = True
                warnings.warn(f"pyFFTW is not available ({exc}); FFTs fall back to the slower "
                              f"{backend.name} backend", RuntimeWarning, stacklevel=2)
    elif name == "scipy":
        backend = ScipyBackend(threads)
    else:
        backend = NumpyBackend(threads)
    _backends[key] = backend
    return backend


def _reset_for_tests():
    """Forget cached backends and the fallback warning (tests monkeypatch imports)."""
    global _fallback_warned
    _backends.clear()
    _fallback_warned = False
