"""FFTConv: stride-1 convolution (Caffe's cross-correlation) through real 2-D FFTs,
with an optional pruning mask on the kernel's spectrum (Liu & Turakhia, §3.1 eq. 1, §4.2).

bottom x (N, C, H, W) -> top y (N, K, Ho, Wo), Ho = H + 2·pad − k + 1 (same for W).

Spectra live on an Fh × Fw canvas; half spectra have Fh × Fw' entries, Fw' = Fw//2 + 1:

    X = rfft2(x_pad)                 (N, C, Fh, Fw')  x at offset (pad, pad), zeros elsewhere
    G = rfft2(W)                     (K, C, Fh, Fw')  W at offset (0, 0): the kernel AS STORED
    Y = Σ_c X · conj(G ⊙ M)          (N, K, Fh, Fw')  one batched complex GEMM per frequency
    y = irfft2(Y)[:Ho, :Wo] + b      (N, K, Ho, Wo)

Correlation by conjugation: conj(F(W)) is the spectrum of the circularly reversed
kernel, so the product is a circular cross-correlation; no wrap-around reaches the
kept top-left Ho × Wo corner as long as Fh ≥ H + 2·pad (and Fw ≥ W + 2·pad). Seed
002's eq. (1) masks F(g) of the stored kernel; here M masks F(W) of the stored
kernel likewise, and since |conj(z)| = |z| (and conj(F(W)) equals the spectrum of
the flipped kernel up to a unit-modulus phase), pruning by complex modulus picks
the same entries as it would for a true convolution with the flipped kernel.
With M = 1 the output equals the direct correlation to float tolerance.

``fft_param``:
    weights   spatial (default)  param 0 = W (K, C, k, k); no mask: an exact
                                 convolution computed by FFT.
              spatial_masked     param 0 = W; M (K, C, Fh, Fw') in the buffer ``spectral_mask``
                                 (ones until ``set_mask("spectral", M)``); G ⊙ M recomputed from W
                                 every forward, gradients flow to W (Liu & Turakhia, §4.2 retrains
                                 in the time domain).
              spectral           param 0 = S (K, C, Fh, Fw', 2): G's real and imaginary parts,
                                 initialised as rfft2 of the filler's kernel. Pruning mask
                                 = ``Param.mask`` (the solver keeps pruned entries zero).
                                 Components of S that irfft2 ignores (the anti-Hermitian part
                                 of the v = 0 and v = Fw/2 columns) get a zero gradient (up to
                                 rounding).
                                 Weight decay acts on S (≠ decay on W).
    fft_size  linear (default)   Fh = H + 2·pad + k − 1: Liu & Turakhia's size (LeNet masks
                                 20×1×32×17 and 50×20×16×9)
              auto               linear, rounded up to the next 5-smooth size (2^a·3^b·5^c)
              min                H + 2·pad rounded up to the next 5-smooth size: the smallest
                                 exact one
              n or [Fh, Fw]      explicit; must be ≥ H + 2·pad per axis
              The rules do not depend on the FFT library (a weights file made with pyFFTW
              loads where only scipy.fft is installed). The size is fixed at setup (the mask
              and the spectral weights depend on it), saved in weights files and checked when
              they are loaded; later bottoms may be smaller, not larger.
    backend   pyfftw (default) | scipy | numpy   see :mod:`wincaffe.transforms.fft`
    threads   FFT threads; 0 (default): as many as the net's kernels use when the layer
              is set up (``--threads``, :func:`wincaffe.threads.set_num_threads`)

Backward gives the exact gradient of the masked forward (adjoints of the crop,
the c2r, the mask and the r2c):

    D = rfft2(dy at offset 0)                          (N, K, Fh, Fw')
    dx = irfft2(Σ_k D · (G ⊙ M))[pad:pad+H, pad:pad+W]
    E = Σ_n X · conj(D)                                (K, C, Fh, Fw')
    dW = irfft2(M ⊙ E)[:k, :k]                         spatial, spatial_masked
    dS = (ω / (Fh·Fw)) · M ⊙ E   as (re, im)           spectral; ω = 1 for the v = 0 and
                                                       v = Fw/2 columns, 2 for the others
                                                       (their mirrors are implicit in rfft)

With a mask (or spectral weights) the effective kernel F⁻¹(G ⊙ M) is no longer
supported on k × k: it fills the canvas, and the layer computes the circular
correlation on the Fh × Fw canvas that Liu & Turakhia's eq. (1) describes ("only
approximate" to the unpruned convolution), cropped to Ho × Wo. The FFT size is
therefore part of the model once pruned.

Pruning (the protocol of :class:`wincaffe.layer.Layer`): domain ``spectral``
(spatial_masked, spectral; Liu & Turakhia §3.1, §4.2) with scores the complex modulus
of the kernel's half spectrum (K, C, Fh, Fw'), and ``spatial`` (spatial,
spatial_masked: |W| and a ``Param.mask`` on W). A spectral mask lives on the half
spectrum; entries (u, v) and (−u mod Fh, v) of the v = 0 and v = Fw/2 columns hold
conjugate values and are pruned together (both or neither, ``prune_partners``), so
the pruned kernel stays real. The pruning rate counts half-spectrum entries: each
one is a complex product per (n, k, c) that the element-wise stage computes, so the
rate is the fraction of those products saved. ``spectrum(masked=True)`` → rfft2(W) ⊙ M.
The spatial_masked mask is a layer buffer: saved in weights files and shared with
the TEST net (spectral: ``Param.mask`` on both real and imaginary parts does both).

Layout: the data spectra are frequency-major, (F, N, C) and (F, N, K) with
F = Fh·Fw' (FFTW reads and writes that layout directly, see
:mod:`wincaffe.transforms.fft`), so each product is one batch of F small complex
matrix products (BLAS cgemm/zgemm per frequency; on more than one thread the
frequencies are shared among the OpenMP threads,
:func:`wincaffe._kernels.gemm.batched_matmul`); with a spectral mask and
``fft_param.sparse`` (auto, on, off) the forward products skip masked entries instead
(:class:`~wincaffe.sparse_stage.SparseProducts`, complex G (K, C) as the real (K, 2C)
[Re G, Im G] against [X, iX] (2C, 2N) rows; the backward stays dense); with C = 1 the forward is an
outer product in the natural layout instead. The kernel's spectrum and dW are
matrix DFTs of the k × k corner (``rfft2_small`` / ``irfft2_small``), not FFTs
of a mostly-zero canvas. The 1/(Fh·Fw) of the inverse FFT is folded into the
kernel spectrum. float32 layers compute in complex64, float64 layers in
complex128. The user-facing mask and spectra are (K, C, Fh, Fw').
"""
import numpy as np

