/*
 * hydra_dot.c - sum(a[i] * b[i]) over int8 vectors: the inner loop of linear
 * (four weight rows at a time, in the block layout of ops/linear.py blocked_weights),
 * of the patch embedding (two rows) and of softmax attention's scores.
 *
 * An integer dot product is exact in any order while it fits int32 (the
 * callers bound n), so every path below gives the same bits as the portable
 * loop; tests/test_optimized_kernels.py checks each one on its target.
 *
 *   __ARM_FEATURE_SIMD32 (Cortex-M4/M7/M33): SXTB16 splits 4 bytes into two
 *       pairs of int16, SMLAD multiplies and adds a pair: 4 MACs in 2.
 *       hydra_dot2_s8 expands x once for two weight rows.
 *   __ARM_FEATURE_DOTPROD (armv8.2-a, Jetson Orin): SDOT, 16 MACs in 1.
 *   __ARM_NEON (armv8-a, Jetson Nano): SMULL to int16 (one product fits,
 *       two may not), SADALP adds pairs into int32 lanes.
 *   otherwise, or with -DHYDRA_PORTABLE_KERNELS: the plain loop.
 *
 * Words are read with memcpy: no alignment or aliasing assumption, and GCC
 * turns it into one load.
 */
#include <stddef.h>

#include "hydra_rt.h"

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#include <string.h> /* memcpy: the one libc function used, on these targets only */
#define HYDRA_DOT_SIMD32 1
#elif !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#include <string.h> /* memcpy */
#define HYDRA_DOT_NEON 1
#endif

#if defined(HYDRA_DOT_SIMD32)
/* Four int8 as two int16 pairs: bytes 0 and 2 (even), bytes 1 and 3 (odd). */
static void load_pairs(const int8_t *p, int32_t *even, int32_t *odd)
{
    int32_t word;
    memcpy(&word, p, 4);
    *even = __sxtb16(word);
    *odd = hydra_sxtb16_ror8(word);
}

/* acc + a[0..3] . b[0..3] in two SMLADs. */
static int32_t dot4(const int8_t *a, const int8_t *b, int32_t acc)
{
    int32_t ae, ao, be, bo;
    load_pairs(a, &ae, &ao);
    load_pairs(b, &be, &bo);
    return __smlad(ao, bo, __smlad(ae, be, acc));
}
#endif

int32_t hydra_dot_s8(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t i = 0, acc = 0;
#if defined(HYDRA_DOT_SIMD32)
    for (; i + 8 <= n; i += 8)
        acc = dot4(a + i + 4, b + i + 4, dot4(a + i, b + i, acc));
    if (i + 4 <= n) {
        acc = dot4(a + i, b + i, acc);
        i += 4;
    }
#elif defined(HYDRA_DOT_NEON)
    int32x4_t lanes = vdupq_n_s32(0);
    for (; i + 16 <= n; i += 16) {
        const int8x16_t va = vld1q_s8(a + i), vb = vld1q_s8(b + i);
#if defined(__ARM_FEATURE_DOTPROD)
        lanes = vdotq_s32(lanes, va, vb);
#else
        lanes = vpadalq_s16(lanes, vmull_s8(vget_low_s8(va), vget_low_s8(vb)));
        lanes = vpadalq_s16(lanes, vmull_high_s8(va, vb));
#endif
    }
    acc = vaddvq_s32(lanes);
#endif
    for (; i < n; i++)
        acc += (int32_t)a[i] * b[i];
    return acc;
}

