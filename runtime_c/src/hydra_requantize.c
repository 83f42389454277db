/*
 * hydra_requantize.c - the fixed-point primitives of docs/numerics.md:
 * requant (double and single rounding), round_shift and inv_sqrt.
 *
 * No negative value is ever shifted: floor division of a negative x by 2^n
 * is ~(~x >> n), and a left shift of a signed value is a multiplication.
 */
#include <stddef.h>

#include "hydra_rt.h"

/* floor(x / 2^n) for 0 <= n <= 63 (an arithmetic right shift, spelt portably). */
static int64_t floor_div_pow2(int64_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~(~x >> n);
}

/* The kernels reject a shift outside [-31, 30]; clamping keeps these total. */
static int32_t clamp_shift(int32_t shift)
{
    return shift < -31 ? -31 : (shift > 30 ? 30 : shift);
}

/* floor(x / 2^n) for 0 <= n <= 31, in 32 bits. */
static int32_t floor_div_pow2_s32(int32_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~(~x >> n);
}

/* gemmlowp SaturatingRoundingDoublingHighMul: (y * m + nudge) / 2^31, truncated toward zero, where
 * nudge = 2^30 for y * m >= 0 and 1 - 2^30 below. For a negative numerator truncation is
 * floor((num + 2^31 - 1) / 2^31), so both cases are floor((y * m + 2^30) / 2^31): one shift. */
static int32_t srdhm(int32_t y, int32_t m)
{
    if (y == INT32_MIN && m == INT32_MIN)
        return INT32_MAX; /* 2^62 / 2^31 = 2^31: the one result that does not fit */
    const int64_t p = (int64_t)y * m; /* |p| <= 2^62, so p + 2^30 cannot overflow */
    return (int32_t)floor_div_pow2(p + (INT64_C(1) << 30), 31);
}

/* gemmlowp RoundingDivideByPOT: y / 2^right for right in [0, 31], ties away from zero. */
static int32_t rdbpot(int32_t y, int32_t right)
{
    const uint32_t mask = (UINT32_C(1) << right) - 1;
    const uint32_t r = (uint32_t)y & mask; /* y mod 2^right: the conversion is modular */
    const uint32_t threshold = (mask >> 1) + (y < 0 ? 1u : 0u);
    return floor_div_pow2_s32(y, right) + (r > threshold ? 1 : 0);
}

int32_t hydra_requantize_double(int32_t x, int32_t multiplier, int32_t shift)
{
    shift = clamp_shift(shift);
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift < 0 ? -shift : 0;
    /* Saturate x * 2^left in int64 where TFLite would overflow (no calibrated model does). */
    const int32_t y = hydra_saturate_s32((int64_t)x * (INT64_C(1) << left));
    return rdbpot(srdhm(y, multiplier), right);
}

int32_t hydra_requantize_single(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t total = 31 - clamp_shift(shift); /* in [1, 62] */
    /* |x * M| <= 2^62, so adding 2^(total - 1) <= 2^61 cannot overflow. */
    const int64_t p = (int64_t)x * multiplier + (INT64_C(1) << (total - 1));
    return hydra_saturate_s32(floor_div_pow2(p, total));
}

int64_t hydra_round_shift_s64(int64_t x, int32_t n)
{
    n = n < 0 ? 0 : (n > 62 ? 62 : n); /* documented range [0, 62]; clamped to stay defined */
    /* floor((x + 2^(n-1)) / 2^n) = floor(x / 2^n) + [x mod 2^n >= 2^(n-1)],
     * which never forms x + 2^(n-1) and so cannot overflow. */
    const uint64_t mask = (UINT64_C(1) << n) - 1;
    const uint64_t r = (uint64_t)x & mask; /* conversion to unsigned is modular: exact mod 2^n */
    return floor_div_pow2(x, n) + (r > (mask >> 1) ? 1 : 0);
}

static int32_t bitlen_u64(uint64_t v)
{
    int32_t n = 0;
    while (v != 0) {
        n++;
        v >>= 1;
    }
    return n;
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
