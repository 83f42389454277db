/*
 * tfl_fixedpoint.c - the gemmlowp fixed-point arithmetic TFLite Micro's int8 kernels use, and the
 * broadcast loop of its binary ops. Twin of toolchain/hydra_edge/quant/tfl_fixedpoint.py.
 *
 * A FixedPoint<int32, I> is its raw int32 here. gemmlowp's plain int32 +, - and unary - are
 * undefined on overflow in C++; the compiled TFLM wraps, and so do we, spelt with unsigned
 * arithmetic (defined) and a conversion back that never relies on implementation-defined
 * behaviour. No negative value is shifted: floor division by 2^n of a negative x is ~(~x >> n).
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* uint32 -> int32 as two's complement, without the implementation-defined conversion. */
static int32_t from_u32(uint32_t u)
{
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : (int32_t)(u - UINT32_C(2147483648)) + INT32_MIN;
}

static int32_t wrap_add(int32_t a, int32_t b)
{
    return from_u32((uint32_t)a + (uint32_t)b);
}

static int32_t wrap_sub(int32_t a, int32_t b)
{
    return from_u32((uint32_t)a - (uint32_t)b);
}

static int32_t floor_pow2(int32_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~(~x >> n);
}

int32_t hydra_tfl_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN)
        return INT32_MAX;
    const int64_t ab = (int64_t)a * b; /* |ab| <= 2^62 */
    const int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : 1 - (INT64_C(1) << 30);
    return (int32_t)((ab + nudge) / (INT64_C(1) << 31)); /* C99 '/' truncates, as gemmlowp's does */
}

int32_t hydra_tfl_rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    exponent = exponent < 0 ? 0 : (exponent > 31 ? 31 : exponent);
    const int64_t mask = (INT64_C(1) << exponent) - 1;
    const int64_t remainder = (int64_t)x & mask; /* two's complement AND on a non-negative mask: x mod 2^e */
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)((int64_t)floor_pow2(x, exponent) + (remainder > threshold ? 1 : 0));
}

/* SaturatingRoundingMultiplyByPOT<exponent>: saturating left shift, or rounding right shift. */
static int32_t sat_mul_pot(int32_t x, int32_t exponent)
{
    if (exponent == 0)
        return x;
    if (exponent < 0)
        return hydra_tfl_rounding_divide_by_pot(x, -exponent);
    const int32_t threshold = (int32_t)((INT64_C(1) << (31 - exponent)) - 1);
    if (x > threshold)
        return INT32_MAX;
    if (x < -threshold)
        return INT32_MIN;
    return (int32_t)((int64_t)x * (INT64_C(1) << exponent));
}

/* Rescale<dst>(FixedPoint<src>). */
static int32_t rescale(int32_t x, int32_t src_bits, int32_t dst_bits)
{
    return sat_mul_pot(x, src_bits - dst_bits);
}

/* RoundingHalfSum: (a + b + sign) / 2, truncating. */
static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

static int32_t clz32(uint32_t x)
{
    int32_t n = 0;
    if (x == 0)
        return 32;
    while ((x & UINT32_C(0x80000000)) == 0) {
        x <<= 1;
        n++;
    }
    return n;
}