void hydra_dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n, int32_t dots[2])
{
    int32_t i = 0, acc0 = 0, acc1 = 0;
#if defined(HYDRA_DOT_SIMD32)
    for (; i + 4 <= n; i += 4) { /* x is expanded once for both rows */
        int32_t xe, xo, we, wo;
        load_pairs(x + i, &xe, &xo);
        load_pairs(w0 + i, &we, &wo);
        acc0 = __smlad(xo, wo, __smlad(xe, we, acc0));
        load_pairs(w1 + i, &we, &wo);
        acc1 = __smlad(xo, wo, __smlad(xe, we, acc1));
    }
#elif defined(HYDRA_DOT_NEON)
    int32x4_t lanes0 = vdupq_n_s32(0), lanes1 = vdupq_n_s32(0);
    for (; i + 16 <= n; i += 16) {
        const int8x16_t vx = vld1q_s8(x + i), v0 = vld1q_s8(w0 + i), v1 = vld1q_s8(w1 + i);
#if defined(__ARM_FEATURE_DOTPROD)
        lanes0 = vdotq_s32(lanes0, vx, v0);
        lanes1 = vdotq_s32(lanes1, vx, v1);
#else
        const int8x8_t lo = vget_low_s8(vx);
        lanes0 = vpadalq_s16(lanes0, vmull_s8(lo, vget_low_s8(v0)));
        lanes0 = vpadalq_s16(lanes0, vmull_high_s8(vx, v0));
        lanes1 = vpadalq_s16(lanes1, vmull_s8(lo, vget_low_s8(v1)));
        lanes1 = vpadalq_s16(lanes1, vmull_high_s8(vx, v1));
#endif
    }
    acc0 = vaddvq_s32(lanes0);
    acc1 = vaddvq_s32(lanes1);
#endif
    for (; i < n; i++) {
        acc0 += (int32_t)x[i] * w0[i];
        acc1 += (int32_t)x[i] * w1[i];
    }
    dots[0] = acc0;
    dots[1] = acc1;
}

#if defined(HYDRA_DOT_SIMD32) && defined(__GNUC__)
/* One group of 4 columns of the one-token loops (dot4_blocked, dot4_blocks_even): x's word widened once (xe, xo),
 * the block's 16 weight bytes by one LDM into w0-w3, each row's word split by SXTB16 for two SMLADs. */
#define HYDRA_DOT4_ROW(acc, word)                                \
    "sxtb16 %[even], %[" word "]\n\t"                             \
    "sxtb16 %[" word "], %[" word "], ror #8\n\t"                   \
    "smlad %[" acc "], %[xe], %[even], %[" acc "]\n\t"              \
    "smlad %[" acc "], %[xo], %[" word "], %[" acc "]\n\t"
#define HYDRA_DOT4_GROUP                                          \
    "ldr %[xo], [%[xp]], #4\n\t"                                  \
    "sxtb16 %[xe], %[xo]\n\t"                                     \
    "sxtb16 %[xo], %[xo], ror #8\n\t"                             \
    "ldm %[w]!, {%[w0], %[w1], %[w2], %[w3]}\n\t"                 \
    HYDRA_DOT4_ROW("a0", "w0") HYDRA_DOT4_ROW("a1", "w1") HYDRA_DOT4_ROW("a2", "w2") HYDRA_DOT4_ROW("a3", "w3")
#endif

/* dots[r] = x . row r of a block of 4 weight rows stored as ops/linear.py blocked_weights lays them out:
 * for each group of 4 columns the 4 rows' 4 bytes (16 bytes), then the K % 4 tail columns row by row. */
