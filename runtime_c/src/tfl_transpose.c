/*
 * tfl_transpose.c - TFLite Micro's int8 TRANSPOSE (reference_ops::Transpose): the output walked in
 * row-major order, each element read from the input at the permuted strides.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_transpose_s8(const hydra_tfl_transpose_params *p, const int8_t *input, const void *perm,
                                    int8_t *output)
{
    (void)perm; /* folded into input_strides */
    if (p == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    size_t total = 1, last = 0;
    for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++) {
        if (p->output_shape[d] <= 0 || p->input_strides[d] < 0)
            return HYDRA_ERR_SHAPE;
        total *= (size_t)p->output_shape[d];
        last += (size_t)(p->output_shape[d] - 1) * (size_t)p->input_strides[d];
    }
    if (last >= total)
        return HYDRA_ERR_SHAPE; /* a stride that reads past the input */
    int32_t idx[HYDRA_TFL_MAX_DIMS] = {0};
    size_t in_pos = 0;
    for (size_t o = 0; o < total; o++) {
        output[o] = input[in_pos];
        for (int d = HYDRA_TFL_MAX_DIMS - 1; d >= 0; d--) {
            if (++idx[d] < p->output_shape[d]) {
                in_pos += (size_t)p->input_strides[d];
                break;
            }
            in_pos -= (size_t)(p->output_shape[d] - 1) * (size_t)p->input_strides[d];
            idx[d] = 0;
        }
    }
    return HYDRA_OK;
}
