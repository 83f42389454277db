/*
 * tfl_fixedpoint.c - the gemmlowp fixed-point arithmetic TFLite Micro's int8 kernels use (twin of
 * toolchain/hydra_edge/numerics/tfl_fixedpoint.py), and the loops several kernels share: the broadcast loop of
 * the binary ops, the reduction walk of MEAN and SUM, the loop of LOGISTIC and TANH, the walks of the
 * convolutions and of the pools. Linked whenever any tfl kernel is (codegen/emit_tfl.py TFL_SHARED_SOURCES).
 *
 * A FixedPoint<int32, I> is its raw int32 here. gemmlowp's plain int32 +, - and unary - are
 * undefined on overflow in C++; the compiled TFLM wraps, and so do we, spelt with unsigned
 * arithmetic (defined) and a conversion back that never relies on implementation-defined
 * behaviour. No negative value is shifted: floor division by 2^n of a negative x is ~(~x >> n).
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* The convolution and pool walks and the reduction's sum below have a path for cores with the 32-bit SIMD
 * instructions (Cortex-M4/M7/M33: SXTB16/SMLAD, USADA8), in the style of hydra_dot.c: integer sums are exact in
 * any order, so it gives the same bits as the portable loops (-DHYDRA_PORTABLE_KERNELS builds those everywhere). */
#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#include <string.h> /* memcpy: the one libc function used, on these targets only */
#define HYDRA_TFL_SIMD32 1
#endif

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
                                           hydra_tfl_binary_run_fn run, const void *params)
{
    enum { N = HYDRA_TFL_MAX_BROADCAST_DIMS };
    if (a_shape == NULL || b_shape == NULL || out_shape == NULL || a == NULL || b == NULL || output == NULL ||
        run == NULL)
        return HYDRA_ERR_ARG;
    /* The output's dimensions other than 1, outermost first, merged where a and b both advance or both stay:
     * size[k], and whether a and b advance along it. */
    int32_t size[N], a_moves[N], b_moves[N];
    int k = -1;
    int64_t total = 1;
    for (int d = 0; d < N; d++) {
        const int32_t da = a_shape[d], db = b_shape[d], dout = out_shape[d];
        if (da <= 0 || db <= 0 || dout <= 0 || (da != dout && da != 1) || (db != dout && db != 1))
            return HYDRA_ERR_SHAPE;
        total *= dout;
        if (total > INT32_MAX)
            return HYDRA_ERR_SHAPE;
        if (dout == 1)
            continue;
        const int32_t am = da != 1, bm = db != 1;
        if (k >= 0 && a_moves[k] == am && b_moves[k] == bm) {
            size[k] *= dout; /* <= total */
            continue;
        }
        k++;
        size[k] = dout;
        a_moves[k] = am;
        b_moves[k] = bm;
    }
    if (k < 0) { /* one element */
        run(a, 1, b, 1, output, 1, params);
        return HYDRA_OK;
    }
    /* strides of the merged dimensions (0 where an operand stays), innermost last */
    int32_t a_stride[N], b_stride[N], a_step = 1, b_step = 1;
    for (int d = k; d >= 0; d--) {
        a_stride[d] = a_moves[d] ? a_step : 0;
        b_stride[d] = b_moves[d] ? b_step : 0;
        a_step *= a_moves[d] ? size[d] : 1;
        b_step *= b_moves[d] ? size[d] : 1;
    }
    const int32_t n = size[k], runs = (int32_t)total / n; /* total <= INT32_MAX: an int32 division, no __aeabi_ldivmod */
    int32_t index[N] = {0};
    int32_t ia = 0, ib = 0;
    for (int32_t r = 0; r < runs; r++) {
        run(a + ia, a_stride[k], b + ib, b_stride[k], output + (size_t)r * (size_t)n, n, params);
        for (int d = k - 1; d >= 0; d--) { /* odometer over the outer dimensions */
            if (++index[d] < size[d]) {
                ia += a_stride[d];
                ib += b_stride[d];
                break;
            }
            ia -= a_stride[d] * (size[d] - 1);
            ib -= b_stride[d] * (size[d] - 1);
            index[d] = 0;
        }
    }
    return HYDRA_OK;
}

void hydra_tfl_rescaled_binary_general(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                                       int32_t n, const hydra_tfl_rescaled_binary_params *p, int combine)
{
    const int32_t single = p->single_rounding, unit = INT32_C(1) << p->left_shift;
    for (int32_t i = 0; i < n; i++, a += a_step, b += b_step) {
        const int32_t scaled1 =
            hydra_tfl_requantize_call((p->input1_offset + *a) * unit, p->input1_multiplier, p->input1_shift, single);
        const int32_t scaled2 =
            hydra_tfl_requantize_call((p->input2_offset + *b) * unit, p->input2_multiplier, p->input2_shift, single);
        const int32_t diff = scaled1 - scaled2;
        const int32_t value = combine == HYDRA_TFL_COMBINE_ADD ? scaled1 + scaled2
                              : combine == HYDRA_TFL_COMBINE_SUB ? diff
                                                                 : diff * diff;
        out[i] = hydra_tfl_output_s8(hydra_tfl_requantize_call(value, p->output_multiplier, p->output_shift, single),
                                     p->output_offset, p->output_activation_min, p->output_activation_max);
    }
}

/* sum(x[0 .. n)), exact. With SIMD32 a word's four bytes are summed by one USADA8 (|b - 0| of each byte of x with
 * its sign bit flipped, x + 128 as unsigned), and 128 per element taken off at the end: the same integer. */
static int64_t sum_run_s8(const int8_t *x, int32_t n)
{
    int64_t sum = 0;
    int32_t i = 0;
#if defined(HYDRA_TFL_SIMD32)
    if (n <= (INT32_C(1) << 23)) { /* 255 * n < 2^31: the biased sum fits its uint32 */
        uint32_t biased = 0;
        for (; i + 4 <= n; i += 4) {
            uint32_t word;
            memcpy(&word, x + i, 4);
            biased = __usada8(word ^ UINT32_C(0x80808080), 0, biased);
        }
        sum = (int64_t)biased - (int64_t)128 * i;
    }
#endif
    for (; i < n; i++)
        sum += x[i];
    return sum;
}

int8_t hydra_tfl_reduce_output_s8(const hydra_tfl_reduce_params *p, int64_t sum, int64_t count)
{
    /* the low 32 bits of sum - zp * count (modular conversions and products: no int64 multiply) */
    const uint32_t u = (uint32_t)(uint64_t)sum - (uint32_t)p->input_zero_point * (uint32_t)(uint64_t)count;
    return hydra_tfl_output_s8(hydra_tfl_requantize(from_u32(u), p->output_multiplier, p->output_shift,
                                                    p->single_rounding),
                               p->output_zero_point, -128, 127);
}

hydra_status hydra_tfl_reduce_s8(const hydra_tfl_reduce_params *p, const int8_t *input, int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (!hydra_tfl_reduce_quant_ok(p))
        return HYDRA_ERR_ARG;
    int32_t out_shape[HYDRA_TFL_MAX_DIMS];
    size_t stride[HYDRA_TFL_MAX_DIMS], total_out = 1, acc_stride = 1;
    int64_t count = 1;
    for (int d = HYDRA_TFL_MAX_DIMS - 1; d >= 0; d--) {
        const int32_t n = p->input_shape[d], r = p->reduce_shape[d];
        if (n <= 0 || !(r == 1 || r == n))
            return HYDRA_ERR_SHAPE;
        stride[d] = acc_stride;
        acc_stride *= (size_t)n;
        out_shape[d] = r > 1 ? 1 : n;
        total_out *= (size_t)out_shape[d];
        count *= r;
    }
    if (count != p->num_elements)
        return HYDRA_ERR_SHAPE;

    /* The reduced dimensions are the innermost ones (a MEAN or SUM over the features of [T, D]): output o sums the
     * contiguous run input[o * count, (o + 1) * count). */
    int outer_end = HYDRA_TFL_MAX_DIMS - 1; /* the last dimension not reduced whole */
    while (outer_end >= 0 && p->reduce_shape[outer_end] == p->input_shape[outer_end])
        outer_end--;
    int inner = 1;
    for (int k = 0; k <= outer_end; k++)
        inner = inner && p->reduce_shape[k] == 1;
    if (inner) {
        for (size_t o = 0; o < total_out; o++)
            output[o] = hydra_tfl_reduce_output_s8(p, sum_run_s8(input + o * (size_t)count, (int32_t)count), count);
        return HYDRA_OK;
    }

    /* Each output's sum is formed directly (no int32 scratch array as in TFLM): the same integers. */
    int32_t o_idx[HYDRA_TFL_MAX_DIMS] = {0};
    for (size_t o = 0; o < total_out; o++) {
        size_t base = 0;
        for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++)
            base += (size_t)o_idx[d] * stride[d];
        int64_t sum = 0; /* exact: count < 2^31 terms of at most 2^7 */
        int32_t r_idx[HYDRA_TFL_MAX_DIMS] = {0};
        for (int64_t k = 0; k < count; k++) {
            size_t off = base;
            for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++)
                off += (size_t)r_idx[d] * stride[d];
            sum += input[off];
            for (int d = HYDRA_TFL_MAX_DIMS - 1; d >= 0; d--) {
                if (++r_idx[d] < p->reduce_shape[d])
                    break;
                r_idx[d] = 0;
            }
        }
        output[o] = hydra_tfl_reduce_output_s8(p, sum, count);
        for (int d = HYDRA_TFL_MAX_DIMS - 1; d >= 0; d--) {
            if (++o_idx[d] < out_shape[d])
                break;
            o_idx[d] = 0;
        }
    }
    return HYDRA_OK;
}