static HYDRA_ALWAYS_INLINE void dot4_blocked(const int8_t *x, const int8_t *w, int32_t n, int32_t *dots)
{
    int32_t i = 0;
    int32_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
#if defined(HYDRA_DOT_SIMD32) && defined(__GNUC__)
    /* one expanded x word feeds 4 rows, whose 16 bytes one LDM loads: 21 instructions per 16 MACs, two groups a
     * turn (GCC's schedule of the C below: 25). LDM wants its registers in ascending order, hence the fixed r8-r11. */
    const int32_t groups = n / 4;
    if (groups > 0) {
        register int32_t w0 __asm__("r8"), w1 __asm__("r9"), w2 __asm__("r10"), w3 __asm__("r11");
        int32_t xe, xo, even;
        const int8_t *xp = x;
        const int8_t *const end = x + 4 * groups;
#define HYDRA_DOT4_OPERANDS                                                                                     \
    : [xp] "+r"(xp), [w] "+r"(w), [a0] "+r"(acc0), [a1] "+r"(acc1), [a2] "+r"(acc2), [a3] "+r"(acc3),            \
      [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3), [xe] "=&r"(xe), [xo] "=&r"(xo),             \
      [even] "=&r"(even)                                                                                        \
    : [end] "r"(end)                                                                                            \
    : "cc", "memory"
        if (groups % 2 != 0)
            __asm__(HYDRA_DOT4_GROUP HYDRA_DOT4_OPERANDS);
        if (groups >= 2)
            __asm__("1:\n\t" HYDRA_DOT4_GROUP HYDRA_DOT4_GROUP "cmp %[xp], %[end]\n\t"
                    "bne 1b" HYDRA_DOT4_OPERANDS);
#undef HYDRA_DOT4_OPERANDS
        i = 4 * groups;
    }
#elif defined(HYDRA_DOT_SIMD32)
    /* one expanded x word feeds 4 rows: 2 loads, 10 SXTB16 and 8 SMLAD for 16 MACs */
    for (; i + 4 <= n; i += 4, w += 16) {
        int32_t xe, xo, we, wo;
        load_pairs(x + i, &xe, &xo);
        load_pairs(w, &we, &wo);
        acc0 = __smlad(xo, wo, __smlad(xe, we, acc0));
        load_pairs(w + 4, &we, &wo);
        acc1 = __smlad(xo, wo, __smlad(xe, we, acc1));
        load_pairs(w + 8, &we, &wo);
        acc2 = __smlad(xo, wo, __smlad(xe, we, acc2));
        load_pairs(w + 12, &we, &wo);
        acc3 = __smlad(xo, wo, __smlad(xe, we, acc3));
    }
#elif defined(HYDRA_DOT_NEON) && defined(__ARM_FEATURE_DOTPROD)
    /* SDOT by lane: the 16 bytes of a column group are 4 rows x 4 columns, x's 4 columns one lane */
    int32x4_t lanes = vdupq_n_s32(0);
    for (; i + 16 <= n; i += 16, w += 64) {
        const int8x16_t vx = vld1q_s8(x + i);
        lanes = vdotq_laneq_s32(lanes, vld1q_s8(w), vx, 0);
        lanes = vdotq_laneq_s32(lanes, vld1q_s8(w + 16), vx, 1);
        lanes = vdotq_laneq_s32(lanes, vld1q_s8(w + 32), vx, 2);
        lanes = vdotq_laneq_s32(lanes, vld1q_s8(w + 48), vx, 3);
    }
    for (; i + 4 <= n; i += 4, w += 16) {
        int32_t word;
        memcpy(&word, x + i, 4);
        lanes = vdotq_s32(lanes, vld1q_s8(w), vreinterpretq_s8_s32(vdupq_n_s32(word)));
    }
    acc0 = vgetq_lane_s32(lanes, 0);
    acc1 = vgetq_lane_s32(lanes, 1);
    acc2 = vgetq_lane_s32(lanes, 2);
    acc3 = vgetq_lane_s32(lanes, 3);
#elif defined(HYDRA_DOT_NEON)
    /* x's 4 columns repeated for the 4 rows; SMULL to int16 (one product fits), SADALP into pair sums */
    int32x4_t low = vdupq_n_s32(0), high = vdupq_n_s32(0); /* rows 0-1, rows 2-3: two pair sums each */
    for (; i + 4 <= n; i += 4, w += 16) {
        int32_t word;
        memcpy(&word, x + i, 4);
        const int8x16_t vx = vreinterpretq_s8_s32(vdupq_n_s32(word)), vw = vld1q_s8(w);
        low = vpadalq_s16(low, vmull_s8(vget_low_s8(vw), vget_low_s8(vx)));
        high = vpadalq_s16(high, vmull_high_s8(vw, vx));
    }
    acc0 = vgetq_lane_s32(low, 0) + vgetq_lane_s32(low, 1);
    acc1 = vgetq_lane_s32(low, 2) + vgetq_lane_s32(low, 3);
    acc2 = vgetq_lane_s32(high, 0) + vgetq_lane_s32(high, 1);
    acc3 = vgetq_lane_s32(high, 2) + vgetq_lane_s32(high, 3);
#else
    for (; i + 4 <= n; i += 4, w += 16)
        for (int32_t j = 0; j < 4; j++) {
            const int32_t xj = x[i + j];
            acc0 += xj * w[j];
            acc1 += xj * w[4 + j];
            acc2 += xj * w[8 + j];
            acc3 += xj * w[12 + j];
        }
#endif
    const int32_t tail = n - i; /* the K % 4 tail, row by row */
    for (int32_t j = 0; j < tail; j++) {
        const int32_t xj = x[i + j];
        acc0 += xj * w[j];
        acc1 += xj * w[tail + j];
        acc2 += xj * w[2 * tail + j];
        acc3 += xj * w[3 * tail + j];
    }
    dots[0] = acc0;
    dots[1] = acc1;
    dots[2] = acc2;
    dots[3] = acc3;
}

