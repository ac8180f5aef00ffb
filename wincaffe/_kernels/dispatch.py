"""Runtime CPU dispatch shared by the SIMD kernel families (quantized and sparse products):
each family is one Cython source built several times (a baseline and ``#pragma GCC target``
builds); the best build this CPU can run is chosen at import, or the one an environment
variable names. A build counts only if the CPU has its instructions and the module really
was compiled for them (each reports ``SIMD``; a non-GCC compiler builds baseline code)."""
import importlib
import os


# NumPy's feature names and the /proc/cpuinfo flags they stand for (the fallback below)
_LINUX_FLAGS = {"AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512BW": "avx512bw",
                "AVX512VL": "avx512vl", "AVX512VNNI": "avx512_vnni"}


def cpu_features():
    """The CPU's features as NumPy names them (``{"AVX2": True, ...}``): NumPy's own view,
    else the flags of /proc/cpuinfo, else {} (baseline only)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
        return __cpu_features__
    except Exception:
        pass
    from wincaffe.machine import cpu_flags
    flags = cpu_flags()
    return {name: flag in flags for name, flag in _LINUX_FLAGS.items()}


class Family:
    """``Family(env, [(path, module, flags), ...])``, best path first, baseline last."""

    def __init__(self, env, builds):
        self.env, self.builds = env, list(builds)
        self.paths = tuple(p for p, _, _ in self.builds)

    def _load(self, path):
        _, module, flags = next(b for b in self.builds if b[0] == path)
        feats = cpu_features()
        if not all(feats.get(f) for f in flags):
            return None
        try:
            mod = importlib.import_module(f"wincaffe._kernels.{module}")
        except ImportError:
            return None
        return mod if mod.SIMD == path else None

    def available(self):
        """The paths this machine can run, best first."""
        return tuple(p for p in self.paths if self._load(p) is not None)

    def kernels(self, path=None):
        """The module of ``path`` (default: ``$<env>`` or the best available)."""
        path = path or os.environ.get(self.env) or None
        if path is None:
            return self._load(self.available()[0])
        if path not in self.paths:
            raise ValueError(f"unknown kernel path {path!r} (known: {', '.join(self.paths)})")
        mod = self._load(path)
        if mod is None:
            raise ValueError(f"kernel path {path!r} is not available on this machine "
                             f"(available: {', '.join(self.available())})")
        return mod
