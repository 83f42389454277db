/*
 * hydra_requantize.c - the fixed-point primitives of docs/numerics.md:
 * requant (double and single rounding; inline in hydra_rt.h), round_shift and inv_sqrt.
 *
 * No negative value is ever shifted: floor division of a negative x by 2^n
 * is ~(~x >> n), and a left shift of a signed value is a multiplication.
 */
#include <stddef.h>

#include "hydra_rt.h"

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
#include <string.h> /* memcpy: on this target only */
#endif

int32_t hydra_requantize_double(int32_t x, int32_t multiplier, int32_t shift)
{
    return hydra_requantize_double_inline(x, multiplier, shift);
}

int32_t hydra_requantize_single(int32_t x, int32_t multiplier, int32_t shift)
{
    return hydra_requantize_single_inline(x, multiplier, shift);
}

int32_t hydra_requantize_right_double(int32_t x, int32_t multiplier, int32_t shift)
{
    return hydra_requantize_right(x, multiplier, shift, 0);
}

int32_t hydra_requantize_right_single(int32_t x, int32_t multiplier, int32_t shift)
{
    return hydra_requantize_right(x, multiplier, shift, 1);
}

void hydra_clamp_row_s8(int8_t *y, int32_t n, int32_t lo, int32_t hi)
{
    int32_t i = 0;
#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
    const uint32_t lo4 = UINT32_C(0x01010101) * (uint8_t)lo, hi4 = UINT32_C(0x01010101) * (uint8_t)hi;
    for (; i + 4 <= n; i += 4) {
        uint32_t word;
        memcpy(&word, y + i, 4);
        word = hydra_clamp4_s8(word, lo4, hi4);
        memcpy(y + i, &word, 4);
    }
#endif
    for (; i < n; i++)
        y[i] = (int8_t)(y[i] < lo ? lo : (y[i] > hi ? hi : y[i]));
}

int64_t hydra_round_shift_s64(int64_t x, int32_t n)
{
    return hydra_round_shift(x, n);
}

static int32_t bitlen_u64(uint64_t v)
{
#if defined(__GNUC__)
    return v == 0 ? 0 : 64 - __builtin_clzll(v); /* CLZ on the cores that have it, instead of up to 64 turns */
#else
    int32_t n = 0;
    while (v != 0) {
        n++;
        v >>= 1;
    }
    return n;
#endif
}

/* isqrt(t) for t in [64, 256): the base of sqrt_rem_u32 (entry t - 64). */
static const uint8_t isqrt_64_256[192] = {
     8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  9,  9,  9,  9,  9,  9,  9,
     9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10,
    10, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15};

/* One step of Zimmermann's Karatsuba square root ("Karatsuba Square Root", INRIA RR-3805, 1999): from s, r with
 * s^2 + r = top (r <= 2 s) and the next two digits a1, a0 of base 2^h (n = top 2^(2h) + a1 2^h + a0, n >= 2^(4h) / 4),
 * the square root and remainder of n: q = floor((r 2^h + a1) / (2 s)), u the remainder, s' = s 2^h + q,
 * r' = u 2^h + a0 - q^2, and where r' < 0 one correction (r' += 2 s' - 1, s' -= 1). For h <= 8 every value fits
 * int32: s < 2^(2h), r <= 2 s, u < 2 s, q <= 2^h. */
static HYDRA_ALWAYS_INLINE void sqrt_rem_step(uint32_t *s, uint32_t *r, uint32_t a1, uint32_t a0, int32_t h)
{
    const uint32_t num = (*r << h) + a1, den = 2 * *s;
    const uint32_t q = num / den, u = num - q * den;
    const uint32_t s1 = (*s << h) + q;
    const int32_t r1 = (int32_t)((u << h) + a0) - (int32_t)(q * q);
    if (r1 < 0) {
        *r = (uint32_t)(r1 + (int32_t)(2 * s1) - 1);
        *s = s1 - 1;
    } else {
        *r = (uint32_t)r1;
        *s = s1;
    }
}

/* isqrt(n) and n - isqrt(n)^2 for n in [2^30, 2^32): the table for the top byte, then two Karatsuba steps (digits of
 * 4 bits, then of 8; n's top 16 bits are >= 2^14 and its top 8 bits >= 2^6, as each step needs). */
