"""The Winograd tiling kernels for this CPU: ``gather_transform``,
``transform_scatter`` and their fused small-C forms ``product_transform_scatter``
and ``gather_transform_grads`` from ``winograd_tiles_avx2`` (compiled with -mavx2 -mfma)
when the CPU has AVX2 and FMA, else from the baseline ``winograd_tiles``.
Set ``WINCAFFE_NO_AVX2=1`` to force the baseline. ``KERNELS`` names the choice.
See winograd_tiles.pyx for what the kernels compute.
"""
import os

from wincaffe._kernels.dispatch import cpu_features


def _cpu_has_avx2_fma():
    feats = cpu_features()
    return bool(feats.get("AVX2")) and bool(feats.get("FMA3"))


_mod = None
if os.environ.get("WINCAFFE_NO_AVX2", "") in ("", "0") and _cpu_has_avx2_fma():
    try:
        from wincaffe._kernels import winograd_tiles_avx2 as _mod
    except ImportError:
        _mod = None
if _mod is None:
    from wincaffe._kernels import winograd_tiles as _mod

KERNELS = _mod.__name__.rsplit(".", 1)[-1]
gather_transform = _mod.gather_transform
transform_scatter = _mod.transform_scatter
product_transform_scatter = _mod.product_transform_scatter
gather_transform_grads = _mod.gather_transform_grads

__all__ = ["gather_transform", "transform_scatter", "product_transform_scatter",
           "gather_transform_grads", "KERNELS"]
