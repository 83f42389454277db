"""The fixed-point primitives of docs/numerics.md, in numpy and in C.

Three implementations are compared: hydra_edge.numerics.fixedpoint (numpy,
vectorised), runtime_c/src/hydra_requantize.c (via ctypes), and a scalar
big-integer oracle below written straight from the spec. A table of cases
worked out by hand pins all three down.
"""

from __future__ import annotations

import math
from fractions import Fraction

import c_build
import numpy as np
import pytest
from hydra_edge.numerics import fixedpoint as fp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MODES = ("double", "single")

pytestmark = pytest.mark.skipif(not c_build.have_compiler(), reason=f"no C compiler ({c_build.CC})")


@pytest.fixture(scope="module", params=["plain", "ubsan"])
def rt(request, tmp_path_factory):
    """The runtime, plain and under UBSan (any undefined behaviour aborts the run)."""
    return c_build.build_runtime_lib(tmp_path_factory.mktemp("rt"), sanitize=request.param == "ubsan")


def c_requant(lib, x: int, m: int, s: int, mode: str) -> int:
    fn = lib.hydra_requantize_double if mode == "double" else lib.hydra_requantize_single
    return fn(x, m, s)


# ---- an oracle written from the spec with Python integers -------------------


def oracle_requant(x: int, M: int, shift: int, mode: str) -> int:
    if mode == "single":
        total = 31 - shift
        y = (x * M + 2 ** (total - 1)) // 2**total  # Python // is floor division
        return min(max(y, I32_MIN), I32_MAX)
    left, right = max(shift, 0), max(-shift, 0)
    y = min(max(x * 2**left, I32_MIN), I32_MAX)
    if y == M == I32_MIN:
        y = I32_MAX
    else:
        p = y * M
        s = p + (2**30 if p >= 0 else 1 - 2**30)
        y = abs(s) // 2**31 * (1 if s >= 0 else -1)  # truncation toward zero
    mask = 2**right - 1
    q = y // 2**right
    r = y - q * 2**right
    threshold = (mask >> 1) + (1 if y < 0 else 0)
    return q + (1 if r > threshold else 0)


def oracle_round_shift(x: int, n: int) -> int:
    return x if n == 0 else (x + 2 ** (n - 1)) // 2**n


def oracle_inv_sqrt(v: int) -> tuple[int, int]:
    P = (62 - v.bit_length()) // 2
    return (2**61 - 1) // math.isqrt(v * 4**P), P


# ---- requant: cases worked out by hand ----------------------------------------

