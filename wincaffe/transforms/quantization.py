"""Quantized Winograd arithmetic (Chikin & Kryzhanovskiy, *Channel Balancing for Accurate
Quantization of Winograd Convolutions*, supplement eq. A.1–A.4). Pure functions, no state.

With P = α² transform points ξ, V (P, C, N·T) the transformed input Bᵀ X B and U (P, K, C)
the transformed weights G W Gᵀ:

    Ṽ[ξ, c] = ⌊V[ξ, c] · s_v[ξ] / Ω[ξ, c]⌉                         (A.2)
    Ũ[ξ, k, c] = ⌊U[ξ, k, c] · s_u[ξ] · Ω[ξ, c]⌉                   (A.3)
    M[ξ] = (Σ_c Ũ[ξ, :, c] Ṽ[ξ, c]) / (s_u[ξ] · s_v[ξ]),  Y = Aᵀ M A   (A.1)
    ⌊z⌉ = clip(round(z), −n, n),  n = 2^(b−1) − 1                   (A.4)

Scales are tile-wise (one per ξ) or per tensor (one for all ξ). Because Ω cancels in
Ṽ · Ũ, balancing only moves range between the two factors channel by channel; Ω = 1 is
plain quantized Winograd (QW).

The supplement does not give the calibration formula; ours is the range equalization
that maximizes the product of the two factors' relative precisions per channel: with
r_v[ξ, c] = the calibrated range of |V[ξ, c]| and r_u[ξ, c] = max_k |U[ξ, k, c]|,

    Ω[ξ, c] = sqrt(r_v[ξ, c] / r_u[ξ, c])                          (:func:`balance`)

so that both V[ξ, c] / Ω and U[ξ, ·, c] · Ω span sqrt(r_v · r_u): every channel then
uses the same share of the b-bit range in both factors. The scales are the symmetric
max scales s = n / range (:func:`scales`).

All products of scales and values are float32, in the order written here, so that the
kernels (:mod:`wincaffe._kernels.quant`) and these references round identically.
"""
import numpy as np

SCALES = ("tensor", "tile")


def clip_level(bits):
    """n = 2^(b−1) − 1: the largest magnitude a b-bit symmetric integer takes."""
    bits = int(bits)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    return (1 << (bits - 1)) - 1


def quantize(z, mult, bits, extra=None):
    """⌊z · mult [· extra]⌉ (eq. A.4) as int32, round half to even; float32 arithmetic."""
    n = clip_level(bits)
    t = np.asarray(z, np.float32) * np.asarray(mult, np.float32)
    if extra is not None:
        t = t * np.asarray(extra, np.float32)
    return np.clip(np.rint(t), -n, n).astype(np.int32)


def balance(range_v, range_u):
    """Ω (P, C) = sqrt(r_v / r_u), 1 where either range is 0 (a dead channel or kernel)."""
    rv = np.asarray(range_v, np.float64)
    ru = np.asarray(range_u, np.float64)
    omega = np.ones(np.broadcast_shapes(rv.shape, ru.shape))
    ok = (rv > 0) & (ru > 0)
    omega[ok] = np.sqrt(rv[ok] / ru[ok])
    return omega.astype(np.float32)


def scales(ranges, bits, kind):
    """Symmetric scales s = n / max range: ``ranges`` (P, C) per point and channel; kind
    ``tile``: s (P,) one per point ξ (max over c); ``tensor``: one value, repeated (P,).
    A zero range gives s = 1 (everything there quantizes to 0 anyway)."""
    if kind not in SCALES:
        raise ValueError(f"scales must be one of {SCALES}, got {kind!r}")
    n = clip_level(bits)
    r = np.asarray(ranges, np.float64)
    top = r.max(axis=1) if kind == "tile" else np.full(r.shape[0], r.max() if r.size else 0.0)
    s = np.ones(r.shape[0])
    s[top > 0] = n / top[top > 0]
    return s.astype(np.float32)


def weight_ranges(U):
    """r_u (P, C) = max_k |U[ξ, k, c]| of transformed weights U (P, K, C)."""
    return np.abs(U).max(axis=1) if U.shape[1] else np.zeros((U.shape[0], U.shape[2]), U.dtype)


def integer_products(Uq, Vq):
    """The reference of the integer stage: Σ_c Ũ[ξ, k, c] Ṽ[ξ, c, j] in int64, (P, K, N·T)."""
    return np.matmul(np.asarray(Uq, np.int64), np.asarray(Vq, np.int64))
