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
    /* The last two dimensions as two plain loops, the longer one inside (each output byte is written once,
     * whatever the order: the same bytes); an odometer over the others. */
    const int d_in = p->output_shape[4] > p->output_shape[5] ? 4 : 5, d_out = 9 - d_in;
    const int32_t n_in = p->output_shape[d_in], n_out = p->output_shape[d_out];
    const size_t in_step = (size_t)p->input_strides[d_in], out_step = d_in == 4 ? (size_t)p->output_shape[5] : 1;
    const size_t in_step2 = (size_t)p->input_strides[d_out], out_step2 = d_in == 4 ? 1 : (size_t)p->output_shape[5];
    const size_t block = (size_t)p->output_shape[4] * (size_t)p->output_shape[5];
    int32_t idx[HYDRA_TFL_MAX_DIMS] = {0};
    size_t in_pos = 0;
    for (size_t o = 0; o < total; o += block) {
        for (int32_t j = 0; j < n_out; j++) {
            const int8_t *src = input + in_pos + (size_t)j * in_step2;
            int8_t *dst = output + o + (size_t)j * out_step2;
            for (int32_t i = 0; i < n_in; i++, src += in_step, dst += out_step)
                *dst = *src;
        }
        for (int d = HYDRA_TFL_MAX_DIMS - 3; d >= 0; d--) {
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