static void sqrt_rem_u32(uint32_t n, uint32_t *s, uint32_t *r)
{
    const uint32_t top = n >> 24; /* in [64, 256) */
    uint32_t s0 = isqrt_64_256[top - 64], r0 = top - s0 * s0;
    sqrt_rem_step(&s0, &r0, (n >> 20) & 15, (n >> 16) & 15, 4);
    sqrt_rem_step(&s0, &r0, (n >> 8) & 255, n & 255, 8);
    *s = s0;
    *r = r0;
}

/* isqrt(vn) for vn in [2^60, 2^62), in 32-bit steps (the M7 has no 64-bit division): isqrt(4 vn) / 2 (floored; 4 vn
 * in [2^62, 2^64) meets the Karatsuba step's bound with digits of 16 bits), the last step's quantities held apart
 * where they pass 32 bits: with N = r 2^16 + a1 < 2^33, q = floor(N / (2 s)) = floor(floor(N / 2) / s) and
 * u = 2 (floor(N / 2) - q s) + (a1 mod 2); s 2^16 + q <= 2^32 wraps to 0 only where the correction takes it back. */
static uint32_t isqrt_60_62(uint64_t vn)
{
    const uint64_t n = vn << 2;
    const uint32_t hi = (uint32_t)(n >> 32), lo = (uint32_t)n;
    uint32_t s, r;
    sqrt_rem_u32(hi, &s, &r); /* s in [2^15, 2^16), r <= 2 s */
    const uint32_t a1 = lo >> 16, a0 = lo & 0xFFFFu;
    const uint32_t half = (r << 15) + (a1 >> 1); /* floor(N / 2) < 2^32 */
    const uint32_t q = half / s;                  /* <= 2^16 */
    const uint32_t u = 2 * (half - q * s) + (a1 & 1u);
    uint32_t root = (s << 16) + q;                /* modulo 2^32 */
    if (((uint64_t)u << 16) + a0 < (uint64_t)q * q)
        root -= 1;
    return root >> 1;
}

/* floor((2^61 - 1) / sigma) for sigma in [2^30, 2^31): (2^62 - 2) / (2 sigma), a 64-by-32-bit division with a
 * normalised divisor in two 16-bit quotient digits (Knuth's algorithm D as in Hacker's Delight, divlu), each digit
 * estimated by a 32-bit division and corrected at most twice. The quotient is below 2^31. */
static uint32_t div_2_61_by(uint32_t sigma)
{
    const uint32_t v = sigma << 1;                       /* in [2^31, 2^32) */
    const uint32_t u1 = (UINT32_C(1) << 30) - 1, un1 = 0xFFFFu, un0 = 0xFFFEu; /* 2^62 - 2 */
    const uint32_t vn1 = v >> 16, vn0 = v & 0xFFFFu;
    uint32_t q1 = u1 / vn1, rhat = u1 - q1 * vn1;
    while (q1 > 0xFFFFu || q1 * vn0 > (rhat << 16) + un1) {
        q1--;
        rhat += vn1;
        if (rhat > 0xFFFFu)
            break;
    }
    const uint32_t un21 = (u1 << 16) + un1 - q1 * v;     /* modulo 2^32: the true value is below v */
    uint32_t q0 = un21 / vn1;
    rhat = un21 - q0 * vn1;
    while (q0 > 0xFFFFu || q0 * vn0 > (rhat << 16) + un0) {
        q0--;
        rhat += vn1;
        if (rhat > 0xFFFFu)
            break;
    }
    return (q1 << 16) + q0;
}

void hydra_inv_sqrt(int64_t v, int32_t *inv, int32_t *p)
{
    if (inv == NULL || p == NULL)
        return;
    if (v < 1 || v >= (INT64_C(1) << 62)) {
        *inv = 0; /* outside the contract: a defined, recognisable answer */
        *p = 0;
        return;
    }
    const int32_t P = (62 - bitlen_u64((uint64_t)v)) / 2; /* in [0, 30] */
    const uint64_t vn = (uint64_t)v << (2 * P);            /* 2^60 <= vn < 2^62 */
    const uint32_t sigma = isqrt_60_62(vn);                /* 2^30 <= sigma < 2^31 */
    *inv = (int32_t)div_2_61_by(sigma);                    /* 2^30 <= inv < 2^31 */
    *p = P;
}
