/*
 * tfl_fully_connected.c - TFLite Micro's int8 FULLY_CONNECTED (reference_integer_ops::FullyConnected and
 * FullyConnectedPerChannel): an int32 dot product of offset inputs and weights, plus the bias, rescaled by
 * MultiplyByQuantizedMultiplier, offset and clamped to the fused activation's range.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* accum_depth products of at most 255 * 255 each must stay inside int32 (TFLM would overflow). */
#define TFL_FC_MAX_DEPTH 33025

hydra_status hydra_tfl_fully_connected_s8(const hydra_tfl_fully_connected_params *p, const int8_t *input,
                                          const int8_t *filter, const int32_t *bias, int8_t *output)
{
    if (p == NULL || input == NULL || filter == NULL || output == NULL || p->output_multiplier == NULL ||
        p->output_shift == NULL)
        return HYDRA_ERR_ARG;
    const int32_t batches = p->batches, depth = p->accum_depth, n_out = p->output_depth;
    if (batches <= 0 || depth <= 0 || n_out <= 0 || depth > TFL_FC_MAX_DEPTH)
        return HYDRA_ERR_SHAPE;
    if (p->input_offset < -127 || p->input_offset > 128 || p->filter_offset < -127 || p->filter_offset > 128 ||
        p->activation_min < -128 || p->activation_max > 127 || p->activation_min > p->activation_max ||
        p->output_offset < -128 || p->output_offset > 127)
        return HYDRA_ERR_ARG;
    const int32_t n_mult = p->per_channel ? n_out : 1;
    for (int32_t c = 0; c < n_mult; c++)
        if (p->output_shift[c] < -31 || p->output_shift[c] > 30 || p->output_multiplier[c] < 0)
            return HYDRA_ERR_ARG;

    for (int32_t b = 0; b < batches; b++) {
        const int8_t *x = input + (size_t)b * (size_t)depth;
        for (int32_t o = 0; o < n_out; o++) {
            const int8_t *w = filter + (size_t)o * (size_t)depth;
            int32_t acc = 0;
            for (int32_t d = 0; d < depth; d++)
                acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)x[d] + p->input_offset);
            /* A bias near INT32_MAX could overflow here in TFLM; saturate instead of wrapping. */
            if (bias != NULL)
                acc = hydra_saturate_s32((int64_t)acc + bias[o]);
            const int32_t c = p->per_channel ? o : 0;
            const int32_t y =
                hydra_tfl_requantize(acc, p->output_multiplier[c], p->output_shift[c], p->single_rounding);
            output[(size_t)b * (size_t)n_out + (size_t)o] =
                hydra_tfl_output_s8(y, p->output_offset, p->activation_min, p->activation_max);
        }
    }
    return HYDRA_OK;
}
