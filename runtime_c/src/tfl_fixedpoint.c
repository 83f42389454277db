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

/* Paths of the SIMD walks a build may leave out (flash): the compiler defines HYDRA_TFL_NO_<path> where no node of
 * the graph takes that path, from the nodes' attrs (codegen/emit_tfl.py tfl_defines, which mirrors the dispatch
 * conditions below). Each only drops code: the bits never depend on them, and a call that would have taken a
 * dropped path (never one from the compiler) fails with HYDRA_ERR_ARG instead of reaching it. The portable walks
 * (no SIMD) ignore them.
 *   DEPTHWISE_DM1, DEPTHWISE_ROW1, DEPTHWISE_QUADS_2, DEPTHWISE_QUADS_4: depthwise_walk's fast paths;
 *   DEPTHWISE_DM1_TAPS: depthwise_dm1's tap loop (a window other than 3 x 3 with 2 or 3 rows and 2 or 3 taps);
 *   DEPTHWISE_ROW1_GROUPS: depthwise_row1's filters wider than 4 taps;
 *   DEPTHWISE_WALK: its pixel walk (the quads' and the channels none of them takes);
 *   CONV_GENERAL_OUTPUT: the convolutions' general output stage (a node whose outputs are not all
 *   hydra_requantize_right's: single rounding, more than 2^14 products, a multiplier above 1 or a bias beyond 2^29);
 *   CONV_WORD_WINDOW, CONV_BYTE_WINDOW: conv_simd's window copies for input channels per group n % 4 == 0 / != 0;
 *   without CONV_WORD_WINDOW (a build for size, optimize.py) the byte copy takes every window, in the larger
 *   scratch hydra_tfl_conv_2d_get_buffer_size then asks for;
 *   POOL_MAX, POOL_AVERAGE: the pool kinds; POOL_CHANNEL: the pools' one-channel loop (depth % 4 != 0, or an
 *   average over more than 256 taps). */

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
#if !defined(HYDRA_TFL_SIMD32) || !defined(HYDRA_TFL_NO_CONV_GENERAL_OUTPUT)
#define HYDRA_TFL_CONV_GENERAL 1 /* else every call's o->fast (the SIMD walks check it) */
static HYDRA_NOINLINE int8_t conv_output_general(const conv_outputs *o, int32_t acc, int32_t bias,
                                                     int32_t multiplier, int32_t shift)
{
    const int32_t y = hydra_tfl_requantize_call(hydra_saturate_s32((int64_t)acc + bias), multiplier, shift, o->single);
    return hydra_tfl_output_s8(y, o->output_offset, o->activation_min, o->activation_max);
}
#endif

/* conv_output_general's value: inline by hydra_requantize_right where o->fast. Read per output (a branch the core
 * predicts), so that each walk is one copy. */
