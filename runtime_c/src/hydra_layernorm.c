/*
 * hydra_layernorm.c - integer LayerNorm per token, docs/numerics.md "layernorm":
 * z = D (x - mean) / sqrt(D^2 (var + eps)) in Q20, then y = z * gamma_q + beta_q
 * shifted down by out_shift. Works in place (output == input).
 */
#include <stddef.h>

#include "hydra_rt.h"

#define HYDRA_LAYERNORM_MAX_DIM 4096 /* the spec's bound: every intermediate then fits */

hydra_status hydra_layernorm_s8_check(const hydra_layernorm_params *params)
{
    if (params == NULL || params->gamma == NULL || params->beta == NULL)
        return HYDRA_ERR_ARG;
    const int32_t D = params->dim, out_shift = params->output_shift;
    if (params->tokens <= 0 || D <= 0 || D > HYDRA_LAYERNORM_MAX_DIM)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(params->input_zero_point) || !hydra_zero_point_ok(params->output_zero_point) ||
        out_shift < 0 || out_shift > 62)
        return HYDRA_ERR_ARG;
    /* eps_q in [1, 2^61] keeps 1 <= v < 2^62, since D * S2 - S1^2 < 2^40 */
    if (params->eps < 1 || params->eps > (INT64_C(1) << 61))
        return HYDRA_ERR_ARG;
    /* |z * gamma_q| < 2^26 * 2^31, so |beta_q| <= 2^62 keeps a_i inside int64 */
    for (int32_t i = 0; i < D; i++)
        if (params->beta[i] < -(INT64_C(1) << 62) || params->beta[i] > (INT64_C(1) << 62))
            return HYDRA_ERR_ARG;
    if (params->narrow_output != 0) { /* the bounds the narrow path relies on */
        if (params->narrow_output != 1 || out_shift < 2 || out_shift > 31)
            return HYDRA_ERR_ARG;
        const int64_t g_max = INT64_C(1) << (out_shift + 1), b_max = INT64_C(1) << (out_shift + 28);
        for (int32_t i = 0; i < D; i++)
            if (params->gamma[i] < -g_max || params->gamma[i] > g_max || params->beta[i] < -b_max ||
                params->beta[i] > b_max)
                return HYDRA_ERR_ARG;
    }
    return HYDRA_OK;
}

