/*
 * hydra_add.c - TFLite's int8 add, docs/numerics.md "add": both operands are
 * brought to a common scale (times 2^left_shift for headroom), summed, and
 * requantised to the output. Works in place (output == a or output == b).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* 255 * 2^23 < 2^31: the widest left shift that keeps (x - z) * 2^left_shift in int32 */
#define HYDRA_ADD_MAX_LEFT_SHIFT 23

static int shift_ok(int32_t s)
{
    return s >= -31 && s <= 30;
}

/* Every element, in one rounding mode and one requantisation path (constant single_rounding, right_only and
 * a_halved: each call is its own loop). right_only: hydra_requantize_right, which add_right_only allows. a_halved:
 * a's rescaling is requant(d 2^L, 2^30, 0) = floor((d 2^L + 1) / 2) = d 2^(L-1) exactly (L >= 1), in either
 * rounding: the multiplier TFLite's formula gives the operand of the larger scale. */
static HYDRA_ALWAYS_INLINE void add_elements(const hydra_add_params *pr, const int8_t *a, const int8_t *b,
                                             int8_t *output, int32_t single_rounding, int32_t right_only,
                                             int32_t a_halved)
{
    /* Locals, not pr->...: a store through int8_t * may alias the params, which would make the
     * compiler reload them and redo the (loop-invariant) shift decoding for every element. */
    const int32_t headroom = (int32_t)1 << pr->left_shift;
    const int32_t za = pr->a_zero_point, ma = pr->a_multiplier, sa_shift = pr->a_shift;
    const int32_t zb = pr->b_zero_point, mb = pr->b_multiplier, sb_shift = pr->b_shift;
    const int32_t zy = pr->output_zero_point, my = pr->output_multiplier, sy_shift = pr->output_shift;
    const int32_t size = pr->size;
    for (int32_t i = 0; i < size; i++) {
        if (right_only) {
            const int32_t sa = a_halved ? (a[i] - za) * (headroom >> 1)
                                        : hydra_requantize_right((a[i] - za) * headroom, ma, sa_shift, single_rounding);
            const int32_t sb = hydra_requantize_right((b[i] - zb) * headroom, mb, sb_shift, single_rounding);
            output[i] = hydra_clamp_s8(hydra_requantize_right(sa + sb, my, sy_shift, single_rounding) + zy);
            continue;
        }
        const int32_t sa = hydra_requantize((a[i] - za) * headroom, ma, sa_shift, single_rounding);
        const int32_t sb = hydra_requantize((b[i] - zb) * headroom, mb, sb_shift, single_rounding);
        /* |sa + sb| < 2^29 for the compiler's multipliers; saturate (never wrap) for any other */
        const int32_t sum = hydra_saturate_s32((int64_t)sa + sb);
        output[i] = hydra_add_zero_point_s8(hydra_requantize(sum, my, sy_shift, single_rounding), zy);
    }
}

/* The halved double-rounding loop below: TFLite's left shift (its constant makes the operands' scaling part of an
 * add), the output's zero point in the output's rounding constant (y = SRDHM(v, My) with |v| < 2^30 has |y| <= 2^30,
 * so zy 2^ry + 2^(ry-1) + y - [y < 0] stays inside int32 while ry <= 23: 127 2^23 + 2^22 + 2^30 < 2^31 and
 * -128 2^23 - 2^30 - 1 >= -2^31), and a's zero point in b's rounding constant while rb <= 4 (below). */
#define HYDRA_ADD_LEFT_SHIFT 20
#define HYDRA_ADD_FOLDED_MAX_RIGHT 23
#define HYDRA_ADD_FOLDED_MAX_B_RIGHT 4

/* add_elements for double rounding, right_only, a_halved and left shift 20, with every per-element constant
 * hoisted (the same integers):
 *   2 sa = (a - za) 2^20                         = a 2^20 + ka                    (ka = -za 2^20)
 *   sb   = RDBPOT(SRDHM((b - zb) 2^20, Mb), rb)  : SRDHM(x, M) for |x| < 2^30 is mul_high_round(2 x, M)
 *          with 2 x = b 2^21 + kb                 (kb = -zb 2^21; |2 x| <= 255 2^21 < 2^29), yb below
 *   y    = SRDHM(sa + sb, My) = mul_high_round(2 sa + 2 sb, My)       (|sa + sb| < 2^29 + 2^29 = 2^30)
 *   out  = clamp(RDBPOT(y, ry) + zy)
 * RDBPOT(v, r) for r >= 1 is floor((v + 2^(r-1) - [v < 0]) / 2^r) (hydra_round_right), and an integer c 2^r inside
 * that floor is c outside it: zy rides in the output's rounding constant, and where b rounds with rb <= 4,
 * ka / 2 = -za 2^19 in b's (sb + ka / 2 = floor((yb + 2^(rb-1) - za 2^(19+rb) - [yb < 0]) / 2^rb); |yb| < 2^28, so
 * |yb| + 2^3 + 2^7 2^23 < 2^31), and 2 (sb + ka / 2) = 2 sb + ka. b_rounds: 0 (rb == 0), 1 (rb in [1, 4], ka
 * folded) or 2 (rb in [5, 31]). */
