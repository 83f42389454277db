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

#if !defined(HYDRA_LINEAR_RIGHT_ONLY)
/* Channel n's output by the general path, in either rounding: one out-of-line copy for the uncommon cases. Left out
 * where every node rounds twice and takes right_only (HYDRA_LINEAR_RIGHT_ONLY: ops/linear.py c_defines, flash). */
static HYDRA_NOINLINE int8_t general_output(const hydra_channel_outputs *o, int32_t n, int32_t dot,
                                            int32_t single_rounding)
{
    return hydra_channel_output_s8(o, n, dot, single_rounding, 0);
}
#endif

/* Channel n's output: inline where `fast` (double rounding and right_only: every calibrated model's outputs), saturated
 * to int8 (the activation clamp is hydra_clamp_row_s8's, after the row), else general_output. */
static HYDRA_ALWAYS_INLINE int8_t linear_output(const hydra_channel_outputs *o, int32_t n, int32_t dot, int32_t fast,
                                                int32_t single_rounding)
{
#if defined(HYDRA_LINEAR_RIGHT_ONLY)
    (void)fast, (void)single_rounding; /* fast: hydra_linear_rows_s8 has checked */
#else
    if (!fast)
        return general_output(o, n, dot, single_rounding);
#endif
    return hydra_clamp_s8(hydra_requantize_right(o->bias[n] + dot, o->multiplier[n], o->shift[n], 0) + o->zy);
}

/* Outputs n0 .. N - 1 of one token (n0 a multiple of 4: the weights of rows n0 .. start at n0 K). */
static HYDRA_NOINLINE void linear_row_from(const hydra_linear_params *params, const hydra_channel_outputs *o,
                                           const int8_t *x, int8_t *y, int32_t n0, int32_t fast)
{
    const int32_t K = params->in_features, N = params->out_features, full = N - N % 4;
    const int32_t single = params->single_rounding;
    const int8_t *w = params->weights + (size_t)n0 * (size_t)K;
    int32_t n = n0;
    while (n < full) { /* four outputs per pass over x, up to LINEAR_CHUNK of them per call */
        int32_t dots[LINEAR_CHUNK];
        const int32_t count = full - n < LINEAR_CHUNK ? full - n : LINEAR_CHUNK;
        hydra_dot4_blocked_s8(x, w, K, count / 4, dots);
        for (int32_t r = 0; r < count; r++)
            y[n + r] = linear_output(o, n + r, dots[r], fast, single);
        n += count;
        w += (size_t)count * (size_t)K;
    }
    for (; n + 2 <= N; n += 2, w += (size_t)2 * (size_t)K) {
        int32_t dots[2];
        hydra_dot2_s8(x, w, w + K, K, dots);
        y[n] = linear_output(o, n, dots[0], fast, single);
        y[n + 1] = linear_output(o, n + 1, dots[1], fast, single);
    }
    if (n < N)
        y[n] = linear_output(o, n, hydra_dot_s8(x, w, K), fast, single);
    if (fast && (o->lo > -128 || o->hi < 127))
        hydra_clamp_row_s8(y + n0, N - n0, o->lo, o->hi);
}

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32) && !defined(HYDRA_LINEAR_ONE_ROW) &&            \
    defined(__GNUC__)
/* Tokens in pairs on the Cortex-M where the outputs take hydra_requantize_right: both rows expanded to int16 once, in
 * a stack buffer of 4 K bytes (512 at this bound; a longer row takes the one-token loop), then each weight word feeds
 * both tokens. Left out where the compiler says every call takes one row (ops/linear.py c_defines: flash). */
#define LINEAR_SIMD32_PAIRS 1
#define LINEAR_PAIR_MAX_K 128

/* Rows x0 and x1 (groups >= 1 groups of 4 columns) as int16 pairs, per group the words {x0[0], x0[2]},
 * {x0[1], x0[3]}, {x1[0], x1[2]}, {x1[1], x1[3]} (SXTB16's order). */
