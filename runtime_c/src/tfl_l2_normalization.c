/*
 * tfl_l2_normalization.c - TFLite Micro's int8 L2_NORMALIZATION (reference_integer_ops::L2Normalization).
 *
 * Per row of depth elements: acc = sum (x - zp)^2 in int32; GetInvSqrtQuantizedMultiplierExp(acc) gives
 * 1/sqrt(acc) as multiplier and shift; each output is MBQM(x - zp, multiplier, shift + 7), clamped:
 * scale 1/128, zero point 0 (TFLM adds no output zero point).
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* The rows after the params' checks, rounding as `single` says: a constant at each of the two calls below, one loop
 * per rounding mode, so that no element tests the params' single_rounding. */
static inline void l2_rows(const hydra_tfl_l2_normalization_params *p, const int8_t *input, int8_t *output,
                           int32_t single)
{
    for (int32_t row = 0; row < p->outer_size; row++) {
        const int8_t *x = input + (int64_t)row * p->depth;
        int8_t *y = output + (int64_t)row * p->depth;
        int32_t acc = 0;
        for (int32_t c = 0; c < p->depth; c++) {
            const int32_t v = x[c] - p->input_zero_point;
            acc += v * v;
        }
        int32_t multiplier, shift;
        hydra_tfl_inv_sqrt_multiplier_exp(acc, -1, &multiplier, &shift);
        for (int32_t c = 0; c < p->depth; c++)
            y[c] = hydra_clamp_s8(hydra_tfl_requantize(x[c] - p->input_zero_point, multiplier, shift + 7, single));
    }
}

hydra_status hydra_tfl_l2_normalization_s8(const hydra_tfl_l2_normalization_params *p, const int8_t *input,
                                           int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (p->outer_size < 0 || p->depth <= 0 || p->depth > 33025) /* 33025 * 255^2 < 2^31 */
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->input_zero_point))
        return HYDRA_ERR_ARG;
    if (p->single_rounding)
        l2_rows(p, input, output, 1);
    else
        l2_rows(p, input, output, 0);
    return HYDRA_OK;
}
