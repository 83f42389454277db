"""The fixed-point primitives of the integer contract, in numpy.

Every function here is the vectorised twin of a C function in
``runtime_c/src/hydra_requantize.c`` and follows ``docs/numerics.md`` to the
bit. Integer results are int64 arrays (of int32 values where the spec says
int32); all arithmetic is exact int64, with no intermediate that can overflow.
Inputs outside the documented ranges raise ``ValueError`` rather than being
computed silently wrong.

Spec sections: "Notation" (``round_half_away``, ``round_shift``, ``bitlen``),
"Multipliers" (``quantize_multiplier(s)``), "Requantisation" (``requantize``),
"Inverse square root" (``inv_sqrt``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SHIFT_MIN, SHIFT_MAX = -31, 30  # the range of a multiplier's shift
ROUNDING_MODES = ("double", "single")

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "ROUNDING_MODES",
    "bitlen",
    "inv_sqrt",
    "quantize_multiplier",
    "quantize_multipliers",
    "rdbpot",
    "requantize",
    "round_half_away",
    "round_shift",
    "srdhm",
]


def _as_int64(a: ArrayLike, name: str) -> np.ndarray:
    """``a`` as an int64 array; refuse floats, bools and values that would wrap."""
    arr = np.asarray(a)
    if arr.dtype.kind == "u":
        if arr.size and int(arr.max()) > INT64_MAX:
            raise ValueError(f"{name}: values above int64 range")
    elif arr.dtype.kind == "O":
        try:
            return np.asarray([int(v) for v in arr.ravel()], dtype=np.int64).reshape(arr.shape)
        except (OverflowError, TypeError, ValueError) as exc:
            raise ValueError(f"{name}: expected integers within int64, got {a!r}") from exc
    elif arr.dtype.kind != "i":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_range(arr: np.ndarray, lo: int, hi: int, name: str) -> None:
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got values in [{int(arr.min())}, {int(arr.max())}]")


def _floor_pow2(x: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """``floor_div(x, 2^n)`` (spec "Notation"): numpy's ``>>`` on int64 is arithmetic."""
    return np.right_shift(x, n)


# ---- Notation -------------------------------------------------------------


def round_half_away(r: ArrayLike) -> np.ndarray:
    """``sign(r) * floor(|r| + 1/2)`` for real ``r`` (spec "Notation"), as int64.

    Computed without forming ``|r| + 0.5`` (which can round up in float64, e.g.
    for 0.49999999999999994): the fraction ``|r| - floor(|r|)`` is exact, and
    the result is ``floor(|r|) + (fraction >= 1/2)``. Raises ``ValueError`` for
    non-finite values and results outside int64.
    """
    a = np.asarray(r, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("round_half_away: non-finite value")
    mag = np.abs(a)
    whole = np.floor(mag)
    rounded = whole + ((mag - whole) >= 0.5)
    if rounded.size and float(rounded.max()) >= 2.0**63:
        raise ValueError("round_half_away: result outside int64")
    out = rounded.astype(np.int64)
    return np.where(a < 0, -out, out)


def bitlen(v: ArrayLike) -> np.ndarray | int:
    """Number of bits of ``v`` (spec "Notation": ``bitlen(1) = 1``; here also ``bitlen(0) = 0``).

    Exact integer binary search, vectorised; ``v`` must be non-negative. A
    scalar argument (Python or numpy integer) gives a Python ``int``, so that
    compile-time code such as ``max(0, bitlen(B) - 23)`` stays in plain ints.
    """
    if np.ndim(v) == 0 and not isinstance(v, np.ndarray):
        n = int(v)
        if n < 0 or n > INT64_MAX:
            raise ValueError(f"bitlen: {n} is outside [0, 2^63)")
        return n.bit_length()
    x = _as_int64(v, "bitlen")
    if x.size and int(x.min()) < 0:
        raise ValueError("bitlen: negative value")
    n = np.zeros(x.shape, dtype=np.int64)
    for k in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << k)
        n = np.where(big, n + k, n)
        x = np.where(big, x >> k, x)
    return n + (x > 0)  # x is now 0 or 1


