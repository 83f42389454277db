/*
 * tfl_sub.c - TFLite Micro's int8 SUB (reference_ops::SubElementwise), broadcasting up to 6-D.
 *
 * Both inputs: (x + offset) * 2^left_shift, scaled by a multiplier < 1; the difference scaled by the output
 * multiplier, plus the output offset, clamped to the fused activation's range. |(x + offset) 2^20|
 * <= 2^28, so nothing overflows int32.
 */
#include <stddef.h>

#include "hydra_tfl.h"

static int8_t sub_one(int32_t x, int32_t y, const void *params)
{
    const hydra_tfl_sub_params *p = (const hydra_tfl_sub_params *)params;
    const int32_t shifted1 = (p->input1_offset + x) * (INT32_C(1) << p->left_shift);
    const int32_t shifted2 = (p->input2_offset + y) * (INT32_C(1) << p->left_shift);
    const int32_t scaled1 = hydra_requantize(shifted1, p->input1_multiplier, p->input1_shift);
    const int32_t scaled2 = hydra_requantize(shifted2, p->input2_multiplier, p->input2_shift);
    const int32_t raw = hydra_requantize(scaled1 - scaled2, p->output_multiplier, p->output_shift) + p->output_offset;
    const int32_t clamped = raw < p->output_activation_min ? p->output_activation_min
                            : (raw > p->output_activation_max ? p->output_activation_max : raw);
    return (int8_t)clamped;
}

hydra_status hydra_tfl_sub_s8(const hydra_tfl_sub_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    if (p == NULL)
        return HYDRA_ERR_ARG;
    if (p->left_shift < 0 || p->left_shift > 20 || p->input1_offset < -127 || p->input1_offset > 128 ||
        p->input2_offset < -127 || p->input2_offset > 128 || !hydra_zero_point_ok(p->output_offset) ||
        p->output_activation_min < -128 || p->output_activation_max > 127 ||
        p->output_activation_min > p->output_activation_max)
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         sub_one, p);
}
