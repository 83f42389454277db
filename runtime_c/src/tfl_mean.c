/*
 * tfl_mean.c - TFLite Micro's int8 MEAN (its multiplier already holds 1 / num_elements, folded as TFLM folds it): reference_ops::QuantizedMeanOrSum. Per output element the
 * int32 sum of the input over the reduced dimensions (wrapping like TFLM's int32 sum), minus
 * input_zero_point * num_elements, MultiplyByQuantizedMultiplier, plus the output zero point, clamped.
 * Each output's sum is formed directly (no int32 scratch array): the same integers.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_mean_s8(const hydra_tfl_mean_params *p, const int8_t *input, const void *axis,
                               int8_t *output)
{
    (void)axis; /* folded into reduce_shape */
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (p->input_zero_point < -128 || p->input_zero_point > 127 || p->output_zero_point < -128 ||
        p->output_zero_point > 127 || p->output_shift < -31 || p->output_shift > 30 || p->output_multiplier < 0)
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
        /* TFLM's (int32)(sum - zp * num_elements) in wrapping int32 arithmetic: reduce modulo 2^32. */
        const uint32_t u = (uint32_t)(uint64_t)(sum - (int64_t)p->input_zero_point * count);
        const int32_t shifted = u <= (uint32_t)INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
        int32_t y = hydra_requantize(shifted, p->output_multiplier, p->output_shift);
        y = hydra_saturate_s32((int64_t)y + p->output_zero_point);
        output[o] = (int8_t)(y < -128 ? -128 : (y > 127 ? 127 : y));
        for (int d = HYDRA_TFL_MAX_DIMS - 1; d >= 0; d--) {
            if (++o_idx[d] < out_shape[d])
                break;
            o_idx[d] = 0;
        }
    }
    return HYDRA_OK;
}