static HYDRA_ALWAYS_INLINE void add_halved_double_loop(const hydra_add_params *pr, const int8_t *a, const int8_t *b,
                                                       int8_t *output, int32_t b_rounds)
{
    const int32_t ka = -pr->a_zero_point * (INT32_C(1) << HYDRA_ADD_LEFT_SHIFT);
    const int32_t kb = -pr->b_zero_point * (INT32_C(1) << (HYDRA_ADD_LEFT_SHIFT + 1));
    const int32_t mb = pr->b_multiplier, rb = -pr->b_shift;
    const int32_t my = pr->output_multiplier, ry = -pr->output_shift; /* ry in [1, 23] */
    const int32_t round_b = b_rounds == 0 ? 0
                            : b_rounds == 1 ? (INT32_C(1) << (rb - 1)) + (ka / 2) * (INT32_C(1) << rb)
                                            : (INT32_C(1) << (rb - 1));
    const int32_t a_offset = b_rounds == 1 ? 0 : ka; /* what is left of a's zero point */
    const int32_t round_y = (INT32_C(1) << (ry - 1)) + pr->output_zero_point * (INT32_C(1) << ry);
    const int32_t size = pr->size;
    for (int32_t i = 0; i < size; i++) {
        const int32_t yb = hydra_mul_high_round(b[i] * (INT32_C(1) << (HYDRA_ADD_LEFT_SHIFT + 1)) + kb, mb);
        const int32_t sb = b_rounds ? hydra_floor_div_pow2_s32(yb + round_b - (yb < 0 ? 1 : 0), rb) : yb;
        const int32_t y = hydra_mul_high_round(a[i] * (INT32_C(1) << HYDRA_ADD_LEFT_SHIFT) + a_offset + 2 * sb, my);
        output[i] = hydra_clamp_s8(hydra_floor_div_pow2_s32(y + round_y - (y < 0 ? 1 : 0), ry));
    }
}

/* One copy per b_rounds: no branch in the loop, which has the registers to itself. */
static HYDRA_NOINLINE void add_halved_double(const hydra_add_params *pr, const int8_t *a, const int8_t *b,
                                             int8_t *output)
{
    if (pr->b_shift == 0)
        add_halved_double_loop(pr, a, b, output, 0);
    else if (pr->b_shift >= -HYDRA_ADD_FOLDED_MAX_B_RIGHT)
        add_halved_double_loop(pr, a, b, output, 1);
    else
        add_halved_double_loop(pr, a, b, output, 2);
}

/* add_elements with a_halved where a or b (sa + sb is symmetric: swap them) meets it. */
static HYDRA_ALWAYS_INLINE void add_right_only_elements(const hydra_add_params *pr, const int8_t *a, const int8_t *b,
                                                        int8_t *output, int32_t single_rounding)
{
    const int32_t half = INT32_C(1) << 30;
    const int a_halved = pr->left_shift >= 1 && pr->a_multiplier == half && pr->a_shift == 0;
    const int b_halved = !a_halved && pr->left_shift >= 1 && pr->b_multiplier == half && pr->b_shift == 0;
    if (!a_halved && !b_halved) {
        add_elements(pr, a, b, output, single_rounding, 1, 0);
        return;
    }
    hydra_add_params swapped;
    if (b_halved) {
        swapped = *pr;
        swapped.a_zero_point = pr->b_zero_point;
        swapped.a_multiplier = pr->b_multiplier;
        swapped.a_shift = pr->b_shift;
        swapped.b_zero_point = pr->a_zero_point;
        swapped.b_multiplier = pr->a_multiplier;
        swapped.b_shift = pr->a_shift;
        const int8_t *t = a;
        a = b;
        b = t;
        pr = &swapped;
    }
    if (!single_rounding && pr->left_shift == HYDRA_ADD_LEFT_SHIFT && pr->output_shift < 0 &&
        pr->output_shift >= -HYDRA_ADD_FOLDED_MAX_RIGHT)
        add_halved_double(pr, a, b, output);
    else
        add_elements(pr, a, b, output, single_rounding, 1, 1);
}

/* Whether hydra_requantize_right serves all three requantisations: |x - z| 2^left_shift <= 255 * 2^21 < 2^29,
 * each rescaled operand no larger, so their sum stays below 2^30; every multiplier >= 0 with a shift <= 0. */