/* The elements of hydra_tfl_sigmoid_s8 after its checks. */
static void sigmoid_loop(const hydra_tfl_sigmoid_params *p, const int8_t *input, int8_t *output, int is_tanh)
{
    const int32_t single = p->single_rounding;
    /* the output scale: 1/256 with zero point -128 (logistic), 1/128 with zero point 0 (tanh) */
    const int32_t output_bits = is_tanh ? 7 : 8, output_zero_point = is_tanh ? 0 : -128;
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t value = input[i] - p->input_zero_point;
        if (value <= -p->input_range_radius) {
            output[i] = -128;
        } else if (value >= p->input_range_radius) {
            output[i] = 127;
        } else {
            const int32_t q4 = hydra_tfl_requantize(value, p->input_multiplier, p->input_left_shift, single);
            const int32_t q0 = is_tanh ? hydra_tfl_tanh(q4, 4) : hydra_tfl_logistic(q4, 4);
            output[i] = hydra_clamp_s8(hydra_tfl_rounding_divide_by_pot(q0, 31 - output_bits) + output_zero_point);
        }
    }
}

hydra_status hydra_tfl_sigmoid_s8(const hydra_tfl_sigmoid_params *p, const int8_t *input, int8_t *output,
                                  int32_t kind)
{
    if (p == NULL || input == NULL || output == NULL ||
        (kind != HYDRA_TFL_SIGMOID_LOGISTIC && kind != HYDRA_TFL_SIGMOID_TANH))
        return HYDRA_ERR_ARG;
    if (p->size < 0)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->input_zero_point) || p->input_left_shift < 0 || p->input_left_shift > 30 ||
        p->input_range_radius < 0)
        return HYDRA_ERR_ARG;
    sigmoid_loop(p, input, output, kind == HYDRA_TFL_SIGMOID_TANH);
    return HYDRA_OK;
}

/* Along one dimension, the taps [*lo, *hi) of a window of `taps` taps `dilation` apart whose tap 0 is at input
 * position `start` that fall inside [0, size): TFLM skips the others. Empty (*lo >= *hi) when none does. */
static void tap_range(int32_t start, int32_t dilation, int32_t taps, int32_t size, int32_t *lo, int32_t *hi)
{
    const int32_t h = start > size - 1 ? 0 : (size - 1 - start) / dilation + 1;
    *lo = start >= 0 ? 0 : (dilation - 1 - start) / dilation;
    *hi = h < taps ? h : taps;
}

/* A convolution's output stage, in locals (a store through int8_t * may alias the params): per output channel the
 * bias (NULL: none), multiplier and shift; the output offset and the activation range. */
typedef struct {
    const int32_t *bias, *multiplier, *shift;
    int32_t output_offset, activation_min, activation_max;
    int32_t single; /* the params' single_rounding */
    int32_t fast;   /* double rounding, every accumulator inside hydra_requantize_right's bounds (conv_outputs_init) */
} conv_outputs;

/* The output stage of v, `products` products per output. `fast` where the rounding is double (TFLM's: an imported
 * .tflite's) and every output may use hydra_requantize_right: at most 2^14 products of |w (x + offset)| <= 2^7 * 255
 * keep |acc| < 2^29 (hydra_requant_right_ok's bound). */
static void conv_outputs_init(conv_outputs *o, const hydra_tfl_conv_view *v, const int32_t *bias, int64_t products)
{
    o->bias = bias;
    o->multiplier = v->output_multiplier;
    o->shift = v->output_shift;
    o->output_offset = v->output_offset;
    o->activation_min = v->activation_min;
    o->activation_max = v->activation_max;
    o->single = v->single_rounding != 0;
    o->fast = !o->single && products <= (INT64_C(1) << 14) &&
              hydra_requant_right_ok(bias, v->output_multiplier, v->output_shift, v->output_shape[3]);
}

/* The output of an accumulator, for its channel's bias (0: none), multiplier and shift: bias (saturating, as the
 * int64 sum clamped), MBQM in the params' rounding, output offset, activation clamp. The walk has checked the shifts
 * ([-31, 30]) and the offsets. Out of line: the calls that are not o->fast (a multiplier above 1, a bias beyond
 * 2^29, more than 2^14 products; single rounding, which only tests ask for). */
static HYDRA_NOINLINE int8_t conv_output_general(const conv_outputs *o, int32_t acc, int32_t bias,
                                                     int32_t multiplier, int32_t shift)
{
    const int32_t y = hydra_tfl_requantize_call(hydra_saturate_s32((int64_t)acc + bias), multiplier, shift, o->single);
    return hydra_tfl_output_s8(y, o->output_offset, o->activation_min, o->activation_max);
}

/* conv_output_general's value: inline by hydra_requantize_right where o->fast. Read per output (a branch the core
 * predicts), so that each walk is one copy. */
static HYDRA_ALWAYS_INLINE int8_t conv_output(const conv_outputs *o, int32_t acc, int32_t bias, int32_t multiplier,
                                              int32_t shift)
{
    if (o->fast)
        return hydra_output_right_s8(acc + bias, multiplier, shift, 0, o->output_offset, o->activation_min,
                                     o->activation_max);
    return conv_output_general(o, acc, bias, multiplier, shift);
}

/* out[first + j] for j < count from the accumulators of channels first .. first + count - 1. */
static HYDRA_ALWAYS_INLINE void conv_outputs_store(const conv_outputs *o, int8_t *out, int32_t first,
                                                   const int32_t *acc, int32_t count)
{
    for (int32_t j = 0; j < count; j++) {
        const int32_t oc = first + j;
        out[oc] = conv_output(o, acc[j], o->bias != NULL ? o->bias[oc] : 0, o->multiplier[oc], o->shift[oc]);
    }
}

/* The taps of one or two output pixels (the same taps: a pair whose windows lie alike in the image) as runs of
 * input and filter bytes: `rows` filter rows, each `runs` runs of `len` bytes; a run of pixel b is pixel a's
 * plus `x_pair`; the next run is x_run / w_run bytes on, the next row x_row / w_row. Without x dilation a row's
 * in-image taps are one run of taps * in_c bytes (NHWC input, [O, H, W, I] filter), else one run per tap. */
typedef struct {
    int32_t rows, runs, len;
    int32_t x_row, x_run, x_pair;
    int32_t w_row, w_run, w_channel; /* w_channel: from one output channel's filter to the next */
    int32_t input_offset;
} conv_runs;

#if defined(HYDRA_TFL_SIMD32)
static inline int32_t load_word(const int8_t *p)
{
    int32_t word;
    memcpy(&word, p, 4);
    return word;
}

/* acc[2 px + ch] += sum over the runs of r of w_ch[i] * (x_px[i] + offset), for pixel a (input x) and pixel b
 * (x + x_pair) when two_px, channel a (filter w) and channel b (filter w + w_b). Each input word becomes two pairs of
 * int16 x + offset (SXTAB16 adds the offset, in both halves of off2, as it sign-extends: |x + offset| <= 255) that
 * serve both channels; each filter word two pairs of int16 that serve both pixels; SMLAD adds two products (|sum| <
 * 2^31: at most 33025 taps of |w (x + offset)| <= 2^7 * 255). An odd last channel passes w_b 0 (channel a twice: one
 * copy of the word loop per pixel count, for flash). */