static HYDRA_ALWAYS_INLINE int8_t conv_output(const conv_outputs *o, int32_t acc, int32_t bias, int32_t multiplier,
                                              int32_t shift)
{
#if defined(HYDRA_TFL_CONV_GENERAL)
    if (!o->fast)
        return conv_output_general(o, acc, bias, multiplier, shift);
#endif
    return hydra_output_right_s8(acc + bias, multiplier, shift, 0, o->output_offset, o->activation_min,
                                 o->activation_max);
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

#if defined(HYDRA_TFL_SIMD32)
static inline int32_t load_word(const int8_t *p)
{
    int32_t word;
    memcpy(&word, p, 4);
    return word;
}

#if !defined(HYDRA_TFL_NO_CONV_WORD_WINDOW) || !defined(HYDRA_TFL_NO_CONV_BYTE_WINDOW)
#define HYDRA_TFL_CONV_SIMD 1 /* else no window copy: no CONV_2D in this build */
/* CONV_2D on the SIMD cores, as CMSIS-NN does it: the windows of two output pixels are copied (im2col) into the
 * scratch as int16 x + offset, laid out as linear's token-pair groups (per 4 taps: pixel a's even and odd
 * halves, then pixel b's), so that the input is widened once per pixel pair instead of once per output channel.
 * A tap outside the image is copied as -offset, so x + offset is 0 there: TFLM skips such a tap, and a product of 0
 * leaves the same sum. Filter rows are read in place ([O, H, W, I]: one row of k bytes per output channel). */
typedef struct {
    const hydra_tfl_conv_view *v;
    int32_t n;       /* input channels per group */
    int32_t k;       /* bytes of one filter row: f_h f_w n */
    int32_t groups4; /* groups of 4 taps in the scratch's rows: ceil(k / 4) */
    int32_t off2;    /* the input offset in both int16 halves */
    int8_t pad;      /* -input_offset: x + offset = 0, a tap outside the image (conv_window_bytes) */
    int contiguous;  /* a row's in-image taps are one run of the input (no x dilation, groups 1) */
    ptrdiff_t x_row, x_tap; /* input bytes from a filter row to the next, from a tap to the next */
} conv_im2col;

/* `groups` groups of 4 bytes of x as int16 x + offset into one pixel's slots of the pair layout: xq[4 j] the even
 * bytes of group j, xq[4 j + 1] the odd ones (the caller offsets xq by 2 for pixel b). */
static void conv_widen(const int8_t *x, int32_t groups, int32_t off2, int32_t *xq)
{
    for (; groups > 0; groups--, x += 4, xq += 4) {
        const int32_t word = load_word(x);
        xq[0] = __sxtab16(off2, word);
        xq[1] = hydra_sxtab16_ror8(off2, word);
    }
}

#if !defined(HYDRA_TFL_NO_CONV_WORD_WINDOW)
/* `groups` groups of one pixel's slots as taps outside the image: x + offset = 0. */
static void conv_zero(int32_t groups, int32_t *xq)
{
    for (; groups > 0; groups--, xq += 4)
        xq[0] = xq[1] = 0;
}
#endif

/* An output pixel: batch, row, column. conv_next steps it in NHW order. */
typedef struct {
    int32_t b, oy, ox;
} conv_pixel;

static inline conv_pixel conv_next(const hydra_tfl_conv_view *v, conv_pixel at)
{
    if (++at.ox == v->output_shape[2]) {
        at.ox = 0;
        if (++at.oy == v->output_shape[1]) {
            at.oy = 0;
            at.b++;
        }
    }
    return at;
}

/* Where output pixel `at`'s window lies in the input: the input row of filter row 0 (y0), a row's taps inside the
 * image [fx_lo, fx_hi) (both 0 when none), and the input offset of row 0's tap fx_lo at channel c0 (an index only
 * where the row is inside the image; a filter row on, x_row bytes on). */
typedef struct {
    int32_t y0, fx_lo, fx_hi;
    ptrdiff_t x;
} conv_place;

static conv_place conv_locate(const conv_im2col *g, conv_pixel at, int32_t c0)
{
    const hydra_tfl_conv_view *v = g->v;
    const int32_t x0 = at.ox * v->stride_width - v->padding_width, dw = v->dilation_width_factor;
    conv_place p;
    p.y0 = at.oy * v->stride_height - v->padding_height;
    tap_range(x0, dw, v->filter_shape[2], v->input_shape[2], &p.fx_lo, &p.fx_hi);
    if (p.fx_hi <= p.fx_lo) /* no tap of a row inside the image (fx_lo may then be past the window) */
        p.fx_lo = p.fx_hi = 0;
    p.x = (((ptrdiff_t)at.b * v->input_shape[1] + p.y0) * v->input_shape[2] + x0 + (ptrdiff_t)dw * p.fx_lo) *
              v->input_shape[3] + c0;
    return p;
}

/* The window of output pixel `at` over input channels [c0, c0 + n) into one pixel's slots of the pair layout,
 * in the filter's (fy, fx, i) order, n % 4 == 0 (every tap whole groups): a run inside the image is widened from
 * the input, a tap outside it is zeros. */
#if !defined(HYDRA_TFL_NO_CONV_WORD_WINDOW)
static void conv_window(const conv_im2col *g, const int8_t *input, conv_pixel at, int32_t c0, int32_t *xq)
{
    const int32_t in_h = g->v->input_shape[1], f_h = g->v->filter_shape[1], f_w = g->v->filter_shape[2];
    const int32_t dh = g->v->dilation_height_factor, tap = g->n / 4; /* groups per tap */
    const conv_place p = conv_locate(g, at, c0);
    for (int32_t fy = 0; fy < f_h; fy++, xq += 4 * f_w * tap) {
        const int32_t iy = p.y0 + dh * fy;
        if (iy < 0 || iy >= in_h || p.fx_hi == p.fx_lo) {
            conv_zero(f_w * tap, xq);
            continue;
        }
        conv_zero(p.fx_lo * tap, xq);
        const int8_t *x = input + p.x + fy * g->x_row;
        if (g->contiguous) {
            conv_widen(x, (p.fx_hi - p.fx_lo) * tap, g->off2, xq + 4 * p.fx_lo * tap);
        } else {
            for (int32_t fx = p.fx_lo; fx < p.fx_hi; fx++, x += g->x_tap)
                conv_widen(x, tap, g->off2, xq + 4 * fx * tap);
        }
        conv_zero((f_w - p.fx_hi) * tap, xq + 4 * p.fx_hi * tap);
    }
}
#endif

#if !defined(HYDRA_TFL_NO_CONV_BYTE_WINDOW)
/* n bytes from x to dst, a word at a time while 4 are left (the M7 loads and stores words unaligned), and n bytes
 * of `byte` at dst: a window's runs are a few bytes, shorter than a call of memcpy or memset takes to set up. GCC
 * would turn the loops back into those calls. */
#if defined(__GNUC__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void conv_copy(int8_t *dst, const int8_t *x, int32_t n)
{
    for (; n >= 4; n -= 4, dst += 4, x += 4)
        memcpy(dst, x, 4);
    for (; n > 0; n--)
        *dst++ = *x++;
}

#if defined(__GNUC__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void conv_fill(int8_t *dst, int8_t byte, int32_t n)
{
    for (; n > 0; n--)
        *dst++ = byte;
}

/* conv_window for n % 4 != 0 (taps straddle groups), and for every n where the build left conv_window out: the
 * window as k bytes first (a tap outside the image -offset: x + offset = 0), then pad bytes up to 4 groups4, widened
 * as a whole. */
static void conv_window_bytes(const conv_im2col *g, const int8_t *input, conv_pixel at, int32_t c0, int8_t *bytes,
                              int32_t *xq)
{
    const int32_t in_h = g->v->input_shape[1], f_h = g->v->filter_shape[1], f_w = g->v->filter_shape[2];
    const int32_t dh = g->v->dilation_height_factor, n = g->n;
    const int32_t row_bytes = f_w * n;
    const conv_place p = conv_locate(g, at, c0);
    int8_t *row = bytes;
    for (int32_t fy = 0; fy < f_h; fy++, row += row_bytes) {
        const int32_t iy = p.y0 + dh * fy;
        if (iy < 0 || iy >= in_h || p.fx_hi == p.fx_lo) {
            conv_fill(row, g->pad, row_bytes);
            continue;
        }
        if (p.fx_lo > 0 || p.fx_hi < f_w || !g->contiguous)
            conv_fill(row, g->pad, row_bytes); /* then the in-image taps over it */
        const int8_t *x = input + p.x + fy * g->x_row;
        if (g->contiguous) {
            conv_copy(row + (ptrdiff_t)p.fx_lo * n, x, (p.fx_hi - p.fx_lo) * n);
        } else {
            for (int32_t fx = p.fx_lo; fx < p.fx_hi; fx++, x += g->x_tap)
                conv_copy(row + (ptrdiff_t)fx * n, x, n);
        }
    }
    conv_fill(row, g->pad, 4 * g->groups4 - g->k);
    conv_widen(bytes, g->groups4, g->off2, xq);
}

/* The first `count` (1 to 3) bytes of a row's last group as a word, the rest 0: the row may end the filter. */
static inline int32_t conv_partial_word(const int8_t *w, int32_t count)
{
    uint32_t u = (uint8_t)w[0];
    if (count > 1)
        u |= (uint32_t)(uint8_t)w[1] << 8;
    if (count > 2)
        u |= (uint32_t)(uint8_t)w[2] << 16;
    return from_u32(u);
}
#endif

/* Channel pairs per call of conv_pairs_dots: its accumulators on the stack (4 words a pair). */
#define CONV_CHUNK_PAIRS 8

/* acc[4 j + {0, 1, 2, 3}] = {a . r0, a . r1, b . r0, b . r1} for channel pairs j < pairs (rows r0 = w + 2 j k and
 * r1 = r0 + k; `alone`: one pair whose rows are both w) over `groups` >= 1 full groups of 4 taps of the pair layout
 * xq (pixels a, b). Per group one LDM of both pixels' words, and per row one load split by SXTB16 into even and odd
 * bytes for 4 SMLADs: 15 instructions per 16 MACs (|sum| < 2^31: at most 33025 taps of |w (x + offset)| <= 2^7 *
 * 255); two groups a turn (an odd count enters at the second), ~18 instructions a channel pair around them. In
 * assembly: LDM wants ascending registers (r8-r11), and every register is taken, so the loop's end, the pair count
 * and the accumulators' pointer live in memory operands. */
static void conv_pairs_dots(const int32_t *xq, const int8_t *w, int32_t k, int32_t groups, int32_t pairs, int alone,
                            int32_t *acc)
{
#if defined(__GNUC__)
    register int32_t x0e __asm__("r8"), x0o __asm__("r9"), x1e __asm__("r10"), x1o __asm__("r11");
    int32_t a00, a01, a10, a11, word, even;
    const int32_t *xp;
    const int8_t *wa = w, *wb = alone ? w : w + k;
    const int32_t *const end = xq + 4 * groups;
    const int32_t odd = groups % 2;
    const int32_t step = 2 * k - 4 * groups; /* from a row's last full group to the next pair's row */
#define HYDRA_CONV_PAIR_GROUP                                  \
    "ldm %[xp]!, {%[x0e], %[x0o], %[x1e], %[x1o]}\n\t"         \
    "ldr %[word], [%[wa]], #4\n\t"                             \
    "sxtb16 %[even], %[word]\n\t"                              \
    "sxtb16 %[word], %[word], ror #8\n\t"                      \
    "smlad %[a00], %[x0e], %[even], %[a00]\n\t"                \
    "smlad %[a10], %[x1e], %[even], %[a10]\n\t"                \
    "smlad %[a00], %[x0o], %[word], %[a00]\n\t"                \
    "smlad %[a10], %[x1o], %[word], %[a10]\n\t"                \
    "ldr %[word], [%[wb]], #4\n\t"                             \
    "sxtb16 %[even], %[word]\n\t"                              \
    "sxtb16 %[word], %[word], ror #8\n\t"                      \
    "smlad %[a01], %[x0e], %[even], %[a01]\n\t"                \
    "smlad %[a11], %[x1e], %[even], %[a11]\n\t"                \
    "smlad %[a01], %[x0o], %[word], %[a01]\n\t"                \
    "smlad %[a11], %[x1o], %[word], %[a11]\n\t"
    __asm__("2:\n\t"
            "movs %[a00], #0\n\t"
            "movs %[a01], #0\n\t"
            "movs %[a10], #0\n\t"
            "movs %[a11], #0\n\t"
            "ldr %[xp], %[xq]\n\t"
            "ldr %[even], %[odd]\n\t"
            "cmp %[even], #0\n\t"
            "bne 3f\n\t"
            "1:\n\t" HYDRA_CONV_PAIR_GROUP
            "3:\n\t" HYDRA_CONV_PAIR_GROUP
            "ldr %[even], %[end]\n\t"
            "cmp %[xp], %[even]\n\t"
            "bne 1b\n\t"
            "ldr %[word], %[acc]\n\t"
            "strd %[a00], %[a01], [%[word]], #8\n\t"
            "strd %[a10], %[a11], [%[word]], #8\n\t"
            "str %[word], %[acc]\n\t"
            "ldr %[word], %[step]\n\t"
            "add %[wa], %[wa], %[word]\n\t"
            "add %[wb], %[wb], %[word]\n\t"
            "ldr %[word], %[pairs]\n\t"
            "subs %[word], %[word], #1\n\t"
            "str %[word], %[pairs]\n\t"
            "bne 2b"
            : [xp] "=&r"(xp), [wa] "+r"(wa), [wb] "+r"(wb), [a00] "=&r"(a00), [a01] "=&r"(a01), [a10] "=&r"(a10),
              [a11] "=&r"(a11), [x0e] "=&r"(x0e), [x0o] "=&r"(x0o), [x1e] "=&r"(x1e), [x1o] "=&r"(x1o),
              [word] "=&r"(word), [even] "=&r"(even), [acc] "+m"(acc), [pairs] "+m"(pairs)
            : [xq] "m"(xq), [end] "m"(end), [odd] "m"(odd), [step] "m"(step)
            : "cc", "memory");
#undef HYDRA_CONV_PAIR_GROUP
#else
    for (int32_t j = 0; j < pairs; j++, acc += 4) {
        const int8_t *wa = w + 2 * (ptrdiff_t)j * k, *wb = alone ? wa : wa + k;
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
        for (int32_t i = 0; i < 4 * groups; i += 4) {
            const int32_t va = load_word(wa + i), vb = load_word(wb + i);
            const int32_t ae = __sxtb16(va), ao = hydra_sxtb16_ror8(va), be = __sxtb16(vb), bo = hydra_sxtb16_ror8(vb);
            a00 = __smlad(xq[i + 1], ao, __smlad(xq[i], ae, a00));
            a01 = __smlad(xq[i + 1], bo, __smlad(xq[i], be, a01));
            a10 = __smlad(xq[i + 3], ao, __smlad(xq[i + 2], ae, a10));
            a11 = __smlad(xq[i + 3], bo, __smlad(xq[i + 2], be, a11));
        }
        acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
    }
#endif
}

/* One channel's outputs for pixels a and b (accumulators acc_a, acc_b) where the stage is fast: hydra_output_right_s8
 * without the activation clamp (conv_chunk_outputs clamps the row after), its constants formed once. */
static HYDRA_ALWAYS_INLINE void conv_out_pair(int32_t acc_a, int32_t acc_b, int32_t bias, int32_t multiplier,
                                              int32_t shift, int32_t zo, int8_t *out_a, int8_t *out_b)
{
    int32_t ya = hydra_srdhm_unsaturated(acc_a + bias, multiplier);
    int32_t yb = hydra_srdhm_unsaturated(acc_b + bias, multiplier);
    if (shift < 0) {
        ya = hydra_round_right(ya, -shift);
        yb = hydra_round_right(yb, -shift);
    }
    *out_a = hydra_clamp_s8(ya + zo);
    *out_b = hydra_clamp_s8(yb + zo);
}

/* Outputs first .. first + count - 1 of pixels a (out_a) and b (out_b: NULL, none) from conv_pairs_dots's
 * accumulators (channel first + i: acc[4 (i / 2) + i % 2] for pixel a, 2 words on for b). A pixel alone was
 * summed twice (conv_simd: a again as b), so b's accumulators are a's: where the stage is fast, the pair stage
 * writes them over a's (the same bytes) instead of a second, one-pixel copy of the stage. */
static HYDRA_NOINLINE void conv_chunk_outputs(const conv_outputs *o, const int32_t *acc, int32_t first, int32_t count,
                                              int8_t *out_a, int8_t *out_b)
{
    const int32_t *bias = o->bias != NULL ? o->bias + first : NULL;
    const int32_t *multiplier = o->multiplier + first, *shift = o->shift + first;
    out_a += first;
    if (out_b != NULL)
        out_b += first;
#if defined(HYDRA_TFL_CONV_GENERAL)
    if (o->fast) {
#else
    { /* every output fast: conv_view_fast has checked */
#endif
        if (out_b == NULL)
            out_b = out_a;
        /* hydra_output_right_s8 for both pixels, the channel's constants formed once */
        for (int32_t i = 0; i < count; i += 2, acc += 4) { /* a channel pair's accumulators */
            conv_out_pair(acc[0], acc[2], bias != NULL ? bias[i] : 0, multiplier[i], shift[i], o->output_offset,
                          out_a + i, out_b + i);
            if (i + 1 < count)
                conv_out_pair(acc[1], acc[3], bias != NULL ? bias[i + 1] : 0, multiplier[i + 1], shift[i + 1],
                              o->output_offset, out_a + i + 1, out_b + i + 1);
        }
        if (o->activation_min > -128 || o->activation_max < 127) { /* a fused activation, after the stage */
            hydra_clamp_row_s8(out_a, count, o->activation_min, o->activation_max);
            if (out_b != out_a)
                hydra_clamp_row_s8(out_b, count, o->activation_min, o->activation_max);
        }
        return;
    }
#if defined(HYDRA_TFL_CONV_GENERAL)
    for (int32_t i = 0; i < count; i++) {
        const int32_t *a = acc + 4 * (i >> 1) + (i & 1), b = bias != NULL ? bias[i] : 0;
        out_a[i] = conv_output(o, a[0], b, multiplier[i], shift[i]);
        if (out_b != NULL)
            out_b[i] = conv_output(o, a[2], b, multiplier[i], shift[i]);
    }
#endif
}

/* Output channels [first, end) (their filter rows from w on; `ends_filter`: the last is the filter's last row) of
 * pixels a (out_a) and b (out_b: NULL, none): the dots of CONV_CHUNK_PAIRS channel pairs at a time (an odd last
 * channel alone), then the outputs. Where k % 4 != 0 the window's last group has zeros past k. */
static void conv_pair_channels(const conv_im2col *g, const conv_outputs *o, const int32_t *xq, const int8_t *w,
                               int32_t first, int32_t end, int8_t *out_a, int8_t *out_b, int ends_filter)
{
    const int32_t k = g->k, full = k / 4, rest = k % 4;
    int32_t acc[4 * CONV_CHUNK_PAIRS];
    for (int32_t oc = first; oc < end;) {
        const int32_t left = end - oc;
        const int alone = left == 1;
        const int32_t pairs = alone ? 1 : (left / 2 < CONV_CHUNK_PAIRS ? left / 2 : CONV_CHUNK_PAIRS);
        const int32_t count = 2 * pairs - alone;
        /* a row's last group read whole: the bytes past the row are the next row's, times x + offset = 0 (the
         * window's pad), except after the filter's last row, whose pair takes its last k % 4 bytes one by one */
        const int32_t whole = ends_filter && rest != 0 && oc + count == end ? pairs - 1 : pairs;
        if (whole > 0)
            conv_pairs_dots(xq, w, k, g->groups4, whole, alone, acc);
#if !defined(HYDRA_TFL_NO_CONV_BYTE_WINDOW) /* else n % 4 == 0: k % 4 == 0 */
        if (whole < pairs) {
            int32_t *a = acc + 4 * whole;
            const int8_t *ra = w + 2 * (ptrdiff_t)whole * k, *rb = alone ? ra : ra + k;
            const int32_t *tail = xq + 4 * full;
            if (full > 0)
                conv_pairs_dots(xq, ra, k, full, 1, alone, a);
            else
                a[0] = a[1] = a[2] = a[3] = 0;
            const int32_t va = conv_partial_word(ra + 4 * full, rest), vb = conv_partial_word(rb + 4 * full, rest);
            const int32_t ae = __sxtb16(va), ao = hydra_sxtb16_ror8(va);
            const int32_t be = __sxtb16(vb), bo = hydra_sxtb16_ror8(vb);
            a[0] = __smlad(tail[1], ao, __smlad(tail[0], ae, a[0]));
            a[1] = __smlad(tail[1], bo, __smlad(tail[0], be, a[1]));
            a[2] = __smlad(tail[3], ao, __smlad(tail[2], ae, a[2]));
            a[3] = __smlad(tail[3], bo, __smlad(tail[2], be, a[3]));
        }
#else
        (void)full, (void)rest;
#endif
        conv_chunk_outputs(o, acc, oc, count, out_a, out_b);
        oc += count;
        w += (ptrdiff_t)count * k;
    }
}

/* CONV_2D on the SIMD cores: output pixels in pairs (NHW order, across rows; an odd last one alone), each pair's
 * windows widened once into the scratch (hydra_tfl_conv_2d_get_buffer_size: the pair layout, 16 groups4 bytes,
 * then, where n % 4 != 0, one window as bytes), then every output channel of the group, two at a time. */
static hydra_status conv_simd(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output, int32_t *scratch)
{
    const int32_t in_c = v->input_shape[3], out_c = v->output_shape[3];
    const int32_t pixels = v->output_shape[0] * v->output_shape[1] * v->output_shape[2];
    conv_im2col g;
    g.v = v;
    g.n = v->filter_shape[3];
    g.k = v->filter_shape[1] * v->filter_shape[2] * g.n;
    g.groups4 = (g.k + 3) / 4;
    const uint32_t half = (uint32_t)v->input_offset & UINT32_C(0xFFFF);
    g.off2 = from_u32(half | (half << 16));
    g.pad = (int8_t)-v->input_offset; /* in [-128, 127]: the offset is in [-127, 128] */
    g.contiguous = v->dilation_width_factor == 1 && g.n == in_c;
    g.x_row = (ptrdiff_t)v->dilation_height_factor * v->input_shape[2] * in_c;
    g.x_tap = (ptrdiff_t)v->dilation_width_factor * in_c;
#if defined(HYDRA_TFL_NO_CONV_BYTE_WINDOW)
    if (g.n % 4 != 0)
        return HYDRA_ERR_ARG;
#endif
    conv_outputs o;
    conv_outputs_init(&o, v, bias, g.k);
    int8_t *bytes = (int8_t *)(void *)(scratch + 4 * g.groups4);
    const int32_t per_group = out_c / (in_c / g.n); /* output channels per group */
    for (int32_t first = 0; first < out_c; first += per_group) {
        const int32_t c0 = first / per_group * g.n;
        const int8_t *w = filter + (ptrdiff_t)first * g.k;
        conv_pixel at = {0, 0, 0};
        for (int32_t p = 0; p < pixels; p += 2) {
            const int two = p + 1 < pixels; /* alone: pixel a again as b, its outputs dropped */
            const conv_pixel next = two ? conv_next(v, at) : at;
#if defined(HYDRA_TFL_NO_CONV_BYTE_WINDOW)
            (void)bytes;
            conv_window(&g, input, at, c0, scratch);
            conv_window(&g, input, next, c0, scratch + 2);
#elif defined(HYDRA_TFL_NO_CONV_WORD_WINDOW)
            conv_window_bytes(&g, input, at, c0, bytes, scratch);
            conv_window_bytes(&g, input, next, c0, bytes, scratch + 2);
#else
            if (g.n % 4 == 0) {
                conv_window(&g, input, at, c0, scratch);
                conv_window(&g, input, next, c0, scratch + 2);
            } else {
                conv_window_bytes(&g, input, at, c0, bytes, scratch);
                conv_window_bytes(&g, input, next, c0, bytes, scratch + 2);
            }
#endif
            at = conv_next(v, next);
            int8_t *out_a = output + (ptrdiff_t)p * out_c;
            conv_pair_channels(&g, &o, scratch, w, first, first + per_group, out_a, two ? out_a + out_c : NULL,
                               first + per_group == out_c);
        }
    }
    return HYDRA_OK;
}
#endif
#endif

/* Output row oy (batch b)'s filter rows inside the image: how many (0: none) and, where any, the first one and the
 * input offset of its input row at column 0, channel c (both 0 where none). */
typedef struct {
    int32_t rows, fy_lo;
    size_t x;
} dw_span;

static inline dw_span dw_span_at(const hydra_tfl_conv_view *v, int32_t b, int32_t oy, int32_t c)
{
    const int32_t dh = v->dilation_height_factor, y0 = oy * v->stride_height - v->padding_height;
    int32_t fy_lo, fy_hi;
    tap_range(y0, dh, v->filter_shape[1], v->input_shape[1], &fy_lo, &fy_hi);
    dw_span sp = {0, 0, 0};
    if (fy_hi > fy_lo) {
        sp.rows = fy_hi - fy_lo;
        sp.fy_lo = fy_lo;
        sp.x = hydra_tfl_nhwc(v->input_shape, b, y0 + dh * fy_lo, 0, c);
    }
    return sp;
}

/* What a depthwise walk keeps for a pixel's channels: the output stage, the taps inside the image (`rows` filter
 * rows of `taps` taps from the first one's input and filter bytes; the next tap x_tap / out_c bytes on, the next row
 * x_row / w_row), the input offset (off2: in both int16 halves) and the depth multiplier. */
typedef struct {
    conv_outputs o;
    int32_t rows, taps, out_c, dm, offset, off2;
    ptrdiff_t x_row, x_tap, w_row;
} depthwise_ctx;

#if defined(HYDRA_TFL_SIMD32) && defined(__ARM_FEATURE_DSP)
#define HYDRA_TFL_DW_SIMD 1
/* The taps of a quad a depth-multiplier-1 walk keeps widened: up to 7 x 7 (8 bytes a tap on the stack). */
#define DEPTHWISE_DM1_MAX_TAPS 49
/* The filter words a one-input-channel walk keeps paired per quad: up to 16 filter rows of up to 4 groups of 4 taps
 * (32 bytes a group on the stack). */
#define DEPTHWISE_ROW_MAX_GROUPS 16
#define DEPTHWISE_ROW_MAX_GROUPS_ACROSS 4
#if !defined(HYDRA_TFL_NO_DEPTHWISE_DM1)
#define HYDRA_TFL_DW_DM1 1
#endif
#if !defined(HYDRA_TFL_NO_DEPTHWISE_ROW1)
#define HYDRA_TFL_DW_ROW1 1
#endif
#if !defined(HYDRA_TFL_NO_DEPTHWISE_WALK) && !defined(HYDRA_TFL_NO_DEPTHWISE_QUADS_2)
#define HYDRA_TFL_DW_QUADS_2 1
#endif
#if !defined(HYDRA_TFL_NO_DEPTHWISE_WALK) && !defined(HYDRA_TFL_NO_DEPTHWISE_QUADS_4)
#define HYDRA_TFL_DW_QUADS_4 1
#endif
#endif
#if !defined(HYDRA_TFL_DW_SIMD) || !defined(HYDRA_TFL_NO_DEPTHWISE_WALK)
#define HYDRA_TFL_DW_WALK 1 /* the pixel walk: always without the SIMD paths */
#endif

#if defined(HYDRA_TFL_DW_QUADS_2) || defined(HYDRA_TFL_DW_QUADS_4)
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
#endif

#if defined(HYDRA_TFL_DW_DM1) || defined(HYDRA_TFL_DW_ROW1)


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

#endif

#if defined(HYDRA_TFL_DW_DM1)
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

#if !defined(HYDRA_TFL_NO_DEPTHWISE_DM1_TAPS)
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
#endif

/* Depth multiplier 1, the first `quads` fours of channels over the whole image, a quad at a time: its f_h x f_w
 * taps' filter words widened (and doubled: dw_quad_out) to int16 pairs once, and its output stage formed once, not
 * per pixel; a tap then an input load, two SXTAB16 and four multiply-adds. Per output row the columns whose windows
 * lie inside the image across run in a loop of their own (a 3 x 3 window with its three rows in the image
 * unrolled), the border columns walk their in-image taps. The same integers as tap by tap (an exact sum, in the
 * same int32 accumulators). Nonzero where a window needs the tap loop and the build left it out
 * (HYDRA_TFL_NO_DEPTHWISE_DM1_TAPS: every window 3 x 3 with 2 or 3 rows and, cut by the border, 2 taps). */
static HYDRA_NOINLINE int depthwise_dm1(const hydra_tfl_conv_view *v, const depthwise_ctx *c, const int8_t *input,
                                         const int8_t *filter, int8_t *output, int32_t quads)
{
    const int32_t in_w = v->input_shape[2];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = c->out_c;
    const int32_t dw = v->dilation_width_factor, off2 = c->off2;
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
                const dw_span sp = dw_span_at(v, b, oy, oc);
                const int32_t rows = sp.rows;
                /* the row's first in-image filter row: its input row at column 0, channel oc, and its widened taps */
                const int8_t *x_y = input + sp.x;
                const int32_t *w_y = wide + 2 * sp.fy_lo * f_w;
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
#if defined(HYDRA_TFL_NO_DEPTHWISE_DM1_TAPS)
                            return 1;
#else
                            for (; ox < ox_hi; ox++, out += out_c, x += x_step) {
                                int32_t acc[4] = {s.init[0], s.init[1], s.init[2], s.init[3]};
                                dm1_taps(x, w_y, rows, f_w, f_w, x_tap, x_row, off2, acc);
                                dw_quad_store(&s, &c->o, out, oc, acc);
                            }
#endif
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
#if defined(HYDRA_TFL_NO_DEPTHWISE_DM1_TAPS)
                        return 1;
#else
                        dm1_taps(x_y + (ptrdiff_t)(x0 + dw * fx_lo) * out_c, w_y + 2 * fx_lo, rows, fx_hi - fx_lo,
                                 f_w, x_tap, x_row, off2, acc);
#endif
                    dw_quad_store(&s, &c->o, out, oc, acc);
                }
            }
    }
    return 0;
}
#endif

