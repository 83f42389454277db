/*
 * hydra_mean_pool.c - mean over tokens, docs/numerics.md "mean_pool":
 * y[d] = clamp(zy + requant(sum_t (x[t, d] - zx), M, shift)), M encoding s_x / (T s_y).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* |x - zx| <= 255: at most (2^31 - 1) / 255 tokens keep the int32 sum exact. */
#define HYDRA_MEAN_POOL_MAX_TOKENS (INT32_MAX / 255)

hydra_status hydra_mean_pool_s8(const hydra_mean_pool_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const int32_t T = params->tokens, D = params->dim;
    const int32_t zx = params->input_zero_point, zy = params->output_zero_point;
    if (T <= 0 || D <= 0 || T > HYDRA_MEAN_POOL_MAX_TOKENS)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(zx) || !hydra_zero_point_ok(zy) || params->shift < -31 || params->shift > 30)
        return HYDRA_ERR_ARG;

    for (int32_t d = 0; d < D; d++) {
        int32_t acc = 0;
        for (int32_t t = 0; t < T; t++)
            acc += input[(size_t)t * (size_t)D + (size_t)d] - zx;
        output[d] = hydra_add_zero_point_s8(hydra_requantize(acc, params->multiplier, params->shift, params->single_rounding), zy);
    }
    return HYDRA_OK;
}
