/*
 * hydra_attention.c - Hydra attention (one head per feature), docs/numerics.md
 * "hydra_attention":
 *
 *     kv[d]   = round_shift(sum_t phi(k_t)[d] * (v[t, d] - zv), kv_shift)
 *     y[t, d] = clamp(zy + requant(phi(q_t)[d] * kv[d], M, shift), -128, 127)
 *
 * phi is the L2-normalised row at scale 1/128. Linear in T, one D-vector of
 * state. The three steps are public row-level functions, so that a streamed
 * token loop (model.c, passes/stream.py) can feed the state a few tokens at a time:
 *
 *     accumulate (any number of calls, any row counts) -> round_state -> apply
 *
 * hydra_attention_s8 is exactly that sequence over all T rows. Its scratch:
 * int32 acc[dim], then int8 phi[dim] (4-byte aligned). Supports output == q:
 * each q row's phi is taken before its output row is written.
 */
#include <stddef.h>

#include "hydra_rt.h"

/* |xi| <= 255: at most 2^15 features keep ss = sum xi^2 below 2^31. */
#define HYDRA_ATTENTION_MAX_DIM 32768

/* The checks every entry point shares (all but the token count). */
static hydra_status check_params(const hydra_attention_params *params)
{
    if (params->dim <= 0 || params->dim > HYDRA_ATTENTION_MAX_DIM)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(params->q_zero_point) || !hydra_zero_point_ok(params->k_zero_point) ||
        !hydra_zero_point_ok(params->v_zero_point) || !hydra_zero_point_ok(params->output_zero_point))
        return HYDRA_ERR_ARG;
    if (params->kv_shift < 0 || params->kv_shift > 31 || params->shift < -31 || params->shift > 30)
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

/* phi of one row (zero point z): clamp(round_shift(xi * inv, 54 - P)), or all zero if the row is. */
static void phi_row(const int8_t *row, int32_t z, int32_t dim, int8_t *phi)
{
    int32_t ss = 0;
    for (int32_t i = 0; i < dim; i++) {
        const int32_t xi = row[i] - z;
        ss += xi * xi;
    }
    if (ss == 0) { /* the zero-vector rule: phi(0) = 0 */
        for (int32_t i = 0; i < dim; i++)
            phi[i] = 0;
        return;
    }
    int32_t inv, P;
    hydra_inv_sqrt(ss, &inv, &P);
    for (int32_t i = 0; i < dim; i++) {
        /* |xi * inv| < 2^39 (and 54 - P <= 54), so round_shift is in range; the result is about 128 * xi / |x|, at
         * most 129 in magnitude */
        const int64_t r = hydra_round_shift_in_range((int64_t)(row[i] - z) * inv, 54 - P);
        phi[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
    }
}

int32_t hydra_attention_max_tokens(int32_t v_zero_point)
{
    if (!hydra_zero_point_ok(v_zero_point))
        return 0;
    /* Each term of acc is at most 128 * Vmax in magnitude: T_max of the spec keeps acc inside int32. */
    const int32_t vmax = (127 - v_zero_point) > (v_zero_point + 128) ? (127 - v_zero_point) : (v_zero_point + 128);
    return INT32_MAX / (128 * vmax);
}

hydra_status hydra_attention_accumulate_s8(const hydra_attention_params *params, const int8_t *k, const int8_t *v,
                                           int32_t rows, int32_t *acc, int8_t *phi_scratch)
{
    if (params == NULL || k == NULL || v == NULL || acc == NULL || phi_scratch == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    const int32_t D = params->dim, zk = params->k_zero_point, zv = params->v_zero_point;
    if (rows <= 0 || rows > hydra_attention_max_tokens(zv))
        return HYDRA_ERR_SHAPE;

    /* acc[d] += phi_k[t, d] * (v[t, d] - zv); the caller keeps the total row count within T_max. */
    for (int32_t t = 0; t < rows; t++) {
        const int8_t *vt = v + (size_t)t * (size_t)D;
        phi_row(k + (size_t)t * (size_t)D, zk, D, phi_scratch);
        for (int32_t d = 0; d < D; d++)
            acc[d] += phi_scratch[d] * (vt[d] - zv);
    }
    return HYDRA_OK;
}

hydra_status hydra_attention_round_state_s8(const hydra_attention_params *params, int32_t *acc)
{
    if (params == NULL || acc == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    for (int32_t d = 0; d < params->dim; d++)
        acc[d] = (int32_t)hydra_round_shift(acc[d], params->kv_shift); /* |kv| <= |acc| + 1 */
    return HYDRA_OK;
}

hydra_status hydra_attention_apply_s8(const hydra_attention_params *params, const int8_t *q, const int32_t *kv,
                                      int32_t rows, int8_t *phi_scratch, int8_t *output)
{
    if (params == NULL || q == NULL || kv == NULL || phi_scratch == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    if (rows <= 0)
        return HYDRA_ERR_SHAPE;
    const int32_t D = params->dim, zq = params->q_zero_point, zy = params->output_zero_point;
    /* Locals: stores through int8_t * may alias the params, and the compiler would reload them. */
    const int32_t multiplier = params->multiplier, shift = params->shift, single = params->single_rounding;

    /* Each query row gates the state. */
    for (int32_t t = 0; t < rows; t++) {
        phi_row(q + (size_t)t * (size_t)D, zq, D, phi_scratch); /* before output row t: output may be q */
        int8_t *y = output + (size_t)t * (size_t)D;
        for (int32_t d = 0; d < D; d++) {
            /* |phi * kv| <= 2^30 with the compiler's kv_shift; saturate (never wrap) otherwise */
            const int32_t prod = hydra_saturate_s32((int64_t)phi_scratch[d] * kv[d]);
            y[d] = hydra_add_zero_point_s8(hydra_requantize(prod, multiplier, shift, single), zy);
        }
    }
    return HYDRA_OK;
}

int32_t hydra_attention_s8_get_buffer_size(const hydra_attention_params *params)
{
    if (params == NULL || params->dim <= 0 || params->dim > HYDRA_ATTENTION_MAX_DIM)
        return 0;
    return 4 * params->dim + params->dim; /* int32 acc[dim], then int8 phi[dim] */
}

hydra_status hydra_attention_s8(const hydra_attention_params *params, const int8_t *q, const int8_t *k,
                                const int8_t *v, void *scratch, int8_t *output)
{
    if (params == NULL || q == NULL || k == NULL || v == NULL || scratch == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if ((uintptr_t)scratch % sizeof(int32_t) != 0) /* acc[] is read as int32 */
        return HYDRA_ERR_ARG;
    const int32_t T = params->tokens, D = params->dim;
    if (T <= 0 || D <= 0 || D > HYDRA_ATTENTION_MAX_DIM)
        return HYDRA_ERR_SHAPE;
    hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    if (T > hydra_attention_max_tokens(params->v_zero_point))
        return HYDRA_ERR_SHAPE;

    int32_t *acc = (int32_t *)scratch;
    int8_t *phi = (int8_t *)scratch + 4 * (size_t)D;

    /* 1-2. The state: acc[d] = sum_t phi_k[t, d] * (v[t, d] - zv), then kv = round_shift(acc). */
    for (int32_t d = 0; d < D; d++)
        acc[d] = 0;
    st = hydra_attention_accumulate_s8(params, k, v, T, acc, phi);
    if (st == HYDRA_OK)
        st = hydra_attention_round_state_s8(params, acc);
    /* 3. Each query row gates the state. */
    if (st == HYDRA_OK)
        st = hydra_attention_apply_s8(params, q, acc, T, phi, output);
    return st;
}