#if defined(HYDRA_TFL_DW_ROW1)

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
 * Every product is one of TFLM's or 0: the same int32 sum. Nonzero where the filter is wider than one group and
 * the build left those out (HYDRA_TFL_NO_DEPTHWISE_ROW1_GROUPS: every filter at most 4 wide). */
static HYDRA_NOINLINE int depthwise_row1(const hydra_tfl_conv_view *v, const depthwise_ctx *c, const int8_t *input,
                                          const int8_t *filter, int8_t *output)
{
    const int32_t in_w = v->input_shape[2];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = c->out_c;
    const int32_t sw = v->stride_width, pw = v->padding_width, off2 = c->off2;
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
                const dw_span sp = dw_span_at(v, b, oy, 0);
                const int32_t rows = sp.rows;
                const int8_t *x_y = input + sp.x;
                const uint64_t *p_y = pairs + 4 * groups * sp.fy_lo;
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
#if defined(HYDRA_TFL_NO_DEPTHWISE_ROW1_GROUPS)
                                return 1;
#else
                                dw_rows(x_y + x0, p, rows, x_row, groups, n, NULL, off2, acc, 0, 0);
#endif
                        } else {
                            dw_group_read reads[DEPTHWISE_ROW_MAX_GROUPS_ACROSS];
                            for (int32_t g = 0; g < n; g++)
                                dw_group_read_init(&reads[g], x0 + 4 * (g_lo + g), in_w, pad4);
                            if (groups == 1)
                                dw_rows(x_y, p, rows, x_row, 1, 1, reads, off2, acc, 1, 1);
                            else
#if defined(HYDRA_TFL_NO_DEPTHWISE_ROW1_GROUPS)
                                return 1;
#else
                                dw_rows(x_y, p, rows, x_row, groups, n, reads, off2, acc, 0, 1);
#endif
                        }
                    }
                    dw_quad_store(&s, &c->o, out, oc, acc);
                }
            }
    }
    return 0;
}

