/*
 * hydra_linear.c - y[t, n] = clamp(zy + requant(bias[n] + x[t, :] . w[n, :], M[n], shift[n]), lo, hi).
 * docs/numerics.md, "linear". The input zero point is folded into the bias; [lo, hi] is the activation
 * clamp ([-128, 127], or a fused RELU / RELU6 of an imported FULLY_CONNECTED).
 */
#include <stddef.h>

#include "hydra_rt.h"

/* K products of at most 128 * 128 = 2^14 each: K < 2^17 keeps the int32 dot exact. */
#define HYDRA_LINEAR_MAX_K 131071
/* Outputs whose dot products one hydra_dot4_blocked_s8 call forms (a multiple of 4; 64 bytes of stack). */
#define LINEAR_CHUNK 16

/* Outputs n0 .. N - 1 of one token (n0 a multiple of 4: the weights of rows n0 .. start at n0 K). */
static HYDRA_ALWAYS_INLINE void linear_row_from(const hydra_linear_params *params, const hydra_channel_outputs *o,
                                                const int8_t *x, int8_t *y, int32_t n0, int32_t single_rounding,
                                                int32_t right_only)
{
    const int32_t K = params->in_features, N = params->out_features, full = N - N % 4;
    const int8_t *w = params->weights + (size_t)n0 * (size_t)K;
    int32_t n = n0;
    while (n < full) { /* four outputs per pass over x, up to LINEAR_CHUNK of them per call */
        int32_t dots[LINEAR_CHUNK];
        const int32_t count = full - n < LINEAR_CHUNK ? full - n : LINEAR_CHUNK;
        hydra_dot4_blocked_s8(x, w, K, count / 4, dots);
        for (int32_t r = 0; r < count; r++)
            y[n + r] = hydra_channel_output_s8(o, n + r, dots[r], single_rounding, right_only);
        n += count;
        w += (size_t)count * (size_t)K;
    }
    for (; n + 2 <= N; n += 2, w += (size_t)2 * (size_t)K) {
        int32_t dots[2];
        hydra_dot2_s8(x, w, w + K, K, dots);
        y[n] = hydra_channel_output_s8(o, n, dots[0], single_rounding, right_only);
        y[n + 1] = hydra_channel_output_s8(o, n + 1, dots[1], single_rounding, right_only);
    }
    if (n < N)
        y[n] = hydra_channel_output_s8(o, n, hydra_dot_s8(x, w, K), single_rounding, right_only);
}

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
/* Tokens in pairs on the Cortex-M (hydra_dot_pair4_q15) where the outputs take hydra_requantize_right: both rows
 * expanded to int16 once, in a stack buffer of 4 K bytes (512 at this bound; a longer row takes the one-token
 * loop). */
#include <arm_acle.h>
#include <string.h> /* memcpy: on this target only */
#define LINEAR_PAIR_MAX_K 128

/* Channel n's outputs for two tokens (right_only), its bias, multiplier and shift loaded once (and, in double
 * rounding, the rounding shift's constant formed once), saturated to int8: the activation clamp, if any, is
 * clamp_row's. */
static HYDRA_ALWAYS_INLINE void channel_pair(const hydra_channel_outputs *o, int32_t n, int32_t dot0, int32_t dot1,
                                             int8_t *y0, int8_t *y1, int32_t single_rounding)
{
    const int32_t b = o->bias[n], m = o->multiplier[n], sh = o->shift[n];
    int32_t v0, v1;
    if (single_rounding) {
        v0 = hydra_requantize_right(b + dot0, m, sh, 1);
        v1 = hydra_requantize_right(b + dot1, m, sh, 1);
    } else {
        v0 = hydra_srdhm_unsaturated(b + dot0, m);
        v1 = hydra_srdhm_unsaturated(b + dot1, m);
        if (sh != 0) {
            v0 = hydra_round_right(v0, -sh);
            v1 = hydra_round_right(v1, -sh);
        }
    }
    y0[n] = hydra_clamp_s8(v0 + o->zy);
    y1[n] = hydra_clamp_s8(v1 + o->zy);
}

/* y[i] clamped to [lo, hi], four bytes a word: SSUB8 sets a lane's GE flag where y >= bound, SEL picks by it. */
static void clamp_row(int8_t *y, int32_t n, int32_t lo, int32_t hi)
{
    const uint32_t lo4 = 0x01010101u * (uint8_t)lo, hi4 = 0x01010101u * (uint8_t)hi;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t word;
        memcpy(&word, y + i, 4);
        (void)__ssub8(hydra_s32_from_bits(word), hydra_s32_from_bits(lo4));
        word = __sel(word, lo4); /* max(y, lo) */
        (void)__ssub8(hydra_s32_from_bits(word), hydra_s32_from_bits(hi4));
        word = __sel(hi4, word); /* min(y, hi) */
        memcpy(y + i, &word, 4);
    }
    for (; i < n; i++)
        y[i] = (int8_t)(y[i] < lo ? lo : (y[i] > hi ? hi : y[i]));
}

/* Tokens x0 and x1 (K <= LINEAR_PAIR_MAX_K) through every full block of 4 rows, two rows at a time; the K % 4 tail
 * columns (stored row by row after the groups) in C. */
