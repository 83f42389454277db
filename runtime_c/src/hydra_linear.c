/*
 * hydra_linear.c - y[t, n] = clamp(zy + requant(bias[n] + x[t, :] . w[n, :], M[n], shift[n]), lo, hi).
 * docs/numerics.md, "linear". The input zero point is folded into the bias; [lo, hi] is the activation
 * clamp ([-128, 127], or a fused RELU / RELU6 of an imported FULLY_CONNECTED).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* K products of at most 128 * 128 = 2^14 each: K < 2^17 keeps the int32 dot exact. */
#define HYDRA_LINEAR_MAX_K 131071

/* y[n] from its dot product (the per-channel parameters of channel n), clamped to [lo, hi]. */
static HYDRA_ALWAYS_INLINE int8_t output_s8(const hydra_linear_params *p, int32_t n, int32_t dot, int32_t lo,
                                            int32_t hi, int32_t single_rounding)
{
    const int8_t y =
        hydra_linear_output_s8(p->bias[n], dot, p->multiplier[n], p->shift[n], p->output_zero_point, single_rounding);
    return (int8_t)(y < lo ? lo : (y > hi ? hi : y));
}

/* Every row, in one rounding mode: called with a constant single_rounding, so each call is its own loop. */
static HYDRA_ALWAYS_INLINE void linear_rows(const hydra_linear_params *params, const int8_t *input, int8_t *output,
                                            int32_t single_rounding)
{
    const int32_t T = params->rows, K = params->in_features, N = params->out_features;
    const int32_t lo = params->activation_min, hi = params->activation_max;
    for (int32_t t = 0; t < T; t++) {
        const int8_t *x = input + (size_t)t * (size_t)K;
        int8_t *y = output + (size_t)t * (size_t)N;
        int32_t n = 0;
        for (; n + 2 <= N; n += 2) { /* two outputs per pass over x */
            int32_t dots[2];
            const int8_t *w = params->weights + (size_t)n * (size_t)K;
            hydra_dot2_s8(x, w, w + K, K, dots);
            y[n] = output_s8(params, n, dots[0], lo, hi, single_rounding);
            y[n + 1] = output_s8(params, n + 1, dots[1], lo, hi, single_rounding);
        }
        if (n < N)
            y[n] = output_s8(params, n, hydra_dot_s8(x, params->weights + (size_t)n * (size_t)K, K), lo, hi,
                             single_rounding);
    }
}

hydra_status hydra_linear_s8_check(const hydra_linear_params *params)
{
    if (params == NULL || params->weights == NULL || params->bias == NULL || params->multiplier == NULL ||
        params->shift == NULL)
        return HYDRA_ERR_ARG;
    const int32_t K = params->in_features, N = params->out_features;
    if (params->rows <= 0 || K <= 0 || N <= 0 || K > HYDRA_LINEAR_MAX_K)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(params->output_zero_point) || params->activation_min < -128 ||
        params->activation_max > 127 || params->activation_min > params->activation_max)
        return HYDRA_ERR_ARG;
    for (int32_t n = 0; n < N; n++)
        if (params->shift[n] < -31 || params->shift[n] > 30)
            return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

hydra_status hydra_linear_rows_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->rows <= 0)
        return HYDRA_ERR_SHAPE;
    if (params->single_rounding)
        linear_rows(params, input, output, 1);
    else
        linear_rows(params, input, output, 0);
    return HYDRA_OK;
}

hydra_status hydra_linear_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = hydra_linear_s8_check(params);
    return st != HYDRA_OK ? st : hydra_linear_rows_s8(params, input, output);
}