static HYDRA_ALWAYS_INLINE void conv_dot(const conv_runs *r, const int8_t *x, const int8_t *w, ptrdiff_t w_b,
                                         int32_t off2, int32_t acc[4], const int two_px)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const int32_t words = r->len >> 2, tail = r->len & 3, offset = r->input_offset, runs = r->runs;
    /* after a run the pointers (moved on by len) step to the row's next run; after its last run, to the next row */
    const ptrdiff_t x_next_run = r->x_run - r->len, w_next_run = r->w_run - r->len;
    const ptrdiff_t x_next_row = r->x_row - (ptrdiff_t)(runs - 1) * r->x_run - r->len;
    const ptrdiff_t w_next_row = r->w_row - (ptrdiff_t)(runs - 1) * r->w_run - r->len;
    const int8_t *xa = x, *wa = w;
    const int8_t *xb = two_px ? x + r->x_pair : x, *wb = w + w_b;
    for (int32_t row = r->rows; row > 0; row--) {
        for (int32_t u = runs; u > 0; u--) {
            for (int32_t k = words; k > 0; k--) {
                const int32_t wva = load_word(wa), xva = load_word(xa), wvb = load_word(wb);
                wa += 4;
                xa += 4;
                wb += 4;
                const int32_t wae = __sxtb16(wva), xae = __sxtab16(off2, xva);
                const int32_t wao = hydra_sxtb16_ror8(wva), xao = hydra_sxtab16_ror8(off2, xva);
                const int32_t wbe = __sxtb16(wvb), wbo = hydra_sxtb16_ror8(wvb);
                a0 = __smlad(xao, wao, __smlad(xae, wae, a0));
                a1 = __smlad(xao, wbo, __smlad(xae, wbe, a1));
                if (two_px) {
                    const int32_t xvb = load_word(xb);
                    xb += 4;
                    const int32_t xbe = __sxtab16(off2, xvb), xbo = hydra_sxtab16_ror8(off2, xvb);
                    a2 = __smlad(xbo, wao, __smlad(xbe, wae, a2));
                    a3 = __smlad(xbo, wbo, __smlad(xbe, wbe, a3));
                }
            }
            for (int32_t i = tail; i > 0; i--) {
                const int32_t xa_i = *xa++ + offset, wa_i = *wa++, wb_i = *wb++;
                a0 += wa_i * xa_i;
                a1 += wb_i * xa_i;
                if (two_px) {
                    const int32_t xb_i = *xb++ + offset;
                    a2 += wa_i * xb_i;
                    a3 += wb_i * xb_i;
                }
            }
            if (u > 1) { /* x dilation: one run per tap */
                xa += x_next_run;
                wa += w_next_run;
                wb += w_next_run;
                if (two_px)
                    xb += x_next_run;
            }
        }
        if (row > 1) {
            xa += x_next_row;
            wa += w_next_row;
            wb += w_next_row;
            if (two_px)
                xb += x_next_row;
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* What the pixel kernels below need besides the runs: the output stage, the output channels (out_c) and those of
 * the group at hand ([first, end)). */
typedef struct {
    conv_runs r;
    conv_outputs o;
    int32_t out_c, first, end, off2;
} conv_ctx;

/* Output channels [c->first, c->end) (filters from w on) of pixel a (out) and, when two_px, of pixel b (out + out_c),
 * channels in pairs (an odd last one through the pair's loop with channel a twice). */
static HYDRA_ALWAYS_INLINE void conv_pixels(const conv_ctx *c, const int8_t *x, const int8_t *w, int8_t *out,
                                            const int two_px)
{
    const int32_t out_c = c->out_c, end = c->end;
    for (int32_t oc = c->first;;) {
        const int pair = oc + 1 < end;
        int32_t acc[4] = {0, 0, 0, 0};
        conv_dot(&c->r, x, w, pair ? c->r.w_channel : 0, c->off2, acc, two_px);
        for (int32_t j = 0; j < 2; j++) {
            if (j == 1 && !pair)
                break;
            const int32_t bias = c->o.bias != NULL ? c->o.bias[oc + j] : 0;
            const int32_t m = c->o.multiplier[oc + j], sh = c->o.shift[oc + j];
            out[oc + j] = conv_output(&c->o, acc[j], bias, m, sh);
            if (two_px)
                out[out_c + oc + j] = conv_output(&c->o, acc[2 + j], bias, m, sh);
        }
        oc += 2;
        if (oc >= end)
            break;
        w += 2 * c->r.w_channel; /* channel oc's filter: stepped only while there is one */
    }
}

/* One function per pixel count, so that each word loop has the registers to itself. */
static HYDRA_NOINLINE void conv_pixels_2(const conv_ctx *c, const int8_t *x, const int8_t *w, int8_t *out)
{
    conv_pixels(c, x, w, out, 1);
}

static HYDRA_NOINLINE void conv_pixels_1(const conv_ctx *c, const int8_t *x, const int8_t *w, int8_t *out)
{
    conv_pixels(c, x, w, out, 0);
}

/* CONV_2D on the SIMD cores: output pixels in pairs (each filter word expanded once for both) times output
 * channels in pairs (each input word expanded once for both), group by group (groups 1: one). A pixel whose window
 * lies in the image unlike its neighbour's (at a border) goes alone. */
static void conv_simd(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter, const int32_t *bias,
                      int8_t *output)
{
    const int32_t in_h = v->input_shape[1], in_w = v->input_shape[2], in_c = v->input_shape[3];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = v->output_shape[3];
    const int32_t dh = v->dilation_height_factor, dw = v->dilation_width_factor;
    const int32_t n = v->filter_shape[3];      /* input channels per group */
    const int32_t per_group = out_c / (in_c / n); /* output channels per group */
    /* a filter row's in-image taps are one run of taps * in_c bytes in the input when they are adjacent pixels of
     * all the channels (no x dilation, groups 1), else one run of n bytes per tap */
    const int contiguous = dw == 1 && n == in_c;
    const uint32_t half = (uint32_t)v->input_offset & UINT32_C(0xFFFF);
    conv_ctx c;
    c.r.x_row = dh * in_w * in_c;
    c.r.x_run = dw * in_c;
    c.r.x_pair = v->stride_width * in_c;
    c.r.w_row = f_w * n;
    c.r.w_run = n;
    c.r.w_channel = f_h * f_w * n;
    c.r.input_offset = v->input_offset;
    conv_outputs_init(&c.o, v, bias, (int64_t)f_h * f_w * n);
    c.out_c = out_c;
    c.first = 0;
    c.end = out_c;
    c.off2 = from_u32(half | (half << 16)); /* the offset in both int16 halves */
    for (int32_t b = 0; b < v->output_shape[0]; b++)
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * v->stride_height - v->padding_height;
            int32_t fy_lo, fy_hi;
            tap_range(y0, dh, f_h, in_h, &fy_lo, &fy_hi);
            for (int32_t ox = 0; ox < out_w;) {
                const int32_t x0 = ox * v->stride_width - v->padding_width;
                int32_t fx_lo, fx_hi, lo2 = 0, hi2 = 0;
                tap_range(x0, dw, f_w, in_w, &fx_lo, &fx_hi);
                if (ox + 1 < out_w)
                    tap_range(x0 + v->stride_width, dw, f_w, in_w, &lo2, &hi2);
                const int two_px = ox + 1 < out_w && lo2 == fx_lo && hi2 == fx_hi;
                const int any = fy_hi > fy_lo && fx_hi > fx_lo;
                c.r.rows = any ? fy_hi - fy_lo : 0;
                c.r.runs = contiguous ? 1 : fx_hi - fx_lo;
                c.r.len = contiguous ? (fx_hi - fx_lo) * in_c : n;
                /* the first in-image tap's input and filter bytes (not read when there is none) */
                const int8_t *x = any ? input + hydra_tfl_nhwc(v->input_shape, b, y0 + dh * fy_lo, x0 + dw * fx_lo, 0)
                                      : input;
                const int8_t *w = any ? filter + ((ptrdiff_t)fy_lo * f_w + fx_lo) * n : filter;
                int8_t *out = output + hydra_tfl_nhwc(v->output_shape, b, oy, ox, 0);
                if (per_group == out_c) { /* groups 1: c.first 0, c.end out_c */
                    (two_px ? conv_pixels_2 : conv_pixels_1)(&c, x, w, out);
                } else {
                    for (int32_t g = 0; g * per_group < out_c; g++) {
                        c.first = g * per_group;
                        c.end = c.first + per_group;
                        (two_px ? conv_pixels_2 : conv_pixels_1)(&c, x + (ptrdiff_t)g * n,
                                                                 w + (ptrdiff_t)c.first * c.r.w_channel, out);
                    }
                }
                ox += two_px ? 2 : 1;
            }
        }
}
#endif

/* What a depthwise walk keeps for a pixel's channels: the output stage, the taps inside the image (`rows` filter
 * rows of `taps` taps from the first one's input and filter bytes; the next tap x_tap / out_c bytes on, the next row
 * x_row / w_row), the input offset (off2: in both int16 halves) and the depth multiplier. */
typedef struct {
    conv_outputs o;
    int32_t rows, taps, out_c, dm, offset, off2;
    ptrdiff_t x_row, x_tap, w_row;
} depthwise_ctx;

#if defined(HYDRA_TFL_SIMD32) && defined(__ARM_FEATURE_DSP)
/* The first `quads` fours of output channels of one pixel (x, w: its first in-image tap's input and filter bytes)
 * for depth multipliers 2 and 4 (or a multiple of 4; 1 is depthwise_dm1's): acc[j] = sum over the taps of
 * w[oc + j] * (x[oc / dm] + offset) for channels oc .. oc + 3. Per tap one filter word, widened by SXTB16; the
 * halves of xe / xo hold the x + offset its channels read (`share`: 2, two input channels; 4, one), SMLABB /
 * SMLATT multiply one half each into a channel's own accumulator: the same integers as tap by tap. */
static HYDRA_ALWAYS_INLINE void depthwise_quads(const depthwise_ctx *c, const int8_t *x, const int8_t *w,
                                                int8_t *out, int32_t quads, const int share)
{
    const int32_t rows = c->rows, taps = c->taps, offset = c->offset;
    const ptrdiff_t x_row = c->x_row, x_tap = c->x_tap, w_row = c->w_row, w_tap = c->out_c;
    int32_t oc = 0, m = 0; /* m: oc's place among its input channel's dm outputs (share 4) */
    for (int32_t q = 0; q < quads; q++, oc += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int8_t *xr = x, *wr = w + oc;
        for (int32_t row = 0; row < rows; row++, xr += x_row, wr += w_row) {
            const int8_t *xt = xr, *wt = wr;
            for (int32_t t = 0; t < taps; t++, xt += x_tap, wt += w_tap) {
                const int32_t wv = load_word(wt);
                int32_t xe, xo;
                if (share == 4) { /* x + offset of the one input channel, in both halves */
                    const uint32_t xs = (uint32_t)(*xt + offset) & UINT32_C(0xFFFF);
                    xe = xo = from_u32(xs | (xs << 16));
                } else { /* channels 0, 1 read input channel 0; channels 2, 3 input channel 1 */
                    const uint32_t x0 = (uint32_t)(xt[0] + offset) & UINT32_C(0xFFFF);
                    const uint32_t x1 = (uint32_t)(xt[1] + offset) & UINT32_C(0xFFFF);
                    xe = xo = from_u32(x0 | (x1 << 16));
                }
                const int32_t we = __sxtb16(wv), wo = hydra_sxtb16_ror8(wv);
                a0 = __smlabb(xe, we, a0);
                a2 = __smlatt(xe, we, a2);
                a1 = __smlabb(xo, wo, a1);
                a3 = __smlatt(xo, wo, a3);
            }
        }
        const int32_t acc[4] = {a0, a1, a2, a3};
        conv_outputs_store(&c->o, out, oc, acc, 4);
        if (share == 2) {
            x += 2;
        } else if ((m += 4) == c->dm) {
            m = 0;
            x++;
        }
    }
}

/* The taps of a quad a depth-multiplier-1 walk keeps widened: up to 7 x 7 (8 bytes a tap on the stack). */
#define DEPTHWISE_DM1_MAX_TAPS 49

/* The output stage of the quad of channels oc .. oc + 3, formed once per call for all its pixels. The quad walks
 * double every product (filter halves 2 w, in int16 as |2 w| <= 256) and start each accumulator at 2 bias, so that
 * acc = 2 x for hydra_requantize_right's x = bias + sum. Where o->fast (|x| < 2^30: 2 x is an int32) and every
 * right shift r = -shift is in [1, 22] (`fast`), SMMULR(acc, M) is hydra_srdhm_unsaturated(x, M) with no shift of
 * its own, and RoundingDivideByPOT plus the output offset are one sum and one shift:
 * floor((y + 2^(r-1) - [y < 0] + zo 2^r) / 2^r) = floor((y + 2^(r-1) - [y < 0]) / 2^r) + zo (|y| <= 2^29 + 1 and
 * |zo 2^r| <= 2^29 keep the sum in int32); then SSAT to int8 per channel and the activation clamp on the packed word
 * (SSUB8 / SEL). Otherwise init is 0 and each channel takes conv_output on acc / 2 (exact: acc is even). */
typedef struct {
    int32_t init[4], mult[4], round[4], right[4];
    uint32_t lo4, hi4;   /* the activation range in every byte */
    int32_t fast, clamp; /* clamp: that range is not all of int8 */
} dw_quad_out;

static void dw_quad_out_init(dw_quad_out *s, const conv_outputs *o, int32_t oc)
{
    int32_t fast = o->fast;
    for (int32_t j = 0; j < 4; j++)
        fast = fast && o->shift[oc + j] <= -1 && o->shift[oc + j] >= -22;
    s->fast = fast;
    for (int32_t j = 0; j < 4; j++) {
        const int32_t right = fast ? -o->shift[oc + j] : 1;
        s->init[j] = fast && o->bias != NULL ? 2 * o->bias[oc + j] : 0;
        s->mult[j] = o->multiplier[oc + j];
        s->right[j] = right;
        s->round[j] = (INT32_C(1) << (right - 1)) + o->output_offset * (INT32_C(1) << right);
    }
    s->lo4 = UINT32_C(0x01010101) * (uint8_t)o->activation_min;
    s->hi4 = UINT32_C(0x01010101) * (uint8_t)o->activation_max;
    s->clamp = o->activation_min > -128 || o->activation_max < 127;
}

/* A quad's outputs where its stage is not `fast`: conv_output per channel on the undoubled accumulators (passed by
 * value: the fast path's accumulators then stay in registers). */
static HYDRA_NOINLINE void dw_quad_general(const conv_outputs *o, int8_t *out, int32_t oc, int32_t a0, int32_t a1,
                                           int32_t a2, int32_t a3)
{
    const int32_t acc[4] = {a0 / 2, a1 / 2, a2 / 2, a3 / 2};
    conv_outputs_store(o, out, oc, acc, 4);
}

/* word's byte at bit lsb (8, 16 or 24) replaced by the low byte of b: one BFI (GCC does not find it itself). */
#if defined(__GNUC__)
#define DW_INSERT_BYTE(word, b, lsb) __asm__("bfi %0, %1, #" #lsb ", #8" : "+r"(word) : "r"(b))
#else
#define DW_INSERT_BYTE(word, b, lsb)                                                                                   \
    ((word) = ((word) & ~(UINT32_C(0xFF) << (lsb))) | (((b) & UINT32_C(0xFF)) << (lsb)))
#endif

/* Channel j of a fast quad stage: SMMULR, the rounding shift with the output offset, SSAT to int8. */
static HYDRA_ALWAYS_INLINE uint32_t dw_channel_out(const dw_quad_out *s, int32_t j, int32_t acc)
{
    const int32_t y = hydra_mul_high_round(acc, s->mult[j]);
    const int32_t q = hydra_floor_div_pow2_s32(y + (y < 0 ? -1 : 0) + s->round[j], s->right[j]);
#if defined(__GNUC__)
    uint32_t r; /* SSAT as an int32 (hydra_clamp_s8's int8_t would add an SXTB): its low byte is the int8 */
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(q));
    return r;
#else
    return (uint32_t)hydra_clamp_s8(q);
#endif
}