#endif

/* One function per share, so that each tap loop has the registers to itself; called once per pixel. */
#if defined(HYDRA_TFL_DW_QUADS_2)
static HYDRA_NOINLINE void depthwise_quads_2(const depthwise_ctx *c, const int8_t *x, const int8_t *w,
                                                 int8_t *out, int32_t quads)
{
    depthwise_quads(c, x, w, out, quads, 2);
}
#endif

#if defined(HYDRA_TFL_DW_QUADS_4)
static HYDRA_NOINLINE void depthwise_quads_4(const depthwise_ctx *c, const int8_t *x, const int8_t *w,
                                                 int8_t *out, int32_t quads)
{
    depthwise_quads(c, x, w, out, quads, 4);
}
#endif

typedef void (*depthwise_quads_fn)(const depthwise_ctx *, const int8_t *, const int8_t *, int8_t *, int32_t);

#if defined(HYDRA_TFL_DW_WALK)
/* depthwise_walk's pixel walk: for each output pixel the in-image taps found once, then the first quad_channels
 * channels by `quads` (NULL: none), the others one at a time, each walking the taps with two pointer steps. */
static HYDRA_ALWAYS_INLINE void depthwise_pixels(const hydra_tfl_conv_view *v, depthwise_ctx *c, const int8_t *input,
                                                 const int8_t *filter, int8_t *output, depthwise_quads_fn quads,
                                                 int32_t quad_channels)
{
    const int32_t in_h = v->input_shape[1], in_w = v->input_shape[2];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2];
    const int32_t out_h = v->output_shape[1], out_w = v->output_shape[2], out_c = c->out_c;
    const int32_t dh = v->dilation_height_factor, dw = v->dilation_width_factor;
    const int32_t dm = c->dm, offset = c->offset;
    for (int32_t b = 0; b < v->output_shape[0]; b++)
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * v->stride_height - v->padding_height;
            int32_t fy_lo, fy_hi;
            tap_range(y0, dh, f_h, in_h, &fy_lo, &fy_hi);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * v->stride_width - v->padding_width;
                int32_t fx_lo, fx_hi;
                tap_range(x0, dw, f_w, in_w, &fx_lo, &fx_hi);
                c->rows = fy_hi > fy_lo && fx_hi > fx_lo ? fy_hi - fy_lo : 0;
                c->taps = fx_hi - fx_lo;
                const int8_t *x = c->rows > 0 ? input + hydra_tfl_nhwc(v->input_shape, b, y0 + dh * fy_lo,
                                                                       x0 + dw * fx_lo, 0)
                                              : input;
                const int8_t *w = c->rows > 0 ? filter + ((ptrdiff_t)fy_lo * f_w + fx_lo) * out_c : filter;
                int8_t *out = output + hydra_tfl_nhwc(v->output_shape, b, oy, ox, 0);
                if (quads != NULL && quad_channels > 0)
                    quads(c, x, w, out, quad_channels / 4);
                /* the rest: channels left over by the quads, other depth multipliers, the portable build */
                for (int32_t oc = quad_channels; oc < out_c; oc++) {
                    int32_t acc = 0;
                    const int8_t *xr = x + oc / dm, *wr = w + oc;
                    for (int32_t row = 0; row < c->rows; row++, xr += c->x_row, wr += c->w_row) {
                        const int8_t *xt = xr, *wt = wr;
                        for (int32_t t = 0; t < c->taps; t++, xt += c->x_tap, wt += out_c)
                            acc += *wt * (*xt + offset);
                    }
                    conv_outputs_store(&c->o, out, oc, &acc, 1);
                }
            }
        }
}
#endif