static HYDRA_ALWAYS_INLINE void linear_token_pair(const hydra_channel_outputs *o, const int8_t *weights, int32_t K,
                                                  int32_t full, const int8_t *x0, const int8_t *x1, int8_t *y0,
                                                  int8_t *y1, int32_t single_rounding)
{
    int32_t xq[LINEAR_PAIR_MAX_K]; /* 2 tokens x K int16 */
    const int32_t groups = K / 4, tail = K % 4, cols = K - tail;
    hydra_expand_pair_q15(x0, x1, groups, xq);
    const int8_t *w = weights;
    for (int32_t n = 0; n < full; n += 4, w += (size_t)4 * (size_t)K) {
        int32_t dots[8]; /* rows n, n + 1 then rows n + 2, n + 3, each {x0 r0, x0 r1, x1 r0, x1 r1} */
        hydra_dot_pair4_q15(xq, w, groups, dots);
        int32_t *low = dots, *high = dots + 4;
        const int8_t *wt = w + (size_t)16 * (size_t)groups;
        for (int32_t j = 0; j < tail; j++) {
            const int32_t a = x0[cols + j], b = x1[cols + j];
            low[0] += a * wt[j], low[1] += a * wt[tail + j], high[0] += a * wt[2 * tail + j];
            high[1] += a * wt[3 * tail + j];
            low[2] += b * wt[j], low[3] += b * wt[tail + j], high[2] += b * wt[2 * tail + j];
            high[3] += b * wt[3 * tail + j];
        }
        channel_pair(o, n, low[0], low[2], y0, y1, single_rounding);
        channel_pair(o, n + 1, low[1], low[3], y0, y1, single_rounding);
        channel_pair(o, n + 2, high[0], high[2], y0, y1, single_rounding);
        channel_pair(o, n + 3, high[1], high[3], y0, y1, single_rounding);
    }
    if (o->lo > -128 || o->hi < 127) { /* a fused RELU / RELU6 */
        clamp_row(y0, full, o->lo, o->hi);
        clamp_row(y1, full, o->lo, o->hi);
    }
}
#endif

/* Every row, in one rounding mode and one requantisation path (hydra_channel_output_s8): called with constant
 * single_rounding and right_only, so each call is its own loop. The weights are in the block layout (ops/linear.py
 * blocked_weights): blocks of 4 rows, then the N % 4 rows after the last block as they are. */
static HYDRA_ALWAYS_INLINE void linear_rows(const hydra_linear_params *params, const int8_t *input, int8_t *output,
                                            int32_t single_rounding, int32_t right_only)
{
    const int32_t T = params->rows, K = params->in_features, N = params->out_features;
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, params->output_zero_point,
                                       params->activation_min, params->activation_max};
    const hydra_channel_outputs *o = &out;
    int32_t t = 0;
#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
    const int32_t full = N - N % 4;
    if (right_only && K <= LINEAR_PAIR_MAX_K)
        for (; t + 2 <= T; t += 2) { /* the full blocks here, the N % 4 rows after them by the loop below */
            const int8_t *x0 = input + (size_t)t * (size_t)K;
            int8_t *y0 = output + (size_t)t * (size_t)N;
            linear_token_pair(o, params->weights, K, full, x0, x0 + K, y0, y0 + N, single_rounding);
            if (full < N)
                for (int32_t r = 0; r < 2; r++)
                    linear_row_from(params, o, x0 + (size_t)r * (size_t)K, y0 + (size_t)r * (size_t)N, full,
                                    single_rounding, right_only);
        }
#endif
    for (; t < T; t++)
        linear_row_from(params, o, input + (size_t)t * (size_t)K, output + (size_t)t * (size_t)N, 0, single_rounding,
                        right_only);
}

hydra_status hydra_linear_s8_check(const hydra_linear_params *params)
{
    if (params == NULL || params->weights == NULL || params->bias == NULL || params->multiplier == NULL ||
        params->shift == NULL)
        return HYDRA_ERR_ARG;
    const int32_t K = params->in_features, N = params->out_features;
    if (params->rows <= 0 || K <= 0 || N <= 0 || K > HYDRA_LINEAR_MAX_K)
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(params->output_zero_point) || params->activation_min < -128 ||
        params->activation_max > 127 || params->activation_min > params->activation_max)
        return HYDRA_ERR_ARG;
    for (int32_t n = 0; n < N; n++)
        if (params->shift[n] < -31 || params->shift[n] > 30)
            return HYDRA_ERR_ARG;
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, 0, 0, 0};
    if (params->right_only != 0 && (params->right_only != 1 || !hydra_channels_right_only(&out, N, K)))
        return HYDRA_ERR_ARG;
    return HYDRA_OK;
}

hydra_status hydra_linear_rows_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->rows <= 0)
        return HYDRA_ERR_SHAPE;
    /* one copy of the loop per rounding mode and requantisation path (right_only: checked by _check) */
    if (params->single_rounding)
        params->right_only ? linear_rows(params, input, output, 1, 1) : linear_rows(params, input, output, 1, 0);
    else
        params->right_only ? linear_rows(params, input, output, 0, 1) : linear_rows(params, input, output, 0, 0);
    return HYDRA_OK;
}

hydra_status hydra_linear_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = hydra_linear_s8_check(params);
    return st != HYDRA_OK ? st : hydra_linear_rows_s8(params, input, output);
}
