/*
 * hydra_softmax_attention.c - multi-head softmax attention, docs/numerics.md
 * "softmax_attention". Per head h and query row t (dh = dim / heads):
 *
 *     s_j   = sum_i (q[t, h dh + i] - zq) (k[j, h dh + i] - zk)          int32
 *     w_j   = exp_table[clamp(requant(max_j s_j - s_j, Me, se), 0, N-1)]  Q15 exp
 *     S     = sum_j w_j                                                 int32
 *     recip = floor((2^46 - 1) / S)                                     2^15 / S in Q31
 *     n_i   = round_shift(recip * sum_j w_j (v[j, h dh + i] - zv), 31)  int64 -> int32
 *     y[t, h dh + i] = clamp(zy + requant(n_i, M, shift), -128, 127)
 *
 * One head and query row at a time: the scratch is the T int32 scores of that
 * row (overwritten by its exp values) and the T key sums of the head, never a
 * T x T matrix. The output must not alias q, k or v. A call takes query_rows
 * rows of q (all T, or a group of a token loop, q and output pointing at the
 * group's first row) against all T keys and values.
 *
 * The score is formed as q.k - zk sum(q) - zq sum(k) + dh zq zk, which is the
 * same integer (every term is below 2^28 in magnitude for dh <= 2^14), so that
 * q.k is hydra_dot_s8's (SMLAD / SDOT on the targets that have them).
 */
#include <stddef.h>

#include "hydra_rt.h"

#define EXP_ONE (INT32_C(1) << 15)  /* exp(0) in the table's Q15 */
#define RECIP_NUM ((INT64_C(1) << 46) - 1)

/* Everything but the exp table's entries (checked once per call of the whole kernel or of the key sums). */
static hydra_status check_scalars(const hydra_softmax_attention_params *p)
{
    if (p->tokens <= 0 || p->tokens > HYDRA_SOFTMAX_MAX_TOKENS || p->query_rows <= 0 || p->query_rows > p->tokens ||
        p->dim <= 0 || p->heads <= 0 ||
        p->dim % p->heads != 0 || p->dim / p->heads > HYDRA_SOFTMAX_MAX_HEAD_DIM)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->q_zero_point) || !hydra_zero_point_ok(p->k_zero_point) ||
        !hydra_zero_point_ok(p->v_zero_point) || !hydra_zero_point_ok(p->output_zero_point))
        return HYDRA_ERR_ARG;
    if (p->exp_multiplier < 0 || p->exp_shift < -31 || p->exp_shift > 30 || p->multiplier < 0 ||
        p->shift < -31 || p->shift > 30)
        return HYDRA_ERR_ARG;
    if (p->exp_table == NULL || p->exp_table_size <= 0 || p->exp_table[0] != EXP_ONE)
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

