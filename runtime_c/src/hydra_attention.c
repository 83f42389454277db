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

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32) && defined(__ARM_FEATURE_DSP) && \
    defined(__GNUC__)
#define HYDRA_ATTENTION_M7 1 /* four features a word: SXTB16 / SSUB16 pairs, SMLAD, SMLAW, SMLAB */
#include <string.h>              /* memcpy (the words), on this target only */

/* z in both halfwords, for SSUB16. */
static inline int32_t halves(int32_t z)
{
    return hydra_s32_from_bits(((uint32_t)z & 0xFFFFu) | ((uint32_t)z << 16));
}
#endif

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
#define HYDRA_ATTENTION_NEON 1 /* eight features a turn in NEON lanes (aarch64) */
#include <arm_neon.h>
#endif

/* ss = sum_i (r[i] - z)^2 of one row: at most 2^15 features of |xi| <= 255, below 2^31. */
static int32_t sum_squares(const int8_t *row, int32_t z, int32_t dim)
{
    int32_t ss = 0, i = 0;
#ifdef HYDRA_ATTENTION_NEON
    const int16x8_t z8 = vdupq_n_s16((int16_t)z);
    int32x4_t acc = vdupq_n_s32(0);
    for (; i + 8 <= dim; i += 8) {
        const int16x8_t x = vsubq_s16(vmovl_s8(vld1_s8(row + i)), z8); /* |xi| <= 255 */
        acc = vmlal_high_s16(vmlal_s16(acc, vget_low_s16(x), vget_low_s16(x)), x, x);
    }
    ss = vaddvq_s32(acc);
#endif
#ifdef HYDRA_ATTENTION_M7
    const int32_t z2 = halves(z);
    for (; i + 4 <= dim; i += 4) {
        int32_t w;
        memcpy(&w, row + i, 4);
        const int32_t x02 = __ssub16(__sxtb16(w), z2), x13 = __ssub16(hydra_sxtb16_ror8(w), z2); /* |xi| <= 255 */
        ss = __smlad(x13, x13, __smlad(x02, x02, ss));
    }
#endif
    for (; i < dim; i++) {
        const int32_t xi = row[i] - z;
        ss += xi * xi;
    }
    return ss;
}

/* phi_i of a row with ss >= 1: clamp(round_shift(xi * inv, n), -128, 127) with (inv, P) = inv_sqrt(ss), n = 54 - P.
 * ss < 2^31 gives P >= 15, so n is in [24, 39] and n - 1 >= 16. */
typedef struct {
    int32_t inv, n;
} phi_scale;

static phi_scale row_scale(int32_t ss)
{
    int32_t inv, P;
    hydra_inv_sqrt(ss, &inv, &P);
    const phi_scale sc = {inv, 54 - P};
    return sc;
}

/* |xi * inv| < 2^39 and n <= 39, so round_shift is in range; the result is about 128 * xi / |x|, at most 129 in
 * magnitude */
