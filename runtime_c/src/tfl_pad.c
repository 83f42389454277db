/*
 * tfl_pad.c - TFLite Micro's int8 PAD (reference_ops::PadImpl): the input placed at pad_before in each of
 * the HYDRA_TFL_MAX_DIMS dimensions of the output, pad_value (the output zero point) everywhere else.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_pad_s8(const hydra_tfl_pad_params *p, const int8_t *input, const void *paddings,
                              int8_t *output)
{
    (void)paddings; /* folded into the params */
    if (p == NULL || input == NULL || output == NULL || p->pad_value < -128 || p->pad_value > 127)
        return HYDRA_ERR_ARG;
    size_t total = 1;
    for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++) {
        if (p->input_shape[d] <= 0 || p->pad_before[d] < 0 ||
            (int64_t)p->pad_before[d] + p->input_shape[d] > p->output_shape[d])
            return HYDRA_ERR_SHAPE;
        total *= (size_t)p->output_shape[d];
    }
    int32_t idx[HYDRA_TFL_MAX_DIMS] = {0};
    size_t in_pos = 0;
    for (size_t o = 0; o < total; o++) {
        int inside = 1;
        for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++)
            if (idx[d] < p->pad_before[d] || idx[d] >= p->pad_before[d] + p->input_shape[d])
                inside = 0;
        /* inside positions come in the input's own row-major order */
        output[o] = inside ? input[in_pos++] : (int8_t)p->pad_value;
        for (int d = HYDRA_TFL_MAX_DIMS - 1; d >= 0; d--) {
            if (++idx[d] < p->output_shape[d])
                break;
            idx[d] = 0;
        }
    }
    return HYDRA_OK;
}
