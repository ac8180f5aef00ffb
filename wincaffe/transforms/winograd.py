"""Winograd minimal-filtering transforms F(m, r): exact construction and error.

Pure math, no layer state. For an output tile of m values and a filter of r
taps, α = m + r − 1 input values are needed and the 1-D correlation
``y_i = Σ_k g_k d_{i+k}`` (i < m) is computed as

    y = Aᵀ [(G g) ⊙ (Bᵀ d)]                   Aᵀ: (m, α), G: (α, r), Bᵀ: (α, α)

and the 2-D correlation of an α×α tile d with an r×r filter g as (the gradient note,
eq. 1; Liu & Turakhia, eq. 2)

    Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A            Y: (m, m)

Construction (Cook–Toom / Lagrange, as in Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", and Lavin's wincnn). The correlation is the
transpose of the linear convolution s = h * g (len(h) = m, len(s) = α), which
Toom–Cook computes by evaluating h and g at α points a_j, multiplying
point-wise and interpolating s back. With α − 1 finite points a_j and the point
at infinity (which picks the leading coefficient):

* Aᵀ[i, j] = a_j**i (evaluation of a degree m−1 polynomial), last column e_{m−1};
* G[j, k] = a_j**k / f_j with f_j = Π_{l≠j} (a_j − a_l), last row e_{r−1};
* Bᵀ[j, :] = coefficients of N_j(x) = Π_{l≠j} (x − a_l) (the Lagrange numerator),
  last row the coefficients of M(x) = Π_l (x − a_l).

With α finite points (no infinity) the same formulas hold without the special
row/column. As in wincnn, when f_0 < 0 row 0 of G and of Bᵀ are negated (so
that F(2,3) and F(4,3) have the familiar signs).

Each transform point j may be rescaled as (Aᵀ[:, j], G[j], Bᵀ[j]) →
(a·Aᵀ[:, j], g·G[j], b·Bᵀ[j]) with a·g·b = 1 without changing the algorithm;
:func:`normalize` picks a canonical representative so that matrices from
different sources (the gradient note, eq. 2, Chikin & Kryzhanovskiy, eq. A.5–A.7) can be compared.
"""
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["DEFAULT_POINTS", "WinogradTransform", "default_points", "parse_points", "transform",
           "exact_matrices", "normalize", "direct_correlate2d", "winograd_correlate2d_exact",
           "winograd_error", "error_table", "format_error_table", "SEED_ERROR_CASES"]

# Finite interpolation points in the order they are used: small magnitudes and
# reciprocal pairs keep the entries of A, G, B (and so the float error) small.
# α − 1 of them are taken, the point at infinity is the α-th. For F(6,3)/F(4,5)
# (α = 8) this gives Lavin's 0, ±1, ±2, ±1/2 (Chikin & Kryzhanovskiy, eq. A.8–A.10).
DEFAULT_POINTS = tuple(Fraction(p) for p in (
    "0", "1", "-1", "2", "-2", "1/2", "-1/2", "3/4", "-3/4", "4/3", "-4/3", "3/2", "-3/2",
    "2/3", "-2/3", "3", "-3", "1/3", "-1/3", "4", "-4", "1/4", "-1/4"))
# (±3/4 then ±4/3 were the most accurate 8th-11th points among ±3/2, ±2/3, ±3, ±1/3,
# ±4, ±1/4, ±5/2 in float32 measurements with winograd_error for F(8,3) and F(10,3).)

MAX_ALPHA = len(DEFAULT_POINTS) + 1

# The (m, r) pairs of the float32 error table (issue: F(2,3), F(4,3), F(6,3), F(2,5), F(4,5)).
SEED_ERROR_CASES = ((2, 3), (4, 3), (6, 3), (2, 5), (4, 5))


def default_points(m, r):
    """The α − 1 default finite points for F(m, r) (infinity is added by :func:`transform`)."""
    alpha = m + r - 1
    if alpha - 1 > len(DEFAULT_POINTS):
        raise ValueError(f"F({m},{r}): α = {alpha} > {MAX_ALPHA}; pass your own points")
    return tuple(DEFAULT_POINTS[:alpha - 1])


