/*
 * tfl_quantize.c - TFLite Micro's int8 -> int8 QUANTIZE (reference_ops::Requantize<int8_t, int8_t>).
 *
 * output = zp_out + MBQM(x - zp_in, multiplier, shift), clamped (the sum in int64: hydra_tfl_requantize
 * saturates where TFLM's int32 arithmetic would overflow for a multiplier far above 1).
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* The elements after the params' checks, rounding as `single` says: a constant at each of the two calls below,
 * one loop per rounding mode, so that no element tests the params' single_rounding. */
static inline void quantize_loop(const hydra_tfl_quantize_params *p, const int8_t *input, int8_t *output,
                                 int32_t single)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t y = hydra_tfl_requantize(input[i] - p->input_zero_point, p->multiplier, p->shift, single);
        const int64_t out = (int64_t)y + p->output_zero_point;
        output[i] = (int8_t)(out < -128 ? -128 : (out > 127 ? 127 : out));
    }
}

hydra_status hydra_tfl_quantize_s8(const hydra_tfl_quantize_params *p, const int8_t *input, int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (p->size < 0)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->input_zero_point) || !hydra_zero_point_ok(p->output_zero_point))
        return HYDRA_ERR_ARG;
    if (p->single_rounding)
        quantize_loop(p, input, output, 1);
    else
        quantize_loop(p, input, output, 0);
    return HYDRA_OK;
}