hydra_status hydra_layernorm_s8(const hydra_layernorm_params *params, const int8_t *input, int8_t *output)
{
    if (input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = hydra_layernorm_s8_check(params);
    return st != HYDRA_OK ? st : hydra_layernorm_rows_s8(params, input, output);
}

/* floor(v / 2^n) of an int64 v whose quotient fits int32, n in [1, 31]: bits n .. n + 31 of v, from its two words
 * (LSR, LSL, ORR: no 64-bit shift by a variable amount, which the M7 has no instruction for). */
static HYDRA_ALWAYS_INLINE int32_t shift_down_fitting(int64_t v, int32_t n)
{
    const uint64_t u = (uint64_t)v; /* modular: the same bits */
    return hydra_s32_from_bits(((uint32_t)u >> n) | ((uint32_t)(u >> 32) << (32 - n)));
}

/* floor(v / 2^n) for n in [1, 31], saturated to int32: shift_down_fitting where the bits above the quotient's
 * are copies of its sign, else the saturated end. */
static HYDRA_ALWAYS_INLINE int32_t shift_down_saturating(int64_t v, int32_t n)
{
    const int32_t q = shift_down_fitting(v, n);
    const int32_t top = hydra_floor_div_pow2_s32(hydra_s32_from_bits((uint32_t)((uint64_t)v >> 32)), n);
    if (top == (q < 0 ? -1 : 0))
        return q;
    return top < 0 ? INT32_MIN : INT32_MAX;
}

/* One token by the spec's formulas, for any shifts the check allows (elements from .. D - 1). */
static void layernorm_row(const hydra_layernorm_params *params, const int8_t *x, int8_t *y, int32_t s1, int32_t inv,
                          int32_t P, int32_t from)
{
    const int32_t D = params->dim, zx = params->input_zero_point, zy = params->output_zero_point;
    const int32_t out_shift = params->output_shift;
    for (int32_t i = from; i < D; i++) {
        const int32_t xi = x[i] - zx; /* read x[i] before y[i] is written: in place is fine */
        /* |D xi - S1| < 2^21 (int32, so one 32 x 32 multiply) and inv < 2^31;
         * |z| <= sqrt(D) * 2^20 <= 2^26 fits int32 */
        const int32_t centered = D * xi - s1; /* both round shifts in range: |x| < 2^62 + 2^57 */
        const int32_t z = (int32_t)hydra_round_shift_in_range((int64_t)centered * inv, 41 - P);
        const int64_t a = (int64_t)z * params->gamma[i] + params->beta[i];
        const int64_t r = hydra_round_shift_in_range(a, out_shift) + zy;
        y[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
    }
}

/* The same bits where 41 - P <= 32 and out_shift is in [1, 31] (the usual case: P >= 9; out_shift = 20 + G with
 * G <= 11). z = round_shift(c inv, n) with c = D xi - S1 is hydra_mul_high_round(c 2^(32 - n), inv): sum_i c_i^2 =
 * D (D S2 - S1^2) <= D v, so |c| <= sqrt(D v) < 2^(6 + b/2) for v < 2^b, while inv_sqrt's P <= (62 - b) / 2 makes
 * n >= 10 + b/2: |c| < 2^(n - 4), and c 2^(32 - n) < 2^28 fits int32. The output's shift is done on the two words
 * of a (no 64-bit shift by a variable amount, which the M7 has no instruction for) and saturates. */
static void layernorm_row_short_shifts(const hydra_layernorm_params *params, const int8_t *x, int8_t *y, int32_t s1,
                                       int32_t inv, int32_t z_shift)
{
    const int32_t D = params->dim, zx = params->input_zero_point, zy = params->output_zero_point;
    const int32_t out_shift = params->output_shift;
    const int32_t *gamma = params->gamma;
    const int64_t *beta = params->beta;
    const int32_t up = 32 - z_shift;
    /* round_shift(a, s) + zy = floor((a + 2^(s-1) + zy 2^s) / 2^s); |a| < 2^57 + 2^62 leaves room for both */
    const int64_t half_and_zy = (INT64_C(1) << (out_shift - 1)) + (int64_t)zy * (INT64_C(1) << out_shift);
    const int32_t offset = D * zx + s1; /* D xi - S1 = D x[i] - offset */
    for (int32_t i = 0; i < D; i++) {
        const int32_t centered = D * x[i] - offset;
        const int32_t z = hydra_mul_high_round(hydra_s32_from_bits((uint32_t)centered << up), inv);
        y[i] = hydra_clamp_s8(shift_down_saturating((int64_t)z * gamma[i] + beta[i] + half_and_zy, out_shift));
    }
}

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32) && defined(__ARM_FEATURE_SAT) && \
    defined(__GNUC__)
#define HYDRA_LAYERNORM_M7 1
#include <arm_acle.h>
#include <string.h> /* memcpy (the words), on this target only */
#endif

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
#define HYDRA_LAYERNORM_NEON 1
#include <arm_neon.h>

/* Every row by the spec's formulas in int64 lanes, eight elements a turn (aarch64), for any shifts the check allows:
 * c = D x - (D zx + S1) (int32: below 2^21), z = round_shift(c inv, 41 - P) as SMULL to int64 and SRSHL by -(41 - P)
 * (SRSHL's rounding shift is floor((v + 2^(n-1)) / 2^n), formed without overflow), narrowed (|z| <= 2^26),
 * a = z gamma_q + beta_q by SMLAL into int64 lanes (no overflow: the check's bounds), round_shift(a, out_shift) by
 * SRSHL again (a shift of 0 leaves a), then zy added and the clamp by saturating narrows (SQXTN to int32 and int16,
 * SQADD of zy in int16, SQXTN to int8: a value past int16 is past int8 either way). The tail: layernorm_row. */
static void layernorm_row_neon(const hydra_layernorm_params *params, const int8_t *x, int8_t *y, int32_t s1,
                               int32_t inv, int32_t P)
{
    const int32_t D = params->dim, zx = params->input_zero_point;
    const int64x2_t neg_n = vdupq_n_s64(-(41 - P)), neg_s = vdupq_n_s64(-params->output_shift);
    const int32x4_t neg_offset = vdupq_n_s32(-(D * zx + s1));
    const int32x4_t inv4 = vdupq_n_s32(inv);
    const int16x8_t zy = vdupq_n_s16((int16_t)params->output_zero_point);
    const int32_t *gamma = params->gamma;
    const int64_t *beta = params->beta;
    int32_t i = 0;
    for (; i + 8 <= D; i += 8) {
        const int16x8_t x8 = vmovl_s8(vld1_s8(x + i)); /* read before y is written: in place is fine */
        int32x4_t r[2];
        for (int h = 0; h < 2; h++) {
            const int32x4_t c = vmlaq_n_s32(neg_offset, h ? vmovl_high_s16(x8) : vmovl_s16(vget_low_s16(x8)), D);
            const int64x2_t z_lo = vrshlq_s64(vmull_s32(vget_low_s32(c), vget_low_s32(inv4)), neg_n);
            const int64x2_t z_hi = vrshlq_s64(vmull_high_s32(c, inv4), neg_n);
            const int32x4_t z = vmovn_high_s64(vmovn_s64(z_lo), z_hi);
            const int32x4_t g = vld1q_s32(gamma + i + 4 * h);
            const int64x2_t a_lo = vmlal_s32(vld1q_s64(beta + i + 4 * h), vget_low_s32(z), vget_low_s32(g));
            const int64x2_t a_hi = vmlal_high_s32(vld1q_s64(beta + i + 4 * h + 2), z, g);
            r[h] = vqmovn_high_s64(vqmovn_s64(vrshlq_s64(a_lo, neg_s)), vrshlq_s64(a_hi, neg_s));
        }
        const int16x8_t v = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[0]), r[1]), zy);
        vst1_s8(y + i, vqmovn_s16(v));
    }
    layernorm_row(params, x, y, s1, inv, P, i); /* the last D % 8 elements */
}
#endif

