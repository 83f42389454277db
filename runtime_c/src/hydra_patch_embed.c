/*
 * hydra_patch_embed.c - a convolution with kernel == stride == patch, writing
 * tokens: token t = py * (W / p) + px takes x[c, py*p + ky, px*p + kx] in the
 * order (c, ky, kx), then exactly linear. docs/numerics.md, "patch_embed".
 * Prefix rows (a class token), when given, are copied in front of the patch rows.
 */
#include <stddef.h>

#include "hydra_rt.h"

/* As in linear: fewer than 2^17 products of at most 2^14 keep the int32 dot exact. */
#define HYDRA_PATCH_MAX_K 131071

/* y[d] from its dot product (the per-channel parameters of channel d). */
static HYDRA_ALWAYS_INLINE int8_t output_s8(const hydra_patch_embed_params *p, int32_t d, int32_t dot,
                                            int32_t single_rounding)
{
    return hydra_linear_output_s8(p->bias[d], dot, p->multiplier[d], p->shift[d], p->output_zero_point,
                                  single_rounding);
}

/* Every patch, in one rounding mode (a constant single_rounding: each call is its own loop). */
static HYDRA_ALWAYS_INLINE void patches(const hydra_patch_embed_params *params, const int8_t *input, int8_t *output,
                                        int32_t single_rounding)
{
    const int32_t C = params->channels, H = params->height, W = params->width;
    const int32_t p = params->patch, D = params->embed_dim;
    const size_t K = (size_t)C * (size_t)p * (size_t)p;
    const int32_t grid_w = W / p;
    for (int32_t py = 0; py < H / p; py++) {
        for (int32_t px = 0; px < grid_w; px++) {
            int8_t *y = output + ((size_t)py * (size_t)grid_w + (size_t)px) * (size_t)D;
            /* Two output channels at a time, one image row of the patch (p bytes) per dot2 call. */
            for (int32_t d = 0; d < D; d += 2) {
                const int32_t pair = d + 1 < D; /* an odd D leaves the last channel alone */
                const int8_t *w0 = params->weights + (size_t)d * K; /* [C][p][p], the (c, ky, kx) order */
                const int8_t *w1 = pair ? w0 + K : w0;
                int32_t dot0 = 0, dot1 = 0;
                for (int32_t c = 0; c < C; c++)
                    for (int32_t ky = 0; ky < p; ky++) {
                        const int8_t *x = input + ((size_t)c * (size_t)H + (size_t)(py * p + ky)) * (size_t)W
                                          + (size_t)px * (size_t)p;
                        const size_t at = ((size_t)c * (size_t)p + (size_t)ky) * (size_t)p;
                        int32_t dots[2];
                        hydra_dot2_s8(x, w0 + at, w1 + at, p, dots);
                        dot0 += dots[0];
                        dot1 += dots[1];
                    }
                y[d] = output_s8(params, d, dot0, single_rounding);
                if (pair)
                    y[d + 1] = output_s8(params, d + 1, dot1, single_rounding);
            }
        }
    }
}

hydra_status hydra_patch_embed_s8(const hydra_patch_embed_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL || params->weights == NULL ||
        params->bias == NULL || params->multiplier == NULL || params->shift == NULL)
        return HYDRA_ERR_ARG;
    const int32_t C = params->channels, H = params->height, W = params->width;
    const int32_t p = params->patch, D = params->embed_dim, zy = params->output_zero_point;
    if (C <= 0 || H <= 0 || W <= 0 || p <= 0 || D <= 0)
        return HYDRA_ERR_SHAPE;
    if (H % p != 0 || W % p != 0) /* the compiler only emits whole patches */
        return HYDRA_ERR_SHAPE;
    if ((int64_t)p * p > HYDRA_PATCH_MAX_K || (int64_t)C * p * p > HYDRA_PATCH_MAX_K)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(zy))
        return HYDRA_ERR_ARG;
    const int32_t P = params->prefix_tokens;
    if (P < 0 || (P > 0 && params->prefix == NULL))
        return HYDRA_ERR_ARG;
    for (int32_t d = 0; d < D; d++)
        if (params->shift[d] < -31 || params->shift[d] > 30)
            return HYDRA_ERR_ARG;

    for (size_t i = 0; i < (size_t)P * (size_t)D; i++)
        output[i] = params->prefix[i];
    int8_t *rows = output + (size_t)P * (size_t)D;
    if (params->single_rounding)
        patches(params, input, rows, 1);
    else
        patches(params, input, rows, 0);
    return HYDRA_OK;
}
