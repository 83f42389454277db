/*
 * tfl_average_pool_2d.c - TFLite Micro's int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool): the
 * int32 sum of the window's taps inside the image divided by their count, rounding half away from zero
 * (C's truncating division of the sum +- count / 2), clamped to the activation range. No zero point.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_average_pool_2d_s8(const hydra_tfl_average_pool_2d_params *p, const int8_t *input,
                                          int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const int32_t batches = p->input_shape[0], in_h = p->input_shape[1], in_w = p->input_shape[2];
    const int32_t depth = p->input_shape[3], out_h = p->output_shape[1], out_w = p->output_shape[2];
    if (batches <= 0 || in_h <= 0 || in_w <= 0 || depth <= 0 || out_h <= 0 || out_w <= 0 ||
        p->output_shape[0] != batches || p->output_shape[3] != depth || p->filter_height <= 0 ||
        p->filter_width <= 0 || (int64_t)p->filter_height * p->filter_width > 1 << 23)
        return HYDRA_ERR_SHAPE;
    if (p->stride_height <= 0 || p->stride_width <= 0 || p->padding_height < 0 || p->padding_width < 0 ||
        p->activation_min < -128 || p->activation_max > 127 || p->activation_min > p->activation_max)
        return HYDRA_ERR_ARG;

    for (int32_t b = 0; b < batches; b++)
        for (int32_t oy = 0; oy < out_h; oy++)
            for (int32_t ox = 0; ox < out_w; ox++)
                for (int32_t c = 0; c < depth; c++) {
                    const int32_t y0 = oy * p->stride_height - p->padding_height;
                    const int32_t x0 = ox * p->stride_width - p->padding_width;
                    const int32_t fy0 = y0 < 0 ? -y0 : 0, fx0 = x0 < 0 ? -x0 : 0;
                    const int32_t fy1 = p->filter_height < in_h - y0 ? p->filter_height : in_h - y0;
                    const int32_t fx1 = p->filter_width < in_w - x0 ? p->filter_width : in_w - x0;
                    int32_t acc = 0, count = 0;
                    for (int32_t fy = fy0; fy < fy1; fy++)
                        for (int32_t fx = fx0; fx < fx1; fx++) {
                            acc += input[(((size_t)b * (size_t)in_h + (size_t)(y0 + fy)) * (size_t)in_w +
                                          (size_t)(x0 + fx)) * (size_t)depth + (size_t)c];
                            count++;
                        }
                    if (count == 0)
                        return HYDRA_ERR_SHAPE; /* TFLM fails the op: a window wholly in the padding */
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    acc = acc < p->activation_min ? p->activation_min
                                                  : (acc > p->activation_max ? p->activation_max : acc);
                    output[(((size_t)b * (size_t)out_h + (size_t)oy) * (size_t)out_w + (size_t)ox) * (size_t)depth +
                           (size_t)c] = (int8_t)acc;
                }
    return HYDRA_OK;
}