static HYDRA_ALWAYS_INLINE void expand_pair(const int8_t *x0, const int8_t *x1, int32_t groups, int32_t *xq)
{
    /* one STM of the four words a group (GCC's schedule of the same in C: 15 instructions a group, here 10) */
    register int32_t e0 __asm__("r8"), o0 __asm__("r9"), e1 __asm__("r10"), o1 __asm__("r11");
    const int32_t *const end = xq + 4 * groups;
    __asm__ __volatile__("1:\n\t" /* volatile: its only result is memory */
            "ldr %[o0], [%[x0]], #4\n\t"
            "ldr %[o1], [%[x1]], #4\n\t"
            "sxtb16 %[e0], %[o0]\n\t"
            "sxtb16 %[o0], %[o0], ror #8\n\t"
            "sxtb16 %[e1], %[o1]\n\t"
            "sxtb16 %[o1], %[o1], ror #8\n\t"
            "stm %[xq]!, {%[e0], %[o0], %[e1], %[o1]}\n\t"
            "cmp %[xq], %[end]\n\t"
            "bne 1b"
            : [x0] "+r"(x0), [x1] "+r"(x1), [xq] "+r"(xq), [e0] "=&r"(e0), [o0] "=&r"(o0), [e1] "=&r"(e1),
              [o1] "=&r"(o1)
            : [end] "r"(end)
            : "cc", "memory");
}

/* One group of 4 columns for rows r and r + 1 of a block (their words at w and w + 4; 16 bytes a group) and both
 * tokens: one LDM of the tokens' expanded words, one LDRD of the rows' words, each word split once by SXTB16 for 4
 * SMLADs: 14 instructions per 16 MACs. */
#define PAIR_GROUP                                                \
    "ldm %[xq]!, {%[x0e], %[x0o], %[x1e], %[x1o]}\n\t"             \
    "ldrd %[w0], %[w1], [%[w]], #16\n\t"                           \
    "sxtb16 %[even], %[w0]\n\t"                                    \
    "sxtb16 %[w0], %[w0], ror #8\n\t"                              \
    "smlad %[a00], %[x0e], %[even], %[a00]\n\t"                    \
    "smlad %[a10], %[x1e], %[even], %[a10]\n\t"                    \
    "smlad %[a00], %[x0o], %[w0], %[a00]\n\t"                      \
    "smlad %[a10], %[x1o], %[w0], %[a10]\n\t"                      \
    "sxtb16 %[even], %[w1]\n\t"                                    \
    "sxtb16 %[w1], %[w1], ror #8\n\t"                              \
    "smlad %[a01], %[x0e], %[even], %[a01]\n\t"                    \
    "smlad %[a11], %[x1e], %[even], %[a11]\n\t"                    \
    "smlad %[a01], %[x0o], %[w1], %[a01]\n\t"                      \
    "smlad %[a11], %[x1o], %[w1], %[a11]\n\t"

/* d = {b0 + x0 . r, b1 + x0 . r+1, b0 + x1 . r, b1 + x1 . r+1} (b: the rows' biases) over `groups` (>= 1) groups, w at
 * row r's first word: four groups a turn,
 * entering the first turn at the group that leaves a multiple of four. LDM wants its registers in ascending order,
 * hence the fixed r8-r11; the other ten operands take r0-r7, r12 and lr. */
static HYDRA_ALWAYS_INLINE void pair_rows(const int32_t *xq, const int8_t *w, int32_t groups, int32_t b0, int32_t b1,
                                          int32_t d[4])
{
    /* even: groups % 4, and then a scratch register (the first group's even halves) */
    register int32_t x0e __asm__("r8"), x0o __asm__("r9"), x1e __asm__("r10"), x1o __asm__("r11");
    int32_t a00 = b0, a01 = b1, a10 = b0, a11 = b1, w0, w1, even = groups % 4;
    const int32_t *const end = xq + 4 * groups;
    __asm__("cbz %[even], 1f\n\t"
            "cmp %[even], #2\n\t"
            "beq 3f\n\t" /* 2 groups over a multiple of 4: enter at the third */
            "bhi 2f\n\t" /* 3: at the second */
            "b 4f\n\t"   /* 1: at the fourth */
            "1:\n\t" PAIR_GROUP "2:\n\t" PAIR_GROUP "3:\n\t" PAIR_GROUP "4:\n\t" PAIR_GROUP
            "cmp %[xq], %[end]\n\t"
            "bne 1b"
            : [xq] "+r"(xq), [w] "+r"(w), [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),
              [x0e] "=&r"(x0e), [x0o] "=&r"(x0o), [x1e] "=&r"(x1e), [x1o] "=&r"(x1o), [w0] "=&r"(w0), [w1] "=&r"(w1),
              [even] "+&l"(even) /* CBZ takes r0-r7 */
            : [end] "r"(end)
            : "cc", "memory");
    d[0] = a00, d[1] = a01, d[2] = a10, d[3] = a11;
}
#undef PAIR_GROUP

