/*
 * hydra_requantize.c - the fixed-point primitives of docs/numerics.md:
 * requant (double and single rounding; inline in hydra_rt.h), round_shift and inv_sqrt.
 *
 * No negative value is ever shifted: floor division of a negative x by 2^n
 * is ~(~x >> n), and a left shift of a signed value is a multiplication.
 */
#include <stddef.h>

#include "hydra_rt.h"

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

/* isqrt(v), the largest s with s*s <= v, by the bit-by-bit method (exact). */
static uint64_t isqrt_u64(uint64_t v)
{
    uint64_t root = 0;
    uint64_t bit = UINT64_C(1) << 62; /* the highest power of 4 below 2^64 */
    while (bit > v)
        bit >>= 2;
    while (bit != 0) {
        if (v >= root + bit) {
            v -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return root;
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
    const uint64_t sigma = isqrt_u64(vn);                  /* 2^30 <= sigma < 2^31 */
    *inv = (int32_t)(((UINT64_C(1) << 61) - 1) / sigma);  /* 2^30 <= inv < 2^31 */
    *p = P;
}
