/*
 * hydra_attention.c - Hydra attention (one head per feature), docs/numerics.md
 * "hydra_attention":
 *
 *     kv[d]   = round_shift(sum_t phi(k_t)[d] * (v[t, d] - zv), kv_shift)
 *     y[t, d] = clamp(zy + requant(phi(q_t)[d] * kv[d], M, shift))
 *
 * phi is the L2-normalised row at scale 1/128. Linear in T, one D-vector of
 * state. Scratch: int32 acc[dim], then int8 phi[dim] (4-byte aligned).
 * Supports output == q: each q row's phi is taken before its output row is written.
 */
#include <stddef.h>

#include "hydra_rt.h"

/* |xi| <= 255: at most 2^15 features keep ss = sum xi^2 below 2^31. */
#define HYDRA_ATTENTION_MAX_DIM 32768

static int32_t saturate_s32(int64_t x)
{
    return (int32_t)(x < INT32_MIN ? INT32_MIN : (x > INT32_MAX ? INT32_MAX : x));
}

/* zy + r as int8; r is saturated to 9 bits first so the sum cannot overflow. */
static int8_t add_zero_point_s8(int32_t r, int32_t zy)
{
    return hydra_clamp_s8((r < -256 ? -256 : (r > 255 ? 255 : r)) + zy);
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
        /* |xi * inv| < 2^39; the result is about 128 * xi / |x|, at most 129 in magnitude */
        const int64_t r = hydra_round_shift_s64((int64_t)(row[i] - z) * inv, 54 - P);
        phi[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
    }
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
    const int32_t zq = params->q_zero_point, zk = params->k_zero_point, zv = params->v_zero_point;
    const int32_t zy = params->output_zero_point;
    if (T <= 0 || D <= 0 || D > HYDRA_ATTENTION_MAX_DIM)
        return HYDRA_ERR_SHAPE;
    if (zq < -128 || zq > 127 || zk < -128 || zk > 127 || zv < -128 || zv > 127 || zy < -128 || zy > 127)
        return HYDRA_ERR_ARG;
    if (params->kv_shift < 0 || params->kv_shift > 31 || params->shift < -31 || params->shift > 30)
        return HYDRA_ERR_ARG;
    /* Each term of acc is at most 128 * Vmax: T_max of the spec keeps acc inside int32. */
    const int32_t vmax = (127 - zv) > (zv + 128) ? (127 - zv) : (zv + 128);
    if (T > INT32_MAX / (128 * vmax))
        return HYDRA_ERR_SHAPE;

    int32_t *acc = (int32_t *)scratch;
    int8_t *phi = (int8_t *)scratch + 4 * (size_t)D;

    /* 1-2. The state: acc[d] = sum_t phi_k[t, d] * (v[t, d] - zv), then kv = round_shift(acc). */
    for (int32_t d = 0; d < D; d++)
        acc[d] = 0;
    for (int32_t t = 0; t < T; t++) {
        const int8_t *vt = v + (size_t)t * (size_t)D;
        phi_row(k + (size_t)t * (size_t)D, zk, D, phi);
        for (int32_t d = 0; d < D; d++)
            acc[d] += phi[d] * (vt[d] - zv);
    }
    for (int32_t d = 0; d < D; d++)
        acc[d] = (int32_t)hydra_round_shift_s64(acc[d], params->kv_shift); /* |kv| <= |acc| + 1 */

    /* 3. Each query row gates the state. */
    for (int32_t t = 0; t < T; t++) {
        phi_row(q + (size_t)t * (size_t)D, zq, D, phi); /* before output row t: output may be q */
        int8_t *y = output + (size_t)t * (size_t)D;
        for (int32_t d = 0; d < D; d++) {
            /* |phi * kv| <= 2^30 with the compiler's kv_shift; saturate (never wrap) otherwise */
            const int32_t prod = saturate_s32((int64_t)phi[d] * acc[d]);
            y[d] = add_zero_point_s8(hydra_requantize(prod, params->multiplier, params->shift), zy);
        }
    }
    return HYDRA_OK;
}