/* hydra_clamp_s8 as an int32 (its int8_t result costs an SXTB where the value waits for its store) */
static HYDRA_ALWAYS_INLINE int32_t ssat8(int32_t x)
{
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
}

/* zy + requant(acc) in linear_output's fast case for a channel's two tokens (acc: bias + dot), saturated to int8: the
 * activation clamp, if any, is hydra_clamp_row_s8's. The rounding shift by r = -sh > 0, floor((v + 2^(r-1) - [v < 0]) / 2^r),
 * is taken as floor((q + 1) / 2) with q = floor((v - [v < 0]) / 2^(r-1)) (the same integer: adding 2^(r-1) before
 * dividing by 2^r adds 1 before halving q), so that the zero point joins the +1: floor((q + 1 + 2 zy) / 2) =
 * floor((q + 1) / 2) + zy. zy2p1 = 2 zy + 1; |q| < 2^30, so no sum leaves int32. */
static HYDRA_ALWAYS_INLINE void channel_pair(int32_t m, int32_t sh, int32_t zy, int32_t zy2p1, int32_t acc0,
                                             int32_t acc1, int32_t *out0, int32_t *out1)
{
    int32_t v0 = hydra_srdhm_unsaturated(acc0, m), v1 = hydra_srdhm_unsaturated(acc1, m);
    if (sh != 0) {
        const int32_t rm1 = -sh - 1;
        v0 = hydra_floor_div_pow2_s32(hydra_floor_div_pow2_s32(v0 - (v0 < 0 ? 1 : 0), rm1) + zy2p1, 1);
        v1 = hydra_floor_div_pow2_s32(hydra_floor_div_pow2_s32(v1 - (v1 < 0 ? 1 : 0), rm1) + zy2p1, 1);
    } else {
        v0 += zy;
        v1 += zy;
    }
    *out0 = ssat8(v0);
    *out1 = ssat8(v1);
}

/* The per-channel output parameters in locals (a store through int8_t * may alias the params). */
typedef struct {
    const int32_t *bias, *multiplier, *shift;
    int32_t zy;
} pair_outputs;

/* Rows r, r + 1 of the block at w (r = 0 or 2; groups >= 1): their biases plus dots with both tokens, the K % 4 tail columns
 * (stored row by row after the groups) in C, then their outputs, channels n + r and n + r + 1, at y0 and y1. */
static HYDRA_ALWAYS_INLINE void pair_half(pair_outputs o, int32_t n, const int32_t *xq, const int8_t *w, int32_t r,
                                          int32_t groups, int32_t tail, const int8_t *x0, const int8_t *x1, int8_t *y0,
                                          int8_t *y1)
{
    int32_t d[4];
    n += r;
    pair_rows(xq, w + 4 * r, groups, o.bias[n], o.bias[n + 1], d);
    if (tail > 0) {
        const int32_t cols = 4 * groups;
        const int8_t *wt = w + (size_t)16 * (size_t)groups + (size_t)(r * tail);
        for (int32_t j = 0; j < tail; j++) {
            const int32_t a = x0[cols + j], c = x1[cols + j];
            d[0] += a * wt[j], d[1] += a * wt[tail + j], d[2] += c * wt[j], d[3] += c * wt[tail + j];
        }
    }
    /* both channels' parameters, then their four outputs, then the stores (an int8 store may alias the params) */
    const int32_t m0 = o.multiplier[n], m1 = o.multiplier[n + 1], s0 = o.shift[n], s1 = o.shift[n + 1];
    int32_t v00, v01, v10, v11; /* channel, token: in [-128, 127] */
    channel_pair(m0, s0, o.zy, 2 * o.zy + 1, d[0], d[2], &v00, &v01);
    channel_pair(m1, s1, o.zy, 2 * o.zy + 1, d[1], d[3], &v10, &v11);
    y0[n] = (int8_t)v00, y0[n + 1] = (int8_t)v10, y1[n] = (int8_t)v01, y1[n + 1] = (int8_t)v11;
}

