"""Winograd F(m, r) matrices: equality with the seeds, exactness, float32 error."""
from fractions import Fraction as Fr

import numpy as np
import pytest

from wincaffe.transforms import winograd as wg

# the gradient note, eq. (2) and Liu & Turakhia (F(2,3); Liu & Turakhia call Bᵀ "Cᵀ")
SEED_F23 = dict(
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G=[[1, 0, 0], [Fr(1, 2), Fr(1, 2), Fr(1, 2)], [Fr(1, 2), Fr(-1, 2), Fr(1, 2)], [0, 0, 1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]],
)
# Chikin & Kryzhanovskiy, eq. (A.5)-(A.7) (F(4,3), Lavin & Gray)
SEED_F43 = dict(
    BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    G=[[Fr(1, 4), 0, 0], [Fr(-1, 6), Fr(-1, 6), Fr(-1, 6)], [Fr(-1, 6), Fr(1, 6), Fr(-1, 6)],
       [Fr(1, 24), Fr(1, 12), Fr(1, 6)], [Fr(1, 24), Fr(-1, 12), Fr(1, 6)], [0, 0, 1]],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)


def _frac(M):
    return [[Fr(x) for x in row] for row in M]


def test_f23_matches_seed_000_eq2_up_to_the_sign_of_the_infinity_point():
    AT, G, BT = wg.exact_matrices(2, 3)
    # The seeds' F(2,3) has the point at infinity with the opposite sign in both
    # Aᵀ (last column) and Bᵀ (last row): (−1)·(−1) = 1, the same algorithm.
    assert G == _frac(SEED_F23["G"])
    assert BT[:3] == _frac(SEED_F23["BT"])[:3]
    assert BT[3] == [-x for x in _frac(SEED_F23["BT"])[3]]
    assert [row[:3] for row in AT] == [row[:3] for row in _frac(SEED_F23["AT"])]
    assert [row[3] for row in AT] == [-row[3] for row in _frac(SEED_F23["AT"])]
    # and after normalisation they are identical
    assert wg.normalize(AT, G, BT) == wg.normalize(*(_frac(SEED_F23[k]) for k in ("AT", "G", "BT")))


def test_f43_matches_seed_003_eq_a5_a7():
    AT, G, BT = wg.exact_matrices(4, 3)
    seed = [_frac(SEED_F43[k]) for k in ("AT", "G", "BT")]
    assert wg.normalize(AT, G, BT) == wg.normalize(*seed)
    # with the default points (0, ±1, ±2, ∞) they are even equal without normalising
    assert (AT, G, BT) == tuple(seed)


def test_normalize_removes_a_moved_row_scaling():
    AT, G, BT = wg.exact_matrices(4, 3)
    # move a factor 6 from G row 1 into Bᵀ row 1, and −2 from Aᵀ column 3 into G row 3
    G2 = [row[:] for row in G]
    BT2 = [row[:] for row in BT]
    AT2 = [row[:] for row in AT]
    G2[1] = [x * 6 for x in G2[1]]
    BT2[1] = [x / 6 for x in BT2[1]]
    for i in range(4):
        AT2[i][3] = AT2[i][3] * -2
    G2[3] = [x / -2 for x in G2[3]]
    assert (AT2, G2, BT2) != (AT, G, BT)
    assert wg.normalize(AT2, G2, BT2) == wg.normalize(AT, G, BT)


def test_f63_matches_the_legible_rows_of_seed_003():
    # The seed's (A.8)-(A.10) are OCR-damaged (A.8 has 7 rows, A.9 has garbled and
    # duplicated rows, A.10's first row has 9 entries); the intact rows agree exactly.
    AT, G, BT = wg.exact_matrices(6, 3)
    assert BT[0] == _frac([[1, 0, Fr(-21, 4), 0, Fr(21, 4), 0, -1, 0]])[0]
    assert BT[1] == _frac([[0, 1, 1, Fr(-17, 4), Fr(-17, 4), 1, 1, 0]])[0]
    assert BT[2] == _frac([[0, -1, 1, Fr(17, 4), Fr(-17, 4), -1, 1, 0]])[0]
    assert BT[3] == _frac([[0, Fr(1, 2), Fr(1, 4), Fr(-5, 2), Fr(-5, 4), 2, 1, 0]])[0]
    assert BT[7] == _frac([[0, -1, 0, Fr(21, 4), 0, Fr(-21, 4), 0, 1]])[0]
    assert AT[1] == _frac([[0, 1, -1, 2, -2, Fr(1, 2), Fr(-1, 2), 0]])[0]
    assert AT[5] == _frac([[0, 1, -1, 32, -32, Fr(1, 32), Fr(-1, 32), 1]])[0]
    assert G[0] == [1, 0, 0] and G[1] == [Fr(-2, 9)] * 3 and G[7] == [0, 0, 1]
    assert G[6] == [Fr(32, 45), Fr(-16, 45), Fr(8, 45)]


