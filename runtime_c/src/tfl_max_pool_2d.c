/*
 * tfl_max_pool_2d.c - TFLite Micro's int8 MAX_POOL_2D (reference_integer_ops::MaxPool): the largest tap of
 * the window inside the image (-128 when none), clamped to the activation range.
 * The walk is hydra_tfl_pool_2d_s8 (tfl_fixedpoint.c), shared with AVERAGE_POOL_2D.
 */
#include <stddef.h>

#include "hydra_tfl.h"

static int maximum(const int8_t *input, const int32_t shape[4], int32_t b, int32_t c, hydra_tfl_pool_window w,
                   int32_t *value)
{
    int32_t m = -128;
    for (int32_t fy = w.fy0; fy < w.fy1; fy++)
        for (int32_t fx = w.fx0; fx < w.fx1; fx++) {
            const int32_t v = input[hydra_tfl_nhwc(shape, b, w.y0 + fy, w.x0 + fx, c)];
            m = v > m ? v : m;
        }
    *value = m;
    return 1;
}

hydra_status hydra_tfl_max_pool_2d_s8(const hydra_tfl_max_pool_2d_params *p, const int8_t *input, int8_t *output)
{
    return hydra_tfl_pool_2d_s8(p, input, output, INT64_MAX, maximum); /* any window size */
}
