/*
 * tfl_max_pool_2d.c - TFLite Micro's int8 MAX_POOL_2D (reference_integer_ops::MaxPool): the largest tap of
 * the window inside the image (-128 when none), clamped to the activation range.
 * The walk is hydra_tfl_pool_2d_s8 (tfl_fixedpoint.c), shared with AVERAGE_POOL_2D.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_max_pool_2d_s8(const hydra_tfl_max_pool_2d_params *p, const int8_t *input, int8_t *output)
{
    return hydra_tfl_pool_2d_s8(p, input, output, HYDRA_TFL_POOL_MAX); /* any window size */
}