/* clamp(floor(t / 2), -128, 127): one SSAT with its operand shifted where the target has it. */
static HYDRA_ALWAYS_INLINE int8_t clamp_s8_half(int32_t t)
{
#ifdef HYDRA_LAYERNORM_M7
    int32_t r;
    __asm__("ssat %0, #8, %1, asr #1" : "=r"(r) : "r"(t));
    return (int8_t)r;
#else
    return hydra_clamp_s8(hydra_floor_div_pow2_s32(t, 1));
#endif
}

/* layernorm_row_short_shifts where the params' narrow_output holds (checked by _check): s = out_shift in [2, 31],
 * |gamma_q| <= 2^(s+1), |beta_q| <= 2^(s+28). z comes from SMMULR of c 2^(32-n) < 2^28 and inv < 2^31, so |z| < 2^27,
 * and A = z gamma_q + beta_q has |A| < 2^(s+28) + 2^(s+28) = 2^(s+29). Then
 *     round_shift(A, s) + zy = floor((floor(A / 2^(s-1)) + 1 + 2 zy) / 2)
 * (nested floors compose; 2^(s-1) 2 = 2^s), where t = floor(A / 2^(s-1)) has |t| < 2^30 + 1, so it is bits s-1 ..
 * s+30 of A's two words, and t + 1 + 2 zy stays in int32. The halving and the clamp are one SSAT on the M7.
 * c 2^(32-n) = D x 2^(32-n) - (D zx + S1) 2^(32-n) is one multiply-add in 32-bit arithmetic modulo 2^32: the result
 * is below 2^28 (layernorm_row_short_shifts' bound), so the wrap of its terms does not show. */