static HYDRA_ALWAYS_INLINE int32_t phi_one(int32_t xi, phi_scale sc)
{
    const int64_t r = hydra_round_shift_in_range((int64_t)xi * sc.inv, sc.n);
    return (int32_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
}

#ifdef HYDRA_ATTENTION_M7
/* x saturated to [-128, 127], as an int32 (SSAT). */
static HYDRA_ALWAYS_INLINE int32_t ssat8(int32_t x)
{
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
}

/* phi_one of the bottom / top halfword of a pair: SMLAWB forms floor(inv xi / 2^16) + 2^(n-17) (no overflow: the
 * quotient is below 2^23), and floor((floor((xi inv + 2^(n-1)) / 2^16)) / 2^(n-16)) = round_shift(xi inv, n), as
 * 2^(n-1) is a multiple of 2^16 (n >= 17) and nested floors of divisions compose. */
static HYDRA_ALWAYS_INLINE int32_t phi_bottom(int32_t pair, int32_t inv, int32_t half, int32_t down)
{
    return ssat8(hydra_floor_div_pow2_s32(__smlawb(inv, pair, half), down));
}

static HYDRA_ALWAYS_INLINE int32_t phi_top(int32_t pair, int32_t inv, int32_t half, int32_t down)
{
    return ssat8(hydra_floor_div_pow2_s32(__smlawt(inv, pair, half), down));
}
#endif

#ifdef HYDRA_ATTENTION_NEON
/* phi_one of eight features (int16 lanes, |xi| <= 255): SMULL to int64 lanes, SRSHL by -n (round_shift: SRSHL's
 * rounding shift is floor((v + 2^(n-1)) / 2^n)), narrowed (|phi| <= 129 before the clamp) and clamped to int8's
 * range, as int16 lanes. */
static HYDRA_ALWAYS_INLINE int16x8_t phi_x8(int16x8_t xi, int32x4_t inv4, int64x2_t neg_n)
{
    const int32x4_t lo = vmovl_s16(vget_low_s16(xi)), hi = vmovl_high_s16(xi);
    const int64x2_t p0 = vrshlq_s64(vmull_s32(vget_low_s32(lo), vget_low_s32(inv4)), neg_n);
    const int64x2_t p1 = vrshlq_s64(vmull_high_s32(lo, inv4), neg_n);
    const int64x2_t p2 = vrshlq_s64(vmull_s32(vget_low_s32(hi), vget_low_s32(inv4)), neg_n);
    const int64x2_t p3 = vrshlq_s64(vmull_high_s32(hi, inv4), neg_n);
    const int16x8_t r = vcombine_s16(vmovn_s32(vmovn_high_s64(vmovn_s64(p0), p1)),
                                     vmovn_s32(vmovn_high_s64(vmovn_s64(p2), p3)));
    return vmaxq_s16(vminq_s16(r, vdupq_n_s16(127)), vdupq_n_s16(-128));
}
#endif

/* phi of one row (zero point z) into phi[]: clamp(round_shift(xi * inv, 54 - P)), or all zero if the row is. */
static void phi_row(const int8_t *row, int32_t z, int32_t dim, int8_t *phi)
{
    const int32_t ss = sum_squares(row, z, dim);
    if (ss == 0) { /* the zero-vector rule: phi(0) = 0 */
        for (int32_t i = 0; i < dim; i++)
            phi[i] = 0;
        return;
    }
    const phi_scale sc = row_scale(ss);
    for (int32_t i = 0; i < dim; i++)
        phi[i] = (int8_t)phi_one(row[i] - z, sc);
}

/* acc[d] += phi_k[d] * (v[d] - zv) for one row, phi formed on the way (the same integers as phi_row, then the
 * products). */
static void accumulate_row(const int8_t *k, const int8_t *v, int32_t zk, int32_t zv, int32_t dim, int32_t *acc)
{
    const int32_t ss = sum_squares(k, zk, dim);
    if (ss == 0)
        return; /* phi is all zero: nothing to add */
    const phi_scale sc = row_scale(ss);
    int32_t d = 0;
#ifdef HYDRA_ATTENTION_NEON
    /* |phi (v - zv)| <= 128 * 255 fits int16 lanes: SMLAL widens the products into the int32 sums */
    const int16x8_t zk8 = vdupq_n_s16((int16_t)zk), zv8 = vdupq_n_s16((int16_t)zv);
    const int32x4_t inv4 = vdupq_n_s32(sc.inv);
    const int64x2_t neg_n = vdupq_n_s64(-sc.n);
    for (; d + 8 <= dim; d += 8) {
        const int16x8_t phi = phi_x8(vsubq_s16(vmovl_s8(vld1_s8(k + d)), zk8), inv4, neg_n);
        const int16x8_t vz = vsubq_s16(vmovl_s8(vld1_s8(v + d)), zv8);
        vst1q_s32(acc + d, vmlal_s16(vld1q_s32(acc + d), vget_low_s16(phi), vget_low_s16(vz)));
        vst1q_s32(acc + d + 4, vmlal_high_s16(vld1q_s32(acc + d + 4), phi, vz));
    }
#endif
#ifdef HYDRA_ATTENTION_M7
    const int32_t zk2 = halves(zk);
    const int32_t zv2 = halves(zv);
    const int32_t inv = sc.inv, half = INT32_C(1) << (sc.n - 17), down = sc.n - 16;
    for (; d + 4 <= dim; d += 4) {
        int32_t kw, vw;
        memcpy(&kw, k + d, 4);
        memcpy(&vw, v + d, 4);
        const int32_t k02 = __ssub16(__sxtb16(kw), zk2), k13 = __ssub16(hydra_sxtb16_ror8(kw), zk2);
        const int32_t v02 = __ssub16(__sxtb16(vw), zv2), v13 = __ssub16(hydra_sxtb16_ror8(vw), zv2);
        /* phi in [-128, 127] is its own bottom halfword: SMLABB / SMLABT multiply it by v's bottom / top feature */
        acc[d] = __smlabb(phi_bottom(k02, inv, half, down), v02, acc[d]);
        acc[d + 1] = __smlabb(phi_bottom(k13, inv, half, down), v13, acc[d + 1]);
        acc[d + 2] = __smlabt(phi_top(k02, inv, half, down), v02, acc[d + 2]);
        acc[d + 3] = __smlabt(phi_top(k13, inv, half, down), v13, acc[d + 3]);
    }
#endif
    for (; d < dim; d++)
        acc[d] += phi_one(k[d] - zk, sc) * (v[d] - zv);
}

/* y = clamp(zy + requant(phi * kv)) where the kernel has checked that the short form holds for every product and
 * that the output's right shift r is in [1, 23]: double rounding, 2^30 <= M < 2^31, every kv in (-2^23, 2^23], so
 * t = phi kv is in [-2^30, 2^30) (phi in [-128, 127]) and 2 t fits int32. SRDHM(t, M) is then mul_high_round(2 t, M)
 * (|y| <= 2^30), RDBPOT(y, r) + zy = floor((y + 2^(r-1) + zy 2^r - [y < 0]) / 2^r), and zy 2^r + 2^(r-1) + y stays
 * inside int32 for r <= 23 (127 2^23 + 2^22 + 2^30 < 2^31; -128 2^23 - 2^30 - 1 >= -2^31).
 * On the M7 the doubling rides in the multiplier: m2 = 2 M - 2^32 (an int32, as M >= 2^30), and SMMLAR(t, m2, t) =
 * t + floor((t m2 + 2^31) / 2^32) = floor((2 t M + 2^31) / 2^32), the same y in one instruction. */
static HYDRA_ALWAYS_INLINE int8_t apply_one(int32_t phi, int32_t kv, int32_t multiplier, int32_t round, int32_t r)
{
#ifdef HYDRA_ATTENTION_M7
    const int32_t t = phi * kv, m2 = multiplier; /* the caller passes m2 here */
    int32_t y;
    __asm__("smmlar %0, %1, %2, %1" : "=r"(y) : "r"(t), "r"(m2));
#else
    const int32_t t2 = hydra_s32_from_bits((uint32_t)(phi * kv) << 1);
    const int32_t y = hydra_mul_high_round(t2, multiplier);
#endif
    return hydra_clamp_s8(hydra_floor_div_pow2_s32(y + round - (y < 0 ? 1 : 0), r));
}

/* phi's scale of query row q into *sc (1), or 0 where the row is its zero point throughout: phi = 0, so every output
 * is zy + requant(0) = zy, written here. */
static int query_scale(const int8_t *q, int32_t zq, int32_t dim, int32_t zy, int8_t *y, phi_scale *sc)
{
    const int32_t ss = sum_squares(q, zq, dim);
    if (ss == 0) {
        for (int32_t d = 0; d < dim; d++)
            y[d] = (int8_t)zy;
        return 0;
    }
    *sc = row_scale(ss);
    return 1;
}

/* One query row by apply_one (its conditions checked by the caller). In place (output == q) is fine: each word of
 * q is read before its outputs are written. */
static void apply_row_short(const int8_t *q, const int32_t *kv, int32_t zq, int32_t zy, int32_t dim,
                            int32_t multiplier, int32_t r, int8_t *y)
{
    phi_scale sc;
    if (!query_scale(q, zq, dim, zy, y, &sc))
        return;
    const int32_t round = (INT32_C(1) << (r - 1)) + zy * (INT32_C(1) << r);
    int32_t d = 0;
#ifdef HYDRA_ATTENTION_M7
    multiplier = hydra_s32_from_bits((uint32_t)multiplier << 1); /* m2 of apply_one */
    const int32_t zq2 = halves(zq);
    const int32_t inv = sc.inv, half = INT32_C(1) << (sc.n - 17), down = sc.n - 16;
    for (; d + 4 <= dim; d += 4) {
        int32_t qw;
        memcpy(&qw, q + d, 4);
        const int32_t q02 = __ssub16(__sxtb16(qw), zq2), q13 = __ssub16(hydra_sxtb16_ror8(qw), zq2);
        y[d] = apply_one(phi_bottom(q02, inv, half, down), kv[d], multiplier, round, r);
        y[d + 1] = apply_one(phi_bottom(q13, inv, half, down), kv[d + 1], multiplier, round, r);
        y[d + 2] = apply_one(phi_top(q02, inv, half, down), kv[d + 2], multiplier, round, r);
        y[d + 3] = apply_one(phi_top(q13, inv, half, down), kv[d + 3], multiplier, round, r);
    }
#endif
    for (; d < dim; d++)
        y[d] = apply_one(phi_one(q[d] - zq, sc), kv[d], multiplier, round, r);
}

#ifdef HYDRA_ATTENTION_NEON
/* One query row where every |kv| <= 2^23 (checked by the caller), so that t = phi kv is exact in int32 lanes:
 * eight features a turn, y = zy + requant(t) by hydra_requantize_x4 (the NEON form of hydra_requantize, either
 * rounding, any shift) and saturating narrows (hydra_add_zero_point_s8's value); the tail by the scalar steps. In
 * place (output == q) is fine: eight q bytes are read before their outputs are written. */
static void apply_row_neon(const int8_t *q, const int32_t *kv, const hydra_attention_params *params, int8_t *y)
{
    const int32_t dim = params->dim, zq = params->q_zero_point, zy = params->output_zero_point;
    const int32_t multiplier = params->multiplier, shift = params->shift, single = params->single_rounding;
    phi_scale sc;
    if (!query_scale(q, zq, dim, zy, y, &sc))
        return;
    const int16x8_t zq8 = vdupq_n_s16((int16_t)zq), zy8 = vdupq_n_s16((int16_t)zy);
    const int32x4_t inv4 = vdupq_n_s32(sc.inv), m4 = vdupq_n_s32(multiplier), s4 = vdupq_n_s32(shift);
    const int64x2_t neg_n = vdupq_n_s64(-sc.n);
    int32_t d = 0;
    for (; d + 8 <= dim; d += 8) {
        const int16x8_t phi = phi_x8(vsubq_s16(vmovl_s8(vld1_s8(q + d)), zq8), inv4, neg_n);
        const int32x4_t t0 = vmulq_s32(vmovl_s16(vget_low_s16(phi)), vld1q_s32(kv + d));
        const int32x4_t t1 = vmulq_s32(vmovl_high_s16(phi), vld1q_s32(kv + d + 4));
        const int32x4_t r0 = hydra_requantize_x4(t0, m4, s4, single, 0);
        const int32x4_t r1 = hydra_requantize_x4(t1, m4, s4, single, 0);
        vst1_s8(y + d, vqmovn_s16(vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r0), r1), zy8)));
    }
    for (; d < dim; d++)
        y[d] = hydra_add_zero_point_s8(hydra_requantize(phi_one(q[d] - zq, sc) * kv[d], multiplier, shift, single),
                                       zy);
}
#endif

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
    for (int32_t t = 0; t < rows; t++)
        accumulate_row(k + (size_t)t * (size_t)D, v + (size_t)t * (size_t)D, zk, zv, D, acc);
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

