/*
 * tfl_logistic.c - TFLite Micro's int8 LOGISTIC (reference_integer_ops::Logistic).
 *
 * x - zp outside (-radius, radius) saturates to -128 / 127; inside, it is rescaled to Q4.27 by MBQM and
 * gemmlowp's logistic gives Q0.31, divided by 2^23 and shifted by the output zero point -128.
 * The loop is hydra_tfl_sigmoid_s8 (tfl_fixedpoint.c), shared with TANH.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_logistic_s8(const hydra_tfl_logistic_params *p, const int8_t *input, int8_t *output)
{
    return hydra_tfl_sigmoid_s8(p, input, output, HYDRA_TFL_SIGMOID_LOGISTIC);
}