from wincaffe import counting
from wincaffe._kernels.gemm import batched_matmul
from wincaffe.errors import ConfigError
from wincaffe.conv_geometry import conv_output_shape, require_4d, require_unit_stride
from wincaffe.fillers import fill
from wincaffe.layer import Layer, register
from wincaffe.schema import Block, Field, convolution_block
from wincaffe.sparse_stage import FFT_BREAK_EVEN, SparseProducts, sparse_setting
from wincaffe.threads import get_num_threads
from wincaffe.transforms import fft

WEIGHTS = ("spatial", "spatial_masked", "spectral")
SIZE_RULES = ("linear", "auto", "min")


class FFTSizeField(Field):
    """``linear`` | ``auto`` | ``min`` | an integer | [Fh, Fw]; returns the rule name or [Fh, Fw]."""

    def __init__(self, default="linear", doc=""):
        super().__init__((str, int), default, doc=doc)

    def validate(self, value, path):
        if isinstance(value, str):
            for rule in SIZE_RULES:
                if value.lower() == rule:
                    return rule
        else:
            items = value if isinstance(value, list) else [value]
            if 1 <= len(items) <= 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                            for v in items):
                return [int(items[0]), int(items[-1])]
        raise ConfigError(f"must be {', '.join(SIZE_RULES)}, a positive integer or [Fh, Fw], got {value!r}",
                          field=path)