#ifdef HYDRA_ATTENTION_NEON
    { /* every |kv| <= 2^23: kv + 2^23 in [0, 2^24] as a uint32 */
        uint32_t worst = 0;
        for (int32_t d = 0; d < D; d++) {
            const uint32_t u = (uint32_t)kv[d] + (UINT32_C(1) << 23);
            worst = u > worst ? u : worst;
        }
        if (worst <= (UINT32_C(1) << 24)) {
            for (int32_t t = 0; t < rows; t++)
                apply_row_neon(q + (size_t)t * (size_t)D, kv, params, output + (size_t)t * (size_t)D);
            return HYDRA_OK;
        }
    }
#endif
    /* The short requantisation (apply_one) where its conditions hold for this state: checked once per call. */
    int short_form = !single && multiplier >= (INT32_C(1) << 30) && shift <= -1 && shift >= -23;
    if (short_form) { /* every kv in (-2^23, 2^23]: kv + 2^23 - 1 in [0, 2^24) as a uint32, so their OR is too */
        uint32_t any = 0;
        for (int32_t d = 0; d < D; d++)
            any |= (uint32_t)kv[d] + ((UINT32_C(1) << 23) - 1);
        short_form = any < (UINT32_C(1) << 24);
    }
    if (short_form) {
        for (int32_t t = 0; t < rows; t++)
            apply_row_short(q + (size_t)t * (size_t)D, kv, zq, zy, D, multiplier, -shift,
                            output + (size_t)t * (size_t)D);
        return HYDRA_OK;
    }

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
