/*
 * hydra_mean_pool.c - mean over tokens, docs/numerics.md "mean_pool":
 * y[d] = clamp(zy + requant(sum_t (x[t, d] - zx), M, shift)), M encoding s_x / (T s_y).
 */
#include <stddef.h>

#include "hydra_rt.h"

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32) && defined(__GNUC__)
#define HYDRA_MEAN_POOL_M7 1
#include <arm_acle.h>
#include <string.h> /* memcpy (the words), on this target only */

/* z in both halfwords, for SSUB16. */
static inline int32_t halves(int32_t z)
{
    return hydra_s32_from_bits(((uint32_t)z & 0xFFFFu) | ((uint32_t)z << 16));
}

/* acc + the bottom / top halfword of pair, sign-extended (SXTAH). */
static inline int32_t sxtah(int32_t acc, int32_t pair)
{
    int32_t r;
    __asm__("sxtah %0, %1, %2" : "=r"(r) : "r"(acc), "r"(pair));
    return r;
}

static inline int32_t sxtah_top(int32_t acc, int32_t pair)
{
    int32_t r;
    __asm__("sxtah %0, %1, %2, ror #16" : "=r"(r) : "r"(acc), "r"(pair));
    return r;
}
#endif

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
    int32_t t = 0;
#ifdef HYDRA_MEAN_POOL_M7
    /* Two rows at a time, four features a word: SXTB16 of the first row's word, SXTAB16 adds the second's (16-bit
     * lanes x0 + x1 - 2 zx in [-510, 510] after SSUB16), SXTAH adds a lane to its int32 sum: the same integers as
     * adding (x0 - zx) and then (x1 - zx). */
    const int32_t z2 = halves(2 * zx);
    for (; t + 2 <= rows; t += 2) {
        const int8_t *r0 = input + (size_t)t * (size_t)D, *r1 = r0 + D;
        int32_t d = 0;
        for (; d + 4 <= D; d += 4) {
            int32_t w0, w1;
            memcpy(&w0, r0 + d, 4);
            memcpy(&w1, r1 + d, 4);
            const int32_t e = __ssub16(__sxtab16(__sxtb16(w0), w1), z2);                /* features d, d + 2 */
            const int32_t o = __ssub16(hydra_sxtab16_ror8(hydra_sxtb16_ror8(w0), w1), z2); /* d + 1, d + 3 */
            acc[d] = sxtah(acc[d], e);
            acc[d + 1] = sxtah(acc[d + 1], o);
            acc[d + 2] = sxtah_top(acc[d + 2], e);
            acc[d + 3] = sxtah_top(acc[d + 3], o);
        }
        for (; d < D; d++)
            acc[d] += (r0[d] - zx) + (r1[d] - zx);
    }
#endif
    for (; t < rows; t++) {
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
