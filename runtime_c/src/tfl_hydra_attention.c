/*
 * tfl_hydra_attention.c - the Hydra core of an int8 TFLite graph (phi, MUL, SUM over tokens, MUL) in two
 * passes over the tokens with O(depth) state, giving the bits of TFLM's unfused ops.
 *
 * Every step calls the kernel of the op it replaces on one row (tfl_mul.c, tfl_sum.c, tfl_add.c,
 * tfl_rsqrt.c, tfl_l2_normalization.c), with params the compiler made per row. The one step no kernel
 * offers per row is the SUM over tokens: TFLM's int8 SUM adds the raw int8 values in int32 and
 * requantises once at the end (QuantizedMeanOrSum), so this file accumulates acc[d] over the tokens
 * and ends exactly as tfl_sum.c does (hydra_tfl_reduce_output_s8). |acc| <= 128 * tokens < 2^31 for
 * tokens <= 2^23 (checked).
 */
#include <stddef.h>
#include <stdint.h>

#include "hydra_tfl.h"

enum { MAX_TOKENS = 1 << 23 };

/* A 6-D shape [1, 1, 1, 1, 1, last]. */
static int row_shape(const int32_t *s, int32_t last)
{
    for (int d = 0; d < HYDRA_TFL_MAX_DIMS - 1; d++)
        if (s[d] != 1)
            return 0;
    return s[HYDRA_TFL_MAX_DIMS - 1] == last;
}

/* A per-row binary op: [1, depth] op [1, second] -> [1, depth]. */
static int row_binary(const int32_t *a, const int32_t *b, const int32_t *out, int32_t depth, int32_t second)
{
    return row_shape(a, depth) && row_shape(b, second) && row_shape(out, depth);
}

static int phi_ok(const hydra_tfl_hydra_phi_params *p, int32_t depth)
{
    if (p->kind == HYDRA_TFL_PHI_L2)
        return p->l2.outer_size == 1 && p->l2.depth == depth;
    if (p->kind != HYDRA_TFL_PHI_RSQRT)
        return 0;
    if (p->has_eps && (!row_binary(p->eps.input1_shape, p->eps.input2_shape, p->eps.output_shape, 1, 1) ||
                       p->eps_value < -128 || p->eps_value > 127))
        return 0;
    return row_binary(p->square.input1_shape, p->square.input2_shape, p->square.output_shape, depth, depth) &&
           row_shape(p->sum.input_shape, depth) && row_shape(p->sum.reduce_shape, depth) &&
           p->sum.num_elements == depth && p->rsqrt.size == 1 &&
           row_binary(p->scale.input1_shape, p->scale.input2_shape, p->scale.output_shape, depth, 1);
}

/* phi of one row x [depth] into row [depth] (row != x). */
static hydra_status phi_row(const hydra_tfl_hydra_phi_params *p, const int8_t *x, int8_t *row)
{
    if (p->kind == HYDRA_TFL_PHI_L2)
        return hydra_tfl_l2_normalization_s8(&p->l2, x, row);
    int8_t s, r;
    hydra_status st = hydra_tfl_mul_s8(&p->square, x, x, row);
    if (st == HYDRA_OK)
        st = hydra_tfl_sum_s8(&p->sum, row, NULL, &s);
    if (st == HYDRA_OK && p->has_eps) {
        const int8_t eps = (int8_t)p->eps_value;
        st = hydra_tfl_add_s8(&p->eps, &s, &eps, &s);
    }
    if (st == HYDRA_OK)
        st = hydra_tfl_rsqrt_s8(&p->rsqrt, &s, &r);
    if (st == HYDRA_OK)
        st = hydra_tfl_mul_s8(&p->scale, x, &r, row);
    return st;
}

int32_t hydra_tfl_hydra_attention_get_buffer_size(const hydra_tfl_hydra_attention_params *p)
{
    if (p == NULL || p->depth <= 0 || p->depth > INT32_MAX / 6)
        return 0;
    return 6 * p->depth; /* int32 acc [D], int8 row [D], int8 kv [D] */
}

