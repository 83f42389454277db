/*
 * tfl_depthwise_conv_2d.c - TFLite Micro's int8 DEPTHWISE_CONV_2D (reference_integer_ops::
 * DepthwiseConvPerChannel): output channel i * depth_multiplier + m is input channel i convolved with
 * filter [1, H, W, O] column i * depth_multiplier + m; taps outside the image are skipped.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_depthwise_conv_2d_s8(const hydra_tfl_depthwise_conv_2d_params *p, const int8_t *input,
                                            const int8_t *filter, const int32_t *bias, int8_t *output)
{
    if (p == NULL || input == NULL || filter == NULL || output == NULL || p->output_multiplier == NULL ||
        p->output_shift == NULL)
        return HYDRA_ERR_ARG;
    const int32_t batches = p->input_shape[0], in_h = p->input_shape[1], in_w = p->input_shape[2];
    const int32_t in_c = p->input_shape[3], dm = p->depth_multiplier;
    const int32_t f_h = p->filter_shape[1], f_w = p->filter_shape[2], out_c = p->filter_shape[3];
    const int32_t out_h = p->output_shape[1], out_w = p->output_shape[2];
    if (batches <= 0 || in_h <= 0 || in_w <= 0 || in_c <= 0 || dm <= 0 || f_h <= 0 || f_w <= 0 ||
        out_h <= 0 || out_w <= 0 || p->filter_shape[0] != 1 || (int64_t)in_c * dm != out_c ||
        p->output_shape[0] != batches || p->output_shape[3] != out_c || (int64_t)f_h * f_w > 33025)
        return HYDRA_ERR_SHAPE;
    if (p->stride_height <= 0 || p->stride_width <= 0 || p->dilation_height_factor <= 0 ||
        p->dilation_width_factor <= 0 || p->padding_height < 0 || p->padding_width < 0 ||
        p->input_offset < -127 || p->input_offset > 128 || p->output_offset < -128 || p->output_offset > 127 ||
        p->activation_min < -128 || p->activation_max > 127 || p->activation_min > p->activation_max)
        return HYDRA_ERR_ARG;
    for (int32_t c = 0; c < out_c; c++)
        if (p->output_shift[c] < -31 || p->output_shift[c] > 30 || p->output_multiplier[c] < 0)
            return HYDRA_ERR_ARG;

    for (int32_t b = 0; b < batches; b++)
        for (int32_t oy = 0; oy < out_h; oy++)
            for (int32_t ox = 0; ox < out_w; ox++)
                for (int32_t ic = 0; ic < in_c; ic++)
                    for (int32_t m = 0; m < dm; m++) {
                        const int32_t oc = ic * dm + m;
                        const int32_t y0 = oy * p->stride_height - p->padding_height;
                        const int32_t x0 = ox * p->stride_width - p->padding_width;
                        int32_t acc = 0;
                        for (int32_t fy = 0; fy < f_h; fy++) {
                            const int32_t iy = y0 + p->dilation_height_factor * fy;
                            if (iy < 0 || iy >= in_h)
                                continue;
                            for (int32_t fx = 0; fx < f_w; fx++) {
                                const int32_t ix = x0 + p->dilation_width_factor * fx;
                                if (ix < 0 || ix >= in_w)
                                    continue;
                                const int32_t x = input[(((size_t)b * (size_t)in_h + (size_t)iy) * (size_t)in_w +
                                                         (size_t)ix) * (size_t)in_c + (size_t)ic];
                                const int32_t w = filter[((size_t)fy * (size_t)f_w + (size_t)fx) * (size_t)out_c +
                                                         (size_t)oc];
                                acc += w * (x + p->input_offset);
                            }
                        }
                        if (bias != NULL)
                            acc = hydra_saturate_s32((int64_t)acc + bias[oc]);
                        int32_t y = hydra_requantize(acc, p->output_multiplier[oc], p->output_shift[oc]);
                        y = hydra_saturate_s32((int64_t)y + p->output_offset);
                        y = y < p->activation_min ? p->activation_min
                                                  : (y > p->activation_max ? p->activation_max : y);
                        output[(((size_t)b * (size_t)out_h + (size_t)oy) * (size_t)out_w + (size_t)ox) *
                                   (size_t)out_c + (size_t)oc] = (int8_t)y;
                    }
    return HYDRA_OK;
}
