/*
 * tfl_mean.c - TFLite Micro's int8 MEAN: reference_ops::QuantizedMeanOrSum, whose multiplier already holds
 * 1 / num_elements (folded as TFLM folds it). Per output element the int32 sum of the input over the reduced
 * dimensions (wrapping like TFLM's int32 sum), minus input_zero_point * num_elements,
 * MultiplyByQuantizedMultiplier, plus the output zero point, clamped: hydra_tfl_reduce_s8, shared with SUM.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_mean_s8(const hydra_tfl_mean_params *p, const int8_t *input, const void *axis,
                               int8_t *output)
{
    (void)axis; /* folded into reduce_shape */
    return hydra_tfl_reduce_s8(p, input, output);
}
