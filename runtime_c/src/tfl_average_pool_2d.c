/*
 * tfl_average_pool_2d.c - TFLite Micro's int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool): the
 * int32 sum of the window's taps inside the image divided by their count, rounding half away from zero
 * (C's truncating division of the sum +- count / 2), clamped to the activation range. No zero point.
 * The walk is hydra_tfl_pool_2d_s8 (tfl_fixedpoint.c), shared with MAX_POOL_2D.
 */
#include <stddef.h>

#include "hydra_tfl.h"

static int average(const int8_t *input, const int32_t shape[4], int32_t b, int32_t c, hydra_tfl_pool_window w,
                   int32_t *value)
{
    int32_t acc = 0, count = 0;
    for (int32_t fy = w.fy0; fy < w.fy1; fy++)
        for (int32_t fx = w.fx0; fx < w.fx1; fx++) {
            acc += input[hydra_tfl_nhwc(shape, b, w.y0 + fy, w.x0 + fx, c)];
            count++;
        }
    if (count == 0)
        return 0; /* TFLM fails the op: a window wholly in the padding */
    *value = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
    return 1;
}

hydra_status hydra_tfl_average_pool_2d_s8(const hydra_tfl_average_pool_2d_params *p, const int8_t *input,
                                          int8_t *output)
{
    /* at most 2^23 taps of |x| <= 2^7 keep the int32 sum exact */
    return hydra_tfl_pool_2d_s8(p, input, output, INT64_C(1) << 23, average);
}
