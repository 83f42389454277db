/*
 * hydra_lut.c - y = table[x + 128], docs/numerics.md "lut" (GELU and other
 * unary functions, tabulated at compile time). Works in place.
 */
#include <stddef.h>

#include "hydra_rt.h"

hydra_status hydra_lut_s8(const hydra_lut_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || params->table == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->size <= 0)
        return HYDRA_ERR_SHAPE;
    for (int32_t i = 0; i < params->size; i++)
        output[i] = params->table[input[i] + 128];
    return HYDRA_OK;
}
