"""TFLite Micro's fixed-point arithmetic (gemmlowp's, as TFLM ships it), vectorised in numpy.

The int8 TFLite path follows TFLM's reference kernels to the bit; this module
holds the arithmetic they share, each function the twin of one in
``runtime_c/src/tfl_fixedpoint.c``. Values are int64 arrays holding int32
values. Where gemmlowp adds or subtracts without saturating (its ``Add``,
``Sub``, ``Neg`` on int32, undefined on overflow in C++) we wrap modulo 2^32,
which is what the compiled TFLM does and what the C twin spells with unsigned
arithmetic; on the inputs the kernels produce none of these overflow anyway.

A ``FixedPoint<int32, I>`` value is just its raw int32 here; functions that
depend on the format take the integer bits ``I``.

Reused from ``numerics/fixedpoint.py`` after checking they are TFLM's to the bit:
``srdhm`` (SaturatingRoundingDoublingHighMul: nudge 2^30 or 1 - 2^30, divide
truncating, INT32_MIN * INT32_MIN -> INT32_MAX), ``rdbpot``
(RoundingDivideByPOT: remainder against mask/2 plus one when negative) and
``requantize`` (MultiplyByQuantizedMultiplier, double and single rounding;
it saturates ``x * 2^left`` where TFLM's int32 product would overflow).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .fixedpoint import bitlen, rdbpot, requantize, srdhm

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "calculate_input_radius",
    "exp_on_negative_values",
    "get_inv_sqrt_quantized_multiplier_exp",
    "get_reciprocal",
    "logistic",
    "multiply_by_quantized_multiplier",
    "one_over_one_plus_x_for_x_in_0_1",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    "saturating_rounding_multiply_by_pot",
    "tanh",
    "tfl_round",
    "wrap32",
]


def _i64(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap32(x: ArrayLike) -> np.ndarray:
    """``x`` modulo 2^32 as a signed int32 value (gemmlowp's non-saturating int32 arithmetic)."""
    return ((_i64(x) + 2**31) & 0xFFFFFFFF) - 2**31


def saturating_rounding_doubling_high_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (``FixedPoint`` ``*``)."""
    a, b = np.broadcast_arrays(_i64(a), _i64(b))
    return srdhm(a, b)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: ``x / 2^exponent`` to nearest, ties away from zero; exponent in [0, 31]."""
    x, e = np.broadcast_arrays(_i64(x), _i64(exponent))
    return rdbpot(x, e)


def saturating_rounding_multiply_by_pot(x: ArrayLike, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent>: a saturating left shift or a rounding right shift."""
    x = _i64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, np.int64(-exponent))
    threshold = (1 << (31 - exponent)) - 1
    shifted = np.clip(x * (1 << exponent), INT32_MIN, INT32_MAX)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def _rescale(x: np.ndarray, src_bits: int, dst_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<src>)."""
    return saturating_rounding_multiply_by_pot(x, src_bits - dst_bits)


def _rounding_half_sum(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingHalfSum for int32: ``(a + b + sign) / 2`` with C's truncating division."""
    s = _i64(a) + b
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t >> 1, -((-t) >> 1))


def _clz32(x: np.ndarray) -> np.ndarray:
    """Count of leading zeros of ``x`` as a uint32 (32 for 0)."""
    return 32 - bitlen(_i64(x) & 0xFFFFFFFF)


# ---- gemmlowp's transcendental functions ------------------------------------


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor around -1/8."""
    mul = srdhm
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = wrap32(a + (1 << 28))
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = rdbpot(x4, np.int64(2))
    t = wrap32(mul(wrap32(x4_over_4 + x3), constant_1_over_3) + x2)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = rdbpot(t, np.int64(1))
    return wrap32(constant_term + mul(constant_term, wrap32(x + x4_over_24_plus_x3_over_6_plus_x2_over_2)))


# exp(-2^k) in Q0.31 for the barrel shifter of exp_on_negative_values.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: ArrayLike, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: exp(a) for a <= 0 in Q(integer_bits), result Q0.31."""
    a = _i64(a)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = wrap32((a & mask) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0)
    )
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, srdhm(result, np.int64(multiplier)), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32.0
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _newton_reciprocal_f2(half_denominator: np.ndarray) -> np.ndarray:
    """The shared Newton-Raphson loop: 1 / half_denominator in Q2.29 (three iterations from 48/17 - 32/17 d)."""
    mul = srdhm
    one_f2 = 1 << 29
    x = wrap32(1515870810 + mul(half_denominator, np.int64(-1010580540)))
    for _ in range(3):
        half_denominator_times_x = mul(half_denominator, x)
        one_minus_half_denominator_times_x = wrap32(one_f2 - half_denominator_times_x)
        x = wrap32(x + _rescale(mul(x, one_minus_half_denominator_times_x), 4, 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a: ArrayLike) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: 1 / (1 + a), Q0.31 in and out."""
    half_denominator = _rounding_half_sum(_i64(a), INT32_MAX)
    x = _newton_reciprocal_f2(half_denominator)
    return _rescale(x, 1, 0)  # ExactMulByPot<-1> (Q2 -> Q1, same raw), then Rescale<0>


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = _newton_reciprocal_f2(half_denominator)
    return _rescale(wrap32(x - (1 << 29)), 2, 0)


def logistic(a: ArrayLike, integer_bits: int) -> np.ndarray:
    """gemmlowp logistic: 1 / (1 + exp(-a)) for ``a`` in Q(integer_bits), result Q0.31."""
    a = _i64(a)
    positive = a > 0
    abs_input = np.where(positive, a, wrap32(-a))
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(wrap32(-abs_input), integer_bits))
    result_if_negative = wrap32(INT32_MAX - result_if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, result_if_positive, result_if_negative))


def tanh(a: ArrayLike, integer_bits: int) -> np.ndarray:
    """gemmlowp tanh for ``a`` in Q(integer_bits), result Q0.31."""
    a = _i64(a)
    negative = a < 0
    n = np.where(negative, a, wrap32(-a))
    # neg_tanh_on_negative_values: ExactMulByPot<1> reinterprets n with one more integer bit.
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, wrap32(-t), t))


# ---- TFLM helpers (common.h, quantization_util.cc) --------------------------


def get_reciprocal(x: ArrayLike, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLM GetReciprocal: ``(shifted_scale Q0.31, num_bits_over_unit)`` for ``x > 0`` in Q(x_integer_digits)."""
    x = _i64(x)
    headroom_plus_one = _clz32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def get_inv_sqrt_quantized_multiplier_exp(value: ArrayLike, reverse_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLM GetInvSqrtQuantizedMultiplierExp: ``(multiplier, shift)`` with 1/sqrt(value) ~ M * 2^shift / 2^31.

    ``value`` int32 >= 0 (0 and 1 both give ``(INT32_MAX, 0)``); ``reverse_shift`` is -1 in every caller.
    """
    value = _i64(value)
    small = value <= 1
    v = np.where(small, 2, value)
    shift = np.full(v.shape, 11, dtype=np.int64)
    while True:
        big = v >= (1 << 29)
        if not big.any():
            break
        v = np.where(big, v // 4, v)
        shift = shift + big
    max_left_shift_bits = _clz32(v) - 1
    left_shift_bit_pairs = max_left_shift_bits // 2 - 1
    shift = shift - left_shift_bit_pairs
    v = v << (2 * left_shift_bit_pairs)
    fixedpoint_input = v >> 1  # Q3.28
    fixedpoint_half_input = rdbpot(fixedpoint_input, np.int64(1))
    fixedpoint_half_three = (1 << 28) + (1 << 27)
    x = np.full(v.shape, 1 << 28, dtype=np.int64)  # F3::One()
    for _ in range(5):
        x3 = _rescale(srdhm(srdhm(x, x), x), 9, 3)
        x = _rescale(wrap32(srdhm(np.int64(fixedpoint_half_three), x) - srdhm(fixedpoint_half_input, x3)), 6, 3)
    x = srdhm(x, np.int64(1518500250))  # * sqrt(2)/2
    negative_shift = shift < 0
    x = np.where(negative_shift, wrap32(x << np.maximum(-shift, 0)), x)
    shift = np.where(negative_shift, 0, shift) * reverse_shift
    return np.where(small, INT32_MAX, x), np.where(small, 0, shift)


def multiply_by_quantized_multiplier(x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, rounding: str) -> np.ndarray:
    """TFLM MultiplyByQuantizedMultiplier (and its SmallerThanOneExp / GreaterThanOne forms), broadcasting.

    Double rounding is the default TFLM build, single is TFLITE_SINGLE_ROUNDING's; rounding is the node's
    (ops.node_rounding), as the C params' single_rounding. The same function as ``hydra_requantize``.
    ``shift`` must lie in [-31, 30].
    """
    return requantize(x, multiplier, shift, rounding)


# ---- Prepare-time helpers ----------------------------------------------------


def tfl_round(x: float) -> int:
    """TfLiteRound / std::round on a double: half away from zero (exact, no float rounding)."""
    mag = abs(x)
    whole = math.floor(mag)
    r = whole + (1 if mag - whole >= 0.5 else 0)
    return int(-r if x < 0 else r)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLM CalculateInputRadius: the largest input (before rescaling) whose rescaled value fits."""
    max_input_rescaled = (
        1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
        / float(1 << input_left_shift)
    )
    return math.floor(max_input_rescaled)