/* Tokens x0 and x1 (4 <= K <= LINEAR_PAIR_MAX_K) through every full block of 4 rows, two rows a pass. */
static HYDRA_NOINLINE void linear_token_pair(const hydra_channel_outputs *o, const int8_t *weights, int32_t K,
                                             int32_t full, const int8_t *x0, const int8_t *x1, int8_t *y0, int8_t *y1)
{
    int32_t xq[LINEAR_PAIR_MAX_K]; /* 2 tokens x K int16 */
    const int32_t groups = K / 4, tail = K % 4;
    const pair_outputs out = {o->bias, o->multiplier, o->shift, o->zy};
    expand_pair(x0, x1, groups, xq);
    const int8_t *w = weights;
    for (int32_t n = 0; n < full; n += 4, w += (size_t)4 * (size_t)K) {
        pair_half(out, n, xq, w, 0, groups, tail, x0, x1, y0, y1);
        pair_half(out, n, xq, w, 2, groups, tail, x0, x1, y0, y1);
    }
    if (o->lo > -128 || o->hi < 127) { /* a fused RELU / RELU6 */
        hydra_clamp_row_s8(y0, full, o->lo, o->hi);
        hydra_clamp_row_s8(y1, full, o->lo, o->hi);
    }
}
#endif

/* Every row: one copy of the loop for linear_output's fast case, one for the rest. The weights are in the block
 * layout (ops/linear.py blocked_weights): blocks of 4 rows, then the N % 4 rows after the last block as they are. */
static HYDRA_ALWAYS_INLINE void linear_rows(const hydra_linear_params *params, const int8_t *input, int8_t *output,
                                            int32_t fast)
{
    const int32_t T = params->rows, K = params->in_features, N = params->out_features;
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, params->output_zero_point,
                                       params->activation_min, params->activation_max};
    const hydra_channel_outputs *o = &out;
    int32_t t = 0;
#if defined(LINEAR_SIMD32_PAIRS)
    const int32_t full = N - N % 4;
    if (fast && K >= 4 && K <= LINEAR_PAIR_MAX_K)
        for (; t + 2 <= T; t += 2) { /* the full blocks here, the N % 4 rows after them by the loop below */
            const int8_t *x0 = input + (size_t)t * (size_t)K;
            int8_t *y0 = output + (size_t)t * (size_t)N;
            linear_token_pair(o, params->weights, K, full, x0, x0 + K, y0, y0 + N);
            if (full < N)
                for (int32_t r = 0; r < 2; r++)
                    linear_row_from(params, o, x0 + (size_t)r * (size_t)K, y0 + (size_t)r * (size_t)N, full, fast);
        }
#endif
    for (; t < T; t++)
        linear_row_from(params, o, input + (size_t)t * (size_t)K, output + (size_t)t * (size_t)N, 0, fast);
}

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <string.h> /* memcpy */
#define HYDRA_LINEAR_NEON 1
/* aarch64: one or (with SDOT) two tokens against 16 outputs (4 weight blocks) per pass, so that one 64-byte weight
 * load feeds both tokens, and the output stage 16 channels at a time in NEON (hydra_channel_outputs_x16, the same
 * integers as hydra_channel_output_s8). An exact int32 sum in another order: the same bits as linear_rows. */

#if defined(__ARM_FEATURE_DOTPROD)
#define HYDRA_LINEAR_TOKEN_PAIRS 1 /* one weight load feeds two tokens' SDOTs */
/* A block's 4 dots. SDOT by lane: a 16-byte column group (4 rows x 4 columns) against x's 4 bytes in that lane. */
typedef int32x4_t block_acc;

static HYDRA_ALWAYS_INLINE block_acc block_acc_zero(void)
{
    return vdupq_n_s32(0);
}

