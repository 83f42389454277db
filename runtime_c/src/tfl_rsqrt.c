/*
 * tfl_rsqrt.c - TFLite Micro's int8 RSQRT (elementwise.cc RsqrtEvalQuantized).
 *
 * value = x - zp; 0 gives 127; otherwise 1/sqrt(value) as GetInvSqrtQuantizedMultiplierExp's multiplier
 * and shift, applied to 1 with 20 extra bits, then the output multiplier with those 20 bits removed.
 * TFLM fails the op on a value below zero: so does this kernel (HYDRA_ERR_ARG).
 */
#include <stddef.h>

#include "hydra_tfl.h"

enum { K_SHIFT = 20 };

/* The elements after the params' checks, rounding as `single` says: a constant at each of the two calls below,
 * one loop per rounding mode, so that no element tests the params' single_rounding. */
static inline hydra_status rsqrt_loop(const hydra_tfl_rsqrt_params *p, const int8_t *input, int8_t *output,
                                      int32_t single)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t value = input[i] - p->input_zero_point;
        if (value < 0)
            return HYDRA_ERR_ARG;
        if (value == 0) {
            output[i] = 127;
            continue;
        }
        int32_t inv_multiplier, inv_shift;
        hydra_tfl_inv_sqrt_multiplier_exp(value, -1, &inv_multiplier, &inv_shift);
        const int32_t data = hydra_tfl_requantize(1, inv_multiplier, inv_shift + K_SHIFT, single);
        const int32_t y = hydra_tfl_requantize(data, p->multiplier, p->shift - K_SHIFT, single);
        const int64_t out = (int64_t)y + p->output_zero_point;
        output[i] = (int8_t)(out < -128 ? -128 : (out > 127 ? 127 : out));
    }
    return HYDRA_OK;
}

hydra_status hydra_tfl_rsqrt_s8(const hydra_tfl_rsqrt_params *p, const int8_t *input, int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (p->size < 0)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->input_zero_point) || !hydra_zero_point_ok(p->output_zero_point) ||
        p->shift > K_SHIFT || p->shift < K_SHIFT - 31)
        return HYDRA_ERR_ARG;
    return p->single_rounding ? rsqrt_loop(p, input, output, 1) : rsqrt_loop(p, input, output, 0);
}