FFT_PARAM = Block(
    weights=Field(str, "spatial", choices=WEIGHTS,
                  doc="learnable weights: spatial W, spatial W + spectral mask, or the spectrum itself"),
    fft_size=FFTSizeField(doc="FFT canvas size: linear (H+2p+k-1, Liu & Turakhia), auto, min "
                                  "(5-smooth sizes, the same for every backend) or [Fh, Fw]"),
    backend=Field(str, "pyfftw", choices=fft.BACKENDS, doc="FFT library"),
    threads=Field(int, 0, min=0, doc="FFT threads (0: the net's thread count, --threads)"),
    sparse=Field((str, bool), "auto", doc="skip masked spectral products in the forward: on, off, or "
                                          "auto (when the mask's density is at most the break-even)"),
)


@register("FFTConv")
class FFTConv(Layer):
    prune_by_default = True
    param_blocks = {"convolution_param": convolution_block(), "fft_param": FFT_PARAM}
    num_bottoms = 1
    num_tops = 1

    # ----- setup ------------------------------------------------------------------
    def setup(self, bottoms, tops):
        p = self.block("convolution_param")
        f = self.block("fft_param")
        require_unit_stride(self, p)
        shape = bottoms[0].shape
        require_4d(self, shape)
        C, H, W = shape[1:]
        self.k, self.pad = p.kernel_size, p.pad
        K, k = p.num_output, self.k
        conv_output_shape(self, shape, K, C, k, self.pad)
        self.weights_mode = f.weights
        self.backend = fft.get_backend(f.backend, f.threads or get_num_threads())
        self.fshape = self._fft_size(f.fft_size, H, W)
        Fh, Fw = self.fshape
        self.spectrum_shape = (K, C, Fh, fft.half_width(Fw))
        self.ctype = fft.complex_dtype(self.dtype)
        self.scale = 1.0 / (Fh * Fw)
        F = Fh * fft.half_width(Fw)
        self._Gc = np.empty((F, K, C), self.ctype)      # conj(G ⊙ M)/(Fh·Fw), kept for backward
        self._dft_work = k * (k + fft.half_width(Fw)) * K * C   # entries of rfft2_small's scratch

        W0 = fill(p.weight_filler, (K, C, k, k), self.rng, self.dtype)
        if self.weights_mode == "spectral":
            G0 = np.fft.rfft2(W0.astype(np.float64), s=self.fshape)         # S₀ = rfft2(W₀)
            self.add_param("spectrum", np.stack([G0.real, G0.imag], axis=-1))
        else:
            self.add_param("weight", W0)
        if p.bias_term:
            self.add_param("bias", fill(p.bias_filler, (K,), self.rng, self.dtype))
        # ω per frequency, frequency-major (F, 1, 1): the spectral gradient's column weights
        omega = np.broadcast_to(fft.hermitian_weights(Fw, np.float64), (Fh, fft.half_width(Fw)))
        self._omega_fm = omega.reshape(-1, 1, 1).astype(self.dtype)
        if self.weights_mode == "spatial_masked":
            self.add_buffer("spectral_mask", np.ones(self.spectrum_shape, self.dtype))
        self._geom = None
        self.sparse = SparseProducts(sparse_setting(self, f.sparse, "fft_param.sparse"), FFT_BREAK_EVEN)

    def execution(self):
        if self._geom is not None and self._outer:
            return "dense outer"
        return self.sparse.describe()

    def _sparse_products(self, X, Gc, out):
        """out (F, N, K) = X (F, N, C) @ Gcᵀ at the mask's entries only: the complex product
        Σ_c (a + ib)(x_r + i x_i) as the real sparse [a, b] (K, 2C) times [x, i·x] (2C, 2N)
        (x interleaved real/imaginary, i·x = (−x_i, x_r))."""
        F, N, C = X.shape
        K = Gc.shape[1]
        Xa = self.workspace("fft_sparse_x", (F, 2 * C, 2 * N), self.dtype)
        XT = X.transpose(0, 2, 1)                                        # (F, C, N)
        np.copyto(Xa[:, :C].view(self.ctype), XT)
        iX = Xa[:, C:].reshape(F, C, N, 2)            # read from X, not from Xa's first half:
        np.negative(XT.imag, out=iX[..., 0])          # NumPy cannot rule out an overlap of two
        np.copyto(iX[..., 1], XT.real)                # strided views of Xa and would copy
        pattern = self.workspace("fft_sparse_pattern", (F, K, 2 * C), np.bool_)
        np.not_equal(self._Mfm, 0, out=pattern[..., :C])      # both halves from the mask (a copy
        np.not_equal(self._Mfm, 0, out=pattern[..., C:])      # between them would be buffered)
        S = self.workspace("fft_sparse_s", (F, K, 2 * C), self.dtype)   # [Re G, Im G]
        np.copyto(S[..., :C], Gc.real)
        np.copyto(S[..., C:], Gc.imag)
        M = self.workspace("fft_sparse_m", (F, K, 2 * N), self.dtype)
        self.sparse.forward(S, pattern, Xa, M)
        np.copyto(out, M.view(self.ctype).transpose(0, 2, 1))

    def _fft_size(self, rule, H, W):
        k, pad = self.k, self.pad
        need = (H + 2 * pad, W + 2 * pad)
        if rule == "linear":
            return (need[0] + k - 1, need[1] + k - 1)
        if rule == "auto":
            return (fft.next_fast_len(need[0] + k - 1), fft.next_fast_len(need[1] + k - 1))
        if rule == "min":
            return (fft.next_fast_len(need[0]), fft.next_fast_len(need[1]))
        size = (int(rule[0]), int(rule[1]))
        self._check_fits(size, H, W)
        return size

    def _check_fits(self, size, H, W):
        need = (H + 2 * self.pad, W + 2 * self.pad)
        if size[0] < need[0] or size[1] < need[1]:
            raise self.error(f"FFT size {size[0]}x{size[1]} is smaller than the padded input "
                             f"{need[0]}x{need[1]} (H + 2·pad, W + 2·pad): the circular correlation would "
                             f"wrap around into the output; use at least [{need[0]}, {need[1]}] "
                             f"(or linear, auto, min)", field="fft_param.fft_size")

    def model_constants(self):
        return {"fft_size": (self.fshape, "fft_param.fft_size")}

    # ----- pruning protocol ---------------------------------------------------------
    def prune_domains(self):
        return {"spatial": ("spatial",), "spatial_masked": ("spectral", "spatial"),
                "spectral": ("spectral",)}[self.weights_mode]

    def prune_scores(self, domain):
        """spectral: |G| of the masked half spectrum G (K, C, Fh, Fw'), Hermitian part
        on the self-mirrored columns (what the c2r transform uses: for a real kernel,
        G itself); spatial: |W|."""
        self._check_domain(domain)
        if domain == "spatial":
            return self._param_scores()
        return np.abs(fft.hermitian_part(self.spectrum(masked=True), self.fshape[1]))

    def prune_partners(self, domain):
        return fft.conjugate_partners(*self.fshape) if domain == "spectral" else None

    def mask(self, domain):
        self._check_domain(domain)
        if domain == "spatial":
            return self._param_mask()
        return self._spectral_mask().copy()

    def set_mask(self, domain, mask):
        """spectral, a 0/1 mask (K, C, Fh, Fw//2 + 1) on the kernel's half spectrum that
        prunes conjugate pairs together (None: none). spatial_masked keeps it in the
        buffer ``spectral_mask`` (saved with the weights, shared with the TEST net,
        changed in place) applied to rfft2(W) every forward; spectral installs it as
        ``Param.mask`` on both the real and the imaginary part (pruned entries zeroed
        now and kept zero by the solver). spatial: ``Param.mask`` on W."""
        self._check_domain(domain)
        if domain == "spatial":
            return self._set_param_mask(mask)
        if mask is not None:
            mask = np.asarray(mask) != 0
            if mask.shape != self.spectrum_shape:
                raise self.error(f"spectral mask shape {mask.shape} does not fit the half spectrum "
                                 f"{self.spectrum_shape}")
            K, C, Fh, Fw2 = self.spectrum_shape
            flat = mask.reshape(K, C, -1)
            if not np.array_equal(flat, flat[..., fft.conjugate_partners(*self.fshape)]):
                raise self.error("spectral mask prunes one entry of a conjugate pair but not the other "
                                 "(columns v = 0 and v = Fw/2: (u, v) and (-u mod Fh, v) go together)")
            mask = mask.astype(self.dtype)
        if self.weights_mode == "spectral":
            self.params[0].set_mask(None if mask is None else np.repeat(mask[..., None], 2, axis=-1))
        else:  # in place: a TEST net sharing this buffer sees the new mask too
            self.buffers["spectral_mask"][...] = 1 if mask is None else mask

    def check_loaded(self):
        """A loaded spectral mask must be 0/1, the same on the real and the imaginary
        part (spectral weights), and keep conjugate pairs together."""
        if self.weights_mode == "spatial_masked":
            self._require_binary(self.buffers["spectral_mask"], "the spectral_mask buffer")
        elif self.weights_mode == "spectral" and self.params[0].mask is not None:
            m = self.params[0].mask
            if not np.array_equal(m[..., 0], m[..., 1]):
                raise self.error("the mask of the spectral weights differs between real and imaginary parts")
        if "spectral" in self.prune_domains():
            self.set_mask("spectral", self.mask("spectral"))     # the conjugate-pair check

    # ----- multiply accounting (wincaffe.counting) ---------------------------------------
    def count_mults(self):
        K, C, Fh, Fw2 = self.spectrum_shape
        M = self._spectral_mask()
        kept = K * C * Fh * Fw2 if M is None else int(np.count_nonzero(M))
        one_fft = counting.rfft2_mults(*self.fshape)
        transforms = (C + K) * one_fft + (K * C * one_fft if self.weights_mode != "spectral" else 0)
        G = self.spectrum(masked=True)
        return {"direct": K * C * self.k * self.k * self.Ho * self.Wo, "fft": 4 * K * C * Fh * Fw2,
                "fft_masked": 4 * kept, "transforms": transforms, "weight_domain": "spectral",
                "weight_density": float(np.count_nonzero(G)) / G.size}

    def count_sparse_mults(self, bottoms):
        if self.weights_mode == "spectral":      # no spatial kernel
            return None
        return {"direct_sparse": counting.conv_nonzero_products(bottoms[0].data, self.params[0].data, self.pad)}

    def _spectral_mask(self):
        """M (K, C, Fh, Fw'): the buffer (spatial_masked), Param.mask's real part or ones
        (spectral), None (spatial)."""
        if self.weights_mode == "spatial_masked":
            return self.buffers["spectral_mask"]
        if self.weights_mode == "spectral":
            m = self.params[0].mask
            return np.ones(self.spectrum_shape, self.dtype) if m is None else m[..., 0]
        return None

    def spectrum(self, masked=True):
        """The kernel's half spectrum rfft2(W) (K, C, Fh, Fw//2 + 1), complex, ⊙ M if
        ``masked``: what Liu & Turakhia prune by modulus. A new array."""
        if self.weights_mode == "spectral":
            G = self._spectral_param().copy()
        else:
            G = np.ascontiguousarray(np.moveaxis(self._spatial_spectrum_fm(), 0, 2)).reshape(self.spectrum_shape)
        M = self._spectral_mask()
        if masked and M is not None:
            G *= M
        return G

    def _spectral_param(self):
        """weights: spectral -- the complex view (K, C, Fh, Fw') of param 0."""
        w = self.params[0]
        if not w.data.flags.c_contiguous:
            w.data = np.ascontiguousarray(w.data)
        return w.data.view(self.ctype)[..., 0]

    def _spatial_spectrum_fm(self, conjugate=False, scale=None, out=None):
        """rfft2(scale·W) (or its conjugate) frequency-major (F, K, C), by matrix DFTs:
        only k × k of the canvas is nonzero (:func:`wincaffe.transforms.fft.rfft2_small`).
        Into ``out`` (F, K, C) with the net's scratch, or a new array."""
        K, C = self.spectrum_shape[:2]
        W = self.params[0].data.reshape(K * C, self.k, self.k)
        s = None if scale is None else self.dtype.type(scale)
        work = None if out is None else self.workspace("fft_small_dft", (self._dft_work,), self.ctype)
        G = fft.rfft2_small(W, self.fshape, conjugate=conjugate, scale=s,
                            out=None if out is None else out.reshape(self.fshape[0], -1, K * C), work=work)
        return G.reshape(-1, K, C)

    def _conj_kernel_spectrum_fm(self):
        """conj(G ⊙ M)/(Fh·Fw) frequency-major (F, K, C) into ``self._Gc``, what the forward
        multiplies by; keeps M frequency-major in ``self._Mfm`` (None without a mask)."""
        K, C = self.spectrum_shape[:2]
        Gc = self._Gc
        if self.weights_mode == "spectral":
            G = np.moveaxis(self._spectral_param().reshape(K, C, -1), 2, 0)
            np.conjugate(G, out=Gc)
            Gc *= self.dtype.type(self.scale)
            has_mask = self.params[0].mask is not None
        else:
            self._spatial_spectrum_fm(conjugate=True, scale=self.scale, out=Gc)
            has_mask = self.weights_mode == "spatial_masked"
        self._Mfm = None
        if has_mask:  # read every time: pruning code may change the mask in place
            self._Mfm = np.moveaxis(self._spectral_mask().reshape(K, C, -1), 2, 0)
            Gc *= self._Mfm
        return Gc

    def memory_traffic(self, bottoms, tops, propagate_down):
        """Forward: x written into its canvas (N, C, Fh, Fw), which the r2c reads to write X;
        the kernel spectrum (F, K, C) written and read by the products, which read X and
        write Y (N, K, ·) for the c2r, which writes the output canvas; the crop reads y's
        share of it and b and writes y. Backward: dY read into its canvas (and for db), its
        r2c writes D; E (F, K, C) = the products of D and conj(X) (C ≤ K: X read, conjugated
        into scratch, read; else D conjugated), written and read for dW; dW and db written.
        Input gradient: the kernel spectrum read, conjugated and read, D read, the dX
        spectrum written and read by the c2r, whose canvas the crop reads to write dx."""
        N, C = self._geom[:2]
        K, _, Fh, Fw2 = self.spectrum_shape
        real, cplx = self.dtype.itemsize, self.ctype.itemsize
        x, y = bottoms[0].data.nbytes, tops[0].data.nbytes
        x_canvas, y_canvas = (N * c * Fh * self.fshape[1] * real for c in (C, K))
        X, Y, G = N * C * Fh * Fw2 * cplx, N * K * Fh * Fw2 * cplx, K * C * Fh * Fw2 * cplx
        params = sum(p.data.nbytes for p in self.params)
        forward = x + 2 * x_canvas + 2 * X + params + 2 * G + 2 * Y + y_canvas + 2 * y
        products = (3 * X + Y) if C <= K else (X + 3 * Y)
        backward = 2 * y + 2 * y_canvas + Y + products + 2 * G + params
        if propagate_down[0]:
            backward += 3 * G + Y + 2 * X + x_canvas + 2 * x
        return forward, backward

    # ----- reshape / forward / backward -------------------------------------------
    def reshape(self, bottoms, tops):
        N, C, H, W = bottoms[0].shape
        K, Cw = self.spectrum_shape[:2]
        _, _, Ho, Wo = conv_output_shape(self, bottoms[0].shape, K, Cw, self.k, self.pad)
        self._check_fits(self.fshape, H, W)
        tops[0].reshape((N, K, Ho, Wo), self.dtype)
        geom = (N, C, H, W)
        if self._geom == geom:
            return
        self._geom, self.Ho, self.Wo = geom, Ho, Wo
        b, fs, dt = self.backend, self.fshape, self.dtype
        # Each layer owns its plans: their zero borders depend on this layer's geometry.
        # C = 1: the forward is an outer product per frequency, cheapest in the natural
        # layout (long contiguous rows); otherwise GEMMs on frequency-major spectra.
        self._outer = C == 1
        self._x_r2c = b.plan_r2c((N, C), fs, dt, freq_major=not self._outer, cached=False)
        self._y_c2r = b.plan_c2r((N, K), fs, dt, freq_major=not self._outer, cached=False)
        self._dy_r2c = self._dx_c2r = None  # backward plans: made on first use (none at TEST)

    def forward(self, bottoms, tops):
        N, C, H, W = self._geom
        K = self.spectrum_shape[0]
        p = self.pad
        xp = self._x_r2c
        fft.place(bottoms[0].data, xp.input, p, p)
        Gc = self._conj_kernel_spectrum_fm()                       # (F, K, C) = conj(G ⊙ M)/(Fh·Fw)
        if self._outer:                                             # C = 1, natural layout
            X = xp().reshape(N, -1)                                 # (N, F)
            Gk = self.workspace("fft_outer_g", (K, Gc.shape[0]), self.ctype)
            np.copyto(Gk, Gc[:, :, 0].T)                            # (K, F)
            np.multiply(X[:, None, :], Gk[None], out=self._y_c2r.input.reshape(N, K, -1))
            self._X = None
            self._Xn = X
        else:
            X = xp().reshape(-1, N, C)                              # (F, N, C), kept for backward
            self._X = X
            out = self._y_c2r.input.reshape(-1, N, K)
            # the mask's density, counted on the (K, C, ·) mask: contiguous for spatial_masked
            # (4× faster than on the frequency-major view)
            if self.sparse.decide(None if self._Mfm is None else self._spectral_mask()):
                self._sparse_products(X, Gc, out)                   # skip masked products
            else:
                batched_matmul(X, Gc, out, trans_b=True)
        bias = self.params[1].data if len(self.params) > 1 else None
        fft.crop(self._y_c2r(), 0, 0, tops[0].data, bias)           # (N, K, Fh, Fw) cropped, + b

    def backward(self, tops, propagate_down, bottoms):
        N, C, H, W = self._geom
        K = self.spectrum_shape[0]
        Ho, Wo, p = self.Ho, self.Wo, self.pad
        b, fs, dt = self.backend, self.fshape, self.dtype
        dy = tops[0].diff
        if self._dy_r2c is None:
            self._dy_r2c = b.plan_r2c((N, K), fs, dt, freq_major=True, cached=False)
        dp = self._dy_r2c
        fft.place(dy, dp.input, 0, 0)
        D = dp().reshape(-1, N, K)                                  # (F, N, K)
        if len(self.params) > 1:
            self.params[1].diff[...] = dy.sum(axis=(0, 2, 3))

        F = D.shape[0]
        X = self._X                                                 # (F, N, C); C = 1: (N, F) in _Xn
        E = self.workspace("fft_e", (F, K, C), self.ctype)
        # E = Σ_n conj(D) · X  (F, K, C); conjugate the smaller operand, keep conj(E) if cheaper
        if C <= K:
            Xc = self.workspace("fft_conj_x", (F, N, C), self.ctype)
            np.conjugate(self._Xn.T.reshape(F, N, 1) if X is None else X, out=Xc)
            batched_matmul(D, Xc, E, trans_a=True)
            is_conj = True
        else:                                                       # C > K > 0: never the C = 1 path
            Dc = self.workspace("fft_conj_d", D.shape, self.ctype)
            np.conjugate(D, out=Dc)
            batched_matmul(Dc, X, E, trans_a=True)
            is_conj = False
        if self._Mfm is not None:
            E *= self._Mfm                                          # M ⊙ E (M is real)
        w = self.params[0]
        if self.weights_mode == "spectral":                         # dS = ω/(Fh·Fw) · M ⊙ E
            E *= self._omega_fm * self.dtype.type(self.scale)
            dS = w.diff.view(self.ctype)[..., 0].reshape(K, C, -1)  # (K, C, F), a view
            if is_conj:
                np.conjugate(np.moveaxis(E, 0, 2), out=dS)
            else:
                np.copyto(dS, np.moveaxis(E, 0, 2))
        else:                                                       # dW = irfft2(M ⊙ E)[:k, :k]
            dW = w.diff.reshape(K * C, self.k, self.k)
            fft.irfft2_small(E.reshape(fs[0], -1, K * C), fs, (self.k, self.k), conjugate=is_conj, out=dW,
                             work=self.workspace("fft_small_dft", (self._dft_work,), self.ctype))
            np.multiply(dW, self.dtype.type(self.scale), out=dW)

        if propagate_down[0]:
            if self._dx_c2r is None:
                self._dx_c2r = b.plan_c2r((N, C), fs, dt, freq_major=True, cached=False)
            G = self.workspace("fft_g", self._Gc.shape, self.ctype)
            np.conjugate(self._Gc, out=G)
            batched_matmul(D, G, self._dx_c2r.input.reshape(-1, N, C))   # Σ_k D · (G ⊙ M)
            dx = self._dx_c2r()
            fft.crop(dx, p, p, bottoms[0].diff)