def round_shift(x: ArrayLike, n: ArrayLike) -> np.ndarray:
    """``round_shift(x, n)`` of spec "Notation": ``floor((x + 2^(n-1)) / 2^n)``, ``x`` if ``n == 0``.

    ``x`` int64, ``n`` in ``[0, 62]`` (broadcast). Computed as
    ``floor(x / 2^n) + [x mod 2^n >= 2^(n-1)]``, which cannot overflow (the
    same formula as ``hydra_round_shift_s64``).
    """
    xa = _as_int64(x, "round_shift x")
    na = _as_int64(n, "round_shift n")
    _check_range(na, 0, 62, "round_shift n")
    mask = np.left_shift(np.int64(1), na) - 1
    return _floor_pow2(xa, na) + ((xa & mask) > (mask >> 1))


# ---- Multipliers ----------------------------------------------------------


def quantize_multiplier(real: float, name: str | None = None, large_shift: str = "raise") -> tuple[int, int]:
    """``(M, shift)`` with ``real ~= M * 2^(shift - 31)`` (spec "Multipliers"); TFLM's QuantizeMultiplier.

    ``M`` is Q31 in ``[2^30, 2^31)`` (or 0), ``shift`` in ``[-31, 30]``. A
    multiplier below ``2^-32`` (after rounding) underflows to ``(0, 0)``. Raises
    ``ValueError`` for a negative or non-finite ``real``; ``name`` (the tensor) is quoted.
    A multiplier that needs ``shift > 30`` (roughly ``real >= 2^30``), by ``large_shift``:
    "raise" (``ValueError``), "keep" (returned as is, as TFLM's default double-rounding build
    does), "saturate" (``(2^31 - 1, 30)``, as TFLM's TFLITE_SINGLE_ROUNDING build does).
    """
    if large_shift not in ("raise", "keep", "saturate"):
        raise ValueError(f"large_shift {large_shift!r}: expected 'raise', 'keep' or 'saturate'")
    what = f"multiplier of {name}" if name else "multiplier"
    m = float(real)
    if not math.isfinite(m) or m < 0.0:
        raise ValueError(f"{what}: {m!r} is not a finite real >= 0")
    if m == 0.0:
        return 0, 0
    f, e = math.frexp(m)  # m = f * 2^e, f in [0.5, 1)
    M = int(round_half_away(math.ldexp(f, 31)))  # exact scaling, then rounding
    if M == 2**31:
        M, e = 2**30, e + 1
    if e < -31:
        return 0, 0
    if e > 30 and large_shift == "keep":
        return M, e
    if e > 30 and large_shift == "saturate":
        return 2**31 - 1, 30
    if e > 30:
        raise ValueError(
            f"{what}: {m!r} needs shift {e} > 30 (the largest representable multiplier is below 2^30); "
            "the scales of this tensor are out of range"
        )
    return M, e


def quantize_multipliers(reals: ArrayLike, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``quantize_multiplier`` (spec "Multipliers"): ``(M int32 array, shift int32 array)``.

    Same shape as ``reals``; raises ``ValueError`` (naming the first bad
    element, and ``name`` if given) like the scalar version.
    """
    what = f"multipliers of {name}" if name else "multipliers"
    m = np.asarray(reals, dtype=np.float64)
    bad = ~np.isfinite(m) | (m < 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: element {idx} = {m[idx]!r} is not a finite real >= 0")
    f, e = np.frexp(m)
    e = e.astype(np.int64)
    M = round_half_away(np.ldexp(f, 31))
    carry = M == 2**31
    M = np.where(carry, 2**30, M)
    e = np.where(carry, e + 1, e)
    zero = (m == 0) | (e < -31)
    M = np.where(zero, 0, M)
    e = np.where(zero, 0, e)
    if (e > 30).any():
        idx = tuple(int(i) for i in np.argwhere(e > 30)[0])
        raise ValueError(
            f"{what}: element {idx} = {m[idx]!r} needs shift {int(e[idx])} > 30 "
            "(the largest representable multiplier is below 2^30); the scales of this tensor are out of range"
        )
    return M.astype(np.int32), e.astype(np.int32)


# ---- Requantisation -------------------------------------------------------


def srdhm(y: np.ndarray, M: np.ndarray) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul (spec "Requantisation", double, step 3) on int64 arrays of int32 values, unchecked."""
    p = y * M  # |p| <= 2^62
    s = p + np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))  # division truncating toward zero
    return np.where((y == INT32_MIN) & (M == INT32_MIN), INT32_MAX, q)