/* The params' checks, shared by every entry point. */
static hydra_status check(const hydra_tfl_hydra_attention_params *p)
{
    const int32_t t_count = p->tokens, depth = p->depth;
    if (t_count <= 0 || t_count > MAX_TOKENS || depth <= 0 || depth > INT32_MAX / 6)
        return HYDRA_ERR_SHAPE;
    const hydra_tfl_sum_params *ks = &p->kv_sum;
    if (!phi_ok(&p->phi_q, depth) || !phi_ok(&p->phi_k, depth) ||
        !row_binary(p->kv_mul.input1_shape, p->kv_mul.input2_shape, p->kv_mul.output_shape, depth, depth) ||
        !row_binary(p->out_mul.input1_shape, p->out_mul.input2_shape, p->out_mul.output_shape, depth, depth) ||
        ks->num_elements != t_count || ks->input_shape[HYDRA_TFL_MAX_DIMS - 2] != t_count ||
        ks->input_shape[HYDRA_TFL_MAX_DIMS - 1] != depth)
        return HYDRA_ERR_SHAPE;
    if (!hydra_tfl_reduce_quant_ok(ks))
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

/* The entry checks of kv_rows and apply, in this order: the pointers (HYDRA_ERR_ARG: p, either input, the output
 * or the working buffer NULL, or the working buffer not aligned to work_align bytes: kv_rows' int32 state, which is
 * also its output), the params (check), then rows in [1, tokens] (HYDRA_ERR_SHAPE). */
static hydra_status check_rows(const hydra_tfl_hydra_attention_params *p, const void *in1, const void *in2,
                               const void *out, const void *work, uintptr_t work_align, int32_t rows)
{
    if (p == NULL || in1 == NULL || in2 == NULL || out == NULL || work == NULL || (uintptr_t)work % work_align != 0)
        return HYDRA_ERR_ARG;
    const hydra_status st = check(p);
    if (st != HYDRA_OK)
        return st;
    if (rows <= 0 || rows > p->tokens)
        return HYDRA_ERR_SHAPE;
    return HYDRA_OK;
}

hydra_status hydra_tfl_hydra_kv_begin_s8(const hydra_tfl_hydra_attention_params *p, int32_t *state)
{
    if (p == NULL || state == NULL || ((uintptr_t)(void *)state & 3u) != 0)
        return HYDRA_ERR_ARG;
    hydra_status st = check(p);
    if (st != HYDRA_OK)
        return st;
    for (int32_t d = 0; d < p->depth; d++)
        state[d] = 0;
    return HYDRA_OK;
}

/* pass 1 on `rows` tokens: acc += kv_mul(phi_k(k_t), v_t) (state: int32 acc [D], then the int8 row [D]) */
hydra_status hydra_tfl_hydra_kv_rows_s8(const hydra_tfl_hydra_attention_params *p, const int8_t *k,
                                        const int8_t *v, int32_t rows, int32_t *state)
{
    hydra_status st = check_rows(p, k, v, state, state, sizeof(int32_t), rows);
    if (st != HYDRA_OK)
        return st;
    const int32_t depth = p->depth;
    int32_t *acc = state;
    int8_t *row = (int8_t *)(void *)(state + depth);
    for (int32_t t = 0; t < rows; t++) {
        const size_t base = (size_t)t * (size_t)depth;
        st = phi_row(&p->phi_k, k + base, row);
        if (st == HYDRA_OK)
            st = hydra_tfl_mul_s8(&p->kv_mul, row, v + base, row);
        if (st != HYDRA_OK)
            return st;
        for (int32_t d = 0; d < depth; d++)
            acc[d] += row[d];
    }
    return HYDRA_OK;
}

hydra_status hydra_tfl_hydra_kv_end_s8(const hydra_tfl_hydra_attention_params *p, const int32_t *state, int8_t *kv)
{
    if (p == NULL || state == NULL || kv == NULL)
        return HYDRA_ERR_ARG;
    hydra_status st = check(p);
    if (st != HYDRA_OK)
        return st;
    for (int32_t d = 0; d < p->depth; d++)
        kv[d] = hydra_tfl_reduce_output_s8(&p->kv_sum, state[d], p->tokens); /* SUM's ending (tfl_sum.c's) */
    return HYDRA_OK;
}

/* pass 2 on `rows` tokens; q's row is read into `row` [D] before the output row is written */
hydra_status hydra_tfl_hydra_apply_s8(const hydra_tfl_hydra_attention_params *p, const int8_t *q, const int8_t *kv,
                                      int32_t rows, int8_t *output, int8_t *row)
{
    hydra_status st = check_rows(p, q, kv, output, row, 1, rows);
    if (st != HYDRA_OK)
        return st;
    for (int32_t t = 0; t < rows; t++) {
        const size_t base = (size_t)t * (size_t)p->depth;
        st = phi_row(&p->phi_q, q + base, row);
        if (st == HYDRA_OK)
            st = hydra_tfl_mul_s8(&p->out_mul, row, kv, output + base);
        if (st != HYDRA_OK)
            return st;
    }
    return HYDRA_OK;
}

hydra_status hydra_tfl_hydra_attention_s8(const hydra_tfl_hydra_attention_params *p, const int8_t *q,
                                          const int8_t *k, const int8_t *v, int8_t *output, int32_t *scratch)
{
    if (p == NULL || q == NULL || k == NULL || v == NULL || output == NULL || scratch == NULL ||
        ((uintptr_t)(void *)scratch & 3u) != 0)
        return HYDRA_ERR_ARG;
    hydra_status st = hydra_tfl_hydra_kv_begin_s8(p, scratch); /* checks the params (depth) first */
    if (st == HYDRA_OK)
        st = hydra_tfl_hydra_kv_rows_s8(p, k, v, p->tokens, scratch);
    if (st != HYDRA_OK)
        return st;
    int8_t *row = (int8_t *)(void *)(scratch + p->depth);
    int8_t *kv = row + p->depth;
    st = hydra_tfl_hydra_kv_end_s8(p, scratch, kv);
    if (st == HYDRA_OK)
        st = hydra_tfl_hydra_apply_s8(p, q, kv, p->tokens, output, row);
    return st;
}
