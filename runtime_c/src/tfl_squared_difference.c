/*
 * tfl_squared_difference.c - TFLite Micro's int8 SQUARED_DIFFERENCE (squared_difference.cc), up to 6-D.
 *
 * As ADD with left_shift 7: both inputs rescaled by multipliers < 1, their difference (|.| < 2^15)
 * squared in int32, then MBQM by an output multiplier of any size plus the output offset (in int64:
 * hydra_tfl_requantize saturates where TFLM would overflow), clamped to int8.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* One run (hydra_tfl_broadcast_binary_s8), rounding as `single` says: a constant in each of the two callbacks
 * below, one per rounding mode, so that no element tests the params' single_rounding. An operand that stays
 * along the run (step 0) is rescaled once. */
static HYDRA_ALWAYS_INLINE void squared_difference_run(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                                          int8_t *out, int32_t n, const hydra_tfl_squared_difference_params *p, int32_t single)
{
    int32_t scaled1 = a_step == 0 ? hydra_tfl_rescale_input(p, 1, *a, single, 0) : 0;
    int32_t scaled2 = b_step == 0 ? hydra_tfl_rescale_input(p, 2, *b, single, 0) : 0;
    for (int32_t i = 0; i < n; i++, a += a_step, b += b_step) {
        if (a_step != 0)
            scaled1 = hydra_tfl_rescale_input(p, 1, *a, single, 0);
        if (b_step != 0)
            scaled2 = hydra_tfl_rescale_input(p, 2, *b, single, 0);
        const int32_t diff = scaled1 - scaled2;
        const int32_t out_value = hydra_tfl_requantize(diff * diff, p->output_multiplier, p->output_shift, single);
        out[i] = hydra_tfl_output_s8(out_value, p->output_offset, p->output_activation_min, p->output_activation_max);
    }
}

static void squared_difference_double(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                          int32_t n, const void *params)
{
    squared_difference_run(a, a_step, b, b_step, out, n, (const hydra_tfl_squared_difference_params *)params, 0);
}

static void squared_difference_single(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                          int32_t n, const void *params)
{
    squared_difference_run(a, a_step, b, b_step, out, n, (const hydra_tfl_squared_difference_params *)params, 1);
}

hydra_status hydra_tfl_squared_difference_s8(const hydra_tfl_squared_difference_params *p, const int8_t *input1,
                                             const int8_t *input2, int8_t *output)
{
    if (p == NULL)
        return HYDRA_ERR_ARG;
    /* left_shift <= 7 keeps |diff| < 2^15, so diff * diff fits int32 */
    if (!hydra_tfl_rescaled_binary_ok(p, 7) || p->input1_shift > 0 || p->input2_shift > 0)
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         p->single_rounding ? squared_difference_single : squared_difference_double, p);
}