/* exp(a) for a in [-1/4, 0), Q0.31: Taylor expansion around -1/8. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t constant_term = 1895147668;    /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = wrap_add(a, INT32_C(1) << 28);
    const int32_t x2 = hydra_tfl_srdhm(x, x);
    const int32_t x3 = hydra_tfl_srdhm(x2, x);
    const int32_t x4 = hydra_tfl_srdhm(x2, x2);
    const int32_t x4_over_4 = hydra_tfl_rounding_divide_by_pot(x4, 2);
    const int32_t t = wrap_add(hydra_tfl_srdhm(wrap_add(x4_over_4, x3), constant_1_over_3), x2);
    const int32_t poly = hydra_tfl_rounding_divide_by_pot(t, 1);
    return wrap_add(constant_term, hydra_tfl_srdhm(constant_term, wrap_add(x, poly)));
}

int32_t hydra_tfl_exp_on_negative_values(int32_t a, int32_t integer_bits)
{
    static const int32_t barrel[7][2] = {{-2, 1672461947}, {-1, 1302514674}, {0, 790015084}, {1, 290630308},
                                         {2, 39332535},    {3, 720401},      {4, 242}};
    const int32_t frac_bits = 31 - integer_bits;
    const int32_t one_quarter = INT32_C(1) << (frac_bits - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t a_mod_quarter_minus_one_quarter = wrap_sub(a & mask, one_quarter);
    int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0));
    const int32_t remainder = wrap_sub(a_mod_quarter_minus_one_quarter, a);
    for (int k = 0; k < 7; k++) {
        const int32_t exponent = barrel[k][0];
        if (integer_bits > exponent) {
            const uint32_t bit = UINT32_C(1) << (frac_bits + exponent);
            if (((uint32_t)remainder & bit) != 0)
                result = hydra_tfl_srdhm(result, barrel[k][1]);
        }
    }
    if (integer_bits > 5) {
        const int32_t clamp = -(INT32_C(1) << (36 - integer_bits)); /* -32.0 */
        if (a < clamp)
            result = 0;
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / half_denominator in Q2.29: three Newton-Raphson steps from 48/17 - 32/17 d. */
static int32_t newton_reciprocal_f2(int32_t half_denominator)
{
    const int32_t one_f2 = INT32_C(1) << 29;
    int32_t x = wrap_add(1515870810, hydra_tfl_srdhm(half_denominator, -1010580540));
    for (int i = 0; i < 3; i++) {
        const int32_t half_denominator_times_x = hydra_tfl_srdhm(half_denominator, x);
        const int32_t one_minus = wrap_sub(one_f2, half_denominator_times_x);
        x = wrap_add(x, rescale(hydra_tfl_srdhm(x, one_minus), 4, 2));
    }
    return x;
}

int32_t hydra_tfl_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = newton_reciprocal_f2(rounding_half_sum(a, INT32_MAX));
    return rescale(x, 1, 0); /* ExactMulByPot<-1>, then Rescale<0> */
}

static int32_t one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = newton_reciprocal_f2(rounding_half_sum(a, INT32_MAX));
    return rescale(wrap_sub(x, INT32_C(1) << 29), 2, 0);
}

int32_t hydra_tfl_logistic(int32_t a, int32_t integer_bits)
{
    if (a == 0)
        return INT32_C(1) << 30;
    const int32_t abs_input = a > 0 ? a : wrap_sub(0, a);
    const int32_t result_if_positive =
        hydra_tfl_one_over_one_plus_x_for_x_in_0_1(hydra_tfl_exp_on_negative_values(wrap_sub(0, abs_input), integer_bits));
    return a > 0 ? result_if_positive : wrap_sub(INT32_MAX, result_if_positive);
}

int32_t hydra_tfl_tanh(int32_t a, int32_t integer_bits)
{
    if (a == 0)
        return 0;
    const int32_t n = a < 0 ? a : wrap_sub(0, a);
    /* neg_tanh_on_negative_values: ExactMulByPot<1> gives n one more integer bit */
    const int32_t t = one_minus_x_over_one_plus_x_for_x_in_0_1(hydra_tfl_exp_on_negative_values(n, integer_bits + 1));
    return a < 0 ? wrap_sub(0, t) : t;
}

int32_t hydra_tfl_get_reciprocal(int32_t x, int32_t integer_digits, int32_t *num_bits_over_unit)
{
    const int32_t headroom_plus_one = clz32((uint32_t)x);
    if (num_bits_over_unit != NULL)
        *num_bits_over_unit = integer_digits - headroom_plus_one;
    if (headroom_plus_one >= 32)
        return INT32_MAX; /* x == 0 is outside the contract: a defined answer */
    const uint32_t shifted = ((uint32_t)x << headroom_plus_one) - UINT32_C(2147483648);
    return hydra_tfl_one_over_one_plus_x_for_x_in_0_1(from_u32(shifted));
}