# (x, M, shift, double, single). Real value = x * M * 2^(shift - 31).
HAND_CASES = [
    (0, 2**30, 0, 0, 0),
    (0, I32_MAX, 30, 0, 0),
    (12345, 0, 0, 0, 0),  # multiplier 0
    (I32_MIN, 0, -31, 0, 0),
    (I32_MAX, 0, 30, 0, 0),
    (12345, I32_MAX, 0, 12345, 12345),  # shift 0, M = 2^31 - 1 ~ 1
    (1, I32_MAX, 0, 1, 1),
    (-1, I32_MAX, 0, -1, -1),
    (1, 2**30, 0, 1, 1),  # +0.5: SRDHM rounds up
    (-1, 2**30, 0, 0, 0),  # -0.5: gemmlowp's nudge 1 - 2^30 gives 0, as does round-half-up
    (3, 2**30, 0, 2, 2),  # +1.5
    (-3, 2**30, 0, -1, -1),  # -1.5
    (5, 2**30, -1, 2, 1),  # 1.25: SRDHM -> 3 (2.5 up), RDBPOT(3, 1) -> 2 (1.5 away); single -> 1
    (-5, 2**30, -1, -1, -1),
    (3, I32_MAX, -1, 2, 1),  # 1.4999999993: double rounding lands on 2
    (-3, I32_MAX, -1, -2, -1),
    (2**30, 2**30, -30, 1, 1),  # exact +0.5 tie in RDBPOT: away from zero; single: half up
    (-(2**30), 2**30, -30, -1, 0),  # exact -0.5 tie: double away (-1), single half up (0)
    (I32_MIN, 2**30, -31, -1, 0),  # exact -0.5 at shift -31
    (2**30, 2**30, -31, 0, 0),  # 0.25
    (I32_MAX, I32_MAX, -31, 1, 1),  # ~0.99999999907
    (I32_MIN, I32_MAX, -31, -1, -1),
    (I32_MAX, I32_MAX, 0, 2**31 - 2, 2**31 - 2),
    (I32_MIN, I32_MAX, 0, -(2**31) + 1, -(2**31) + 1),
    (1, 2**30, 30, 2**29, 2**29),  # shift 30
    (2, 2**30, 30, 2**30, 2**30),  # x * 2^30 = 2^31 saturates to 2^31 - 1 before SRDHM
    (4, 2**30, 30, 2**30, I32_MAX),  # double saturates x * 2^left; single saturates the result
    (-4, 2**30, 30, -(2**30), I32_MIN),
    (I32_MAX, I32_MAX, 30, 2**31 - 2, I32_MAX),
    (I32_MIN, I32_MIN, 0, I32_MAX, I32_MAX),  # SRDHM's overflow case y == M == INT32_MIN
    (-(2**20), I32_MIN, 11, I32_MAX, I32_MAX),  # ... reached after the left shift saturates
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", HAND_CASES, ids=[f"{c[0]}*{c[1]}@{c[2]}" for c in HAND_CASES])
def test_requant_hand_cases(rt, case, mode):
    x, M, s, want_double, want_single = case
    want = want_double if mode == "double" else want_single
    assert oracle_requant(x, M, s, mode) == want
    assert int(fp.requantize(x, M, s, rounding=mode)) == want
    assert c_requant(rt, x, M, s, mode) == want


@pytest.mark.parametrize("mode", MODES)
def test_requant_vectorised_matches_hand_cases(mode):
    x, M, s, d, si = (np.array(col, dtype=np.int64) for col in zip(*HAND_CASES))
    got = fp.requantize(x, M, s, rounding=mode)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, d if mode == "double" else si)


def test_requant_broadcasts():
    x = np.arange(-6, 7, dtype=np.int64)
    got = fp.requantize(x[:, None], np.array([2**30, I32_MAX]), np.array([-1, 0]))
    assert got.shape == (13, 2)
    for i, xi in enumerate(x):
        assert got[i, 0] == oracle_requant(int(xi), 2**30, -1, "double")
        assert got[i, 1] == oracle_requant(int(xi), I32_MAX, 0, "double")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(x=2**31, multiplier=1, shift=0),
        dict(x=0, multiplier=2**31, shift=0),
        dict(x=0, multiplier=1, shift=31),
        dict(x=0, multiplier=1, shift=-32),
        dict(x=0, multiplier=1, shift=0, rounding="nearest"),
    ],
)
def test_requant_rejects_out_of_contract(kwargs):
    with pytest.raises(ValueError):
        fp.requantize(**kwargs)


def test_requant_rejects_floats():
    with pytest.raises(TypeError):
        fp.requantize(np.array([1.5]), 1, 0)


# ---- requant: properties ------------------------------------------------------

int32s = st.integers(I32_MIN, I32_MAX)
shifts = st.integers(-31, 30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=int32s, M=st.integers(0, I32_MAX), s=shifts, mode=st.sampled_from(MODES))
def test_requant_c_equals_numpy(rt, x, M, s, mode):
    want = oracle_requant(x, M, s, mode)
    assert int(fp.requantize(x, M, s, rounding=mode)) == want
    assert c_requant(rt, x, M, s, mode) == want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=int32s, M=int32s, s=shifts, mode=st.sampled_from(MODES))
def test_requant_any_int32_multiplier(rt, x, M, s, mode):
    """Negative multipliers are outside the spec's use but must still agree (and be UB-free)."""
    assert c_requant(rt, x, M, s, mode) == int(fp.requantize(x, M, s, rounding=mode)) == oracle_requant(x, M, s, mode)