/* out[oc .. oc + 3] from a quad's doubled accumulators (dw_quad_out): the four bytes inserted into one word (BFI),
 * clamped to the activation range four lanes at once, one store. */
static HYDRA_ALWAYS_INLINE void dw_quad_store(const dw_quad_out *s, const conv_outputs *o, int8_t *out, int32_t oc,
                                              const int32_t acc[4])
{
    if (!s->fast) {
        dw_quad_general(o, out, oc, acc[0], acc[1], acc[2], acc[3]);
        return;
    }
    uint32_t word = dw_channel_out(s, 0, acc[0]);
    DW_INSERT_BYTE(word, dw_channel_out(s, 1, acc[1]), 8);
    DW_INSERT_BYTE(word, dw_channel_out(s, 2, acc[2]), 16);
    DW_INSERT_BYTE(word, dw_channel_out(s, 3, acc[3]), 24);
    if (s->clamp) {
        (void)__ssub8(hydra_s32_from_bits(word), hydra_s32_from_bits(s->lo4));
        word = __sel(word, s->lo4); /* max(y, lo) */
        (void)__ssub8(hydra_s32_from_bits(word), hydra_s32_from_bits(s->hi4));
        word = __sel(s->hi4, word); /* min(y, hi) */
    }
    memcpy(out + oc, &word, 4);
}

/* One tap of four channels: the input word's channels (0, 2) and (1, 3) as int16 x + offset (SXTAB16), times the
 * tap's widened filter pairs (we: channels 0 and 2, wo: 1 and 3), each half into its channel's accumulator. */
static HYDRA_ALWAYS_INLINE void dm1_tap(int32_t xv, const int32_t *wide, int32_t off2, int32_t acc[4])
{
    const int32_t xe = __sxtab16(off2, xv), xo = hydra_sxtab16_ror8(off2, xv);
    acc[0] = __smlabb(xe, wide[0], acc[0]);
    acc[2] = __smlatt(xe, wide[0], acc[2]);
    acc[1] = __smlabb(xo, wide[1], acc[1]);
    acc[3] = __smlatt(xo, wide[1], acc[3]);
}