static hydra_status check_params(const hydra_softmax_attention_params *p)
{
    const hydra_status st = check_scalars(p);
    if (st != HYDRA_OK)
        return st;
    for (int32_t i = 1; i < p->exp_table_size; i++) /* the bounds on S and recip need 0 <= w <= 2^15 */
        if (p->exp_table[i] < 0 || p->exp_table[i] > EXP_ONE)
            return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

/* sum of n int8 values; |sum| <= 2^7 n. */
static int32_t row_sum(const int8_t *x, int32_t n)
{
    int32_t sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += x[i];
    return sum;
}

/* One output from its weighted value sum: normalise by recip (|acc * recip| < 2^54), requantise. */
static int8_t value_out(int64_t acc, int64_t recip, int32_t multiplier, int32_t shift, int32_t zy, int32_t single)
{
    const int32_t n = (int32_t)hydra_round_shift(acc * recip, 31);
    return hydra_add_zero_point_s8(hydra_requantize(n, multiplier, shift, single), zy);
}

int32_t hydra_softmax_attention_s8_get_buffer_size(const hydra_softmax_attention_params *params)
{
    if (params == NULL || params->tokens <= 0 || params->tokens > HYDRA_SOFTMAX_MAX_TOKENS)
        return 0;
    return 8 * params->tokens; /* int32 scores of one query row, int32 key sums of one head */
}

/* The query rows of one head (features h0 .. h0 + dh) against every key: ksum holds that head's key sums. */
static void attend_head(const hydra_softmax_attention_params *params, const int8_t *q, const int8_t *k,
                        const int8_t *v, const int32_t *ksum, int32_t h0, int8_t *output, int32_t *w)
{
    const int32_t T = params->tokens, rows = params->query_rows, D = params->dim, dh = D / params->heads;
    const int32_t zq = params->q_zero_point, zk = params->k_zero_point, zv = params->v_zero_point;
    const int32_t last = params->exp_table_size - 1;
    /* Locals: stores through int8_t * may alias the params, and the compiler would reload them. */
    const int32_t exp_m = params->exp_multiplier, exp_s = params->exp_shift;
    const int32_t out_m = params->multiplier, out_s = params->shift, zy = params->output_zero_point;
    const int32_t single = params->single_rounding;
    const int32_t *exp_table = params->exp_table;
    /* sum_j w_j (v - zv) fits int32 while T * 2^15 * 255 < 2^31; longer rows take the int64 loop. */
    const int narrow = T <= 256;

    for (int32_t t = 0; t < rows; t++) {
        const int8_t *qt = q + (size_t)t * (size_t)D + (size_t)h0;
        const int32_t q_term = dh * zq * zk - zk * row_sum(qt, dh);

        /* Scores of row t against every key, and their max. |s| <= dh * 255^2 < 2^30. */
        int32_t smax = INT32_MIN;
        for (int32_t j = 0; j < T; j++) {
            const int32_t s = hydra_dot_s8(qt, k + (size_t)j * (size_t)D + (size_t)h0, dh) + q_term - zq * ksum[j];
            w[j] = s;
            smax = s > smax ? s : smax;
        }

        /* exp of (score - max) from the table; the max itself gives 2^15, so S >= 2^15. */
        int32_t sum = 0;
        for (int32_t j = 0; j < T; j++) {
            int32_t idx = hydra_requantize(smax - w[j], exp_m, exp_s, single);
            idx = idx < 0 ? 0 : (idx > last ? last : idx);
            w[j] = exp_table[idx];
            sum += w[j]; /* <= T * 2^15 <= 2^31 - 1 by HYDRA_SOFTMAX_MAX_TOKENS */
        }
        const int64_t recip = RECIP_NUM / sum; /* in [2^15, 2^31) */

        /* The weighted sum of value rows, normalised by recip, requantised. Up to 256 tokens, four
         * columns per pass over the rows in int32, with the zero point taken out as zv * S: the same
         * integer, since |sum_j w_j v_j| <= 2^30 and the result fits (255 S < 2^31). */
        int8_t *yt = output + (size_t)t * (size_t)D + (size_t)h0;
        int32_t i = 0;
        if (narrow) {
            for (; i + 4 <= dh; i += 4) {
                const int8_t *vi = v + (size_t)h0 + (size_t)i;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (int32_t j = 0; j < T; j++) {
                    const int8_t *vj = vi + (size_t)j * (size_t)D;
                    a0 += w[j] * vj[0];
                    a1 += w[j] * vj[1];
                    a2 += w[j] * vj[2];
                    a3 += w[j] * vj[3];
                }
                yt[i] = value_out(a0 - zv * sum, recip, out_m, out_s, zy, single);
                yt[i + 1] = value_out(a1 - zv * sum, recip, out_m, out_s, zy, single);
                yt[i + 2] = value_out(a2 - zv * sum, recip, out_m, out_s, zy, single);
                yt[i + 3] = value_out(a3 - zv * sum, recip, out_m, out_s, zy, single);
            }
        }
        for (; i < dh; i++) {
            const int8_t *vi = v + (size_t)h0 + (size_t)i;
            int64_t acc = 0; /* |acc| <= 255 * sum */
            for (int32_t j = 0; j < T; j++)
                acc += (int64_t)w[j] * (vi[(size_t)j * (size_t)D] - zv);
            yt[i] = value_out(acc, recip, out_m, out_s, zy, single);
        }
    }
}

/* The pointer checks every entry point shares: non-null, the int32 buffer aligned. */
static int pointers_ok(const hydra_softmax_attention_params *params, const int8_t *q, const int8_t *k,
                       const int8_t *v, const void *ints, int8_t *output)
{
    return params != NULL && q != NULL && k != NULL && v != NULL && output != NULL && ints != NULL &&
           (uintptr_t)ints % sizeof(int32_t) == 0;
}

hydra_status hydra_softmax_attention_s8(const hydra_softmax_attention_params *params, const int8_t *q,
                                        const int8_t *k, const int8_t *v, int8_t *output, void *scratch)
{
    if (!pointers_ok(params, q, k, v, scratch, output))
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    const int32_t T = params->tokens, D = params->dim, dh = D / params->heads;
    int32_t *w = (int32_t *)scratch, *ksum = w + T;
    for (int32_t h0 = 0; h0 < D; h0 += dh) {
        for (int32_t j = 0; j < T; j++)
            ksum[j] = row_sum(k + (size_t)j * (size_t)D + (size_t)h0, dh);
        attend_head(params, q, k, v, ksum, h0, output, w);
    }
    return HYDRA_OK;
}

hydra_status hydra_softmax_attention_key_sums_s8(const hydra_softmax_attention_params *params, const int8_t *k,
                                                 int32_t *key_sums)
{
    if (params == NULL || k == NULL || key_sums == NULL || (uintptr_t)key_sums % sizeof(int32_t) != 0)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    const int32_t T = params->tokens, D = params->dim, dh = D / params->heads;
    for (int32_t h = 0; h < params->heads; h++)
        for (int32_t j = 0; j < T; j++)
            key_sums[(size_t)h * (size_t)T + (size_t)j] = row_sum(k + (size_t)j * (size_t)D + (size_t)h * (size_t)dh, dh);
    return HYDRA_OK;
}

hydra_status hydra_softmax_attention_rows_s8(const hydra_softmax_attention_params *params, const int8_t *q,
                                             const int8_t *k, const int8_t *v, const int32_t *key_sums,
                                             int8_t *output, void *scratch)
{
    /* the exp table was checked by hydra_softmax_attention_key_sums_s8, once before the loop */
    if (!pointers_ok(params, q, k, v, scratch, output) || key_sums == NULL ||
        (uintptr_t)key_sums % sizeof(int32_t) != 0)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_scalars(params);
    if (st != HYDRA_OK)
        return st;
    const int32_t T = params->tokens, dh = params->dim / params->heads;
    for (int32_t h = 0; h < params->heads; h++)
        attend_head(params, q, k, v, key_sums + (size_t)h * (size_t)T, h * dh, output, (int32_t *)scratch);
    return HYDRA_OK;
}
