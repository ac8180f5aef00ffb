"""Sparse products for pruned transform-domain weights: the element-wise stage of a
pruned WinogradConv (one sparse U[ξ] (K, C) per tile position) or FFTConv (one per
frequency), skipping the masked products (the kernels: :mod:`wincaffe._kernels.sparse`).

A layer owns one :class:`SparseProducts` per product stage and asks it each pass:

    forward     M[p] = S[p] @ X[p]                S (P, R, Q) with the mask's pattern
    backward    dS = (dM[p] @ X[p]ᵀ) at the pattern only (a sampled dense–dense product)
                dX[p] = S[p]ᵀ @ dM[p]            (the same pattern, transposed)

The compressed layout (a CSR of S and one of Sᵀ) is rebuilt only when the mask changes,
and its values refilled only when the weights change (compared byte for byte with a
copy of the last ones: at inference once, in retraining once per update); ``builds`` and
``refills`` count them. Comparing, refilling and the backward's sampled products use kept
arrays, so retraining a pruned layer allocates nothing per iteration
(``tests/test_hot_path.py``).

Whether to go sparse (``setting``): ``on``, ``off``, or ``auto``: sparse when the mask's
density is at most the layer's break-even (``BREAK_EVEN`` for WinogradConv,
``FFT_BREAK_EVEN`` for FFTConv), the density below which the sparse path beat the dense
one in ``benchmarks/bench_sparse.py`` (see the README), so that a layer never pays for a
sparse path that loses. Without a mask a layer is dense.
"""
import numpy as np

from wincaffe._kernels import sparse as sk
from wincaffe._kernels.same_bytes import same_bytes

SETTINGS = ("auto", "on", "off")
# Measured break-even densities (benchmarks/bench_sparse.py, one thread; README "Sparse execution").
BREAK_EVEN = 0.3         # WinogradConv, whole-layer forward (forward + backward: 27-35%)
FFT_BREAK_EVEN = None    # FFTConv: never (at LeNet's sizes the layout changes cost more than they save)


def sparse_setting(layer, value, field):
    """A layer's ``sparse`` field as one of SETTINGS: YAML 1.1 reads a bare ``on`` / ``off``
    as true / false, so booleans mean on / off; anything else is one clear error."""
    if isinstance(value, bool):
        return "on" if value else "off"
    v = str(value).lower()
    if v not in SETTINGS:
        raise layer.error(f"must be one of {', '.join(SETTINGS)}, got {value!r}", field=field)
    return v


class SparseProducts:
    def __init__(self, setting="auto", break_even=BREAK_EVEN):
        if setting not in SETTINGS:
            raise ValueError(f"sparse must be one of {SETTINGS}, got {setting!r}")
        self.setting, self.break_even = setting, break_even
        self._kernels = None          # resolved on the first sparse pass (a bad WINCAFFE_SPARSE_PATH
                                      # must not break layers that never go sparse)
        self.builds = self.refills = 0
        self.density = 1.0
        self.active = False
        self._pattern = None          # the bool pattern (P, R, Q) the CSRs were built for
        self._values = None           # the S they hold
        self._dvals = None            # backward's values of dS at the pattern (nnz,)
        self._csr = self._csr_t = None

    @property
    def kernels(self):
        if self._kernels is None:
            self._kernels = sk.kernels()
        return self._kernels

    def decide(self, pattern):
        """Choose the path for a mask ``pattern`` (P, R, Q) of 0/1 (None: no mask): sets and
        returns ``active``."""
        if pattern is None:
            self.density, self.active = 1.0, False
            return False
        self.density = float(np.count_nonzero(pattern)) / max(pattern.size, 1)
        self.active = self.setting == "on" or (self.setting == "auto" and self.break_even is not None
                                               and self.density <= self.break_even)
        return self.active

    def describe(self):
        return f"{'sparse' if self.active else 'dense'} {self.density:.1%}"

    def _layout(self, S, pattern):
        """The CSRs of S and Sᵀ for ``pattern``: rebuilt if the pattern changed, refilled
        if only S did, kept otherwise."""
        pattern = np.ascontiguousarray(pattern, dtype=bool)
        if self._pattern is None or not same_bytes(self._pattern, pattern):
            self._pattern = pattern.copy()
            self._csr = sk.CSR(S, pattern=pattern)
            self._csr_t = self._csr.transposed(S)
            self._values = S.copy()
            self._dvals = None
            self.builds += 1
        elif not same_bytes(self._values, S):         # compared and refilled without temporaries
            self._csr.refill(S)
            self._csr_t.refill(S)
            np.copyto(self._values, S)
            self.refills += 1
        return self._csr, self._csr_t

    def forward(self, S, pattern, X, out):
        """out (P, R, n) = S @ X for S (P, R, Q) with ``pattern`` (bool, S's shape), X (P, Q, n)."""
        csr, _ = self._layout(np.ascontiguousarray(S), pattern)
        self.kernels.spmm(csr.rowptr, csr.cols, csr.vals.astype(X.dtype, copy=False), X, out)
        return out

    def backward(self, dM, X, dS, dX=None):
        """After :meth:`forward`: dS (P, R, Q) = (dM @ Xᵀ) at the pattern, zero elsewhere;
        dX (P, Q, n) = Sᵀ @ dM when given."""
        csr, csr_t = self._csr, self._csr_t
        if csr is None:
            raise RuntimeError("SparseProducts.backward needs a sparse forward first")
        vals = self._dvals
        if vals is None or vals.dtype != dM.dtype:          # one buffer per layout
            vals = self._dvals = np.empty(csr.nnz, dM.dtype)
        self.kernels.sampled_dot(csr.rowptr, csr.cols, dM, X, vals)
        flat = dS.reshape(-1)
        flat[...] = 0
        flat[csr.index] = vals
        if dX is not None:
            self.kernels.spmm(csr_t.rowptr, csr_t.cols, csr_t.vals.astype(dM.dtype, copy=False), dM, dX)
        return dS
