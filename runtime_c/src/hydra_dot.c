/*
 * hydra_dot.c - sum(a[i] * b[i]) over int8 vectors, the inner loop of linear.
 *
 * An integer dot product is exact in any order while it fits int32 (the
 * callers bound n), so every path below gives the same bits as the portable
 * loop; tests/test_optimized_kernels.py checks each one on its target.
 *
 *   __ARM_FEATURE_SIMD32 (Cortex-M4/M7/M33): SXTB16 splits 4 bytes into two
 *       pairs of int16, SMLAD multiplies and adds a pair: 4 MACs in 2.
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
#define HYDRA_DOT_NEON 1
#endif

#if defined(HYDRA_DOT_SIMD32)
/* acc + a[0..3] . b[0..3]: even bytes through one SMLAD, odd bytes (shifted down) through another. */
static int32_t dot4_simd32(const int8_t *a, const int8_t *b, int32_t acc)
{
    int32_t as, bs;
    uint32_t au, bu;
    memcpy(&as, a, 4);
    memcpy(&bs, b, 4);
    memcpy(&au, a, 4);
    memcpy(&bu, b, 4);
    acc = __smlad(__sxtb16(as), __sxtb16(bs), acc);                         /* a0*b0 + a2*b2 */
    return __smlad(__sxtb16((int32_t)(au >> 8)), __sxtb16((int32_t)(bu >> 8)), acc); /* a1*b1 + a3*b3 */
}
#endif

int32_t hydra_dot_s8(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t i = 0, acc = 0;
#if defined(HYDRA_DOT_SIMD32)
    for (; i + 8 <= n; i += 8)
        acc = dot4_simd32(a + i + 4, b + i + 4, dot4_simd32(a + i, b + i, acc));
    if (i + 4 <= n) {
        acc = dot4_simd32(a + i, b + i, acc);
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