/* DEPTHWISE_CONV_2D: output channel oc reads input channel oc / depth_multiplier and filter column oc; on the SIMD
 * cores four channels at a time where the depth multiplier is 1 (depthwise_dm1), 2 or a multiple of 4 (the quads
 * in the pixel walk; depthwise_row1 for one input channel), else (and for any channels left) the pixel walk.
 * HYDRA_ERR_ARG where the build left out the path the node takes (HYDRA_TFL_NO_*: never for the compiler's nodes). */
static hydra_status depthwise_walk(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                                   const int32_t *bias, int8_t *output)
{
    const int32_t in_w = v->input_shape[2], in_c = v->input_shape[3];
    const int32_t f_h = v->filter_shape[1], f_w = v->filter_shape[2], out_c = v->output_shape[3];
    const int32_t dh = v->dilation_height_factor, dw = v->dilation_width_factor;
    const int32_t dm = out_c / in_c, offset = v->input_offset;
    const uint32_t half = (uint32_t)offset & UINT32_C(0xFFFF);
    depthwise_ctx c;
    conv_outputs_init(&c.o, v, bias, (int64_t)f_h * f_w);
#if !defined(HYDRA_TFL_CONV_GENERAL)
    if (!c.o.fast)
        return HYDRA_ERR_ARG; /* the general output stage, left out of this build (HYDRA_TFL_NO_*) */
#endif
    c.out_c = out_c;
    c.dm = dm;
    c.offset = offset;
    c.off2 = from_u32(half | (half << 16)); /* the offset in both int16 halves */
    c.x_tap = (ptrdiff_t)dw * in_c;
    c.x_row = (ptrdiff_t)dh * in_w * in_c;
    c.w_row = (ptrdiff_t)f_w * out_c;
    /* the output channels the quads take, 4 at a time */
    int32_t quad_channels = 0;
    depthwise_quads_fn quads = NULL;
#if defined(HYDRA_TFL_DW_SIMD)
    if (dm == 1 && f_h * f_w <= DEPTHWISE_DM1_MAX_TAPS) { /* four channels a word, quad by quad over the image */
#if defined(HYDRA_TFL_DW_DM1)
        quad_channels = in_c & ~3;
        if (quad_channels > 0 && depthwise_dm1(v, &c, input, filter, output, quad_channels / 4) != 0)
            return HYDRA_ERR_ARG; /* a window the build's dm1 left out (HYDRA_TFL_NO_DEPTHWISE_DM1_TAPS) */
        if (quad_channels == out_c)
            return HYDRA_OK; /* no channel left for the pixel walk below */
#else
        return HYDRA_ERR_ARG;
#endif
    } else if (in_c == 1 && dm % 4 == 0 && dw == 1 && in_w >= 4 && (f_w + 3) / 4 <= DEPTHWISE_ROW_MAX_GROUPS_ACROSS &&
               f_h * ((f_w + 3) / 4) <= DEPTHWISE_ROW_MAX_GROUPS) { /* a filter row's taps a word at a time */
#if defined(HYDRA_TFL_DW_ROW1)
        return depthwise_row1(v, &c, input, filter, output) != 0 ? HYDRA_ERR_ARG : HYDRA_OK;
#else
        return HYDRA_ERR_ARG;
#endif
    } else if (dm == 2) { /* two input channels' four output channels at a time */
#if defined(HYDRA_TFL_DW_QUADS_2)
        quad_channels = 2 * (in_c & ~1);
        quads = depthwise_quads_2;
#else
        return HYDRA_ERR_ARG;
#endif
    } else if (dm % 4 == 0) { /* an input channel's dm output channels four at a time */
#if defined(HYDRA_TFL_DW_QUADS_4)
        quad_channels = out_c;
        quads = depthwise_quads_4;
#else
        return HYDRA_ERR_ARG;
#endif
    }
#endif
#if defined(HYDRA_TFL_DW_WALK)
    depthwise_pixels(v, &c, input, filter, output, quads, quad_channels);
    return HYDRA_OK;
#else
    (void)input, (void)filter, (void)output, (void)quads, (void)quad_channels;
    return HYDRA_ERR_ARG;
#endif
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
#if !defined(HYDRA_TFL_CONV_GENERAL)
/* Whether every output of v (`products` products each) may take the inline stage (conv_outputs_init's `fast`), the
 * only one this build has: CONV_2D checks it before conv_simd (a check inside costs the walk registers), which then
 * never reaches the general stage; depthwise_walk checks its own conv_outputs. */
static HYDRA_NOINLINE int conv_view_fast(const hydra_tfl_conv_view *v, const int32_t *bias, int64_t products)
{
    conv_outputs o;
    conv_outputs_init(&o, v, bias, products);
    return o.fast;
}
#endif

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
    return depthwise_walk(v, input, filter, bias, output);
}