SUPPORTED = [(m, r) for a in range(1, 9) for m in range(1, a + 1) for r in [a - m + 1]]


@pytest.mark.parametrize("m,r", SUPPORTED)
def test_winograd_identity_is_exact_in_rational_arithmetic(m, r):
    rng = np.random.default_rng(1000 * m + r)
    a = m + r - 1
    for _ in range(2):
        d = [[Fr(int(v)) for v in row] for row in rng.integers(-9, 10, size=(a, a))]
        g = [[Fr(int(v)) for v in row] for row in rng.integers(-9, 10, size=(r, r))]
        assert wg.winograd_correlate2d_exact(d, g, m, r) == wg.direct_correlate2d(d, g)


@pytest.mark.parametrize("m,r,points", [
    (2, 3, ["0", "1", "-1", "1/2"]),           # α finite points, no infinity
    (4, 3, [0, 1, -1, 0.5, -0.5]),             # floats are read exactly (0.5 = 1/2)
    (3, 2, ["0", "2", "-1/3"]),
    (9, 3, None),                              # α = 11: beyond 8 with the defaults
])
def test_own_points_are_exact_too(m, r, points):
    rng = np.random.default_rng(7)
    a = m + r - 1
    d = [[Fr(int(v)) for v in row] for row in rng.integers(-5, 6, size=(a, a))]
    g = [[Fr(int(v)) for v in row] for row in rng.integers(-5, 6, size=(r, r))]
    assert wg.winograd_correlate2d_exact(d, g, m, r, points) == wg.direct_correlate2d(d, g)


def test_points_are_validated():
    with pytest.raises(ValueError, match="distinct"):
        wg.transform(2, 3, [0, 1, 1])
    with pytest.raises(ValueError, match="needs 3 points"):
        wg.transform(2, 3, [0, 1])
    with pytest.raises(ValueError, match="not a number"):
        wg.transform(2, 3, [0, 1, "x"])


def test_transform_is_cached_and_float_matrices_are_rounded_exact_values():
    t = wg.transform(4, 3)
    assert wg.transform(4, 3) is t and wg.transform(4, 3, [0, 1, -1, 2, -2]) is t
    AT, G, BT = t.matrices(np.float32)
    assert AT.dtype == G.dtype == BT.dtype == np.float32
    assert AT.shape == (4, 6) and G.shape == (6, 3) and BT.shape == (6, 6)
    assert G[1, 0] == np.float32(-1 / 6)
    G64 = t.matrices(np.float64)[1]
    np.testing.assert_allclose(t.GGT(), G64 @ G64.T, rtol=1e-15)


@pytest.mark.parametrize("m,r", wg.SEED_ERROR_CASES)
def test_float32_error_is_small(m, r, capsys):
    s = wg.winograd_error(m, r, tiles=500, channels=4)
    with capsys.disabled():
        print(f"\nF({m},{r}) float32: rel L2 {s['rel_l2']:.2e}, max abs {s['max_abs']:.2e} "
              f"(direct float32: {s['direct_rel_l2']:.2e})")
    # direct float32 is ~1e-7; Winograd loses 1-2 decimal digits for α = 6, 8
    assert s["rel_l2"] < 1e-5
    assert s["max_abs"] < 1e-3
    assert s["rel_l2"] < 100 * s["direct_rel_l2"]


def test_error_grows_with_alpha():
    e = {mr: wg.winograd_error(*mr, tiles=500)["rel_l2"] for mr in [(2, 3), (4, 3), (6, 3)]}
    assert e[(2, 3)] < e[(4, 3)] < e[(6, 3)]