static HYDRA_ALWAYS_INLINE void narrow_row_at(const hydra_layernorm_params *params, const int8_t *x, int8_t *y,
                                              int32_t s1, int32_t inv, int32_t z_shift, int32_t down)
{
    const int32_t D = params->dim, zx = params->input_zero_point, zy = params->output_zero_point;
    const int32_t *gamma = params->gamma;
    const int64_t *beta = params->beta;
    const int32_t up = 32 - z_shift;
    const uint32_t scale = (uint32_t)D << up, neg_offset = 0u - ((uint32_t)(D * zx + s1) << up); /* modulo 2^32 */
    const uint32_t round = (uint32_t)(1 + 2 * zy);
    for (int32_t i = 0; i < D; i++) {
#ifdef HYDRA_LAYERNORM_M7
        /* MLA and SMLAL spelt out: GCC otherwise turns the first into MUL and SUB and loads the int64 in halves */
        int32_t c;
        __asm__("mla %0, %1, %2, %3" : "=r"(c) : "r"((int32_t)x[i]), "r"(scale), "r"(neg_offset));
        const int32_t z = hydra_mul_high_round(c, inv);
        const uint64_t b = (uint64_t)beta[i];
        uint32_t lo = (uint32_t)b, hi = (uint32_t)(b >> 32);
        __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(z), "r"(gamma[i]));
#else
        const int32_t c = hydra_s32_from_bits((uint32_t)(int32_t)x[i] * scale + neg_offset);
        const int32_t z = hydra_mul_high_round(c, inv);
        const uint64_t a = (uint64_t)((int64_t)z * gamma[i] + beta[i]); /* modular: the same bits */
        const uint32_t lo = (uint32_t)a, hi = (uint32_t)(a >> 32);
#endif
        /* bits down .. down + 31 of a, plus the rounding constant, modulo 2^32 (the true sum fits int32): the two
         * shifted words occupy disjoint bits, so OR is ADD, and with a constant down each is one ADD with a
         * shifted operand */
        uint32_t t = round + (lo >> down);
#ifdef HYDRA_LAYERNORM_M7
        __asm__("" : "+r"(t)); /* keeps GCC from reassociating the two ADDs (it would add a MOV) */
#endif
        t += hi << (32 - down);
        y[i] = clamp_s8_half(hydra_s32_from_bits(t));
    }
}

/* narrow_row_at with s - 1 a constant for the output shifts that calibration gives (s = 20 + G, G in [0, 11]) on
 * the M7, where an immediate shift is part of an ADD (one copy per shift, about 100 bytes each); any other shift,
 * and every shift elsewhere, in one copy. */
static void layernorm_row_narrow(const hydra_layernorm_params *params, const int8_t *x, int8_t *y, int32_t s1,
                                 int32_t inv, int32_t z_shift)
{
    const int32_t down = params->output_shift - 1; /* in [1, 30] */
#ifdef HYDRA_LAYERNORM_M7
#define HYDRA_NARROW_AT(n)                                   \
    case n:                                                  \
        narrow_row_at(params, x, y, s1, inv, z_shift, n);    \
        return;
    switch (down) {
        HYDRA_NARROW_AT(19) HYDRA_NARROW_AT(20) HYDRA_NARROW_AT(21) HYDRA_NARROW_AT(22) HYDRA_NARROW_AT(23)
        HYDRA_NARROW_AT(24) HYDRA_NARROW_AT(25) HYDRA_NARROW_AT(26) HYDRA_NARROW_AT(27) HYDRA_NARROW_AT(28)
        HYDRA_NARROW_AT(29) HYDRA_NARROW_AT(30)
    default:
        break;
    }
#undef HYDRA_NARROW_AT
#endif
    narrow_row_at(params, x, y, s1, inv, z_shift, down);
}

/* S1 = sum (x - zx) and S2 = sum (x - zx)^2 of a row: |xi| <= 255 and D <= 4096 keep both inside int32. On the M7
 * the raw sums first, four bytes a word (USADA8 of the bytes biased to unsigned for sum x, SXTB16 pairs and SMLAD
 * for sum x^2), then S1 = sum x - D zx and S2 = sum x^2 - 2 zx sum x + D zx^2: the same integers (each term below
 * 2^31 in magnitude: sum x^2 <= 2^26, |2 zx sum x| <= 2^27, D zx^2 <= 2^26). */