static int add_right_only(const hydra_add_params *pr)
{
    return pr->left_shift <= 21 && pr->a_multiplier >= 0 && pr->b_multiplier >= 0 && pr->output_multiplier >= 0 &&
           pr->a_shift <= 0 && pr->b_shift <= 0 && pr->output_shift <= 0;
}

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
#define HYDRA_ADD_NEON 1
/* The whole add 16 elements a turn in NEON lanes (aarch64), the same integers as add_elements: (x - z) 2^left_shift
 * in int32 lanes (|x - z| 2^23 < 2^31), each operand by hydra_requantize_x4 (the NEON form of hydra_requantize, which
 * tests/test_linear_neon.py holds to the scalar one), their sum saturated (SQADD, as hydra_saturate_s32), the output
 * requantised and hydra_output_zero_point_x16 (hydra_add_zero_point_s8's value). right_only skips the left shifts,
 * which are all 0 then. Returns the elements done (a multiple of 16); the rest takes the scalar loop. */
static HYDRA_ALWAYS_INLINE int32_t add_neon(const hydra_add_params *pr, const int8_t *a, const int8_t *b,
                                            int8_t *output, int32_t single_rounding, int32_t right_only)
{
    const int32x4_t lift = vdupq_n_s32(pr->left_shift);
    const int16x8_t za = vdupq_n_s16((int16_t)pr->a_zero_point), zb = vdupq_n_s16((int16_t)pr->b_zero_point);
    const int32x4_t ma = vdupq_n_s32(pr->a_multiplier), sa = vdupq_n_s32(pr->a_shift);
    const int32x4_t mb = vdupq_n_s32(pr->b_multiplier), sb = vdupq_n_s32(pr->b_shift);
    const int32x4_t my = vdupq_n_s32(pr->output_multiplier), sy = vdupq_n_s32(pr->output_shift);
    const hydra_channel_outputs o = {NULL, NULL, NULL, pr->output_zero_point, -128, 127};
    const int32_t size = pr->size;
    int32_t i = 0;
    for (; i + 16 <= size; i += 16) {
        const int8x16_t va = vld1q_s8(a + i), vb = vld1q_s8(b + i); /* both read before output is written */
        const int16x8_t a0 = vsubq_s16(vmovl_s8(vget_low_s8(va)), za), a1 = vsubq_s16(vmovl_high_s8(va), za);
        const int16x8_t b0 = vsubq_s16(vmovl_s8(vget_low_s8(vb)), zb), b1 = vsubq_s16(vmovl_high_s8(vb), zb);
        const int32x4_t xa[4] = {vmovl_s16(vget_low_s16(a0)), vmovl_high_s16(a0), vmovl_s16(vget_low_s16(a1)),
                                 vmovl_high_s16(a1)};
        const int32x4_t xb[4] = {vmovl_s16(vget_low_s16(b0)), vmovl_high_s16(b0), vmovl_s16(vget_low_s16(b1)),
                                 vmovl_high_s16(b1)};
        int32x4_t r[4];
        for (int j = 0; j < 4; j++) {
            const int32x4_t ya = hydra_requantize_x4(vshlq_s32(xa[j], lift), ma, sa, single_rounding, right_only);
            const int32x4_t yb = hydra_requantize_x4(vshlq_s32(xb[j], lift), mb, sb, single_rounding, right_only);
            r[j] = hydra_requantize_x4(vqaddq_s32(ya, yb), my, sy, single_rounding, right_only);
        }
        vst1q_s8(output + i, hydra_output_zero_point_x16(r[0], r[1], r[2], r[3], &o));
    }
    return i;
}
#endif

hydra_status hydra_add_s8(const hydra_add_params *params, const int8_t *a, const int8_t *b, int8_t *output)
{
    if (params == NULL || a == NULL || b == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->size <= 0)
        return HYDRA_ERR_SHAPE;
    const hydra_add_params *pr = params;
    if (pr->left_shift < 0 || pr->left_shift > HYDRA_ADD_MAX_LEFT_SHIFT || !hydra_zero_point_ok(pr->a_zero_point) ||
        !hydra_zero_point_ok(pr->b_zero_point) || !hydra_zero_point_ok(pr->output_zero_point) || !shift_ok(pr->a_shift) ||
        !shift_ok(pr->b_shift) || !shift_ok(pr->output_shift))
        return HYDRA_ERR_ARG;

    const int right_only = add_right_only(pr);
#ifdef HYDRA_ADD_NEON
    const int32_t done = pr->single_rounding
                             ? (right_only ? add_neon(pr, a, b, output, 1, 1) : add_neon(pr, a, b, output, 1, 0))
                             : (right_only ? add_neon(pr, a, b, output, 0, 1) : add_neon(pr, a, b, output, 0, 0));
    if (done == pr->size)
        return HYDRA_OK;
    hydra_add_params rest = *pr; /* the last size % 16 elements by the scalar loops */
    rest.size = pr->size - done;
    pr = &rest;
    a += done;
    b += done;
    output += done;
#endif
    if (pr->single_rounding)
        right_only ? add_right_only_elements(pr, a, b, output, 1) : add_elements(pr, a, b, output, 1, 0, 0);
    else
        right_only ? add_right_only_elements(pr, a, b, output, 0) : add_elements(pr, a, b, output, 0, 0, 0);
    return HYDRA_OK;
}
