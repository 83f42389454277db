/*
 * hydra_linear.c - y[t, n] = clamp(zy + requant(bias[n] + x[t, :] . w[n, :], M[n], shift[n]), lo, hi).
 * docs/numerics.md, "linear". The input zero point is folded into the bias; [lo, hi] is the activation
 * clamp ([-128, 127], or a fused RELU / RELU6 of an imported FULLY_CONNECTED).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* K products of at most 128 * 128 = 2^14 each: K < 2^17 keeps the int32 dot exact. */
#define HYDRA_LINEAR_MAX_K 131071
/* Outputs whose dot products one hydra_dot4_blocked_s8 call forms (a multiple of 4; 64 bytes of stack). */
#define LINEAR_CHUNK 16

/* Every row, in one rounding mode and one requantisation path (hydra_channel_output_s8): called with constant
 * single_rounding and right_only, so each call is its own loop. The weights are in the block layout (ops/linear.py
 * blocked_weights): blocks of 4 rows, then the N % 4 rows after the last block as they are. */
static HYDRA_ALWAYS_INLINE void linear_rows(const hydra_linear_params *params, const int8_t *input, int8_t *output,
                                            int32_t single_rounding, int32_t right_only)
{
    const int32_t T = params->rows, K = params->in_features, N = params->out_features;
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, params->output_zero_point,
                                       params->activation_min, params->activation_max};
    const hydra_channel_outputs *o = &out;
    const int32_t full = N - N % 4;
    for (int32_t t = 0; t < T; t++) {
        const int8_t *x = input + (size_t)t * (size_t)K;
        int8_t *y = output + (size_t)t * (size_t)N;
        const int8_t *w = params->weights;
        int32_t n = 0;
        while (n < full) { /* four outputs per pass over x, up to LINEAR_CHUNK of them per call */
            int32_t dots[LINEAR_CHUNK];
            const int32_t count = full - n < LINEAR_CHUNK ? full - n : LINEAR_CHUNK;
            hydra_dot4_blocked_s8(x, w, K, count / 4, dots);
            for (int32_t r = 0; r < count; r++)
                y[n + r] = hydra_channel_output_s8(o, n + r, dots[r], single_rounding, right_only);
            n += count;
            w += (size_t)count * (size_t)K;
        }
        for (; n + 2 <= N; n += 2, w += (size_t)2 * (size_t)K) {
            int32_t dots[2];
            hydra_dot2_s8(x, w, w + K, K, dots);
            y[n] = hydra_channel_output_s8(o, n, dots[0], single_rounding, right_only);
            y[n + 1] = hydra_channel_output_s8(o, n + 1, dots[1], single_rounding, right_only);
        }
        if (n < N)
            y[n] = hydra_channel_output_s8(o, n, hydra_dot_s8(x, w, K), single_rounding, right_only);
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
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, 0, 0, 0};
    if (params->right_only != 0 && (params->right_only != 1 || !hydra_channels_right_only(&out, N, K)))
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

hydra_status hydra_linear_rows_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->rows <= 0)
        return HYDRA_ERR_SHAPE;
    /* one copy of the loop per rounding mode and requantisation path (right_only: checked by _check) */
    if (params->single_rounding)
        params->right_only ? linear_rows(params, input, output, 1, 1) : linear_rows(params, input, output, 1, 0);
    else
        params->right_only ? linear_rows(params, input, output, 0, 1) : linear_rows(params, input, output, 0, 0);
    return HYDRA_OK;
}

hydra_status hydra_linear_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = hydra_linear_s8_check(params);
    return st != HYDRA_OK ? st : hydra_linear_rows_s8(params, input, output);
}
