/*
 * tfl_squared_difference.c - TFLite Micro's int8 SQUARED_DIFFERENCE (squared_difference.cc), up to 6-D.
 *
 * As ADD with left_shift 7: both inputs rescaled by multipliers < 1, their difference (|.| < 2^15)
 * squared in int32, then MBQM by an output multiplier of any size plus the output offset (in int64:
 * hydra_tfl_requantize saturates where TFLM would overflow), clamped to int8.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* The run callback of hydra_tfl_broadcast_binary_s8. */
static void squared_difference_run(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out, int32_t n,
                                   const void *params)
{
    hydra_tfl_rescaled_binary_run(a, a_step, b, b_step, out, n, params, HYDRA_TFL_COMBINE_SQUARED_DIFFERENCE);
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
                                         squared_difference_run, p);
}