def _to_fraction(p):
    if isinstance(p, Fraction):
        return p
    if isinstance(p, bool):
        raise ValueError(f"not a number: {p!r}")
    if isinstance(p, int):
        return Fraction(p)
    if isinstance(p, float):
        if not np.isfinite(p):
            raise ValueError(f"not a finite number: {p!r}")
        return Fraction(repr(p))  # 0.1 -> 1/10, not the binary expansion
    if isinstance(p, str):
        try:
            return Fraction(p.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a number: {p!r}") from None
    raise ValueError(f"not a number: {p!r}")


def parse_points(points, m, r):
    """Validate user points for F(m, r); returns ``(finite_points, use_infinity)``.

    ``points`` holds α − 1 finite points (the point at infinity is added) or α
    finite points (pure Lagrange, no infinity); entries may be ints, floats or
    strings such as ``"1/2"``. ``None`` means :func:`default_points`. Raises
    ValueError with a message meant for users.
    """
    if m < 1 or r < 1:
        raise ValueError(f"F({m},{r}): m and r must be >= 1")
    alpha = m + r - 1
    if points is None:
        return default_points(m, r), True
    pts = tuple(_to_fraction(p) for p in points)
    if len(pts) == alpha - 1:
        inf = True
    elif len(pts) == alpha:
        inf = False
    else:
        raise ValueError(f"F({m},{r}) needs {alpha - 1} points (plus infinity) or {alpha} points, "
                         f"got {len(pts)}")
    if len(set(pts)) != len(pts):
        raise ValueError(f"interpolation points must be distinct, got {[str(p) for p in pts]}")
    return pts, inf


def _poly_from_roots(roots):
    """Coefficients (lowest degree first) of Π (x − a) as Fractions."""
    c = [Fraction(1)]
    for a in roots:
        nxt = [Fraction(0)] * (len(c) + 1)
        for i, ci in enumerate(c):
            nxt[i + 1] += ci
            nxt[i] -= a * ci
        c = nxt
    return c


@lru_cache(maxsize=None)
def _exact(m, r, points, inf):
    alpha = m + r - 1
    n_fin = len(points)
    AT = [[Fraction(0)] * alpha for _ in range(m)]
    G = [[Fraction(0)] * r for _ in range(alpha)]
    BT = [[Fraction(0)] * alpha for _ in range(alpha)]
    for j, a in enumerate(points):
        others = points[:j] + points[j + 1:]
        f = Fraction(1)
        for b in others:
            f *= a - b
        for i in range(m):
            AT[i][j] = a ** i
        for k in range(r):
            G[j][k] = a ** k / f
        num = _poly_from_roots(others)
        for i in range(len(num)):
            BT[j][i] = num[i]
    if inf:
        AT[m - 1][alpha - 1] = Fraction(1)
        G[alpha - 1][r - 1] = Fraction(1)
        mono = _poly_from_roots(points)
        for i in range(len(mono)):
            BT[alpha - 1][i] = mono[i]
    if n_fin and G[0][0] < 0:  # G[0][0] = 1 / f_0
        # wincnn convention: f_0 > 0 (the sign of point 0 moves from G into Bᵀ).
        G[0] = [-g for g in G[0]]
        BT[0] = [-b for b in BT[0]]
    return tuple(map(tuple, AT)), tuple(map(tuple, G)), tuple(map(tuple, BT))


class WinogradTransform:
    """The matrices of F(m, r) for one set of points.

    Attributes: ``m, r, alpha, points`` (finite points, Fractions), ``infinity``
    (bool); exact matrices ``AT_exact`` (m, α), ``G_exact`` (α, r),
    ``BT_exact`` (α, α) as tuples of tuples of Fractions; and
    :meth:`matrices` for float versions.
    """

    def __init__(self, m, r, points, infinity):
        self.m, self.r, self.alpha = m, r, m + r - 1
        self.points, self.infinity = points, infinity
        self.AT_exact, self.G_exact, self.BT_exact = _exact(m, r, points, infinity)
        self._float = {}

    def matrices(self, dtype=np.float64):
        """``(AT, G, BT)`` as read-only arrays of ``dtype``, shapes (m, α), (α, r), (α, α).
        Each entry is the correctly rounded value of the exact rational."""
        dtype = np.dtype(dtype)
        out = self._float.get(dtype)
        if out is None:
            out = []
            for M in (self.AT_exact, self.G_exact, self.BT_exact):
                a = np.array([[float(x) for x in row] for row in M], dtype=np.float64).astype(dtype)
                a.setflags(write=False)
                out.append(a)
            out = self._float[dtype] = tuple(out)
        return out

    def GGT(self, dtype=np.float64):
        """G Gᵀ (α, α), the preconditioner of the gradient note, eq. 18, computed exactly then rounded."""
        G = self.G_exact
        a = len(G)
        P = [[sum((G[i][k] * G[j][k] for k in range(self.r)), Fraction(0)) for j in range(a)] for i in range(a)]
        return np.array([[float(x) for x in row] for row in P], dtype=np.float64).astype(dtype)

    def __repr__(self):
        pts = ", ".join(str(p) for p in self.points) + (", inf" if self.infinity else "")
        return f"WinogradTransform(F({self.m},{self.r}), points=[{pts}])"


_CACHE = {}


def transform(m, r, points=None):
    """The :class:`WinogradTransform` for F(m, r), cached by (m, r, points).

    ``points``: None for the defaults, or α − 1 finite points (infinity added)
    or α finite points; see :func:`parse_points`.
    """
    pts, inf = parse_points(points, m, r)
    key = (m, r, pts, inf)
    t = _CACHE.get(key)
    if t is None:
        t = _CACHE[key] = WinogradTransform(m, r, pts, inf)
    return t


def exact_matrices(m, r, points=None):
    """``(AT, G, BT)`` of F(m, r) as lists of lists of Fractions."""
    t = transform(m, r, points)
    return [list(row) for row in t.AT_exact], [list(row) for row in t.G_exact], [list(row) for row in t.BT_exact]


def normalize(AT, G, BT):
    """Canonical representative under the per-point rescaling (a, g, b), a·g·b = 1:
    column j of Aᵀ and row j of Bᵀ are divided by their first non-zero entry, row j
    of G is multiplied by both. Works on Fractions (exact) or floats; returns
    lists of lists."""
    AT = [list(row) for row in AT]
    G = [list(row) for row in G]
    BT = [list(row) for row in BT]
    alpha = len(G)
    for j in range(alpha):
        a = next((AT[i][j] for i in range(len(AT)) if AT[i][j] != 0), 1)
        b = next((x for x in BT[j] if x != 0), 1)
        for i in range(len(AT)):
            AT[i][j] = AT[i][j] / a
        BT[j] = [x / b for x in BT[j]]
        G[j] = [x * a * b for x in G[j]]
    return AT, G, BT


# ----- reference correlation and the error measurement ----------------------------------

def _matmul_exact(X, Y):
    return [[sum((X[i][k] * Y[k][j] for k in range(len(Y))), Fraction(0)) for j in range(len(Y[0]))]
            for i in range(len(X))]


def _transpose(X):
    return [list(col) for col in zip(*X)]


def direct_correlate2d(d, g):
    """Valid 2-D correlation Y[i, j] = Σ_{a,b} g[a, b] d[i+a, j+b] of lists of lists
    (any number type, exact for Fractions/ints)."""
    r, s = len(g), len(g[0])
    mh, mw = len(d) - r + 1, len(d[0]) - s + 1
    return [[sum((g[a][b] * d[i + a][j + b] for a in range(r) for b in range(s)), Fraction(0))
             for j in range(mw)] for i in range(mh)]


def winograd_correlate2d_exact(d, g, m, r, points=None):
    """Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A in exact rational arithmetic (the gradient note, eq. 1)."""
    AT, G, BT = exact_matrices(m, r, points)
    U = _matmul_exact(_matmul_exact(G, g), _transpose(G))
    V = _matmul_exact(_matmul_exact(BT, d), _transpose(BT))
    M = [[U[i][j] * V[i][j] for j in range(len(U))] for i in range(len(U))]
    return _matmul_exact(_matmul_exact(AT, M), _transpose(AT))


def winograd_error(m, r, points=None, *, dtype=np.float32, tiles=2000, channels=1, seed=0):
    """Float error of F(m, r) against direct correlation in float64.

    Draws ``tiles`` random α×α input tiles and r×r filters (uniform on [−1, 1]),
    and ``channels`` of them are summed per output tile as in a conv layer
    (M = Σ_c U ⊙ V before the output transform). The Winograd path runs entirely
    in ``dtype`` with the matrices rounded to ``dtype``; the reference is the
    direct correlation in float64. Returns a dict with ``max_abs``,
    ``mean_abs`` and ``rel_l2`` (‖y − y_ref‖₂ / ‖y_ref‖₂) over all outputs, and
    the same for a direct correlation computed in ``dtype`` (``direct_*``) as the
    floor to compare against.
    """
    t = transform(m, r, points)
    a = t.alpha
    AT, G, BT = t.matrices(dtype)
    rng = np.random.default_rng(seed)
    d64 = rng.uniform(-1, 1, size=(tiles, channels, a, a))
    g64 = rng.uniform(-1, 1, size=(tiles, channels, r, r))
    # direct reference, float64
    win = np.lib.stride_tricks.sliding_window_view(d64, (r, r), axis=(2, 3))  # (T, C, m, m, r, r)
    ref = np.einsum("tcijab,tcab->tij", win, g64)
    d, g = d64.astype(dtype), g64.astype(dtype)
    U = G @ g @ G.T                                        # (T, C, α, α)
    V = BT @ d @ BT.T
    M = (U * V).sum(axis=1, dtype=dtype)                   # (T, α, α)
    y = (AT @ M @ AT.T).astype(np.float64)
    wd = np.lib.stride_tricks.sliding_window_view(d, (r, r), axis=(2, 3))
    yd = np.einsum("tcijab,tcab->tij", wd, g).astype(np.float64)

    def stats(v):
        err = np.abs(v - ref)
        return float(err.max()), float(err.mean()), float(np.linalg.norm(v - ref) / np.linalg.norm(ref))

    out = {}
    out["max_abs"], out["mean_abs"], out["rel_l2"] = stats(y)
    out["direct_max_abs"], out["direct_mean_abs"], out["direct_rel_l2"] = stats(yd)
    return out


def error_table(cases=SEED_ERROR_CASES, *, dtype=np.float32, tiles=2000, channels=1, seed=0):
    """Rows ``(m, r, stats)`` of :func:`winograd_error` for each (m, r) in ``cases``."""
    return [(m, r, winograd_error(m, r, dtype=dtype, tiles=tiles, channels=channels, seed=seed))
            for m, r in cases]


def format_error_table(rows, dtype=np.float32):
    """The table of :func:`error_table` as text."""
    name = np.dtype(dtype).name
    lines = [f"{'F(m,r)':<8} {'alpha':>5} {'max abs':>10} {'mean abs':>10} {'rel L2':>10} "
             f"{'direct ' + name + ' rel L2':>22} {'ratio':>7}"]
    for m, r, s in rows:
        ratio = s["rel_l2"] / s["direct_rel_l2"] if s["direct_rel_l2"] else float("inf")
        lines.append(f"F({m},{r})   {m + r - 1:>5} {s['max_abs']:>10.2e} {s['mean_abs']:>10.2e} "
                     f"{s['rel_l2']:>10.2e} {s['direct_rel_l2']:>22.2e} {ratio:>7.1f}")
    return "\n".join(lines)
