/*
 * hydra_avg_pool2d.c - the mean over each window's pixels inside a channels-last feature map [H][W][C]
 * (padding is not counted), in the input's scale and zero point: TFLite Micro's int8 AVERAGE_POOL_2D,
 * the raw int8 sum divided by the count with ties away from zero. docs/numerics.md, "avg_pool2d".
 */
#include <stddef.h>

#include "hydra_rt.h"

hydra_status hydra_avg_pool2d_s8(const hydra_avg_pool2d_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_pool2d_window *p = &params->window;
    const hydra_status st = hydra_pool2d_window_check(p);
    if (st != HYDRA_OK)
        return st;
    /* a window of at most 2^16 pixels: its sum of int8 values fits int32 */
    if ((int64_t)p->kernel_h * p->kernel_w > 65536)
        return HYDRA_ERR_SHAPE;
    const int32_t H = p->in_height, W = p->in_width, C = p->channels;
    for (int32_t oy = 0; oy < p->out_height; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ya = y0 < 0 ? 0 : y0, yb = y0 + p->kernel_h > H ? H : y0 + p->kernel_h;
        for (int32_t ox = 0; ox < p->out_width; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t xa = x0 < 0 ? 0 : x0, xb = x0 + p->kernel_w > W ? W : x0 + p->kernel_w;
            const int32_t count = (yb - ya) * (xb - xa); /* >= 1: checked above */
            int8_t *y = output + ((size_t)oy * (size_t)p->out_width + (size_t)ox) * (size_t)C;
            for (int32_t c = 0; c < C; c++) {
                int32_t sum = 0;
                for (int32_t iy = ya; iy < yb; iy++)
                    for (int32_t ix = xa; ix < xb; ix++)
                        sum += input[((size_t)iy * (size_t)W + (size_t)ix) * (size_t)C + (size_t)c];
                const int32_t avg = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                y[c] = hydra_clamp_s8(avg);
            }
        }
    }
    return HYDRA_OK;
}