/* `taps` (2 or 3) taps of a window row, unrolled: x at the first (tap t at x + t x_tap), wide at its widened words. */
static HYDRA_ALWAYS_INLINE void dm1_row(const int8_t *x, ptrdiff_t x_tap, const int32_t *wide, int32_t off2,
                                        int32_t acc[4], const int taps)
{
    dm1_tap(load_word(x), wide, off2, acc);
    dm1_tap(load_word(x + x_tap), wide + 2, off2, acc);
    if (taps == 3)
        dm1_tap(load_word(x + 2 * x_tap), wide + 4, off2, acc);
}

/* A window of `rows` x `taps` taps (each 2 or 3) of a 3 x 3 filter, unrolled: x at its first tap (row r, tap t at
 * x + r x_row + t x_tap), wide at that tap's widened words (a filter row is 6 words on). */
static HYDRA_ALWAYS_INLINE void dm1_window(const int8_t *x, ptrdiff_t x_tap, ptrdiff_t x_row, const int32_t *wide,
                                           int32_t off2, int32_t acc[4], const int rows, const int taps)
{
    dm1_row(x, x_tap, wide, off2, acc, taps);
    dm1_row(x + x_row, x_tap, wide + 6, off2, acc, taps);
    if (rows == 3)
        dm1_row(x + 2 * x_row, x_tap, wide + 12, off2, acc, taps);
}

/* rows x taps taps of a window from x (its first in-image tap) and wide (that tap's widened words; a filter row is
 * 2 f_w words). */
static HYDRA_ALWAYS_INLINE void dm1_taps(const int8_t *x, const int32_t *wide, int32_t rows, int32_t taps,
                                         int32_t f_w, ptrdiff_t x_tap, ptrdiff_t x_row, int32_t off2, int32_t acc[4])
{
    for (int32_t r = 0; r < rows; r++, x += x_row, wide += 2 * f_w) {
        const int8_t *xt = x;
        const int32_t *wt = wide;
        for (int32_t t = 0; t < taps; t++, xt += x_tap, wt += 2)
            dm1_tap(load_word(xt), wt, off2, acc);
    }
}

/* Depth multiplier 1, the first `quads` fours of channels over the whole image, a quad at a time: its f_h x f_w
 * taps' filter words widened (and doubled: dw_quad_out) to int16 pairs once, and its output stage formed once, not
 * per pixel; a tap then an input load, two SXTAB16 and four multiply-adds. Per output row the columns whose windows
 * lie inside the image across run in a loop of their own (a 3 x 3 window with its three rows in the image
 * unrolled), the border columns walk their in-image taps. The same integers as tap by tap (an exact sum, in the
 * same int32 accumulators). */
static HYDRA_NOINLINE void depthwise_dm1(const hydra_tfl_conv_view *v, const depthwise_ctx *c, const int8_t *input,
                                         const int8_t *filter, int8_t *output, int32_t quads)
{
    const int32_t in_h = v->input_shape[1], in_w = v->input_shape[2];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = c->out_c;
    const int32_t dh = v->dilation_height_factor, dw = v->dilation_width_factor, off2 = c->off2;
    const int32_t sw = v->stride_width, pw = v->padding_width;
    const ptrdiff_t x_tap = c->x_tap, x_row = c->x_row, x_step = (ptrdiff_t)sw * out_c;
    /* the output columns whose windows lie inside the image across: [ox_lo, ox_hi) */
    int32_t ox_lo = 0, ox_hi = out_w;
    while (ox_lo < out_w && ox_lo * sw - pw < 0)
        ox_lo++;
    while (ox_hi > ox_lo && (ox_hi - 1) * sw - pw + dw * (f_w - 1) > in_w - 1)
        ox_hi--;
    const int unrolled = f_h == 3 && f_w == 3;
    for (int32_t oc = 0; oc < 4 * quads; oc += 4) {
        int32_t wide[2 * DEPTHWISE_DM1_MAX_TAPS];
        for (int32_t t = 0; t < f_h * f_w; t++) {
            const int32_t wv = load_word(filter + (ptrdiff_t)t * out_c + oc);
            const int32_t we = __sxtb16(wv), wo = hydra_sxtb16_ror8(wv);
            wide[2 * t] = __sadd16(we, we);
            wide[2 * t + 1] = __sadd16(wo, wo);
        }
        dw_quad_out s;
        dw_quad_out_init(&s, &c->o, oc);
        for (int32_t b = 0; b < v->output_shape[0]; b++)
            for (int32_t oy = 0; oy < out_h; oy++) {
                const int32_t y0 = oy * v->stride_height - v->padding_height;
                int32_t fy_lo, fy_hi;
                tap_range(y0, dh, f_h, in_h, &fy_lo, &fy_hi);
                const int32_t rows = fy_hi > fy_lo ? fy_hi - fy_lo : 0;
                /* the row's first in-image filter row: its input row at column 0, channel oc, and its widened taps */
                const int8_t *x_y = input + (rows > 0 ? hydra_tfl_nhwc(v->input_shape, b, y0 + dh * fy_lo, 0, oc) : 0);
                const int32_t *w_y = wide + 2 * (rows > 0 ? fy_lo : 0) * f_w;
                int8_t *out = output + hydra_tfl_nhwc(v->output_shape, b, oy, 0, 0);
                for (int32_t ox = 0; ox < out_w; ox++, out += out_c) {
                    if (ox == ox_lo && rows > 0) { /* the columns inside the image across, to ox_hi */
                        const int8_t *x = x_y + (ptrdiff_t)(ox * sw - pw) * out_c;
                        if (unrolled && rows == 3) {
                            for (; ox < ox_hi; ox++, out += out_c, x += x_step) {
                                int32_t acc[4] = {s.init[0], s.init[1], s.init[2], s.init[3]};
                                dm1_window(x, x_tap, x_row, w_y, off2, acc, 3, 3);
                                dw_quad_store(&s, &c->o, out, oc, acc);
                            }
                        } else if (unrolled && rows == 2) { /* the top or bottom row of a 3 x 3 SAME */
                            for (; ox < ox_hi; ox++, out += out_c, x += x_step) {
                                int32_t acc[4] = {s.init[0], s.init[1], s.init[2], s.init[3]};
                                dm1_window(x, x_tap, x_row, w_y, off2, acc, 2, 3);
                                dw_quad_store(&s, &c->o, out, oc, acc);
                            }
                        } else {
                            for (; ox < ox_hi; ox++, out += out_c, x += x_step) {
                                int32_t acc[4] = {s.init[0], s.init[1], s.init[2], s.init[3]};
                                dm1_taps(x, w_y, rows, f_w, f_w, x_tap, x_row, off2, acc);
                                dw_quad_store(&s, &c->o, out, oc, acc);
                            }
                        }
                        if (ox >= out_w)
                            break;
                    }
                    /* a window cut by the left or right border (or with no row in the image) */
                    const int32_t x0 = ox * sw - pw;
                    int32_t fx_lo, fx_hi;
                    tap_range(x0, dw, f_w, in_w, &fx_lo, &fx_hi);
                    int32_t acc[4] = {s.init[0], s.init[1], s.init[2], s.init[3]};
                    if (unrolled && rows >= 2 && fx_hi - fx_lo == 2) /* the left or right column of a 3 x 3 SAME */
                        dm1_window(x_y + (ptrdiff_t)(x0 + dw * fx_lo) * out_c, x_tap, x_row, w_y + 2 * fx_lo, off2, acc,
                                   rows, 2);
                    else if (rows > 0 && fx_hi > fx_lo)
                        dm1_taps(x_y + (ptrdiff_t)(x0 + dw * fx_lo) * out_c, w_y + 2 * fx_lo, rows, fx_hi - fx_lo,
                                 f_w, x_tap, x_row, off2, acc);
                    dw_quad_store(&s, &c->o, out, oc, acc);
                }
            }
    }
}
/* The filter words a one-input-channel walk keeps paired per quad: up to 16 filter rows of up to 4 groups of 4 taps
 * (32 bytes a group on the stack). */
#define DEPTHWISE_ROW_MAX_GROUPS 16
#define DEPTHWISE_ROW_MAX_GROUPS_ACROSS 4

/* Which bytes of a filter row's group of 4 taps (input columns pos .. pos + 3) a pixel reads: the word at column
 * `at` (inside the row), shifted so that its in-image bytes land on their taps, the others replaced by the pad
 * byte -offset (x + offset = 0: they add nothing): ((word << ls) >> rs) | pad. */
typedef struct {
    int32_t at;
    uint32_t ls, rs, pad;
} dw_group_read;

