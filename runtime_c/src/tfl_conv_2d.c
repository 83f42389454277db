/*
 * tfl_conv_2d.c - TFLite Micro's int8 CONV_2D (reference_integer_ops::ConvPerChannel): NHWC input,
 * [O, H, W, I] filter (groups = input channels / I), strides, dilation, padding; taps outside the image
 * are skipped; per-channel MultiplyByQuantizedMultiplier, output offset, activation clamp.
 * The walk is hydra_tfl_conv_walk_s8 (tfl_fixedpoint.c); on the SIMD cores it copies two output pixels' windows
 * (im2col) into the scratch.
 */
#include <stddef.h>

#include "hydra_tfl.h"

int32_t hydra_tfl_conv_2d_get_buffer_size(const hydra_tfl_conv_2d_params *p)
{
    if (p == NULL)
        return -1;
    const int64_t k = (int64_t)p->filter_shape[1] * p->filter_shape[2] * p->filter_shape[3];
    if (p->filter_shape[1] <= 0 || p->filter_shape[2] <= 0 || p->filter_shape[3] <= 0 || k > 33025)
        return -1;
    const int64_t groups = (k + 3) / 4; /* of 4 taps */
#if defined(HYDRA_TFL_NO_CONV_WORD_WINDOW) /* every window copied as bytes first (a build for size) */
    return (int32_t)(20 * groups);
#else
    return (int32_t)(p->filter_shape[3] % 4 == 0 ? 16 * groups : 20 * groups);
#endif
}

hydra_status hydra_tfl_conv_2d_s8(const hydra_tfl_conv_2d_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, int32_t *scratch)
{
    if (p == NULL || input == NULL || filter == NULL || output == NULL || p->output_multiplier == NULL ||
        p->output_shift == NULL)
        return HYDRA_ERR_ARG;
    const int32_t batches = p->input_shape[0], in_h = p->input_shape[1], in_w = p->input_shape[2];
    const int32_t in_c = p->input_shape[3];
    const int32_t out_c = p->filter_shape[0], f_h = p->filter_shape[1], f_w = p->filter_shape[2];
    const int32_t f_c = p->filter_shape[3];
    const int32_t out_h = p->output_shape[1], out_w = p->output_shape[2];
    if (batches <= 0 || in_h <= 0 || in_w <= 0 || in_c <= 0 || out_c <= 0 || f_h <= 0 || f_w <= 0 || f_c <= 0 ||
        out_h <= 0 || out_w <= 0 || p->output_shape[0] != batches || p->output_shape[3] != out_c ||
        in_c % f_c != 0 || out_c % (in_c / f_c) != 0 || (int64_t)f_h * f_w * f_c > 33025)
        return HYDRA_ERR_SHAPE;
    const hydra_tfl_conv_view v = HYDRA_TFL_CONV_VIEW(p);
    return hydra_tfl_conv_walk_s8(&v, input, filter, bias, output, scratch);
}
