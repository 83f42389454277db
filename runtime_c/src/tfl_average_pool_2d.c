/*
 * tfl_average_pool_2d.c - TFLite Micro's int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool): the
 * int32 sum of the window's taps inside the image divided by their count, rounding half away from zero
 * (C's truncating division of the sum +- count / 2), clamped to the activation range. No zero point.
 * A window wholly in the padding fails the op (HYDRA_ERR_SHAPE), as in TFLM.
 * The walk is hydra_tfl_pool_2d_s8 (tfl_fixedpoint.c), shared with MAX_POOL_2D.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_average_pool_2d_s8(const hydra_tfl_average_pool_2d_params *p, const int8_t *input,
                                          int8_t *output)
{
    /* at most 2^23 taps of |x| <= 2^7 keep the int32 sum exact */
    return hydra_tfl_pool_2d_s8(p, input, output, HYDRA_TFL_POOL_AVERAGE);
}