/* 16 columns of a block: one LD1 of four registers */
static HYDRA_ALWAYS_INLINE int8x16x4_t block_load64(const int8_t *w)
{
    return vld1q_s8_x4(w);
}

static HYDRA_ALWAYS_INLINE block_acc block_dot16(block_acc acc, int8x16x4_t w, int8x16_t x)
{
    acc = vdotq_laneq_s32(acc, w.val[0], x, 0);
    acc = vdotq_laneq_s32(acc, w.val[1], x, 1);
    acc = vdotq_laneq_s32(acc, w.val[2], x, 2);
    return vdotq_laneq_s32(acc, w.val[3], x, 3);
}

/* w: one column group, x4: its 4 x bytes in every lane */
static HYDRA_ALWAYS_INLINE block_acc block_dot4(block_acc acc, int8x16_t w, int8x16_t x4)
{
    return vdotq_s32(acc, w, x4);
}

static HYDRA_ALWAYS_INLINE int32x4_t block_acc_dots(block_acc acc)
{
    return acc;
}
#else
#define HYDRA_LINEAR_TOKEN_PAIRS 0 /* a second token's 16 more accumulators would spill: SMULL dominates anyway */
/* A block's 4 dots as two pair sums per row (rows 0-1 in low, 2-3 in high): SMULL to int16 (one product fits, two
 * may not), SADALP adds pairs into int32 lanes, ADDP folds them at the end. */
typedef struct {
    int32x4_t low, high;
} block_acc;

static HYDRA_ALWAYS_INLINE block_acc block_acc_zero(void)
{
    const block_acc acc = {vdupq_n_s32(0), vdupq_n_s32(0)};
    return acc;
}

static HYDRA_ALWAYS_INLINE block_acc block_dot4(block_acc acc, int8x16_t w, int8x16_t x4)
{
    acc.low = vpadalq_s16(acc.low, vmull_s8(vget_low_s8(w), vget_low_s8(x4)));
    acc.high = vpadalq_s16(acc.high, vmull_high_s8(w, x4));
    return acc;
}

/* 16 columns of a block as two LDPs: LD1's four consecutive registers cost a MOV each here, where the SMULLs keep
 * the previous block's registers busy */
static HYDRA_ALWAYS_INLINE int8x16x4_t block_load64(const int8_t *w)
{
    const int8x16x4_t v = {{vld1q_s8(w), vld1q_s8(w + 16), vld1q_s8(w + 32), vld1q_s8(w + 48)}};
    return v;
}

static HYDRA_ALWAYS_INLINE block_acc block_dot16(block_acc acc, int8x16x4_t w, int8x16_t x)
{
    const int32x4_t words = vreinterpretq_s32_s8(x);
    acc = block_dot4(acc, w.val[0], vreinterpretq_s8_s32(vdupq_laneq_s32(words, 0)));
    acc = block_dot4(acc, w.val[1], vreinterpretq_s8_s32(vdupq_laneq_s32(words, 1)));
    acc = block_dot4(acc, w.val[2], vreinterpretq_s8_s32(vdupq_laneq_s32(words, 2)));
    return block_dot4(acc, w.val[3], vreinterpretq_s8_s32(vdupq_laneq_s32(words, 3)));
}

static HYDRA_ALWAYS_INLINE int32x4_t block_acc_dots(block_acc acc)
{
    return vpaddq_s32(acc.low, acc.high);
}
#endif

/* The K % 4 tail columns (1 to 3) of a block's 4 rows, stored row by row: scalar. Out of line: inlined, its branch
 * costs the hot loops registers (measured: 3 % more instructions on 64 x 64). */
__attribute__((noinline)) static int32x4_t tail_dots(const int8_t *x, const int8_t *w, int32_t tail)
{
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int32_t j = 0; j < tail; j++) {
        const int32_t xj = x[j];
        s0 += xj * w[j];
        s1 += xj * w[tail + j];
        s2 += xj * w[2 * tail + j];
        s3 += xj * w[3 * tail + j];
    }
    return vsetq_lane_s32(s3, vsetq_lane_s32(s2, vsetq_lane_s32(s1, vdupq_n_s32(s0), 1), 2), 3);
}

