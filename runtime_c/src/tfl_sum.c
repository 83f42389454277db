/*
 * tfl_sum.c - TFLite Micro's int8 SUM: reference_ops::QuantizedMeanOrSum. Per output element the int32 sum
 * of the input over the reduced dimensions (wrapping like TFLM's int32 sum), minus
 * input_zero_point * num_elements, MultiplyByQuantizedMultiplier, plus the output zero point, clamped:
 * hydra_tfl_reduce_s8, shared with MEAN.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_sum_s8(const hydra_tfl_sum_params *p, const int8_t *input, const void *axis,
                              int8_t *output)
{
    (void)axis; /* folded into reduce_shape */
    return hydra_tfl_reduce_s8(p, input, output);
}
