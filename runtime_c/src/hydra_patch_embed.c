/*
 * hydra_patch_embed.c - a convolution with kernel == stride == patch, writing
 * tokens: token t = py * (W / p) + px takes x[c, py*p + ky, px*p + kx] in the
 * order (c, ky, kx), then exactly linear. docs/numerics.md, "patch_embed".
 */
#include <stddef.h>

#include "hydra_rt.h"

/* As in linear: fewer than 2^17 products of at most 2^14 keep the int32 dot exact. */
#define HYDRA_PATCH_MAX_K 131071

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
    for (int32_t d = 0; d < D; d++)
        if (params->shift[d] < -31 || params->shift[d] > 30)
            return HYDRA_ERR_ARG;

    const size_t K = (size_t)C * (size_t)p * (size_t)p;
    const int32_t grid_w = W / p;
    for (int32_t py = 0; py < H / p; py++) {
        for (int32_t px = 0; px < grid_w; px++) {
            int8_t *y = output + ((size_t)py * (size_t)grid_w + (size_t)px) * (size_t)D;
            for (int32_t d = 0; d < D; d++) {
                const int8_t *w = params->weights + (size_t)d * K; /* [C][p][p], the (c, ky, kx) order */
                int32_t dot = 0;
                for (int32_t c = 0; c < C; c++)
                    for (int32_t ky = 0; ky < p; ky++) {
                        const int8_t *x = input + ((size_t)c * (size_t)H + (size_t)(py * p + ky)) * (size_t)W
                                          + (size_t)px * (size_t)p;
                        for (int32_t kx = 0; kx < p; kx++)
                            dot += (int32_t)x[kx] * *w++;
                    }
                const int32_t acc = hydra_saturate_s32((int64_t)params->bias[d] + dot);
                y[d] = hydra_add_zero_point_s8(hydra_requantize(acc, params->multiplier[d], params->shift[d]), zy);
            }
        }
    }
    return HYDRA_OK;
}
