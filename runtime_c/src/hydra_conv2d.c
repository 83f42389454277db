/*
 * hydra_conv2d.c - a 2-d convolution on a channels-last feature map, requantised as linear:
 * y[oy, ox, co] = clamp(zy + requant(bias[co] + sum over the window of x * w, M[co], shift[co]), lo, hi).
 * docs/numerics.md, "conv2d". Padding reads the input zero point (the bias has it folded in, as linear's).
 * Input [H][W][Cin] (or the image [Cin][H][W] when chw_input), output [OH][OW][Cout] = [OH*OW][Cout] rows,
 * weights [Cout][kh][kw][Cin] ([C][kh][kw][1] depthwise).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* kh * kw * Cin products of at most 128 * 128 = 2^14 each: fewer than 2^17 keep the int32 sum exact. */
#define HYDRA_CONV_MAX_K 131071
#define HYDRA_CONV_MAX_DIM 32767

static HYDRA_ALWAYS_INLINE int8_t output_s8(const hydra_conv2d_params *p, int32_t co, int32_t acc,
                                            int32_t single_rounding)
{
    const int8_t y =
        hydra_linear_output_s8(p->bias[co], acc, p->multiplier[co], p->shift[co], p->output_zero_point,
                               single_rounding);
    return (int8_t)(y < p->activation_min ? p->activation_min : (y > p->activation_max ? p->activation_max : y));
}

/* Input pixel (iy, ix), channel c, in either layout; the caller has checked that the pixel is inside. */
static inline int32_t pixel(const hydra_conv2d_params *p, const int8_t *input, int32_t iy, int32_t ix, int32_t c)
{
    const size_t H = (size_t)p->in_height, W = (size_t)p->in_width, C = (size_t)p->in_channels;
    if (p->chw_input)
        return input[((size_t)c * H + (size_t)iy) * W + (size_t)ix];
    return input[((size_t)iy * W + (size_t)ix) * C + (size_t)c];
}

/* The window sum of output channel co at (oy, ox): sum over (ky, kx, ci) of x * w, x = zx outside the input. */
static int32_t window_dot(const hydra_conv2d_params *p, const int8_t *input, int32_t oy, int32_t ox, int32_t co)
{
    const int32_t H = p->in_height, W = p->in_width, kh = p->kernel_h, kw = p->kernel_w;
    const int32_t depthwise = p->depthwise, cin = depthwise ? 1 : p->in_channels;
    const int32_t zx = p->input_zero_point;
    const int8_t *wc = p->weights + (size_t)co * (size_t)kh * (size_t)kw * (size_t)cin;
    int32_t acc = 0;
    for (int32_t ky = 0; ky < kh; ky++) {
        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
        for (int32_t kx = 0; kx < kw; kx++) {
            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
            const int8_t *wk = wc + ((size_t)ky * (size_t)kw + (size_t)kx) * (size_t)cin;
            const int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
            if (depthwise) {
                acc += (inside ? pixel(p, input, iy, ix, co) : zx) * wk[0];
            } else if (!inside) {
                for (int32_t ci = 0; ci < cin; ci++)
                    acc += zx * wk[ci];
            } else if (!p->chw_input) { /* the pixel's channels are contiguous: one dot product */
                acc += hydra_dot_s8(input + ((size_t)iy * (size_t)W + (size_t)ix) * (size_t)cin, wk, cin);
            } else {
                for (int32_t ci = 0; ci < cin; ci++)
                    acc += pixel(p, input, iy, ix, ci) * wk[ci];
            }
        }
    }
    return acc;
}

static HYDRA_ALWAYS_INLINE void conv(const hydra_conv2d_params *p, const int8_t *input, int8_t *output,
                                     int32_t single_rounding)
{
    const int32_t OH = p->out_height, OW = p->out_width, N = p->out_channels;
    for (int32_t oy = 0; oy < OH; oy++)
        for (int32_t ox = 0; ox < OW; ox++) {
            int8_t *y = output + ((size_t)oy * (size_t)OW + (size_t)ox) * (size_t)N;
            for (int32_t co = 0; co < N; co++)
                y[co] = output_s8(p, co, window_dot(p, input, oy, ox, co), single_rounding);
        }
}

static int dim_ok(int32_t v, int32_t lo)
{
    return v >= lo && v <= HYDRA_CONV_MAX_DIM;
}

hydra_status hydra_conv2d_s8(const hydra_conv2d_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL || params->weights == NULL || params->bias == NULL ||
        params->multiplier == NULL || params->shift == NULL)
        return HYDRA_ERR_ARG;
    const hydra_conv2d_params *p = params;
    if (!dim_ok(p->in_height, 1) || !dim_ok(p->in_width, 1) || !dim_ok(p->in_channels, 1) ||
        !dim_ok(p->out_height, 1) || !dim_ok(p->out_width, 1) || !dim_ok(p->out_channels, 1) ||
        !dim_ok(p->kernel_h, 1) || !dim_ok(p->kernel_w, 1) || !dim_ok(p->stride_h, 1) || !dim_ok(p->stride_w, 1) ||
        !dim_ok(p->pad_top, 0) || !dim_ok(p->pad_left, 0))
        return HYDRA_ERR_SHAPE;
    const int64_t cin = p->depthwise ? 1 : p->in_channels;
    if ((int64_t)p->kernel_h * p->kernel_w * cin > HYDRA_CONV_MAX_K)
        return HYDRA_ERR_SHAPE;
    if (p->depthwise && p->in_channels != p->out_channels)
        return HYDRA_ERR_SHAPE;
    /* the last window starts inside the padded input (every index below stays within int32) */
    if ((int64_t)(p->out_height - 1) * p->stride_h - p->pad_top >= p->in_height + (int64_t)HYDRA_CONV_MAX_DIM ||
        (int64_t)(p->out_width - 1) * p->stride_w - p->pad_left >= p->in_width + (int64_t)HYDRA_CONV_MAX_DIM)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->input_zero_point) || !hydra_zero_point_ok(p->output_zero_point) ||
        p->activation_min < -128 || p->activation_max > 127 || p->activation_min > p->activation_max)
        return HYDRA_ERR_ARG;
    for (int32_t n = 0; n < p->out_channels; n++)
        if (p->shift[n] < -31 || p->shift[n] > 30)
            return HYDRA_ERR_ARG;
    if (p->single_rounding)
        conv(p, input, output, 1);
    else
        conv(p, input, output, 0);
    return HYDRA_OK;
}
