"""The quantized element-wise stage of a Winograd convolution: QW and BQW (Chikin &
Kryzhanovskiy, eq. A.1–A.4; the math is in :mod:`wincaffe.transforms.quantization`).

A layer that multiplies in a Winograd domain owns one :class:`QuantizedStage` and calls
:meth:`QuantizedStage.products` in place of its float products M[ξ] = U[ξ] @ V[ξ]:

    U (P, K, C), V (P, C, N·T)  →  M (P, K, N·T) = (Σ_c Ũ Ṽ) / (s_u s_v)

with P = α² transform points. Bits ≤ 8 run the int32-accumulating SIMD kernels of
:mod:`wincaffe._kernels.quant`; 9–16 bits multiply the same integers exactly in float64
(for studies, not speed).

State, kept as layer buffers (saved in weights files, shared by a TRAIN net and its
TEST net):
    quant_range_v (P, C)   calibrated range of |V[ξ, c]|: the mean of per-batch maxima
                           over the first RANGE_BATCHES batches, a moving average after
    quant_batches (1,)     how many batches made it
Derived from the weights and that state at every forward pass, and written beside it
so that a weights file shows what the integer net computes (the integers of its last
forward: a training snapshot's are one update old; loading recomputes them from the
float weights, so they never disagree with what runs):
    quant_weights (K, C, α, α)  the integers Ũ (exact in float)
    quant_scale_u (P,), quant_scale_v (P,)   s_u, s_v (tile-wise; per tensor: all equal;
                           s_v is the static scale, dynamic mode recomputes it per batch)
    quant_balance (P, C)   Ω (all ones for QW)

Ranges are observed while calibrating (:meth:`calibrate`) and in every TRAIN-phase
forward (quantization-aware training), never in TEST. Training uses the straight-through
estimator: the forward computes the quantized products, the backward treats rounding as
the identity and clipping as a cut (gradient 0 where the input was clipped,
:meth:`ste_mask`). Pruned weights (zeros in U) quantize to exact zeros.
"""
import numpy as np

from wincaffe._kernels import quant as qk
from wincaffe.transforms import quantization as qz

MODES = ("static", "dynamic")
RANGE_BATCHES = 100          # the running mean of batch ranges becomes a moving average here
INT_KERNEL_MAX_BITS = 8