void hydra_tfl_inv_sqrt_multiplier_exp(int32_t input, int32_t reverse_shift, int32_t *multiplier, int32_t *shift)
{
    if (multiplier == NULL || shift == NULL)
        return;
    if (input <= 1) { /* TFLM treats 0 (invalid) like 1 */
        *multiplier = INT32_MAX;
        *shift = 0;
        return;
    }
    int32_t out_shift = 11;
    while (input >= (INT32_C(1) << 29)) {
        input /= 4;
        ++out_shift;
    }
    const int32_t max_left_shift_bits = clz32((uint32_t)input) - 1;
    const int32_t left_shift_bit_pairs = max_left_shift_bits / 2 - 1;
    out_shift -= left_shift_bit_pairs;
    input = (int32_t)((uint32_t)input << (2 * left_shift_bit_pairs)); /* stays in [2^27, 2^29) */
    const int32_t fixedpoint_input = input >> 1;                       /* Q3.28, input > 0 */
    const int32_t fixedpoint_half_input = hydra_tfl_rounding_divide_by_pot(fixedpoint_input, 1);
    const int32_t fixedpoint_half_three = (INT32_C(1) << 28) + (INT32_C(1) << 27);
    int32_t x = INT32_C(1) << 28; /* F3::One() */
    for (int i = 0; i < 5; i++) {
        const int32_t x3 = rescale(hydra_tfl_srdhm(hydra_tfl_srdhm(x, x), x), 9, 3);
        x = rescale(wrap_sub(hydra_tfl_srdhm(fixedpoint_half_three, x), hydra_tfl_srdhm(fixedpoint_half_input, x3)),
                    6, 3);
    }
    x = hydra_tfl_srdhm(x, 1518500250); /* sqrt(2) / 2 */
    if (out_shift < 0) {
        x = from_u32((uint32_t)x << (-out_shift)); /* TFLM's int32 <<=, modulo 2^32 */
        out_shift = 0;
    }
    *multiplier = x;
    *shift = out_shift * reverse_shift;
}

hydra_status hydra_tfl_broadcast_binary_s8(const int32_t *a_shape, const int32_t *b_shape, const int32_t *out_shape,
                                           const int8_t *a, const int8_t *b, int8_t *output,
                                           hydra_tfl_binary_fn fn, const void *params)
{
    enum { N = HYDRA_TFL_MAX_BROADCAST_DIMS };
    if (a_shape == NULL || b_shape == NULL || out_shape == NULL || a == NULL || b == NULL || output == NULL ||
        fn == NULL)
        return HYDRA_ERR_ARG;
    int32_t a_stride[N], b_stride[N];
    int32_t a_step = 1, b_step = 1;
    int64_t total = 1;
    for (int d = N - 1; d >= 0; d--) {
        const int32_t da = a_shape[d], db = b_shape[d], dout = out_shape[d];
        if (da <= 0 || db <= 0 || dout <= 0)
            return HYDRA_ERR_SHAPE;
        if ((da != dout && da != 1) || (db != dout && db != 1))
            return HYDRA_ERR_SHAPE;
        total *= dout;
        if (total > INT32_MAX)
            return HYDRA_ERR_SHAPE;
        a_stride[d] = da == 1 ? 0 : a_step; /* a broadcast dimension does not advance */
        b_stride[d] = db == 1 ? 0 : b_step;
        a_step *= da; /* <= total: cannot overflow */
        b_step *= db;
    }
    int32_t index[N] = {0};
    int32_t ia = 0, ib = 0;
    for (int32_t i = 0; i < (int32_t)total; i++) {
        output[i] = fn(a[ia], b[ib], params);
        for (int d = N - 1; d >= 0; d--) { /* odometer: advance the last dimension, carry to the left */
            if (++index[d] < out_shape[d]) {
                ia += a_stride[d];
                ib += b_stride[d];
                break;
            }
            ia -= a_stride[d] * (out_shape[d] - 1);
            ib -= b_stride[d] * (out_shape[d] - 1);
            index[d] = 0;
        }
    }
    return HYDRA_OK;
}
