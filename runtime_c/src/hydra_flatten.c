/*
 * hydra_flatten.c - a feature map [H*W][C] as one vector: the same bytes (lowering put the next Linear's
 * weights in this order). output == input is allowed (in place: nothing to do); otherwise a copy.
 */
#include <stddef.h>

#include "hydra_rt.h"

hydra_status hydra_flatten_s8(const hydra_flatten_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->size <= 0)
        return HYDRA_ERR_SHAPE;
    if (output != input)
        for (size_t i = 0; i < (size_t)params->size; i++)
            output[i] = input[i];
    return HYDRA_OK;
}