/* A pixel's read of the group at input columns [pos, pos + 4) of a row of in_w >= 4 columns that it overlaps. */
static void dw_group_read_init(dw_group_read *r, int32_t pos, int32_t in_w, uint32_t pad4)
{
    const int32_t at = pos < 0 ? 0 : (pos > in_w - 4 ? in_w - 4 : pos); /* the word's column, inside the row */
    const int32_t d = pos - at;                                          /* in (-4, 4): the group overlaps the row */
    r->at = at;
    r->ls = d < 0 ? (uint32_t)(-8 * d) : 0; /* left border: the word's low bytes are taps -d .. 3 */
    r->rs = d > 0 ? (uint32_t)(8 * d) : 0;  /* right border: its high bytes are taps 0 .. 3 - d */
    r->pad = pad4 & ~((UINT32_C(0xFFFFFFFF) << r->ls) >> r->rs);
}

/* A pixel's rows of a one-input-channel window (rows from x: where `shifted` the row's column 0, else its first
 * word's; filter pairs from p, `groups` groups a filter row, of which it reads n): per group the word (where
 * `shifted`, through the group's read), SXTAB16 into the x + offset pairs of taps (0, 2) and (1, 3), eight SMLADs
 * against the quad's filter pairs (per group 4 doublewords: channels (0, 1) and (2, 3) at taps (0, 2), then at taps
 * (1, 3); one LDRD each). `one`: a single group a row (f_w <= 4), no group loop. */
static HYDRA_ALWAYS_INLINE void dw_rows(const int8_t *x, const uint64_t *p, int32_t rows, ptrdiff_t x_row,
                                        int32_t groups, int32_t n, const dw_group_read *reads, int32_t off2,
                                        int32_t acc[4], const int one, const int shifted)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (; rows > 0; rows--, x += x_row, p += 4 * groups)
        for (int32_t g = 0; g < (one ? 1 : n); g++) {
            uint32_t word;
            memcpy(&word, shifted ? x + reads[g].at : x + 4 * g, 4);
            if (shifted)
                word = ((word << reads[g].ls) >> reads[g].rs) | reads[g].pad;
            const int32_t xw = hydra_s32_from_bits(word);
            const int32_t xe = __sxtab16(off2, xw), xo = hydra_sxtab16_ror8(off2, xw);
            const uint64_t e01 = p[4 * g], e23 = p[4 * g + 1], o01 = p[4 * g + 2], o23 = p[4 * g + 3];
            a0 = __smlad(xe, hydra_s32_from_bits((uint32_t)e01), a0);
            a1 = __smlad(xe, hydra_s32_from_bits((uint32_t)(e01 >> 32)), a1);
            a2 = __smlad(xe, hydra_s32_from_bits((uint32_t)e23), a2);
            a3 = __smlad(xe, hydra_s32_from_bits((uint32_t)(e23 >> 32)), a3);
            a0 = __smlad(xo, hydra_s32_from_bits((uint32_t)o01), a0);
            a1 = __smlad(xo, hydra_s32_from_bits((uint32_t)(o01 >> 32)), a1);
            a2 = __smlad(xo, hydra_s32_from_bits((uint32_t)o23), a2);
            a3 = __smlad(xo, hydra_s32_from_bits((uint32_t)(o23 >> 32)), a3);
        }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* One input channel (in_c 1), a depth multiplier that is a multiple of 4, no x dilation, rows of at least 4 columns:
 * DS-CNN's first layer. A filter row's taps are adjacent input bytes, so a pixel reads them a word (4 taps) at a time,
 * SXTAB16 making the x + offset pairs of taps (0, 2) and (1, 3), and each pair feeds one SMLAD per channel: quad by
 * quad over the image, the quad's filter paired the same way (and doubled: dw_quad_out) once, taps past the filter's
 * width 0. A window cut by the left or right border reads its in-row bytes shifted into place and the pad byte
 * -offset for the others (x + offset = 0, as TFLM's skipped taps add nothing); rows outside the image are skipped.
 * Every product is one of TFLM's or 0: the same int32 sum. */
static HYDRA_NOINLINE void depthwise_row1(const hydra_tfl_conv_view *v, const depthwise_ctx *c, const int8_t *input,
                                          const int8_t *filter, int8_t *output)
{
    const int32_t in_h = v->input_shape[1], in_w = v->input_shape[2];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = c->out_c;
    const int32_t dh = v->dilation_height_factor, sw = v->stride_width, pw = v->padding_width, off2 = c->off2;
    const int32_t groups = (f_w + 3) / 4;
    const uint32_t pad4 = UINT32_C(0x01010101) * (uint8_t)(-c->offset);
    const ptrdiff_t x_row = c->x_row;
    for (int32_t oc = 0; oc < out_c; oc += 4) {
        uint64_t pairs[4 * DEPTHWISE_ROW_MAX_GROUPS];
        for (int32_t rg = 0; rg < f_h * groups; rg++) {
            const int32_t r = rg / groups, t0 = 4 * (rg % groups);
            for (int32_t k = 0; k < 4; k++) { /* taps t0 + k / 2 and t0 + k / 2 + 2; channels 2 (k % 2) and + 1 */
                const int32_t t = t0 + k / 2, ch = oc + 2 * (k % 2);
                uint64_t both = 0;
                for (int32_t h = 0; h < 2; h++) {
                    const int32_t lo = t < f_w ? filter[(ptrdiff_t)(r * f_w + t) * out_c + ch + h] : 0;
                    const int32_t hi = t + 2 < f_w ? filter[(ptrdiff_t)(r * f_w + t + 2) * out_c + ch + h] : 0;
                    const uint32_t pair = ((uint32_t)(2 * lo) & UINT32_C(0xFFFF)) | ((uint32_t)(2 * hi) << 16);
                    both |= (uint64_t)pair << (32 * h);
                }
                pairs[4 * rg + k] = both;
            }
        }
        dw_quad_out s;
        dw_quad_out_init(&s, &c->o, oc);
        for (int32_t b = 0; b < v->output_shape[0]; b++)
            for (int32_t oy = 0; oy < out_h; oy++) {
                const int32_t y0 = oy * v->stride_height - v->padding_height;
                int32_t fy_lo, fy_hi;
                tap_range(y0, dh, f_h, in_h, &fy_lo, &fy_hi);
                const int32_t rows = fy_hi > fy_lo ? fy_hi - fy_lo : 0;
                const int8_t *x_y = input + (rows > 0 ? hydra_tfl_nhwc(v->input_shape, b, y0 + dh * fy_lo, 0, 0) : 0);
                const uint64_t *p_y = pairs + 4 * groups * (rows > 0 ? fy_lo : 0);
                int8_t *out = output + hydra_tfl_nhwc(v->output_shape, b, oy, 0, 0);
                for (int32_t ox = 0; ox < out_w; ox++, out += out_c) {
                    const int32_t x0 = ox * sw - pw;
                    /* the groups that overlap the row: [g_lo, g_hi) */
                    const int32_t g_lo = x0 >= 0 ? 0 : (-x0) / 4;
                    const int32_t g_hi = x0 + 4 * groups <= in_w ? groups : (in_w - x0 + 3) / 4;
                    int32_t acc[4] = {s.init[0], s.init[1], s.init[2], s.init[3]};
                    if (rows > 0 && g_hi > g_lo) {
                        const uint64_t *p = p_y + 4 * g_lo;
                        const int32_t n = g_hi - g_lo;
                        if (x0 >= 0 && x0 + 4 * groups <= in_w) { /* every word inside the row */
                            if (groups == 1)
                                dw_rows(x_y + x0, p, rows, x_row, 1, 1, NULL, off2, acc, 1, 0);
                            else
                                dw_rows(x_y + x0, p, rows, x_row, groups, n, NULL, off2, acc, 0, 0);
                        } else {
                            dw_group_read reads[DEPTHWISE_ROW_MAX_GROUPS_ACROSS];
                            for (int32_t g = 0; g < n; g++)
                                dw_group_read_init(&reads[g], x0 + 4 * (g_lo + g), in_w, pad4);
                            if (groups == 1)
                                dw_rows(x_y, p, rows, x_row, 1, 1, reads, off2, acc, 1, 1);
                            else
                                dw_rows(x_y, p, rows, x_row, groups, n, reads, off2, acc, 0, 1);
                        }
                    }
                    dw_quad_store(&s, &c->o, out, oc, acc);
                }
            }
    }
}

/* One function per share, so that each tap loop has the registers to itself; called once per pixel. */
static HYDRA_NOINLINE void depthwise_quads_2(const depthwise_ctx *c, const int8_t *x, const int8_t *w,
                                                 int8_t *out, int32_t quads)
{
    depthwise_quads(c, x, w, out, quads, 2);
}

static HYDRA_NOINLINE void depthwise_quads_4(const depthwise_ctx *c, const int8_t *x, const int8_t *w,
                                                 int8_t *out, int32_t quads)
{
    depthwise_quads(c, x, w, out, quads, 4);
}
#endif

/* DEPTHWISE_CONV_2D: output channel oc reads input channel oc / depth_multiplier and filter column oc; for each
 * output pixel the in-image taps are found once, then each channel (each four channels, on the SIMD cores with a
 * depth multiplier of 1, 2 or a multiple of 4) walks them with two pointer steps. */
static void depthwise_walk(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                           const int32_t *bias, int8_t *output)
{
    const int32_t in_h = v->input_shape[1], in_w = v->input_shape[2], in_c = v->input_shape[3];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = v->output_shape[3];
    const int32_t dh = v->dilation_height_factor, dw = v->dilation_width_factor;
    const int32_t dm = out_c / in_c, offset = v->input_offset;
    const uint32_t half = (uint32_t)offset & UINT32_C(0xFFFF);
    depthwise_ctx c;
    conv_outputs_init(&c.o, v, bias, (int64_t)f_h * f_w);
    c.out_c = out_c;
    c.dm = dm;
    c.offset = offset;
    c.off2 = from_u32(half | (half << 16)); /* the offset in both int16 halves */
    c.x_tap = (ptrdiff_t)dw * in_c;
    c.x_row = (ptrdiff_t)dh * in_w * in_c;
    c.w_row = (ptrdiff_t)f_w * out_c;
    /* the output channels the quads take, 4 at a time */
    int32_t quad_channels = 0;
#if defined(HYDRA_TFL_SIMD32) && defined(__ARM_FEATURE_DSP)
    void (*quads)(const depthwise_ctx *, const int8_t *, const int8_t *, int8_t *, int32_t) = NULL;
    if (dm == 1 && f_h * f_w <= DEPTHWISE_DM1_MAX_TAPS) { /* four channels a word, quad by quad over the image */
        quad_channels = in_c & ~3;
        if (quad_channels > 0)
            depthwise_dm1(v, &c, input, filter, output, quad_channels / 4);
        if (quad_channels == out_c)
            return; /* no channel left for the pixel walk below */
    } else if (in_c == 1 && dm % 4 == 0 && dw == 1 && in_w >= 4 && (f_w + 3) / 4 <= DEPTHWISE_ROW_MAX_GROUPS_ACROSS &&
               f_h * ((f_w + 3) / 4) <= DEPTHWISE_ROW_MAX_GROUPS) { /* a filter row's taps a word at a time */
        depthwise_row1(v, &c, input, filter, output);
        return;
    } else if (dm == 2) { /* two input channels' four output channels at a time */
        quad_channels = 2 * (in_c & ~1);
        quads = depthwise_quads_2;
    } else if (dm % 4 == 0) { /* an input channel's dm output channels four at a time */
        quad_channels = out_c;
        quads = depthwise_quads_4;
    }
#endif
    for (int32_t b = 0; b < v->output_shape[0]; b++)
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * v->stride_height - v->padding_height;
            int32_t fy_lo, fy_hi;
            tap_range(y0, dh, f_h, in_h, &fy_lo, &fy_hi);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * v->stride_width - v->padding_width;
                int32_t fx_lo, fx_hi;
                tap_range(x0, dw, f_w, in_w, &fx_lo, &fx_hi);
                c.rows = fy_hi > fy_lo && fx_hi > fx_lo ? fy_hi - fy_lo : 0;
                c.taps = fx_hi - fx_lo;
                const int8_t *x = c.rows > 0 ? input + hydra_tfl_nhwc(v->input_shape, b, y0 + dh * fy_lo,
                                                                      x0 + dw * fx_lo, 0)
                                             : input;
                const int8_t *w = c.rows > 0 ? filter + ((ptrdiff_t)fy_lo * f_w + fx_lo) * out_c : filter;
                int8_t *out = output + hydra_tfl_nhwc(v->output_shape, b, oy, ox, 0);
#if defined(HYDRA_TFL_SIMD32) && defined(__ARM_FEATURE_DSP)
                if (quads != NULL && quad_channels > 0)
                    quads(&c, x, w, out, quad_channels / 4);
#endif
                /* the rest: channels left over by the quads, other depth multipliers, the portable build */
                for (int32_t oc = quad_channels; oc < out_c; oc++) {
                    int32_t acc = 0;
                    const int8_t *xr = x + oc / dm, *wr = w + oc;
                    for (int32_t row = 0; row < c.rows; row++, xr += c.x_row, wr += c.w_row) {
                        const int8_t *xt = xr, *wt = wr;
                        for (int32_t t = 0; t < c.taps; t++, xt += c.x_tap, wt += out_c)
                            acc += *wt * (*xt + offset);
                    }
                    conv_outputs_store(&c.o, out, oc, &acc, 1);
                }
            }
        }
}

