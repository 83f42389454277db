/*
 * tfl_reshape.c - TFLite Micro's RESHAPE: the bytes unchanged. Nothing to do when the memory planner gave
 * the output the input's bytes (an alias), a copy otherwise.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_reshape_s8(const hydra_tfl_reshape_params *p, const int8_t *input, const void *shape,
                                  int8_t *output)
{
    (void)shape; /* the output shape is the planner's business */
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (p->size <= 0)
        return HYDRA_ERR_SHAPE;
    if (output == input)
        return HYDRA_OK; /* the planner aliased them: nothing to move */
    for (size_t i = 0; i < (size_t)p->size; i++) /* otherwise disjoint buffers (no libc: freestanding) */
        output[i] = input[i];
    return HYDRA_OK;
}