/* dots[t][b] = the 4 dots of token t (of `tokens`, 1 or 2; rows K apart) with block b (of `blocks`, 1 or 4; 4 K
 * bytes apart) in the block layout: per 4 columns 16 bytes, then the K % 4 tail row by row. Constant counts after
 * inlining: the unrolled loops keep every accumulator in a register. */
static HYDRA_ALWAYS_INLINE void block_dots(const int8_t *x, const int8_t *w, int32_t K, int32_t tokens, int32_t blocks,
                                           int32x4_t dots[2][4])
{
    const size_t stride = (size_t)4 * (size_t)K;
    block_acc acc[2][4];
#pragma GCC unroll 2
    for (int32_t t = 0; t < tokens; t++)
#pragma GCC unroll 4
        for (int32_t b = 0; b < blocks; b++)
            acc[t][b] = block_acc_zero();
    int32_t i = 0;
    for (; i + 16 <= K; i += 16) {
        int8x16_t xv[2];
#pragma GCC unroll 2
        for (int32_t t = 0; t < tokens; t++)
            xv[t] = vld1q_s8(x + (size_t)t * (size_t)K + (size_t)i);
#pragma GCC unroll 4
        for (int32_t b = 0; b < blocks; b++) {
            const int8x16x4_t wv = block_load64(w + (size_t)b * stride + (size_t)4 * (size_t)i);
#pragma GCC unroll 2
            for (int32_t t = 0; t < tokens; t++)
                acc[t][b] = block_dot16(acc[t][b], wv, xv[t]);
        }
    }
    for (; i + 4 <= K; i += 4)
#pragma GCC unroll 2
        for (int32_t t = 0; t < tokens; t++) {
            int32_t word;
            memcpy(&word, x + (size_t)t * (size_t)K + (size_t)i, 4);
            const int8x16_t x4 = vreinterpretq_s8_s32(vdupq_n_s32(word));
#pragma GCC unroll 4
            for (int32_t b = 0; b < blocks; b++)
                acc[t][b] = block_dot4(acc[t][b], vld1q_s8(w + (size_t)b * stride + (size_t)4 * (size_t)i), x4);
        }
    const int32_t tail = K - i;
#pragma GCC unroll 2
    for (int32_t t = 0; t < tokens; t++)
#pragma GCC unroll 4
        for (int32_t b = 0; b < blocks; b++) {
            dots[t][b] = block_acc_dots(acc[t][b]);
            if (tail > 0)
                dots[t][b] = vaddq_s32(dots[t][b], tail_dots(x + (size_t)t * (size_t)K + (size_t)i,
                                                             w + (size_t)b * stride + (size_t)4 * (size_t)i, tail));
        }
}

/* `tokens` (1 or 2) rows of x into as many rows of y: 16 outputs per pass over x, then the blocks left one at a
 * time, then the N % 4 rows after the last block as linear_rows takes them. */
static HYDRA_ALWAYS_INLINE void neon_token_rows(const hydra_linear_params *params, const hydra_channel_outputs *o,
                                                const int8_t *x, int8_t *y, int32_t tokens, int32_t single_rounding,
                                                int32_t right_only)
{
    const int32_t K = params->in_features, N = params->out_features;
    const int32_t full = N - N % 4;
    const int8_t *w = params->weights;
    int32x4_t d[2][4];
    int32_t n = 0;
    for (; n + 16 <= full; n += 16, w += (size_t)16 * (size_t)K) {
        block_dots(x, w, K, tokens, 4, d);
        /* both tokens' outputs before either store: an int8 store may alias the channel arrays */
        const int8x16_t y0 = hydra_channel_outputs_x16(o, n, d[0][0], d[0][1], d[0][2], d[0][3], single_rounding,
                                                       right_only);
        if (tokens == 2) {
            const int8x16_t y1 = hydra_channel_outputs_x16(o, n, d[1][0], d[1][1], d[1][2], d[1][3],
                                                           single_rounding, right_only);
            vst1q_s8(y + N + n, y1);
        }
        vst1q_s8(y + n, y0);
    }
    for (; n < full; n += 4, w += (size_t)4 * (size_t)K) {
        block_dots(x, w, K, tokens, 1, d);
        for (int32_t t = 0; t < tokens; t++) {
            const int32x4_t r = hydra_channel_requant_x4(o, n, d[t][0], single_rounding, right_only);
            const int32_t word = vgetq_lane_s32(vreinterpretq_s32_s8(hydra_output_zero_point_x16(r, r, r, r, o)), 0);
            memcpy(y + (size_t)t * (size_t)N + (size_t)n, &word, 4);
        }
    }
    if (n < N) /* the N % 4 rows after the blocks, as on the other targets */
        for (int32_t t = 0; t < tokens; t++)
            linear_row_from(params, o, x + (size_t)t * (size_t)K, y + (size_t)t * (size_t)N, n,
                            !single_rounding && right_only);
}

