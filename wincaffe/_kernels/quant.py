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
import importlib
import os

import numpy as np

PATHS = ("avx512_vnni", "avx2", "baseline")
_MODULES = {"avx512_vnni": "quant_winograd_vnni", "avx2": "quant_winograd_avx2",
            "baseline": "quant_winograd"}
_CPU_FLAGS = {"avx512_vnni": ("AVX512F", "AVX512BW", "AVX512VL", "AVX512VNNI"),
              "avx2": ("AVX2", "FMA3"), "baseline": ()}


def _cpu_features():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
        return __cpu_features__
    except Exception:    # an older or unusual NumPy: assume nothing beyond the baseline
        return {}


def _load(path):
    feats = _cpu_features()
    if not all(feats.get(f) for f in _CPU_FLAGS[path]):
        return None
    try:
        mod = importlib.import_module(f"wincaffe._kernels.{_MODULES[path]}")
    except ImportError:
        return None
    return mod if mod.SIMD == path else None    # e.g. a non-GCC build falls back to baseline code


def available_paths():
    """The paths this machine can run, best first (``baseline`` always)."""
    return tuple(p for p in PATHS if _load(p) is not None)


def kernels(path=None):
    """The kernel module of ``path`` (default: ``$WINCAFFE_QUANT_PATH`` or the best available)."""
    path = path or os.environ.get("WINCAFFE_QUANT_PATH") or None
    if path is None:
        return _load(available_paths()[0])
    if path not in PATHS:
        raise ValueError(f"unknown quantized-kernel path {path!r} (known: {', '.join(PATHS)})")
    mod = _load(path)
    if mod is None:
        raise ValueError(f"quantized-kernel path {path!r} is not available on this machine "
                         f"(available: {', '.join(available_paths())})")
    return mod


def _ceil_to(x, m):
    return -(-x // m) * m


def pack_weights(Uq, mod):
    """Packed Ũ for ``mod.products``: ``Uq`` (P, K, C) integers in [−127, 127] →
    (words (P, Kp, G) uint32, usum (P, Kp) int32), rows padded with zeros to a multiple
    of ``mod.ROWS`` and channels to G·``mod.GROUP``; usum[p, k] = Σ_c Ũ[p, k, c]."""
    P, K, C = Uq.shape
    Kp, G = _ceil_to(K, mod.ROWS), -(-C // mod.GROUP)
    dtype = np.int8 if mod.GROUP == 4 else np.int16
    padded = np.zeros((P, Kp, G * mod.GROUP), dtype)
    padded[:, :K, :C] = Uq
    usum = np.zeros((P, Kp), np.int32)
    usum[:, :K] = Uq.sum(axis=2, dtype=np.int64)
    words = padded.astype(padded.dtype.newbyteorder("<")).view(np.uint32).reshape(P, Kp, G)
    return np.ascontiguousarray(words), usum


def packed_inputs_buffer(P, C, NT, mod):
    """An uninitialised (P, G, NTp) uint32 array for ``mod.pack_inputs``."""
    return np.empty((P, -(-C // mod.GROUP), _ceil_to(NT, mod.COLS)), np.uint32)
