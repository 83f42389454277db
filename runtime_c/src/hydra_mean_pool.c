/*
 * hydra_mean_pool.c - mean over tokens, docs/numerics.md "mean_pool":
 * y[d] = clamp(zy + requant(sum_t (x[t, d] - zx), M, shift)), M encoding s_x / (T s_y).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* |x - zx| <= 255: at most (2^31 - 1) / 255 tokens keep the int32 sum exact. */
#define HYDRA_MEAN_POOL_MAX_TOKENS (INT32_MAX / 255)

static hydra_status check_params(const hydra_mean_pool_params *params)
{
    const int32_t T = params->tokens, D = params->dim;
    if (T <= 0 || D <= 0 || T > HYDRA_MEAN_POOL_MAX_TOKENS)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(params->input_zero_point) || !hydra_zero_point_ok(params->output_zero_point) ||
        params->shift < -31 || params->shift > 30)
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

/* The finish step of one feature from its sum over the tokens, sum_t (x[t, d] - zx): the one requantisation of
 * both the whole kernel (one sum at a time, no int32 row of sums) and hydra_mean_pool_finish_s8. */
static int8_t finish_one(const hydra_mean_pool_params *params, int32_t sum)
{
    const int32_t y = hydra_requantize(sum, params->multiplier, params->shift, params->single_rounding);
    return hydra_add_zero_point_s8(y, params->output_zero_point);
}

hydra_status hydra_mean_pool_s8(const hydra_mean_pool_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    const int32_t T = params->tokens, D = params->dim, zx = params->input_zero_point;
    for (int32_t d = 0; d < D; d++) {
        int32_t acc = 0;
        for (int32_t t = 0; t < T; t++)
            acc += input[(size_t)t * (size_t)D + (size_t)d] - zx;
        output[d] = finish_one(params, acc);
    }
    return HYDRA_OK;
}

void hydra_mean_pool_begin_s8(const hydra_mean_pool_params *params, int32_t *acc)
{
    if (params == NULL || acc == NULL)
        return;
    for (int32_t d = 0; d < params->dim; d++)
        acc[d] = 0;
}

hydra_status hydra_mean_pool_accumulate_s8(const hydra_mean_pool_params *params, const int8_t *input, int32_t rows,
                                           int32_t *acc)
{
    if (params == NULL || input == NULL || acc == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    if (rows <= 0 || rows > params->tokens)
        return HYDRA_ERR_SHAPE;
    const int32_t D = params->dim, zx = params->input_zero_point;
    /* The caller's rows add up to tokens: the sums stay within the int32 bound of the whole kernel. */
    for (int32_t t = 0; t < rows; t++) {
        const int8_t *row = input + (size_t)t * (size_t)D;
        for (int32_t d = 0; d < D; d++)
            acc[d] += row[d] - zx;
    }
    return HYDRA_OK;
}

hydra_status hydra_mean_pool_finish_s8(const hydra_mean_pool_params *params, const int32_t *acc, int8_t *output)
{
    if (params == NULL || acc == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    for (int32_t d = 0; d < params->dim; d++)
        output[d] = finish_one(params, acc[d]);
    return HYDRA_OK;
}
