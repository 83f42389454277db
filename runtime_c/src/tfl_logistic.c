/*
 * tfl_logistic.c - TFLite Micro's int8 LOGISTIC (reference_integer_ops::Logistic).
 *
 * x - zp outside (-radius, radius) saturates to -128 / 127; inside, it is rescaled to Q4.27 by MBQM and
 * gemmlowp's logistic gives Q0.31, divided by 2^23 and shifted by the output zero point -128.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_logistic_s8(const hydra_tfl_logistic_params *p, const int8_t *input, int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (p->size < 0)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->input_zero_point) || p->input_left_shift < 0 || p->input_left_shift > 30 ||
        p->input_range_radius < 0)
        return HYDRA_ERR_ARG;
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t value = input[i] - p->input_zero_point;
        if (value <= -p->input_range_radius) {
            output[i] = -128;
        } else if (value >= p->input_range_radius) {
            output[i] = 127;
        } else {
            const int32_t q4 = hydra_requantize(value, p->input_multiplier, p->input_left_shift);
            const int32_t q0 = hydra_tfl_logistic(q4, 4);
            output[i] = hydra_clamp_s8(hydra_tfl_rounding_divide_by_pot(q0, 31 - 8) - 128);
        }
    }
    return HYDRA_OK;
}
