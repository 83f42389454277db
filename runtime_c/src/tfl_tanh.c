/*
 * tfl_tanh.c - TFLite Micro's int8 TANH (reference_integer_ops::Tanh).
 *
 * x - zp outside (-radius, radius) saturates to -128 / 127; inside, it is rescaled to Q4.27 by MBQM and
 * gemmlowp's tanh gives Q0.31, divided by 2^24 (output scale 1/128, zero point 0).
 * The loop is hydra_tfl_sigmoid_s8 (tfl_fixedpoint.c), shared with LOGISTIC.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_tanh_s8(const hydra_tfl_tanh_params *p, const int8_t *input, int8_t *output)
{
    return hydra_tfl_sigmoid_s8(p, input, output, HYDRA_TFL_SIGMOID_TANH);
}