#if defined(HYDRA_DOT_SIMD32) && defined(__GNUC__) && !defined(HYDRA_DOT4_NO_EVEN_BLOCKS)
#define HYDRA_DOT4_EVEN_BLOCKS 1
/* hydra_dot4_blocked_s8 where n is a multiple of 8 (no tail, an even number of groups): every block in one assembly
 * loop, so that a block costs its groups and ~10 instructions (the set-up of a call to dot4_blocked is ~35). The
 * dots pointer, the block count and x live in memory operands: the loop has no register left for them. Left out of
 * a build for size (HYDRA_DOT4_NO_EVEN_BLOCKS, ops/linear.py c_defines: ~260 B): dot4_blocked takes those too. */
static void dot4_blocks_even(const int8_t *x, const int8_t *w, int32_t n, int32_t blocks, int32_t *dots)
{
    register int32_t w0 __asm__("r8"), w1 __asm__("r9"), w2 __asm__("r10"), w3 __asm__("r11");
    int32_t acc0, acc1, acc2, acc3, xe, xo, even;
    const int8_t *xp;
    const int8_t *const end = x + n;
    __asm__("2:\n\t"
            "movs %[a0], #0\n\t"
            "movs %[a1], #0\n\t"
            "movs %[a2], #0\n\t"
            "movs %[a3], #0\n\t"
            "ldr %[xp], %[xm]\n\t"
            "1:\n\t" HYDRA_DOT4_GROUP HYDRA_DOT4_GROUP
            "cmp %[xp], %[end]\n\t"
            "bne 1b\n\t"
            "ldr %[even], %[dm]\n\t"
            "strd %[a0], %[a1], [%[even]], #8\n\t"
            "strd %[a2], %[a3], [%[even]], #8\n\t"
            "str %[even], %[dm]\n\t"
            "ldr %[even], %[bm]\n\t"
            "subs %[even], %[even], #1\n\t"
            "str %[even], %[bm]\n\t"
            "bne 2b"
            : [xp] "=&r"(xp), [w] "+r"(w), [a0] "=&r"(acc0), [a1] "=&r"(acc1), [a2] "=&r"(acc2), [a3] "=&r"(acc3),
              [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3), [xe] "=&r"(xe), [xo] "=&r"(xo),
              [even] "=&r"(even), [dm] "+m"(dots), [bm] "+m"(blocks)
            : [end] "r"(end), [xm] "m"(x)
            : "cc", "memory");
}
#endif

void hydra_dot4_blocked_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t blocks, int32_t *dots)
{
#if defined(HYDRA_DOT4_EVEN_BLOCKS)
    if (n > 0 && n % 8 == 0 && blocks > 0) {
        dot4_blocks_even(x, w, n, blocks, dots);
        return;
    }
#endif
    for (int32_t b = 0; b < blocks; b++, w += (size_t)4 * (size_t)n, dots += 4) /* one call for several blocks */
        dot4_blocked(x, w, n, dots);
}