@pytest.mark.parametrize("mode", MODES)
def test_requant_bulk_random(rt, mode):
    rng = np.random.default_rng(7)
    n = 4000
    x = rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
    # multipliers as the quantiser makes them: [2^30, 2^31) or 0, plus a few tiny ones
    M = rng.integers(2**30, I32_MAX, n, endpoint=True)
    M[::50] = 0
    M[1::50] = rng.integers(0, 2**16, len(M[1::50]))
    s = rng.integers(-31, 30, n, endpoint=True)
    x[::7] >>= rng.integers(0, 31, len(x[::7]))  # small magnitudes too
    got = fp.requantize(x, M, s, rounding=mode)
    for xi, Mi, si, gi in zip(x.tolist(), M.tolist(), s.tolist(), got.tolist()):
        assert gi == c_requant(rt, xi, Mi, si, mode) == oracle_requant(xi, Mi, si, mode), (xi, Mi, si)


@pytest.mark.parametrize("mode", MODES)
def test_requant_right_equals_requant_where_it_applies(rt, mode):
    """hydra_requantize_right (the kernels' loop for shift <= 0, |x| < 2^30, M in [0, 2^31)) gives
    requant's bits: every shift in [-31, 0], x at and near the domain's ends and random, M at its ends."""
    rng = np.random.default_rng(11)
    edges = [0, 1, -1, 2, -2, 2**29, -(2**29), 2**30 - 1, -(2**30) + 1, 2**16, -(2**16), 12345, -12345]
    xs = edges + rng.integers(-(2**30) + 1, 2**30, 300).tolist() + rng.integers(-(2**17), 2**17, 300).tolist()
    ms = [0, 1, 2**30, 2**30 + 1, I32_MAX - 1, I32_MAX] + rng.integers(2**30, I32_MAX, 6).tolist()
    fast = rt.hydra_requantize_right_double if mode == "double" else rt.hydra_requantize_right_single
    for s in range(-31, 1):
        for m in ms:
            for x in xs:
                want = oracle_requant(x, m, s, mode)
                assert fast(x, m, s) == want == c_requant(rt, x, m, s, mode), (x, m, s)


def test_requant_c_clamps_out_of_range_shift(rt):
    """The C primitive clamps shift into [-31, 30] (the kernels reject it instead)."""
    for mode in MODES:
        assert c_requant(rt, 12345, 2**30, 40, mode) == c_requant(rt, 12345, 2**30, 30, mode)
        assert c_requant(rt, I32_MIN, I32_MAX, -40, mode) == c_requant(rt, I32_MIN, I32_MAX, -31, mode)


# ---- round_shift -------------------------------------------------------------

ROUND_SHIFT_CASES = [
    (5, 0, 5),
    (-5, 0, -5),
    (3, 1, 2),  # 1.5 -> 2
    (-3, 1, -1),  # -1.5 -> -1 (half up)
    (5, 1, 3),
    (-5, 1, -2),
    (-1, 1, 0),
    (6, 2, 2),  # 1.5 -> 2
    (-6, 2, -1),
    (-7, 2, -2),
    (I64_MAX, 1, 2**62),  # x + 2^(n-1) would overflow int64
    (I64_MIN, 1, -(2**62)),
    (I64_MAX, 62, 2),
    (I64_MIN, 62, -2),
    (2**61, 62, 1),
    (-(2**61), 62, 0),
    (-1, 62, 0),
    (I64_MAX, 0, I64_MAX),
    (I64_MIN, 0, I64_MIN),
]


@pytest.mark.parametrize("x,n,want", ROUND_SHIFT_CASES)
def test_round_shift_hand_cases(rt, x, n, want):
    assert oracle_round_shift(x, n) == want
    assert int(fp.round_shift(x, n)) == want
    assert rt.hydra_round_shift_s64(x, n) == want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=st.integers(I64_MIN, I64_MAX), n=st.integers(0, 62))
def test_round_shift_c_equals_numpy(rt, x, n):
    want = oracle_round_shift(x, n)
    assert int(fp.round_shift(x, n)) == want
    assert rt.hydra_round_shift_s64(x, n) == want