#if !defined(HYDRA_TFL_SIMD32)
/* Along one dimension, the input position of tap f of output o, o * stride - padding + dilation * f, or -1
 * when it falls outside [0, size): TFLM skips those taps. */
static int32_t conv_tap(int32_t o, int32_t stride, int32_t padding, int32_t dilation, int32_t f, int32_t size)
{
    const int32_t i = o * stride - padding + dilation * f;
    return i >= 0 && i < size ? i : -1;
}

/* CONV_2D without the SIMD instructions: tap by tap, except that without
 * x dilation the taps of a filter row that fall inside the image are one contiguous run of taps * in_c bytes
 * in the input (NHWC) and in the filter ([O, H, W, I]), summed in one loop in the same order as tap by tap. */
static void conv_generic(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                         const int32_t *bias, int8_t *output)
{
    const int32_t out_c = v->output_shape[3];
    const int32_t in_h = v->input_shape[1], in_w = v->input_shape[2], in_c = v->input_shape[3];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t n = v->filter_shape[3];        /* input channels per output channel */
    const int32_t per_group = out_c / (in_c / n); /* output channels per group */
    const int32_t contiguous = n == in_c && v->dilation_width_factor == 1;
    conv_outputs o;
    conv_outputs_init(&o, v, bias, (int64_t)f_h * f_w * n);
    for (int32_t b = 0; b < v->output_shape[0]; b++)
        for (int32_t oy = 0; oy < v->output_shape[1]; oy++)
            for (int32_t ox = 0; ox < v->output_shape[2]; ox++) {
                const int32_t x0 = ox * v->stride_width - v->padding_width; /* the input column of tap 0 */
                const int32_t fx_lo = x0 < 0 ? -x0 : 0;
                const int32_t fx_hi = x0 + f_w > in_w ? in_w - x0 : f_w; /* taps [fx_lo, fx_hi) are inside */
                int8_t *out = output + hydra_tfl_nhwc(v->output_shape, b, oy, ox, 0);
                for (int32_t oc = 0; oc < out_c; oc++) {
                    const int32_t c0 = (oc / per_group) * n;
                    int32_t acc = 0;
                    for (int32_t fy = 0; fy < f_h; fy++) {
                        const int32_t iy = conv_tap(oy, v->stride_height, v->padding_height,
                                                    v->dilation_height_factor, fy, in_h);
                        if (iy < 0)
                            continue;
                        if (contiguous) {
                            if (fx_hi <= fx_lo)
                                continue;
                            const int8_t *x = input + hydra_tfl_nhwc(v->input_shape, b, iy, x0 + fx_lo, 0);
                            const int8_t *w = filter + hydra_tfl_nhwc(v->filter_shape, oc, fy, fx_lo, 0);
                            const int32_t len = (fx_hi - fx_lo) * n;
                            for (int32_t i = 0; i < len; i++)
                                acc += (int32_t)w[i] * ((int32_t)x[i] + v->input_offset);
                            continue;
                        }
                        for (int32_t fx = 0; fx < f_w; fx++) {
                            const int32_t ix = conv_tap(ox, v->stride_width, v->padding_width,
                                                        v->dilation_width_factor, fx, in_w);
                            if (ix < 0)
                                continue;
                            const int8_t *x = input + hydra_tfl_nhwc(v->input_shape, b, iy, ix, c0);
                            const int8_t *w = filter + hydra_tfl_nhwc(v->filter_shape, oc, fy, fx, 0);
                            for (int32_t ic = 0; ic < n; ic++)
                                acc += (int32_t)w[ic] * ((int32_t)x[ic] + v->input_offset);
                        }
                    }
                    conv_outputs_store(&o, out, oc, &acc, 1);
                }
            }
}
#endif

/* The checks both walks make: the window, the offsets, the activation range and every multiplier. */
static int conv_view_ok(const hydra_tfl_conv_view *v)
{
    return hydra_tfl_window_ok(v->stride_height, v->stride_width, v->dilation_height_factor,
                               v->dilation_width_factor, v->padding_height, v->padding_width) &&
           hydra_tfl_input_offset_ok(v->input_offset) && hydra_zero_point_ok(v->output_offset) &&
           hydra_tfl_activation_ok(v->activation_min, v->activation_max) &&
           hydra_tfl_multipliers_ok(v->output_multiplier, v->output_shift, v->output_shape[3]);
}

