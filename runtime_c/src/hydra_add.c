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

/* add_elements with a_halved where a or b (sa + sb is symmetric: swap them) meets it. */
static HYDRA_ALWAYS_INLINE void add_right_only_elements(const hydra_add_params *pr, const int8_t *a, const int8_t *b,
                                                        int8_t *output, int32_t single_rounding)
{
    const int32_t half = INT32_C(1) << 30;
    if (pr->left_shift >= 1 && pr->a_multiplier == half && pr->a_shift == 0) {
        add_elements(pr, a, b, output, single_rounding, 1, 1);
    } else if (pr->left_shift >= 1 && pr->b_multiplier == half && pr->b_shift == 0) {
        hydra_add_params swapped = *pr;
        swapped.a_zero_point = pr->b_zero_point;
        swapped.a_multiplier = pr->b_multiplier;
        swapped.a_shift = pr->b_shift;
        swapped.b_zero_point = pr->a_zero_point;
        swapped.b_multiplier = pr->a_multiplier;
        swapped.b_shift = pr->a_shift;
        add_elements(&swapped, b, a, output, single_rounding, 1, 1);
    } else {
        add_elements(pr, a, b, output, single_rounding, 1, 0);
    }
}

/* Whether hydra_requantize_right serves all three requantisations: |x - z| 2^left_shift <= 255 * 2^21 < 2^29,
 * each rescaled operand no larger, so their sum stays below 2^30; every multiplier >= 0 with a shift <= 0. */
static int add_right_only(const hydra_add_params *pr)
{
    return pr->left_shift <= 21 && pr->a_multiplier >= 0 && pr->b_multiplier >= 0 && pr->output_multiplier >= 0 &&
           pr->a_shift <= 0 && pr->b_shift <= 0 && pr->output_shift <= 0;
}

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
    if (pr->single_rounding)
        right_only ? add_right_only_elements(pr, a, b, output, 1) : add_elements(pr, a, b, output, 1, 0, 0);
    else
        right_only ? add_right_only_elements(pr, a, b, output, 0) : add_elements(pr, a, b, output, 0, 0, 0);
    return HYDRA_OK;
}