def test_round_shift_vectorised():
    rng = np.random.default_rng(3)
    x = rng.integers(I64_MIN, I64_MAX, 2000, endpoint=True)
    n = rng.integers(0, 62, 2000, endpoint=True)
    got = fp.round_shift(x, n)
    assert got.tolist() == [oracle_round_shift(a, b) for a, b in zip(x.tolist(), n.tolist())]
    with pytest.raises(ValueError):
        fp.round_shift(1, 63)
    with pytest.raises(ValueError):
        fp.round_shift(1, -1)


def test_round_shift_c_clamps_n(rt):
    assert rt.hydra_round_shift_s64(-7, -1) == -7
    assert rt.hydra_round_shift_s64(I64_MAX, 63) == 2


# ---- inv_sqrt ----------------------------------------------------------------


def _inv_sqrt_edges() -> list[int]:
    vs = {1, 2, 3, 4, 5, 2**62 - 1, 2**60, 2**60 - 1, 2**61, 2**61 - 1}
    for s in [1, 2, 3, 255, 65535, 2**20 + 7, 2**30, 2**30 + 1, 2**31 - 1]:
        vs |= {s * s - 1, s * s, s * s + 1}
    for k in range(62):
        vs |= {2**k - 1, 2**k, 2**k + 1}
    return sorted(v for v in vs if 1 <= v < 2**62)


INV_SQRT_EDGES = _inv_sqrt_edges()


def _accurate(v: int, inv: int, P: int) -> bool:
    """|inv 2^P / 2^61 * sqrt(v) - 1| < 2^-29, decided exactly on the square."""
    sq = Fraction(inv * inv * 4**P * v, 2**122)  # (inv 2^P / 2^61)^2 * v
    eps = Fraction(1, 2**29)
    return (1 - eps) ** 2 < sq < (1 + eps) ** 2


def test_inv_sqrt_edges(rt):
    inv, P = fp.inv_sqrt(np.array(INV_SQRT_EDGES, dtype=np.int64))
    assert inv.dtype == np.int64 and P.dtype == np.int64
    for v, i, p in zip(INV_SQRT_EDGES, inv.tolist(), P.tolist()):
        assert (i, p) == oracle_inv_sqrt(v), v
        assert c_build.inv_sqrt_c(rt, v) == (i, p), v
        assert 2**30 <= i < 2**31 and 0 <= p <= 30
        assert _accurate(v, i, p), v


