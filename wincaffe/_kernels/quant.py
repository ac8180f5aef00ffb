"""The integer element-wise stage of quantized Winograd convolution, for this CPU.

Paths, best first (``PATHS``): ``avx512_vnni`` (``quant_winograd_vnni``: AVX-512 VNNI
``vpdpbusd``, u8 × s8 in groups of four channels), ``avx2`` (``quant_winograd_avx2``:
``vpmaddwd`` on int16 pairs) and ``baseline`` (``quant_winograd``: the int16-pair layout
in portable C). A path is available when the CPU has its instructions and its module
was really built for them (each module reports its ``SIMD``). ``kernels()`` gives the
best available one, or the one ``WINCAFFE_QUANT_PATH`` names; ``kernels(path)`` forces
one (the tests run every available path).

All paths compute the same exact int32 sums (see :mod:`wincaffe._kernels.quant_winograd`
for the kernels and the packed layouts); only their speed differs.
"""
import numpy as np

from wincaffe._kernels.dispatch import Family

_FAMILY = Family("WINCAFFE_QUANT_PATH", [
    ("avx512_vnni", "quant_winograd_vnni", ("AVX512F", "AVX512BW", "AVX512VL", "AVX512VNNI")),
    ("avx2", "quant_winograd_avx2", ("AVX2", "FMA3")),
    ("baseline", "quant_winograd", ()),
])
PATHS = _FAMILY.paths
available_paths = _FAMILY.available
kernels = _FAMILY.kernels


def _ceil_to(x, m):
    return -(-x // m) * m


def pack_weights(Uq, mod):
    """Packed Ũ for ``mod.products``: ``Uq`` (P, K, C) integers in [−127, 127] →
    (words (P, Kp, G) uint32, usum (P, Kp) int32), rows padded with zeros to a multiple
    of ``mod.ROWS`` and channels to G·``mod.GROUP``; usum[p, k] = Σ_c Ũ[p, k, c]."""
    Uq = np.asarray(Uq)
    if Uq.dtype.kind not in "iu" or (Uq.size and np.abs(Uq).max() > 127):
        raise ValueError(f"pack_weights: needs integers in [-127, 127], got {Uq.dtype} "
                         f"up to {np.abs(Uq).max() if Uq.size else 0}")
    P, K, C = Uq.shape
    Kp, G = _ceil_to(K, mod.ROWS), -(-C // mod.GROUP)
    dtype = np.int8 if mod.GROUP == 4 else np.int16
    padded = np.zeros((P, Kp, G * mod.GROUP), dtype)
    padded[:, :K, :C] = Uq
    usum = np.zeros((P, Kp), np.int32)
    usum[:, :K] = Uq.sum(axis=2, dtype=np.int64)
    words = padded.astype(padded.dtype.newbyteorder("<")).view(np.uint32).reshape(P, Kp, G)
    return np.ascontiguousarray(words), usum


def packed_inputs_shape(P, C, NT, mod):
    """(P, G, NTp): the shape of the packed inputs ``mod.pack_inputs`` writes."""
    return (P, -(-C // mod.GROUP), _ceil_to(NT, mod.COLS))


def packed_inputs_buffer(P, C, NT, mod):
    """An uninitialised (P, G, NTp) uint32 array for ``mod.pack_inputs``."""
    return np.empty(packed_inputs_shape(P, C, NT, mod), np.uint32)
