/*
 * tfl_softmax_attention.c - the softmax attention core of an int8 TFLite graph (BATCH_MATMUL, MUL, SOFTMAX,
 * BATCH_MATMUL between head-splitting TRANSPOSEs), query row by query row against k and v kept whole, giving
 * the bits of TFLM's unfused ops.
 *
 * Every step calls the kernel of the op it replaces on one query row and head (tfl_batch_matmul.c, tfl_mul.c,
 * tfl_softmax.c), with params the compiler made per row (passes/lift_tfl_softmax.py): the head split and the
 * transposes are the operands' offsets and the products' strides. So no arithmetic is written here: each
 * score row is BATCH_MATMUL's, each probability SOFTMAX's, each output element BATCH_MATMUL's.
 */
#include <stddef.h>
#include <stdint.h>

#include "hydra_tfl.h"

enum { MAX_TOKENS = 4095 }; /* tfl_softmax.c: depth < 4096 */

/* A 6-D shape [1, 1, 1, 1, 1, last]. */
static int row_shape(const int32_t *s, int32_t last)
{
    for (int d = 0; d < HYDRA_TFL_MAX_DIMS - 1; d++)
        if (s[d] != 1)
            return 0;
    return s[HYDRA_TFL_MAX_DIMS - 1] == last;
}

/* A BATCH_MATMUL of one lhs row (depth stride 1), one batch, cols x depth with these rhs strides. */
static int row_product(const hydra_tfl_batch_matmul_params *b, int32_t cols, int32_t depth, int32_t rhs_depth,
                       int32_t rhs_col)
{
    for (int d = 0; d < 3; d++)
        if (b->batch_shape[d] != 1)
            return 0;
    return b->rows == 1 && b->cols == cols && b->depth == depth && b->lhs_depth_stride == 1 &&
           b->rhs_depth_stride == rhs_depth && b->rhs_col_stride == rhs_col;
}

int32_t hydra_tfl_softmax_attention_get_buffer_size(const hydra_tfl_softmax_attention_params *p)
{
    if (p == NULL || p->tokens <= 0 || p->tokens > MAX_TOKENS)
        return 0;
    return (2 * p->tokens + 3) / 4 * 4; /* int8 scores [T], int8 probabilities [T] */
}

static hydra_status check(const hydra_tfl_softmax_attention_params *p)
{
    const int32_t t_count = p->tokens, heads = p->heads, dh = p->head_dim;
    if (t_count <= 0 || t_count > MAX_TOKENS || heads <= 0 || dh <= 0 || heads > INT32_MAX / dh ||
        p->query_rows <= 0 || p->query_rows > t_count)
        return HYDRA_ERR_SHAPE;
    const int32_t depth = heads * dh;
    if (!row_product(&p->qk, t_count, dh, 1, depth) || !row_product(&p->pv, dh, t_count, depth, 1) ||
        p->softmax.outer_size != 1 || p->softmax.depth != t_count)
        return HYDRA_ERR_SHAPE;
    if (p->has_scale != 0 && p->has_scale != 1)
        return HYDRA_ERR_ARG;
    if (p->has_scale) {
        const hydra_tfl_mul_params *m = &p->scale;
        if (!row_shape(m->input1_shape, t_count) || !row_shape(m->input2_shape, 1) ||
            !row_shape(m->output_shape, t_count))
            return HYDRA_ERR_SHAPE;
        if (p->scale_value < -128 || p->scale_value > 127)
            return HYDRA_ERR_ARG;
    }
    return HYDRA_OK;
}

hydra_status hydra_tfl_softmax_attention_s8(const hydra_tfl_softmax_attention_params *p, const int8_t *q,
                                            const int8_t *k, const int8_t *v, int8_t *output, int32_t *scratch)
{
    if (p == NULL || q == NULL || k == NULL || v == NULL || output == NULL || scratch == NULL ||
        ((uintptr_t)(void *)scratch & 3u) != 0)
        return HYDRA_ERR_ARG;
    hydra_status st = check(p);
    if (st != HYDRA_OK)
        return st;
    const size_t dh = (size_t)p->head_dim, depth = (size_t)p->heads * dh;
    int8_t *scores = (int8_t *)(void *)scratch;
    int8_t *probs = scores + p->tokens;
    const int8_t scale = (int8_t)p->scale_value;
    for (int32_t t = 0; t < p->query_rows; t++) {
        for (int32_t h = 0; h < p->heads; h++) {
            const size_t row = (size_t)t * depth + (size_t)h * dh, col = (size_t)h * dh;
            st = hydra_tfl_batch_matmul_s8(&p->qk, q + row, k + col, scores);
            if (st == HYDRA_OK && p->has_scale)
                st = hydra_tfl_mul_s8(&p->scale, scores, &scale, scores);
            if (st == HYDRA_OK)
                st = hydra_tfl_softmax_s8(&p->softmax, scores, probs);
            if (st == HYDRA_OK)
                st = hydra_tfl_batch_matmul_s8(&p->pv, probs, v + col, output + row);
            if (st != HYDRA_OK)
                return st;
        }
    }
    return HYDRA_OK;
}