def test_inv_sqrt_hand_values():
    # v = 1: P = 30, vn = 2^60, sigma = 2^30, inv = floor((2^61 - 1) / 2^30) = 2^31 - 1
    assert [int(a) for a in fp.inv_sqrt(1)] == [2**31 - 1, 30]
    # v = 4: bitlen 3, P = 29, vn = 2^60, same sigma: 1/2 = (2^31 - 1) 2^29 / 2^61
    assert [int(a) for a in fp.inv_sqrt(4)] == [2**31 - 1, 29]
    # v = 2^62 - 1: P = 0, sigma = 2^31 - 1, inv = floor((2^61 - 1) / (2^31 - 1)) = 2^30 exactly
    # (the spec's bound is 2^30 <= inv, not <)
    assert [int(a) for a in fp.inv_sqrt(2**62 - 1)] == [(2**61 - 1) // (2**31 - 1), 0] == [1073741824, 0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v=st.one_of(st.integers(1, 2**62 - 1), st.integers(1, 2**31 - 1).map(lambda s: s * s)))
def test_inv_sqrt_c_equals_numpy(rt, v):
    want = oracle_inv_sqrt(v)
    inv, P = fp.inv_sqrt(v)
    assert (int(inv), int(P)) == want
    assert c_build.inv_sqrt_c(rt, v) == want
    assert _accurate(v, *want)


def test_inv_sqrt_bulk_log_uniform(rt):
    rng = np.random.default_rng(11)
    bits = rng.integers(1, 62, 3000, endpoint=True)
    v = np.array([int(rng.integers(2 ** (b - 1), 2**b)) for b in bits.tolist()], dtype=np.int64)
    inv, P = fp.inv_sqrt(v)
    for vi, i, p in zip(v.tolist(), inv.tolist(), P.tolist()):
        assert (i, p) == oracle_inv_sqrt(vi) == c_build.inv_sqrt_c(rt, vi)


@pytest.mark.parametrize("v", [0, -1, 2**62, I64_MAX])
def test_inv_sqrt_out_of_range(rt, v):
    with pytest.raises(ValueError):
        fp.inv_sqrt(v)
    assert c_build.inv_sqrt_c(rt, v) == (0, 0)  # C: a defined answer outside the contract


# ---- bitlen, round_half_away ---------------------------------------------------


def test_bitlen():
    vals = [0, 1, 2, 3, 4, 7, 8, 2**31 - 1, 2**31, 2**62 - 1, 2**62, I64_MAX]
    vals += np.random.default_rng(5).integers(0, I64_MAX, 500).tolist()
    assert fp.bitlen(np.array(vals, dtype=np.int64)).tolist() == [v.bit_length() for v in vals]
    with pytest.raises(ValueError):
        fp.bitlen(np.array([-1]))
    with pytest.raises(ValueError):
        fp.bitlen(-1)
    # scalars give Python ints, as compile-time code wants
    assert fp.bitlen(65793 * 128 * 255) == 31 and type(fp.bitlen(5)) is int
    assert type(fp.bitlen(np.int64(5))) is int and fp.bitlen(np.int64(0)) == 0


@pytest.mark.parametrize(
    "r,want",
    [
        (0.0, 0),
        (-0.0, 0),
        (0.5, 1),
        (-0.5, -1),
        (1.5, 2),
        (2.5, 3),
        (-2.5, -3),
        (0.49999999999999994, 0),  # 0.5 - 2^-54: |r| + 0.5 rounds to 1.0 in float64
        (-0.49999999999999994, 0),
        (2.0**52 - 0.5, 2**52),
        (2.0**52 + 1, 2**52 + 1),
        (-(2.0**62), -(2**62)),
        (1.4999999999999998, 1),
    ],
)
def test_round_half_away(r, want):
    assert int(fp.round_half_away(r)) == want


def test_round_half_away_vectorised_and_errors():
    a = np.array([[-1.5, -0.5], [0.5, 1.5]])
    got = fp.round_half_away(a)
    assert got.dtype == np.int64 and got.tolist() == [[-2, -1], [1, 2]]
    for bad in (np.nan, np.inf, 2.0**63):
        with pytest.raises(ValueError):
            fp.round_half_away(bad)


# ---- quantize_multiplier -------------------------------------------------------


@pytest.mark.parametrize(
    "m,want",
    [
        (0.0, (0, 0)),
        (2.0**-33, (0, 0)),  # below 2^-32: underflows
        (0.75 * 2.0**-32, (0, 0)),  # frexp exponent -32
        (5e-324, (0, 0)),  # the smallest subnormal
        (2.0**-32, (2**30, -31)),  # the smallest representable
        ((1 - 2.0**-40) * 2.0**-32, (2**30, -31)),  # rounds up into range
        (0.5, (2**30, 0)),
        (0.75, (3 * 2**29, 0)),
        (1.0, (2**30, 1)),
        (1 - 2.0**-31, (2**31 - 1, 0)),  # f * 2^31 = 2^31 - 1 exactly
        (1 - 2.0**-32, (2**30, 1)),  # f * 2^31 = 2^31 - 0.5: half away -> 2^31 -> carry
        (1 - 2.0**-40, (2**30, 1)),
        (2.0**29, (2**30, 30)),
        ((1 - 2.0**-31) * 2.0**30, (2**31 - 1, 30)),  # the largest representable
        (0.1, (round(0.8 * 2**31), -3)),  # 0.1 = 0.8 * 2^-3
    ],
)
def test_quantize_multiplier(m, want):
    assert fp.quantize_multiplier(m) == want
    M, s = fp.quantize_multipliers(np.array([m]))
    assert (int(M[0]), int(s[0])) == want and M.dtype == np.int32 and s.dtype == np.int32


@pytest.mark.parametrize("m", [2.0**30, (1 - 2.0**-40) * 2.0**30, 1e10])
def test_quantize_multiplier_too_large(m):
    with pytest.raises(ValueError, match="blocks.0.attn"):
        fp.quantize_multiplier(m, name="blocks.0.attn")
    with pytest.raises(ValueError, match=r"shift 3[1-9]|shift \d\d+"):
        fp.quantize_multipliers(np.array([0.5, m]))


@pytest.mark.parametrize("m", [-1e-9, float("nan"), float("inf")])
def test_quantize_multiplier_invalid(m):
    with pytest.raises(ValueError):
        fp.quantize_multiplier(m)
    with pytest.raises(ValueError):
        fp.quantize_multipliers(np.array([m]))


@settings(max_examples=300, deadline=None)
@given(m=st.floats(min_value=2.0**-31, max_value=2.0**30 * (1 - 2.0**-30), allow_nan=False))
def test_quantize_multiplier_properties(m):
    M, s = fp.quantize_multiplier(m)
    assert 2**30 <= M < 2**31 and -31 <= s <= 30
    assert abs(Fraction(M) * Fraction(2) ** (s - 31) - Fraction(m)) <= Fraction(m) * Fraction(1, 2**31)


def test_quantize_multipliers_matches_scalar():
    rng = np.random.default_rng(2)
    m = np.concatenate([2.0 ** rng.uniform(-40, 29.9, 400), [0.0, 2.0**-32, 1 - 2.0**-32, 2.0**29]])
    M, s = fp.quantize_multipliers(m.reshape(4, -1))
    assert M.shape == s.shape == (4, 101)
    assert list(zip(M.ravel().tolist(), s.ravel().tolist())) == [fp.quantize_multiplier(v) for v in m]


def test_quantized_multiplier_requantizes_close_to_real():
    """End to end: requant(x, quantize_multiplier(m)) ~= x * m (within a unit or so)."""
    rng = np.random.default_rng(9)
    for m in 2.0 ** rng.uniform(-20, 8, 50):
        M, s = fp.quantize_multiplier(float(m))
        x = rng.integers(-(2**20), 2**20, 50)
        for mode in MODES:
            got = fp.requantize(x, M, s, rounding=mode)
            want = np.clip(x * m, I32_MIN, I32_MAX)
            assert np.all(np.abs(got - want) <= 1 + np.abs(want) * 2.0**-30)


# ---- the target paths of the short requantisation ------------------------------------------

REQUANT_PROBE = """    int32_t x, m, s;
    memcpy(&x, input, 4);
    memcpy(&m, input + 4, 4);
    memcpy(&s, input + 8, 4);
    const int32_t d = hydra_requantize_right(x, m, s, 0), r = hydra_requantize_right(x, m, s, 1);
    memcpy(output, &d, 4);
    memcpy(output + 4, &r, 4);"""


def test_requant_right_on_the_m7(tmp_path):
    """The M7 build of hydra_requantize_right (SMMULR for the high multiply) gives requant's bits in both modes:
    every shift in [-31, 0], x at the domain's ends and random, M at its ends (QEMU; the cross toolchain)."""
    from target_probe import probe_folder, run_probe

    rng = np.random.default_rng(12)
    edges = [0, 1, -1, 2, -2, 3, -3, 2**29, -(2**29), 2**30 - 1, -(2**30) + 1, 2**16, -(2**16), 12345, -12345]
    xs = edges + rng.integers(-(2**30) + 1, 2**30, 40).tolist() + rng.integers(-(2**12), 2**12, 40).tolist()
    ms = [0, 1, 2**30, 2**30 + 1, I32_MAX - 1, I32_MAX] + rng.integers(2**30, I32_MAX, 4).tolist()
    cases = np.array([(x, m, s) for s in range(-31, 1) for m in ms for x in xs], np.int32)
    folder = probe_folder(tmp_path / "m7", "stm32f746", REQUANT_PROBE, 12, 8)
    got = run_probe(folder, cases.view(np.int8).reshape(len(cases), 12)).view(np.int32).reshape(len(cases), 2)
    for (x, m, s), (double, single) in zip(cases.tolist(), got.tolist()):
        assert (double, single) == (oracle_requant(x, m, s, "double"), oracle_requant(x, m, s, "single")), (x, m, s)
