/*
 * tfl_batch_matmul.c - TFLite Micro's int8 BATCH_MATMUL (reference_ops::BatchMatMul): per (broadcast) batch,
 * the int32 sums of offset lhs and rhs products over depth, MultiplyByQuantizedMultiplier, output offset,
 * clamp. adj_x / adj_y are folded into the strides by the frontend; no transposed copy, so no scratch.
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_batch_matmul_s8(const hydra_tfl_batch_matmul_params *p, const int8_t *lhs,
                                       const int8_t *rhs, int8_t *output)
{
    if (p == NULL || lhs == NULL || rhs == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const int32_t rows = p->rows, cols = p->cols, depth = p->depth;
    if (rows <= 0 || cols <= 0 || depth <= 0 || depth > 33025 || p->lhs_row_stride < 0 ||
        p->lhs_depth_stride < 0 || p->rhs_depth_stride < 0 || p->rhs_col_stride < 0)
        return HYDRA_ERR_SHAPE;
    for (int d = 0; d < 3; d++)
        if (p->batch_shape[d] <= 0 || p->lhs_batch_strides[d] < 0 || p->rhs_batch_strides[d] < 0)
            return HYDRA_ERR_SHAPE;
    if (p->lhs_offset < -127 || p->lhs_offset > 128 || p->rhs_offset < -127 || p->rhs_offset > 128 ||
        p->output_offset < -128 || p->output_offset > 127 || p->output_shift < -31 || p->output_shift > 30 ||
        p->output_multiplier < 0 || p->activation_min < -128 || p->activation_max > 127 ||
        p->activation_min > p->activation_max)
        return HYDRA_ERR_ARG;

    size_t o = 0;
    for (int32_t b0 = 0; b0 < p->batch_shape[0]; b0++)
        for (int32_t b1 = 0; b1 < p->batch_shape[1]; b1++)
            for (int32_t b2 = 0; b2 < p->batch_shape[2]; b2++) {
                const int8_t *l = lhs + (size_t)b0 * (size_t)p->lhs_batch_strides[0] +
                                  (size_t)b1 * (size_t)p->lhs_batch_strides[1] +
                                  (size_t)b2 * (size_t)p->lhs_batch_strides[2];
                const int8_t *r = rhs + (size_t)b0 * (size_t)p->rhs_batch_strides[0] +
                                  (size_t)b1 * (size_t)p->rhs_batch_strides[1] +
                                  (size_t)b2 * (size_t)p->rhs_batch_strides[2];
                for (int32_t i = 0; i < rows; i++)
                    for (int32_t j = 0; j < cols; j++) {
                        int32_t acc = 0;
                        for (int32_t k = 0; k < depth; k++) {
                            const int32_t a = l[(size_t)i * (size_t)p->lhs_row_stride +
                                                (size_t)k * (size_t)p->lhs_depth_stride];
                            const int32_t c = r[(size_t)k * (size_t)p->rhs_depth_stride +
                                                (size_t)j * (size_t)p->rhs_col_stride];
                            acc += (a + p->lhs_offset) * (c + p->rhs_offset);
                        }
                        const int32_t y =
                            hydra_tfl_requantize(acc, p->output_multiplier, p->output_shift, p->single_rounding);
                        output[o++] = hydra_tfl_output_s8(y, p->output_offset, p->activation_min, p->activation_max);
                    }
            }
    return HYDRA_OK;
}