hydra_status hydra_tfl_conv_walk_s8(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                                    const int32_t *bias, int8_t *output, int32_t *scratch)
{
    if (!conv_view_ok(v))
        return HYDRA_ERR_ARG;
#if defined(HYDRA_TFL_SIMD32)
    if (scratch == NULL)
        return HYDRA_ERR_ARG;
#if !defined(HYDRA_TFL_CONV_GENERAL)
    if (!conv_view_fast(v, bias, (int64_t)v->filter_shape[1] * v->filter_shape[2] * v->filter_shape[3]))
        return HYDRA_ERR_ARG; /* the general output stage, left out of this build (HYDRA_TFL_NO_*) */
#endif
#if defined(HYDRA_TFL_CONV_SIMD)
    return conv_simd(v, input, filter, bias, output, scratch);
#else
    (void)input, (void)filter, (void)bias, (void)output;
    return HYDRA_ERR_ARG; /* both window copies left out (HYDRA_TFL_NO_*) */
#endif
#else
    (void)scratch;
    conv_generic(v, input, filter, bias, output);
    return HYDRA_OK;
#endif
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
    m = hydra_clamp4_s8(m, lo4, hi4);
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
#if defined(HYDRA_TFL_SIMD32) && defined(HYDRA_TFL_NO_POOL_MAX)
    if (!average)
        return HYDRA_ERR_ARG; /* left out of this build (HYDRA_TFL_NO_*) */
#endif
#if defined(HYDRA_TFL_SIMD32) && defined(HYDRA_TFL_NO_POOL_AVERAGE)
    if (average)
        return HYDRA_ERR_ARG;
#endif
#if defined(HYDRA_TFL_SIMD32) && defined(HYDRA_TFL_NO_POOL_CHANNEL)
    if (depth % 4 != 0 || (average && (int64_t)p->filter_height * p->filter_width > 256))
        return HYDRA_ERR_ARG; /* the one-channel loop, left out: every channel goes by fours */
#endif
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
#if !defined(HYDRA_TFL_NO_POOL_MAX)
                    for (; c + 4 <= depth; c += 4)
                        pool_max4(x + c, rows, taps, row, tap, lo4, hi4, out + c);
#else
                    (void)lo4, (void)hi4;
#endif
                } else if (count <= 256) {
#if !defined(HYDRA_TFL_NO_POOL_AVERAGE)
                    for (; c + 4 <= depth; c += 4) {
                        int32_t acc[4];
                        pool_sum4(x + c, rows, taps, row, tap, acc);
                        for (int k = 0; k < 4; k++)
                            out[c + k] = pool_clamp(pool_average(acc[k], count), lo, hi);
                    }
#endif
                }
#endif
#if !defined(HYDRA_TFL_SIMD32) || !defined(HYDRA_TFL_NO_POOL_CHANNEL)
                for (; c < depth; c++)
                    out[c] = pool_clamp(average ? pool_average(pool_sum(x + c, rows, taps, row, tap), count)
                                                : pool_max(x + c, rows, taps, row, tap),
                                        lo, hi);
#else
                (void)c, (void)x, (void)out, (void)tap, (void)row; /* used by no path where no pool is left */
#endif
            }
        }
    return HYDRA_OK;
}