def rdbpot(y: np.ndarray, right: np.ndarray) -> np.ndarray:
    """RoundingDivideByPOT: ``y / 2^right``, ties away from zero (double, step 4); int64 arrays, unchecked."""
    mask = np.left_shift(np.int64(1), right) - 1
    r = y & mask  # y - floor_div(y, 2^right) * 2^right, in [0, mask]
    threshold = (mask >> 1) + (y < 0)
    return _floor_pow2(y, right) + (r > threshold)


def requantize(x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, rounding: str = "double") -> np.ndarray:
    """``requant(x, M, shift)`` of spec "Requantisation", broadcasting over all three.

    ``x`` and ``multiplier`` int32 values, ``shift`` in ``[-31, 30]``;
    ``rounding`` is ``"double"`` (gemmlowp / TFLite Micro) or ``"single"``
    (``TFLITE_SINGLE_ROUNDING``). Returns int64 holding int32 values; matches
    ``hydra_requantize_double`` / ``hydra_requantize_single`` bit for bit.
    """
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    xa = _as_int64(x, "requantize x")
    Ma = _as_int64(multiplier, "requantize multiplier")
    sa = _as_int64(shift, "requantize shift")
    _check_range(xa, INT32_MIN, INT32_MAX, "requantize x")
    _check_range(Ma, INT32_MIN, INT32_MAX, "requantize multiplier")
    _check_range(sa, SHIFT_MIN, SHIFT_MAX, "requantize shift")
    xa, Ma, sa = np.broadcast_arrays(xa, Ma, sa)

    if rounding == "single":
        total = 31 - sa  # in [1, 62]; |x * M| <= 2^62, so no overflow
        p = xa * Ma + np.left_shift(np.int64(1), total - 1)
        return np.clip(_floor_pow2(p, total), INT32_MIN, INT32_MAX)

    left = np.maximum(sa, 0)
    right = np.maximum(-sa, 0)
    y = np.clip(xa * np.left_shift(np.int64(1), left), INT32_MIN, INT32_MAX)  # |x * 2^30| < 2^61
    return rdbpot(srdhm(y, Ma), right)


# ---- Inverse square root --------------------------------------------------


def _isqrt_60_62(vn: np.ndarray) -> np.ndarray:
    """``isqrt(vn)`` for ``2^60 <= vn < 2^62``: the bit-by-bit method, as in C (exact).

    All intermediates stay below 2^62 + 2^61, inside int64.
    """
    rem = vn.copy()
    root = np.zeros_like(vn)
    for j in range(30, -1, -1):  # bit = 4^j, from 2^60 (the highest power of 4 <= vn) down
        bit = np.int64(1) << np.int64(2 * j)
        take = rem >= root + bit
        rem = np.where(take, rem - (root + bit), rem)
        root = np.where(take, (root >> 1) + bit, root >> 1)
    return root


def inv_sqrt(v: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(inv, P)`` with ``1/sqrt(v) ~= inv * 2^P / 2^61`` (spec "Inverse square root").

    ``v`` int64 with ``1 <= v < 2^62``, vectorised; exact integer arithmetic
    (bit-by-bit isqrt), bit-identical to ``hydra_inv_sqrt``.
    """
    va = _as_int64(v, "inv_sqrt v")
    _check_range(va, 1, 2**62 - 1, "inv_sqrt v")
    P = (62 - bitlen(va)) // 2
    vn = np.left_shift(va, 2 * P)  # v * 4^P, in [2^60, 2^62)
    sigma = _isqrt_60_62(vn)  # in [2^30, 2^31)
    inv = ((1 << 61) - 1) // sigma  # in [2^30, 2^31)
    return inv, P