class QuantizedStage:
    def __init__(self, layer, settings, P, K, C, alpha):
        """``layer``: the owner (for buffers and errors); ``settings``: its validated
        ``quantize`` block (bits, scales, balance, mode, fuse_balance)."""
        self.layer = layer
        self.bits = int(settings.bits)
        try:
            self.n = qz.clip_level(self.bits)
        except ValueError as exc:
            raise layer.error(str(exc), field="winograd_param.quantize.bits") from None
        self.kind, self.balanced = settings.scales, bool(settings.balance)
        self.mode, self.fused = settings.mode, bool(settings.fuse_balance)
        self.P, self.K, self.C, self.alpha = P, K, C, alpha
        self.kernels = qk.kernels() if self.bits <= INT_KERNEL_MAX_BITS else None
        if self.kernels is not None and C * 255 * 127 >= 2**31:
            raise layer.error(f"{C} input channels could overflow the int32 sums (at most "
                              f"{(2**31 - 1) // (255 * 127)})", field="winograd_param.quantize.bits")
        layer.add_buffer("quant_range_v", np.zeros((P, C)))
        layer.add_buffer("quant_batches", np.zeros(1))
        layer.add_buffer("quant_weights", np.zeros((K, C, alpha, alpha)))
        layer.add_buffer("quant_scale_u", np.ones(P))
        layer.add_buffer("quant_scale_v", np.ones(P))
        layer.add_buffer("quant_balance", np.ones((P, C)))
        self.calibrating = False
        self._packed = None        # (U copy, ranges copy, Ω, s_u, s_v, Ũ, packed words, usum)
        self._ste = None

    @property
    def variant(self):
        """``qw``, ``bqw`` (Ω applied as a second multiply) or ``bqw_fused`` (Ω folded into the scales)."""
        return "qw" if not self.balanced else ("bqw_fused" if self.fused else "bqw")

    @property
    def path(self):
        """The kernel path that runs (``avx512_vnni``, ``avx2``, ``baseline``), or ``float64``."""
        return self.kernels.SIMD if self.kernels is not None else "float64"

    def _buf(self, name):
        return self.layer.buffers[name]     # always through the dict: a TEST net shares it

    # ----- calibration ----------------------------------------------------------------
    def calibrate(self, on):
        """Observe the input ranges in every forward (any phase) while ``on``."""
        self.calibrating = bool(on)

    def reset_ranges(self):
        self._buf("quant_range_v")[...] = 0
        self._buf("quant_batches")[...] = 0

    def _batch_ranges(self, V):
        out = np.empty((V.shape[0], V.shape[1]), np.float32)
        if V.dtype == np.float32 and self.kernels is not None and V.flags.c_contiguous:
            self.kernels.row_absmax(V, out)
        else:
            a = np.abs(V)
            out[...] = np.where(np.isfinite(a), a, 0).max(axis=2, initial=0)   # as row_absmax
        return out

    def _observe(self, batch_ranges):
        rv, cnt = self._buf("quant_range_v"), self._buf("quant_batches")
        w = 1.0 / min(cnt[0] + 1, RANGE_BATCHES)
        rv += (batch_ranges - rv) * w
        cnt += 1

    @property
    def calibrated(self):
        return self._buf("quant_batches")[0] > 0

    # ----- the derived quantities -----------------------------------------------------
    def derive(self, U):
        """(Ω (P, C), s_u (P,), static s_v (P,)) for transformed weights U (P, K, C)."""
        rv = self._buf("quant_range_v").astype(np.float32)
        ru = qz.weight_ranges(U).astype(np.float32)
        omega = qz.balance(rv, ru) if self.balanced else np.ones((self.P, self.C), np.float32)
        s_u = qz.scales(ru * omega, self.bits, self.kind)
        s_v = qz.scales(rv / omega, self.bits, self.kind)
        return omega, s_u, s_v

    def _weights(self, U):
        """(Ω, s_u, static s_v, Ũ, packed words, usum) for U: derived again only when U or
        the calibrated ranges changed since the last call (at inference: once)."""
        c = self._packed
        rv = self._buf("quant_range_v")
        if c is not None and np.array_equal(c[1], rv) and np.array_equal(c[0], U):
            return c[2:]
        omega, s_u, s_v = self.derive(U)
        Uq = qz.quantize(U, (s_u[:, None] * omega)[:, None, :], self.bits)
        words = usum = None
        if self.kernels is not None:
            words, usum = qk.pack_weights(Uq, self.kernels)
        self._packed = (U.copy(), rv.copy(), omega, s_u, s_v, Uq, words, usum)
        a = self.alpha
        self._buf("quant_weights")[...] = Uq.reshape(a * a, -1).T.reshape(self._buf("quant_weights").shape)
        return self._packed[2:]

    def _need_ranges(self):
        return self.mode == "static" or self.balanced

    # ----- the products -----------------------------------------------------------------
    def products(self, U, V, M, *, training=False):
        """M (P, K, NT) float = the dequantized integer products of U (P, K, C), V (P, C, NT).
        ``training``: observe ranges and keep what :meth:`ste_masks` and
        :meth:`dequantized` need for the backward pass."""
        batch_r = None
        if self.calibrating or training or self.mode == "dynamic":
            batch_r = self._batch_ranges(V)
        if (self.calibrating or training) and self._need_ranges():
            self._observe(batch_r)
        if self._need_ranges() and not self.calibrated:
            raise self.layer.error(
                "quantized with static scales or balancing, but not calibrated: run "
                "`wincaffe quantize` first (quantization-aware training starts from the file it writes)",
                field="winograd_param.quantize")
        U = np.ascontiguousarray(U, np.float32)
        omega, s_u, s_v, Uq, words, usum = self._weights(U)
        if self.mode == "dynamic":
            s_v = qz.scales(batch_r / omega, self.bits, self.kind)
        self._buf("quant_scale_u")[...] = s_u
        self._buf("quant_balance")[...] = omega
        if self.mode == "static":
            self._buf("quant_scale_v")[...] = s_v
        if self.balanced and not self.fused:        # BQW: s_v and 1/Ω, two multiplies per element
            mult_v, extra = np.ascontiguousarray(np.broadcast_to(s_v[:, None], omega.shape)), 1 / omega
        else:                                        # QW (Ω = 1) and BQW fused: s_v / Ω, one multiply
            mult_v, extra = s_v[:, None] / omega, None
        mult_v = np.ascontiguousarray(mult_v, np.float32)
        extra = None if extra is None else np.ascontiguousarray(extra, np.float32)
        deq = (1 / (s_u * s_v)).astype(np.float32)
        V32 = np.ascontiguousarray(V, np.float32)
        K, NT = U.shape[1], V.shape[2]
        if self.kernels is not None:
            pv = self.layer.workspace("quant_v", qk.packed_inputs_shape(*V.shape, self.kernels), np.uint32)
            self.kernels.pack_inputs(V32, mult_v, extra, self.n, pv)
            out = M if M.dtype == np.float32 else np.empty(M.shape, np.float32)
            self.kernels.products(words, pv, usum, deq, K, NT, outf=out)
            if out is not M:
                M[...] = out
        else:
            Vq = qz.quantize(V32, mult_v[:, :, None], self.bits, None if extra is None else extra[:, :, None])
            np.multiply(np.matmul(Uq.astype(np.float64), Vq.astype(np.float64)), deq[:, None, None], out=M,
                        casting="unsafe")
        self._ste = None
        if training:
            # copies: the layer overwrites its U and V with the dequantized values next
            self._ste = (U.copy(), V32.copy(), omega, s_u, mult_v, extra, Uq)
        return M

    # ----- straight-through estimator -----------------------------------------------------
    def dequantized(self):
        """After a training forward: (Û (P, K, C), V̂ (P, C, NT)), the values the quantized
        products multiplied: Û = Ũ / (s_u Ω), V̂ = Ṽ / (s_v / Ω)."""
        U, V, omega, s_u, mult_v, extra, Uq = self._ste
        mult_u = (s_u[:, None] * omega)[:, None, :]
        Vq = qz.quantize(V, mult_v[:, :, None], self.bits, None if extra is None else extra[:, :, None])
        mv = mult_v if extra is None else mult_v * extra
        return (Uq / mult_u).astype(np.float32), (Vq / mv[:, :, None]).astype(np.float32)

    def ste_mask(self):
        """After a training forward: mask_v (P, C, NT), True where the clip did not change
        the rounded input, |z| < n + ½ (the gradient passes), False where it did. The
        weights are never clipped (s_u comes from their own range), so U needs no mask."""
        U, V, omega, s_u, mult_v, extra, Uq = self._ste
        zv = np.abs(V * mult_v[:, :, None])
        if extra is not None:
            zv = zv * extra[:, :, None]
        return zv < self.n + 0.5

    def input_positive(self):
        """After a training forward: V > 0 of the input before quantization (the
        Winograd-ReLU's derivative: rounding is the identity for the STE)."""
        return self._ste[1] > 0

    @property
    def has_training_state(self):
        return self._ste is not None

    # ----- files -----------------------------------------------------------------------------
    def check_loaded(self):
        """After loading: the calibration state must be usable (finite ranges >= 0, a batch
        count >= 0); returns the problem or None."""
        rv, cnt = self._buf("quant_range_v"), self._buf("quant_batches")
        if not np.all(np.isfinite(rv)) or np.any(rv < 0):
            return "its calibrated ranges (quant_range_v) must be finite and >= 0"
        if not (np.isfinite(cnt[0]) and cnt[0] >= 0 and cnt[0] == int(cnt[0])):
            return f"its calibration batch count (quant_batches) must be a whole number >= 0, got {cnt[0]}"
        return None