hydra_status hydra_tfl_depthwise_walk_s8(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                                         const int32_t *bias, int8_t *output)
{
    if (!conv_view_ok(v))
        return HYDRA_ERR_ARG;
    depthwise_walk(v, input, filter, bias, output);
    return HYDRA_OK;
}

hydra_status hydra_tfl_conv_walk_s8(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                                    const int32_t *bias, int8_t *output)
{
    if (!conv_view_ok(v))
        return HYDRA_ERR_ARG;
#if defined(HYDRA_TFL_SIMD32)
    conv_simd(v, input, filter, bias, output);
#else
    conv_generic(v, input, filter, bias, output);
#endif
    return HYDRA_OK;
}

static hydra_status pool_2d_check(const hydra_tfl_pool_2d_params *p, int64_t max_taps)
{
    const int32_t batches = p->input_shape[0], in_h = p->input_shape[1], in_w = p->input_shape[2];
    const int32_t depth = p->input_shape[3], out_h = p->output_shape[1], out_w = p->output_shape[2];
    if (batches <= 0 || in_h <= 0 || in_w <= 0 || depth <= 0 || out_h <= 0 || out_w <= 0 ||
        p->output_shape[0] != batches || p->output_shape[3] != depth || p->filter_height <= 0 ||
        p->filter_width <= 0 || (int64_t)p->filter_height * p->filter_width > max_taps)
        return HYDRA_ERR_SHAPE;
    if (!hydra_tfl_window_ok(p->stride_height, p->stride_width, 1, 1, p->padding_height, p->padding_width) ||
        !hydra_tfl_activation_ok(p->activation_min, p->activation_max))
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

/* The largest of `rows` x `taps` int8 (-128 when none) from x, taps `tap` bytes apart, rows `row` apart. */
static inline int32_t pool_max(const int8_t *x, int32_t rows, int32_t taps, ptrdiff_t row, ptrdiff_t tap)
{
    int32_t m = -128;
    for (int32_t r = 0; r < rows; r++, x += row) {
        const int8_t *t = x;
        for (int32_t k = 0; k < taps; k++, t += tap)
            m = *t > m ? *t : m;
    }
    return m;
}

/* Their int32 sum. */
static inline int32_t pool_sum(const int8_t *x, int32_t rows, int32_t taps, ptrdiff_t row, ptrdiff_t tap)
{
    int32_t acc = 0;
    for (int32_t r = 0; r < rows; r++, x += row) {
        const int8_t *t = x;
        for (int32_t k = 0; k < taps; k++, t += tap)
            acc += *t;
    }
    return acc;
}

/* AVERAGE_POOL_2D's division of the sum of count taps: rounding half away from zero. */
static inline int32_t pool_average(int32_t acc, int32_t count)
{
    return acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
}

static inline int8_t pool_clamp(int32_t value, int32_t lo, int32_t hi)
{
    return (int8_t)(value < lo ? lo : (value > hi ? hi : value));
}

#if defined(HYDRA_TFL_SIMD32)
/* The int16 lane h (0 low, 1 high) of a word, sign-extended. */
static inline int32_t lane16(int32_t word, int h)
{
    const uint32_t u = ((uint32_t)word >> (h ? 16 : 0)) & UINT32_C(0xFFFF);
    return (int32_t)(u ^ UINT32_C(0x8000)) - 0x8000;
}

/* Four channels at once: SSUB8 + SEL is a bytewise signed maximum; SXTAB16 sums bytes 0, 2 and 1, 3 in int16
 * lanes (exact for at most 256 taps of |x| <= 128). */
static inline void pool_max4(const int8_t *x, int32_t rows, int32_t taps, ptrdiff_t row, ptrdiff_t tap, uint32_t lo4,
                             uint32_t hi4, int8_t *out)
{
    uint32_t m = UINT32_C(0x80808080);
    for (int32_t r = 0; r < rows; r++, x += row) {
        const int8_t *t = x;
        for (int32_t k = 0; k < taps; k++, t += tap) {
            uint32_t word;
            memcpy(&word, t, 4);
            (void)__ssub8(from_u32(word), from_u32(m)); /* GE bits: word >= m, bytewise */
            m = __sel(word, m);
        }
    }
    (void)__ssub8(from_u32(m), from_u32(lo4));
    m = __sel(m, lo4); /* max(m, lo) */
    (void)__ssub8(from_u32(m), from_u32(hi4));
    m = __sel(hi4, m); /* min(m, hi) */
    memcpy(out, &m, 4);
}

static inline void pool_sum4(const int8_t *x, int32_t rows, int32_t taps, ptrdiff_t row, ptrdiff_t tap,
                             int32_t acc[4])
{
    int32_t even = 0, odd = 0;
    for (int32_t r = 0; r < rows; r++, x += row) {
        const int8_t *t = x;
        for (int32_t k = 0; k < taps; k++, t += tap) {
            const int32_t word = load_word(t);
            even = __sxtab16(even, word);
            odd = hydra_sxtab16_ror8(odd, word);
        }
    }
    acc[0] = lane16(even, 0);
    acc[1] = lane16(odd, 0);
    acc[2] = lane16(even, 1);
    acc[3] = lane16(odd, 1);
}
#endif

hydra_status hydra_tfl_pool_2d_s8(const hydra_tfl_pool_2d_params *p, const int8_t *input, int8_t *output,
                                  int32_t kind)
{
    if (p == NULL || input == NULL || output == NULL ||
        (kind != HYDRA_TFL_POOL_MAX && kind != HYDRA_TFL_POOL_AVERAGE))
        return HYDRA_ERR_ARG;
    const int average = kind == HYDRA_TFL_POOL_AVERAGE;
    /* AVERAGE_POOL_2D: at most 2^23 taps of |x| <= 2^7 keep the int32 sum exact; MAX_POOL_2D: any window */
    const hydra_status st = pool_2d_check(p, average ? INT64_C(1) << 23 : INT64_MAX);
    if (st != HYDRA_OK)
        return st;
    const int32_t in_h = p->input_shape[1], in_w = p->input_shape[2], depth = p->input_shape[3];
    const int32_t lo = p->activation_min, hi = p->activation_max;
    const ptrdiff_t tap = depth, row = (ptrdiff_t)in_w * depth;
#if defined(HYDRA_TFL_SIMD32)
    const uint32_t lo_byte = (uint32_t)lo & 0xFFu, hi_byte = (uint32_t)hi & 0xFFu;
    const uint32_t lo4 = lo_byte * UINT32_C(0x01010101), hi4 = hi_byte * UINT32_C(0x01010101);
#endif
    for (int32_t b = 0; b < p->input_shape[0]; b++)
        for (int32_t oy = 0; oy < p->output_shape[1]; oy++) {
            const int32_t y0 = oy * p->stride_height - p->padding_height;
            int32_t fy_lo, fy_hi;
            tap_range(y0, 1, p->filter_height, in_h, &fy_lo, &fy_hi);
            for (int32_t ox = 0; ox < p->output_shape[2]; ox++) {
                const int32_t x0 = ox * p->stride_width - p->padding_width;
                int32_t fx_lo, fx_hi;
                tap_range(x0, 1, p->filter_width, in_w, &fx_lo, &fx_hi);
                const int any = fy_hi > fy_lo && fx_hi > fx_lo;
                const int32_t rows = any ? fy_hi - fy_lo : 0, taps = any ? fx_hi - fx_lo : 0;
                const int8_t *x = any ? input + hydra_tfl_nhwc(p->input_shape, b, y0 + fy_lo, x0 + fx_lo, 0) : input;
                int8_t *out = output + hydra_tfl_nhwc(p->output_shape, b, oy, ox, 0);
                const int32_t count = rows * taps;
                if (average && count == 0)
                    return HYDRA_ERR_SHAPE; /* TFLM fails the op: a window wholly in the padding */
                int32_t c = 0;
#if defined(HYDRA_TFL_SIMD32)
                if (!average) {
                    for (; c + 4 <= depth; c += 4)
                        pool_max4(x + c, rows, taps, row, tap, lo4, hi4, out + c);
                } else if (count <= 256) {
                    for (; c + 4 <= depth; c += 4) {
                        int32_t acc[4];
                        pool_sum4(x + c, rows, taps, row, tap, acc);
                        for (int k = 0; k < 4; k++)
                            out[c + k] = pool_clamp(pool_average(acc[k], count), lo, hi);
                    }
                }
#endif
                for (; c < depth; c++)
                    out[c] = pool_clamp(average ? pool_average(pool_sum(x + c, rows, taps, row, tap), count)
                                                : pool_max(x + c, rows, taps, row, tap),
                                        lo, hi);
            }
        }
    return HYDRA_OK;
}