static void row_sums(const int8_t *x, int32_t D, int32_t zx, int32_t *s1_out, int32_t *s2_out)
{
    int32_t i = 0;
#ifdef HYDRA_LAYERNORM_M7
    uint32_t biased = 0; /* sum (x + 128) */
    int32_t sxx = 0;
    for (; i + 4 <= D; i += 4) {
        uint32_t w;
        memcpy(&w, x + i, 4);
        biased = __usada8(w ^ 0x80808080u, 0u, biased);
        const int32_t e = __sxtb16((int32_t)w), o = hydra_sxtb16_ror8((int32_t)w);
        sxx = __smlad(o, o, __smlad(e, e, sxx));
    }
    int32_t sx = (int32_t)biased - 128 * i;
    for (int32_t j = i; j < D; j++) {
        sx += x[j];
        sxx += x[j] * x[j];
    }
    *s1_out = sx - D * zx;
    *s2_out = sxx - 2 * zx * sx + D * zx * zx;
    return;
#elif defined(HYDRA_LAYERNORM_NEON)
    /* The raw sums sixteen bytes a turn (SADDLP / SADALP for sum x; SMULL of the bytes to int16, |x^2| <= 2^14, then
     * SADALP for sum x^2), then S1 and S2 as on the M7 above: the same integers. */
    int32x4_t vx = vdupq_n_s32(0), vxx = vdupq_n_s32(0);
    for (; i + 16 <= D; i += 16) {
        const int8x16_t w = vld1q_s8(x + i);
        vx = vpadalq_s16(vx, vpaddlq_s8(w));
        vxx = vpadalq_s16(vxx, vmull_s8(vget_low_s8(w), vget_low_s8(w)));
        vxx = vpadalq_s16(vxx, vmull_high_s8(w, w));
    }
    int32_t sx = vaddvq_s32(vx), sxx = vaddvq_s32(vxx);
    for (int32_t j = i; j < D; j++) {
        sx += x[j];
        sxx += x[j] * x[j];
    }
    *s1_out = sx - D * zx;
    *s2_out = sxx - 2 * zx * sx + D * zx * zx;
    return;
#else
    int32_t s1 = 0, s2 = 0;
    for (; i < D; i++) {
        const int32_t xi = x[i] - zx;
        s1 += xi;
        s2 += xi * xi;
    }
    *s1_out = s1;
    *s2_out = s2;
#endif
}

hydra_status hydra_layernorm_rows_s8(const hydra_layernorm_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const int32_t T = params->tokens, D = params->dim;
    const int32_t zx = params->input_zero_point;
    const int32_t out_shift = params->output_shift;
    const int64_t eps = params->eps;
    if (T <= 0)
        return HYDRA_ERR_SHAPE;

    for (int32_t t = 0; t < T; t++) {
        const int8_t *x = input + (size_t)t * (size_t)D;
        int8_t *y = output + (size_t)t * (size_t)D;

        /* |xi| <= 255, so S2 <= 4096 * 255^2 < 2^31 */
        int32_t s1, s2;
        row_sums(x, D, zx, &s1, &s2);
        /* D * S2 - S1^2 >= 0 (Cauchy-Schwarz) and eps >= 1, so v >= 1 */
        const int64_t v = (int64_t)D * s2 - (int64_t)s1 * s1 + eps;
        int32_t inv, P;
        hydra_inv_sqrt(v, &inv, &P);
        const int32_t z_shift = 41 - P;
#ifdef HYDRA_LAYERNORM_NEON
        layernorm_row_neon(params, x, y, s1, inv, P);
        continue;
#endif
        if (z_shift <= 32 && params->narrow_output)
            layernorm_row_narrow(params, x, y, s1, inv, z_shift);
        else if (z_shift <= 32 && out_shift >= 1 && out_shift <= 31)
            layernorm_row_short_shifts(params, x, y, s1, inv, z_shift);
        else
            layernorm_row(params, x, y, s1, inv, P, 0);
    }
    return HYDRA_OK;
}
