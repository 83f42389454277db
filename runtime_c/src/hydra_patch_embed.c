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
/* A patch of at most this many bytes is gathered into a stack row and its weights are in linear's block layout
 * (ops/patch_embed.py PATCH_GATHER_MAX): two patches are then two rows of linear. */
#define HYDRA_PATCH_GATHER_MAX 128

/* Patches of at most HYDRA_PATCH_GATHER_MAX bytes (weights in linear's block layout): two patches at a time
 * gathered into one stack buffer in the (c, ky, kx) order, then exactly linear on those two rows
 * (hydra_linear_rows_s8: on the Cortex-M its token pairs, on aarch64 its NEON rows), written as two output rows. */
static hydra_status gathered_patches(const hydra_patch_embed_params *params, const int8_t *input, int8_t *output,
                                     int32_t right_only)
{
    const int32_t C = params->channels, H = params->height, W = params->width;
    const int32_t p = params->patch, D = params->embed_dim;
    const int32_t K = C * p * p, grid_w = W / p, T = (H / p) * grid_w;
    hydra_linear_params lp = {.rows = 2, .in_features = K, .out_features = D, .weights = params->weights,
                              .bias = params->bias, .multiplier = params->multiplier, .shift = params->shift,
                              .output_zero_point = params->output_zero_point, .activation_min = -128,
                              .activation_max = 127, .single_rounding = params->single_rounding != 0,
                              .right_only = right_only};
    const hydra_status st = hydra_linear_s8_check(&lp);
    if (st != HYDRA_OK)
        return st;
    int8_t rows[2 * HYDRA_PATCH_GATHER_MAX];
    for (int32_t t = 0; t < T; t += 2) {
        const int32_t n = t + 1 < T ? 2 : 1;
        for (int32_t r = 0; r < n; r++) {
            const int32_t py = (t + r) / grid_w, px = (t + r) % grid_w;
            int8_t *row = rows + (size_t)r * (size_t)K;
            for (int32_t c = 0; c < C; c++)
                for (int32_t ky = 0; ky < p; ky++) {
                    const int8_t *x = input + ((size_t)c * (size_t)H + (size_t)(py * p + ky)) * (size_t)W
                                      + (size_t)px * (size_t)p;
                    for (int32_t kx = 0; kx < p; kx++)
                        *row++ = x[kx];
                }
        }
        lp.rows = n;
        const hydra_status rs = hydra_linear_rows_s8(&lp, rows, output + (size_t)t * (size_t)D);
        if (rs != HYDRA_OK) /* a build whose linear left out what these params need (HYDRA_LINEAR_RIGHT_ONLY) */
            return rs;
    }
    return HYDRA_OK;
}

/* Larger patches (weights [D][C][p][p]), in one requantisation path (hydra_channel_output_s8; a constant
 * right_only: each call is its own loop): two output channels at a time, one image row of the patch (p bytes) per
 * dot2 call. */
static HYDRA_ALWAYS_INLINE void patches(const hydra_patch_embed_params *params, const int8_t *input, int8_t *output,
                                        int32_t single_rounding, int32_t right_only)
{
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, params->output_zero_point,
                                       -128, 127};
    const int32_t C = params->channels, H = params->height, W = params->width;
    const int32_t p = params->patch, D = params->embed_dim;
    const size_t K = (size_t)C * (size_t)p * (size_t)p;
    const int32_t grid_w = W / p;
    for (int32_t py = 0; py < H / p; py++) {
        for (int32_t px = 0; px < grid_w; px++) {
            int8_t *y = output + ((size_t)py * (size_t)grid_w + (size_t)px) * (size_t)D;
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
                y[d] = hydra_channel_output_s8(&out, d, dot0, single_rounding, right_only);
                if (pair)
                    y[d + 1] = hydra_channel_output_s8(&out, d + 1, dot1, single_rounding, right_only);
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
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, 0, 0, 0};
    const int right_only = hydra_channels_right_only(&out, D, C * p * p);
    const int32_t single = params->single_rounding != 0; /* read per output: one copy of the loops less */
    if (C * p * p <= HYDRA_PATCH_GATHER_MAX)
        return gathered_patches(params, input, rows, right_only);
    if (right_only)
        patches(params, input, rows, single, 1);
    else
        patches(params, input, rows, single, 0);
    return HYDRA_OK;
}
