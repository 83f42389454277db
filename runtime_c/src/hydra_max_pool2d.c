/*
 * hydra_max_pool2d.c - the maximum over each window of a channels-last feature map [H][W][C]; padding is
 * never read (every window holds at least one pixel: the padding is smaller than the kernel). The output
 * keeps the input's scale and zero point. docs/numerics.md, "max_pool2d".
 */
#include <stddef.h>

#include "hydra_rt.h"

#define HYDRA_POOL_MAX_DIM 32767

static int dim_ok(int32_t v, int32_t lo)
{
    return v >= lo && v <= HYDRA_POOL_MAX_DIM;
}

hydra_status hydra_pool2d_window_check(const hydra_pool2d_window *p)
{
    if (p == NULL)
        return HYDRA_ERR_ARG;
    if (!dim_ok(p->in_height, 1) || !dim_ok(p->in_width, 1) || !dim_ok(p->channels, 1) ||
        !dim_ok(p->out_height, 1) || !dim_ok(p->out_width, 1) || !dim_ok(p->kernel_h, 1) ||
        !dim_ok(p->kernel_w, 1) || !dim_ok(p->stride_h, 1) || !dim_ok(p->stride_w, 1) || !dim_ok(p->pad_top, 0) ||
        !dim_ok(p->pad_left, 0) || p->pad_top >= p->kernel_h || p->pad_left >= p->kernel_w)
        return HYDRA_ERR_SHAPE;
    /* every window starts inside the input or within the padding before it: at least one pixel */
    if ((int64_t)(p->out_height - 1) * p->stride_h - p->pad_top >= p->in_height ||
        (int64_t)(p->out_width - 1) * p->stride_w - p->pad_left >= p->in_width)
        return HYDRA_ERR_SHAPE;
    return HYDRA_OK;
}

hydra_status hydra_max_pool2d_s8(const hydra_max_pool2d_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_pool2d_window *p = &params->window;
    const hydra_status st = hydra_pool2d_window_check(p);
    if (st != HYDRA_OK)
        return st;
    const int32_t H = p->in_height, W = p->in_width, C = p->channels;
    for (int32_t oy = 0; oy < p->out_height; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ya = y0 < 0 ? 0 : y0, yb = y0 + p->kernel_h > H ? H : y0 + p->kernel_h;
        for (int32_t ox = 0; ox < p->out_width; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t xa = x0 < 0 ? 0 : x0, xb = x0 + p->kernel_w > W ? W : x0 + p->kernel_w;
            int8_t *y = output + ((size_t)oy * (size_t)p->out_width + (size_t)ox) * (size_t)C;
            for (int32_t c = 0; c < C; c++)
                y[c] = -128;
            for (int32_t iy = ya; iy < yb; iy++)
                for (int32_t ix = xa; ix < xb; ix++) {
                    const int8_t *x = input + ((size_t)iy * (size_t)W + (size_t)ix) * (size_t)C;
                    for (int32_t c = 0; c < C; c++)
                        y[c] = x[c] > y[c] ? x[c] : y[c];
                }
        }
    }
    return HYDRA_OK;
}
