"""Sparse × dense products for this CPU (:mod:`wincaffe._kernels.sparse_products`):
``avx512``, ``avx2`` or ``baseline`` builds, the best chosen at import
(``WINCAFFE_SPARSE_PATH`` forces one), and the CSR layout they take.

:class:`CSR` compresses a stack of P matrices S (P, R, Q) (its nonzeros, or a given
pattern) into one CSR of P·R rows: ``rowptr`` int64 (P·R + 1), ``cols`` int32, ``vals``;
``index`` gives each entry's position in S.reshape(-1), ``source`` the position
``refill`` takes it from (the same, except for a :meth:`CSR.transposed` one).
"""
import numpy as np

from wincaffe._kernels.dispatch import Family

_FAMILY = Family("WINCAFFE_SPARSE_PATH", [
    ("avx512", "sparse_products_avx512", ("AVX512F",)),
    ("avx2", "sparse_products_avx2", ("AVX2", "FMA3")),
    ("baseline", "sparse_products", ()),
])
PATHS = _FAMILY.paths
available_paths = _FAMILY.available
kernels = _FAMILY.kernels


class CSR:
    """The nonzero pattern (or ``pattern``) of S (P, R, Q) as one CSR of P·R rows."""

    def __init__(self, S, pattern=None):
        S = np.asarray(S)
        P, R, Q = S.shape
        keep = (S != 0) if pattern is None else np.broadcast_to(np.asarray(pattern, bool), S.shape)
        flat = np.flatnonzero(keep.reshape(P * R, Q))              # row-major: sorted by (row, col)
        rows, cols = np.divmod(flat, Q)
        self.shape = (P, R, Q)
        self.rowptr = np.zeros(P * R + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=P * R), out=self.rowptr[1:])
        self.cols = cols.astype(np.int32)
        self.index = flat                                          # positions in S.reshape(P·R, Q)
        self.source = flat                 # where refill() takes each value from (see transposed)
        self.source_shape = (P, R, Q)      # the shape refill() expects
        self.vals = np.ascontiguousarray(S.reshape(P * R, Q).reshape(-1)[flat])

    @property
    def nnz(self):
        return int(self.cols.shape[0])

    @property
    def density(self):
        P, R, Q = self.shape
        return self.nnz / max(P * R * Q, 1)

    def refill(self, S):
        """New values, in place, from S: the (P, R, Q) stack this CSR was made from, or for a
        :meth:`transposed` one the untransposed stack it was made from (no transposed copy)."""
        S = np.asarray(S)
        if S.shape != self.source_shape:
            raise ValueError(f"refill: S has shape {S.shape}, this CSR was made from {self.source_shape}")
        # mode="clip": with the default "raise", np.take writes through a copy of ``out``
        # (the indices are this CSR's own, in range for S of source_shape)
        np.take(S.reshape(-1), self.source, out=self.vals, mode="clip")

    def transposed(self, S):
        """The CSR of Sᵀ (P, Q, R) with the same pattern transposed (values from S); its
        ``refill`` takes S itself: ``source`` maps each entry (p, q, r) of Sᵀ to (p, r, q) of S."""
        P, R, Q = self.shape
        keep = np.zeros(P * R * Q, bool)
        keep[self.index] = True
        t = CSR(np.ascontiguousarray(np.asarray(S).transpose(0, 2, 1)),
                pattern=np.ascontiguousarray(keep.reshape(P, R, Q).transpose(0, 2, 1)))
        p, rest = np.divmod(t.index, Q * R)
        q, r = np.divmod(rest, R)
        t.source = (p * R + r) * Q + q
        t.source_shape = (P, R, Q)
        return t

    def dense(self):
        out = np.zeros(self.shape[0] * self.shape[1] * self.shape[2], self.vals.dtype)
        out[self.index] = self.vals
        return out.reshape(self.shape)