static HYDRA_ALWAYS_INLINE void neon_rows(const hydra_linear_params *params, const int8_t *input, int8_t *output,
                                          int32_t single_rounding, int32_t right_only)
{
    const int32_t T = params->rows, K = params->in_features, N = params->out_features;
    const hydra_channel_outputs out = {params->bias, params->multiplier, params->shift, params->output_zero_point,
                                       params->activation_min, params->activation_max};
    int32_t t = 0;
    for (; HYDRA_LINEAR_TOKEN_PAIRS && t + 2 <= T; t += 2)
        neon_token_rows(params, &out, input + (size_t)t * (size_t)K, output + (size_t)t * (size_t)N, 2,
                        single_rounding, right_only);
    for (; t < T; t++)
        neon_token_rows(params, &out, input + (size_t)t * (size_t)K, output + (size_t)t * (size_t)N, 1,
                        single_rounding, right_only);
}
#endif

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
    if (params->right_only != 0 && params->right_only != 1)
        return HYDRA_ERR_ARG;
    /* every shift in [-31, 30]; under right_only also what hydra_channels_right_only asks (K <= 2^15, shift <= 0,
     * multiplier >= 0, |bias| < 2^29). This runs once per call of a whole-tensor op: one pass per case, each condition
     * or-ed into its own word (shift + 31 in [0, 31] for every channel: their OR is; a negative multiplier: bit 31 of
     * the OR of all) and tested after the loop. */
    const int32_t *bias = params->bias, *multiplier = params->multiplier, *shift = params->shift;
    uint32_t bad = 0;
    if (params->right_only) {
        uint32_t shifts = 0, signs = 0;
        for (int32_t n = 0; n < N; n++) {
            shifts |= (uint32_t)shift[n] + 31u;
            signs |= (uint32_t)multiplier[n];
            bad |= (uint32_t)bias[n] + (UINT32_C(1) << 29) - 1u > (UINT32_C(1) << 30) - 2u;
        }
        bad |= (shifts > 31u) | (signs >> 31) | (K > 32768);
    } else {
        for (int32_t n = 0; n < N; n++)
            bad |= (uint32_t)shift[n] + 31u > 61u;
    }
    return bad ? HYDRA_ERR_ARG : HYDRA_OK;
}

hydra_status hydra_linear_rows_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->rows <= 0)
        return HYDRA_ERR_SHAPE;
    /* one copy of the loop per rounding mode and requantisation path (right_only: checked by _check) */
#if defined(HYDRA_LINEAR_RIGHT_ONLY) /* the build's only one: double rounding, right_only */
    if (params->single_rounding || !params->right_only)
        return HYDRA_ERR_ARG;
#if defined(HYDRA_LINEAR_NEON)
    neon_rows(params, input, output, 0, 1);
#else
    linear_rows(params, input, output, 1);
#endif
#elif defined(HYDRA_LINEAR_NEON)
    if (params->single_rounding)
        params->right_only ? neon_rows(params, input, output, 1, 1) : neon_rows(params, input, output, 1, 0);
    else
        params->right_only ? neon_rows(params, input, output, 0, 1) : neon_rows(params, input, output, 0, 0);
#else /* one inline copy for the common case, the other outputs out of line (flash) */
    linear_rows(params, input, output, !params->single_rounding && params->right_only);
#endif
    return HYDRA_OK;
}

hydra_status hydra_linear_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output)
{
    if (input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = hydra_linear_s8_check(params);
    return st != HYDRA_OK ? st : hydra_linear_rows_s8(params, input, output);
}
