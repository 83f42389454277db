/*
 * hydra_rt.h - the hydra-edge int8 operator library.
 *
 * One function per op and type (hydra_<op>_s8), arguments in a small param
 * struct, a status code returned, and *_get_buffer_size() beside each kernel
 * that needs scratch. The arithmetic of every kernel is specified in
 * docs/numerics.md; the numpy reference interpreter implements the same
 * spec and the tests compare the two bit for bit.
 *
 * C99, no allocation, no global state. Rounding is per node: every param struct
 * whose kernel requantises has a `single_rounding` field (0: double rounding,
 * TFLM's; 1: single, LiteRT's), which the emitter sets from the node. A struct
 * left zero-initialised rounds as TFLM.
 *
 * Aliasing: elementwise kernels (add, lut, layernorm) and flatten accept output == input
 * (in place). hydra_attention and hydra_attention_apply_s8 accept output == q. Other kernels
 * need disjoint input and output buffers.
 */
#ifndef HYDRA_RT_H
#define HYDRA_RT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    HYDRA_OK = 0,
    HYDRA_ERR_ARG = 1,   /* a null pointer or a parameter out of its documented range */
    HYDRA_ERR_SHAPE = 2  /* dimensions that are not positive or do not agree */
} hydra_status;

/* ---- fixed-point arithmetic (hydra_requantize.c) -------------------- */

/* requant(x, M, shift) of docs/numerics.md; shift in [-31, 30]. The kernels use the inline
 * definitions below (through the hydra_requantize macro): one call per output element would cost
 * as much as the arithmetic. The functions are the same code, for callers outside the library. */
int32_t hydra_requantize_double(int32_t x, int32_t multiplier, int32_t shift);
int32_t hydra_requantize_single(int32_t x, int32_t multiplier, int32_t shift);

static inline int32_t hydra_saturate_s32(int64_t x)
{
    return (int32_t)(x < INT32_MIN ? INT32_MIN : (x > INT32_MAX ? INT32_MAX : x));
}

/* floor(x / 2^n), 0 <= n <= 63 / 31: an arithmetic right shift spelt without shifting a negative value. */
static inline int64_t hydra_floor_div_pow2_s64(int64_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~(~x >> n);
}

static inline int32_t hydra_floor_div_pow2_s32(int32_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~(~x >> n);
}

/* The int32 whose two's-complement bits are b (a uint32 above INT32_MAX converts implementation-defined; this
 * is defined, and GCC makes it no instruction). */
static inline int32_t hydra_s32_from_bits(uint32_t b)
{
    return b <= (uint32_t)INT32_MAX ? (int32_t)b : -(int32_t)(~b) - 1;
}

/* The kernels reject a shift outside [-31, 30]; clamping keeps requant total. */
static inline int32_t hydra_clamp_shift(int32_t shift)
{
    return shift < -31 ? -31 : (shift > 30 ? 30 : shift);
}

/* gemmlowp SaturatingRoundingDoublingHighMul: (y * m + nudge) / 2^31, truncated toward zero, where
 * nudge = 2^30 for y * m >= 0 and 1 - 2^30 below. For a negative numerator truncation is
 * floor((num + 2^31 - 1) / 2^31), so both cases are floor((y * m + 2^30) / 2^31): one shift. */
static inline int32_t hydra_srdhm(int32_t y, int32_t m)
{
    if (y == INT32_MIN && m == INT32_MIN)
        return INT32_MAX; /* 2^62 / 2^31 = 2^31: the one result that does not fit */
    const int64_t p = (int64_t)y * m; /* |p| <= 2^62, so p + 2^30 cannot overflow */
    return (int32_t)hydra_floor_div_pow2_s64(p + (INT64_C(1) << 30), 31);
}

/* gemmlowp RoundingDivideByPOT: y / 2^right for right in [0, 31], ties away from zero. */
static inline int32_t hydra_rdbpot(int32_t y, int32_t right)
{
    const uint32_t mask = (UINT32_C(1) << right) - 1;
    const uint32_t r = (uint32_t)y & mask; /* y mod 2^right: the conversion is modular */
    const uint32_t threshold = (mask >> 1) + (y < 0 ? 1u : 0u);
    return hydra_floor_div_pow2_s32(y, right) + (r > threshold ? 1 : 0);
}

static inline int32_t hydra_requantize_double_inline(int32_t x, int32_t multiplier, int32_t shift)
{
    shift = hydra_clamp_shift(shift);
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift < 0 ? -shift : 0;
    /* Saturate x * 2^left in int64 where TFLite would overflow (no calibrated model does); 2^left
     * as an int32 lets the compiler use one 32 x 32 -> 64 multiply, and most layers have none. */
    const int32_t y = left == 0 ? x : hydra_saturate_s32((int64_t)x * (INT32_C(1) << left));
    return hydra_rdbpot(hydra_srdhm(y, multiplier), right);
}

static inline int32_t hydra_requantize_single_inline(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t total = 31 - hydra_clamp_shift(shift); /* in [1, 62] */
    /* |x * M| <= 2^62, so adding 2^(total - 1) <= 2^61 cannot overflow. */
    const int64_t p = (int64_t)x * multiplier + (INT64_C(1) << (total - 1));
    return hydra_saturate_s32(hydra_floor_div_pow2_s64(p, total));
}

/* Forces inlining where a kernel instantiates its loop once per rounding mode (below). */
#if defined(__GNUC__) || defined(__clang__)
#define HYDRA_ALWAYS_INLINE inline __attribute__((always_inline))
#define HYDRA_NOINLINE __attribute__((noinline)) /* one copy of a cold path (flash), or a kernel whose loop then
                                                * has the registers to itself */
#else
#define HYDRA_ALWAYS_INLINE inline
#define HYDRA_NOINLINE
#endif

/* requant(x, M, shift) in a node's rounding mode (its params' single_rounding: 0 double, else single).
 * The hot kernels (linear, patch_embed, add) read the mode once per call and run a copy of their loop
 * made for it, so that no per-element branch remains: `single_rounding` is then a constant here. */
static HYDRA_ALWAYS_INLINE int32_t hydra_requantize(int32_t x, int32_t multiplier, int32_t shift,
                                                    int32_t single_rounding)
{
    return single_rounding ? hydra_requantize_single_inline(x, multiplier, shift)
                           : hydra_requantize_double_inline(x, multiplier, shift);
}

/* floor((a b + 2^31) / 2^32): the rounded high word of a product, one SMMULR with the DSP extension. */
static inline int32_t hydra_mul_high_round(int32_t a, int32_t b)
{
#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(__aarch64__)
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)hydra_floor_div_pow2_s64((int64_t)a * b + (INT64_C(1) << 31), 32);
#endif
}

/* floor((x M + 2^30) / 2^31) for |x| < 2^30 and M in [0, 2^31): SaturatingRoundingDoublingHighMul where nothing
 * saturates, as hydra_mul_high_round(2 x, M) (2 x is in int32 by the bound). */
static inline int32_t hydra_srdhm_unsaturated(int32_t x, int32_t multiplier)
{
    return hydra_mul_high_round(hydra_s32_from_bits((uint32_t)x << 1), multiplier);
}

/* RoundingDivideByPOT for right in [1, 31] where y + 2^(right-1) stays in int32: floor((y + 2^(right-1) - [y < 0])
 * / 2^right), ties away from zero. */
static HYDRA_ALWAYS_INLINE int32_t hydra_round_right(int32_t y, int32_t right)
{
    return hydra_floor_div_pow2_s32(y + (INT32_C(1) << (right - 1)) - (y < 0 ? 1 : 0), right);
}

/* requant(x, M, shift) where the kernel has checked, once per call, that nothing can saturate: |x| < 2^30,
 * shift in [-31, 0], M in [0, 2^31). Then double rounding is SaturatingRoundingDoublingHighMul as one
 * floor((x M + 2^30) / 2^31) (no left shift, no INT32_MIN * INT32_MIN) and RoundingDivideByPOT as
 * floor((y + 2^(r-1) - [y < 0]) / 2^r), ties away from zero (|y| <= |x| + 1, so the sum stays in int32);
 * single rounding needs no saturation. The same value as hydra_requantize in a third of its instructions:
 * the hot loops run a copy of themselves for this case (every multiplier below 1, as calibration makes them). */
static HYDRA_ALWAYS_INLINE int32_t hydra_requantize_right(int32_t x, int32_t multiplier, int32_t shift,
                                                          int32_t single_rounding)
{
    if (single_rounding) {
        const int32_t total = 31 - shift; /* [31, 62]: |x M| + 2^(total - 1) < 2^62 */
        return (int32_t)hydra_floor_div_pow2_s64((int64_t)x * multiplier + (INT64_C(1) << (total - 1)), total);
    }
    const int32_t y = hydra_srdhm_unsaturated(x, multiplier);
    return shift == 0 ? y : hydra_round_right(y, -shift);
}

/* hydra_requantize_right as functions, for the tests. */
int32_t hydra_requantize_right_double(int32_t x, int32_t multiplier, int32_t shift);
int32_t hydra_requantize_right_single(int32_t x, int32_t multiplier, int32_t shift);

/* round_shift(x, n): floor((x + 2^(n-1)) / 2^n), n in [0, 62]. The kernels use the inline
 * hydra_round_shift; the function is the same code for callers outside the library. */
int64_t hydra_round_shift_s64(int64_t x, int32_t n);

static inline int64_t hydra_round_shift(int64_t x, int32_t n)
{
    n = n < 0 ? 0 : (n > 62 ? 62 : n); /* documented range [0, 62]; clamped to stay defined */
    /* floor((x + 2^(n-1)) / 2^n) = floor(x / 2^n) + [x mod 2^n >= 2^(n-1)],
     * which never forms x + 2^(n-1) and so cannot overflow. */
    const uint64_t mask = (UINT64_C(1) << n) - 1;
    const uint64_t r = (uint64_t)x & mask; /* conversion to unsigned is modular: exact mod 2^n */
    return hydra_floor_div_pow2_s64(x, n) + (r > (mask >> 1) ? 1 : 0);
}

/* round_shift(x, n) formed directly as floor((x + 2^(n-1)) / 2^n): for a caller whose bounds keep
 * |x| + 2^(n-1) inside int64 (hydra_round_shift holds for any x, at several more instructions). */
static HYDRA_ALWAYS_INLINE int64_t hydra_round_shift_in_range(int64_t x, int32_t n)
{
    return n == 0 ? x : hydra_floor_div_pow2_s64(x + (INT64_C(1) << (n - 1)), n);
}

/* inv_sqrt(v): 1/sqrt(v) ~= inv * 2^p / 2^61, for 1 <= v < 2^62. */
void hydra_inv_sqrt(int64_t v, int32_t *inv, int32_t *p);

/* sum(a[i] * b[i]) for i < n (hydra_dot.c); exact while n * 2^14 < 2^31 (the callers check).
 * Uses SMLAD on Cortex-M with the DSP extension and NEON / SDOT on aarch64: the same bits. */
int32_t hydra_dot_s8(const int8_t *a, const int8_t *b, int32_t n);
/* dots[r] = sum(x[i] * w_r[i]) for r = 0, 1: one pass over x for two weight rows. */
void hydra_dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n, int32_t dots[2]);
/* dots[4 b + r] = x . row r of block b, for `blocks` consecutive blocks of 4 weight rows in linear's block layout
 * (ops/linear.py blocked_weights: per group of 4 columns the 4 rows' 4 bytes, then the n % 4 tail columns row by
 * row; 4 n bytes per block). */
void hydra_dot4_blocked_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t blocks, int32_t *dots);

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
/* SXTB16 / SXTAB16 of a word rotated right by 8 (bytes 1 and 3), for the SIMD kernels (hydra_dot.c,
 * tfl_fixedpoint.c): GCC does not fold the rotation into the instruction by itself, so it is spelt out where
 * inline assembly is known to work. */
static inline int32_t hydra_sxtb16_ror8(int32_t word)
{
#if defined(__GNUC__)
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(word));
    return r;
#else
    return __sxtb16((int32_t)((uint32_t)word >> 8));
#endif
}

static inline int32_t hydra_sxtab16_ror8(int32_t halves, int32_t word)
{
#if defined(__GNUC__)
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(halves), "r"(word));
    return r;
#else
    return __sxtab16(halves, (int32_t)((uint32_t)word >> 8));
#endif
}

/* Four int8 lanes clamped to [lo, hi] (lo4, hi4: the bound in every byte): SSUB8 sets a lane's GE flag where the
 * first operand is >= the second, SEL picks by it. */
static inline uint32_t hydra_clamp4_s8(uint32_t word, uint32_t lo4, uint32_t hi4)
{
    (void)__ssub8(hydra_s32_from_bits(word), hydra_s32_from_bits(lo4));
    word = __sel(word, lo4); /* max(y, lo) */
    (void)__ssub8(hydra_s32_from_bits(word), hydra_s32_from_bits(hi4));
    return __sel(hi4, word); /* min(y, hi) */
}
#endif

/* x saturated to int8: one SSAT where the target has it (the same value). */
static inline int8_t hydra_clamp_s8(int32_t x)
{
#if defined(__ARM_FEATURE_SAT) && defined(__GNUC__) && !defined(HYDRA_PORTABLE_KERNELS)
    int32_t r; /* arm_acle.h's __ssat trips -Wsign-conversion inside GCC's own macro */
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return (int8_t)r;
#else
    return (int8_t)(x < -128 ? -128 : (x > 127 ? 127 : x));
#endif
}

/* y[i] clamped to [lo, hi] for i < n (a fused activation after an output stage that saturated to int8 only;
 * hydra_requantize.c): on the SIMD cores four bytes a word (hydra_clamp4_s8). */
void hydra_clamp_row_s8(int8_t *y, int32_t n, int32_t lo, int32_t hi);

/* zy + r as int8; r is saturated to 9 bits first so the sum cannot overflow. */
static inline int8_t hydra_add_zero_point_s8(int32_t r, int32_t zy)
{
    return hydra_clamp_s8((r < -256 ? -256 : (r > 255 ? 255 : r)) + zy);
}

/* The output of a linear-like kernel: zy + requant(bias + dot). The compiler proves bias + dot fits
 * int32; it saturates (never wraps) if a caller breaks that. */
static HYDRA_ALWAYS_INLINE int8_t hydra_linear_output_s8(int32_t bias, int32_t dot, int32_t multiplier, int32_t shift,
                                                         int32_t zy, int32_t single_rounding)
{
    const int32_t acc = hydra_saturate_s32((int64_t)bias + dot);
    return hydra_add_zero_point_s8(hydra_requantize(acc, multiplier, shift, single_rounding), zy);
}

/* The per-channel output stage of the linear-like kernels (linear, patch_embed), in locals: a store through
 * int8_t * may alias the params, which would make the compiler reload every pointer for every output. */
typedef struct {
    const int32_t *bias, *multiplier, *shift;
    int32_t zy, lo, hi; /* output zero point, activation clamp inside int8 */
} hydra_channel_outputs;

/* Whether channels' requantisation may take hydra_requantize_right once their accumulators are below 2^29: every
 * |bias| < 2^29 (bias NULL: none), so that the sums stay below 2^30, every multiplier >= 0 with a shift <= 0 (below
 * 1, as calibration makes them). O(channels), once per call; each caller bounds its accumulator. */
static inline int hydra_requant_right_ok(const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                                         int32_t channels)
{
    for (int32_t n = 0; n < channels; n++) {
        const int32_t b = bias != NULL ? bias[n] : 0;
        if (multiplier[n] < 0 || shift[n] > 0 || b <= -(INT32_C(1) << 29) || b >= (INT32_C(1) << 29))
            return 0;
    }
    return 1;
}

/* hydra_requant_right_ok for a dot product over K <= 2^15 products of at most 2^14 (|dot| <= 2^29). */
static inline int hydra_channels_right_only(const hydra_channel_outputs *o, int32_t channels, int32_t K)
{
    return K <= 32768 && hydra_requant_right_ok(o->bias, o->multiplier, o->shift, channels);
}

/* zo + requant(x) by hydra_requantize_right (its bounds checked by the caller), saturated to int8 and clamped to
 * the activation range [lo, hi] inside it. */
static HYDRA_ALWAYS_INLINE int8_t hydra_output_right_s8(int32_t x, int32_t multiplier, int32_t shift,
                                                        int32_t single_rounding, int32_t zo, int32_t lo, int32_t hi)
{
    const int8_t y = hydra_clamp_s8(hydra_requantize_right(x, multiplier, shift, single_rounding) + zo);
    return (int8_t)(y < lo ? lo : (y > hi ? hi : y));
}

/* Channel n's output from its dot product: zy + requant(bias + dot), clamped to [lo, hi]; by hydra_requantize_right
 * where `right_only` (hydra_channels_right_only said so for the call). */
static HYDRA_ALWAYS_INLINE int8_t hydra_channel_output_s8(const hydra_channel_outputs *o, int32_t n, int32_t dot,
                                                          int32_t single_rounding, int32_t right_only)
{
    if (right_only)
        return hydra_output_right_s8(o->bias[n] + dot, o->multiplier[n], o->shift[n], single_rounding, o->zy, o->lo,
                                     o->hi);
    const int8_t y = hydra_linear_output_s8(o->bias[n], dot, o->multiplier[n], o->shift[n], o->zy, single_rounding);
    return (int8_t)(y < o->lo ? o->lo : (y > o->hi ? o->hi : y));
}

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
/* The output stage above four channels at a time in NEON (the aarch64 linear kernel), the same integers:
 * - double: SQSHL is clamp(x 2^left); SQRDMULH is hydra_srdhm exactly (sat((2 x M + 2^31) >> 32), saturating only
 *   at INT32_MIN * INT32_MIN); RDBPOT is TFLite's fixup (x - 1 for a negative x, saturating, only INT32_MIN stays)
 *   then SRSHL's rounding shift, floor((x - [x < 0] + 2^(r-1)) / 2^r), which the sum never overflows;
 * - single: SMULL to int64 lanes, SRSHL by -(31 - shift) (its rounding constant added in full precision), SQXTN
 *   saturates to int32.
 * With right_only (the short form's bounds hold) there is no left shift; the rest is the same arithmetic, which
 * hydra_requantize_right computes in another order. shift must be in [-31, 30], as the kernels check. */
static HYDRA_ALWAYS_INLINE int32x4_t hydra_requantize_x4(int32x4_t x, int32x4_t multiplier, int32x4_t shift,
                                                         int32_t single_rounding, int32_t right_only)
{
    if (single_rounding) {
        const int32x4_t neg_total = vsubq_s32(shift, vdupq_n_s32(31)); /* -(31 - shift), in [-62, -1] */
        const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(multiplier)),
                                        vmovl_s32(vget_low_s32(neg_total)));
        const int64x2_t hi = vrshlq_s64(vmull_high_s32(x, multiplier), vmovl_high_s32(neg_total));
        return vqmovn_high_s64(vqmovn_s64(lo), hi);
    }
    const int32x4_t right = vminq_s32(shift, vdupq_n_s32(0)); /* -right, as SRSHL takes it */
    if (!right_only)
        x = vqshlq_s32(x, vmaxq_s32(shift, vdupq_n_s32(0)));
    const int32x4_t y = vqrdmulhq_s32(x, multiplier);
    /* -1 where y < 0 and right > 0: the sign bit of y & -right */
    const int32x4_t fixup = vshrq_n_s32(vandq_s32(y, right), 31);
    return vrshlq_s32(vqaddq_s32(y, fixup), right);
}

/* zy + r saturated to int8 and clamped to [lo, hi], for 16 lanes: hydra_add_zero_point_s8's value (SQXTN to int16
 * first: r beyond int16 is beyond int8 after adding zy in [-128, 127], as r beyond 9 bits there). */
static HYDRA_ALWAYS_INLINE int8x16_t hydra_output_zero_point_x16(int32x4_t r0, int32x4_t r1, int32x4_t r2,
                                                                 int32x4_t r3, const hydra_channel_outputs *o)
{
    const int16x8_t zy = vdupq_n_s16((int16_t)o->zy);
    const int16x8_t h0 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r0), r1), zy);
    const int16x8_t h1 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r2), r3), zy);
    const int8x16_t y = vqmovn_high_s16(vqmovn_s16(h0), h1);
    return vminq_s8(vmaxq_s8(y, vdupq_n_s8((int8_t)o->lo)), vdupq_n_s8((int8_t)o->hi));
}

/* hydra_channel_output_s8 for channels n .. n + 3 from their dot products. */
static HYDRA_ALWAYS_INLINE int32x4_t hydra_channel_requant_x4(const hydra_channel_outputs *o, int32_t n, int32x4_t dot,
                                                              int32_t single_rounding, int32_t right_only)
{
    /* SQADD: hydra_linear_output_s8 saturates bias + dot; under right_only the sum fits int32 anyway */
    const int32x4_t acc = vqaddq_s32(vld1q_s32(o->bias + n), dot);
    return hydra_requantize_x4(acc, vld1q_s32(o->multiplier + n), vld1q_s32(o->shift + n), single_rounding,
                               right_only);
}

/* hydra_channel_output_s8 for channels n .. n + 15 from their dot products d0 (channels n .. n + 3) to d3. */
static HYDRA_ALWAYS_INLINE int8x16_t hydra_channel_outputs_x16(const hydra_channel_outputs *o, int32_t n,
                                                               int32x4_t d0, int32x4_t d1, int32x4_t d2,
                                                               int32x4_t d3, int32_t single_rounding,
                                                               int32_t right_only)
{
    return hydra_output_zero_point_x16(hydra_channel_requant_x4(o, n, d0, single_rounding, right_only),
                                       hydra_channel_requant_x4(o, n + 4, d1, single_rounding, right_only),
                                       hydra_channel_requant_x4(o, n + 8, d2, single_rounding, right_only),
                                       hydra_channel_requant_x4(o, n + 12, d3, single_rounding, right_only), o);
}
#endif

static inline int hydra_zero_point_ok(int32_t z)
{
    return z >= -128 && z <= 127;
}

/* ---- linear (hydra_linear.c) ----------------------------------------- */

typedef struct {
    int32_t rows;          /* T: input rows (tokens) */
    int32_t in_features;   /* K */
    int32_t out_features;  /* N */
    const int8_t *weights; /* [N][K] */
    const int32_t *bias;   /* [N], input zero point folded in */
    const int32_t *multiplier; /* [N] */
    const int32_t *shift;      /* [N] */
    int32_t output_zero_point;
    int32_t activation_min, activation_max; /* the output clamp inside int8 (a fused RELU / RELU6), or -128, 127 */
    int32_t single_rounding;               /* 0: double rounding, 1: single */
    /* 1: every channel meets hydra_channels_right_only, so the outputs take hydra_requantize_right (the compiler
     * sets it; _check refuses it where it does not hold, so that _rows, called per token group, need not look);
     * 0 (or a struct left zero): the general requantisation. The same bits either way. */
    int32_t right_only;
} hydra_linear_params;

hydra_status hydra_linear_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output);

/* hydra_linear_s8 in two halves, for a token loop that runs the same params on many row groups: the
 * checks of the params once (_check), then the rows with no more than null-pointer and row-count checks
 * (_rows; params must have passed _check, with only the rows field changed since). The same bits. */
hydra_status hydra_linear_s8_check(const hydra_linear_params *params);
hydra_status hydra_linear_rows_s8(const hydra_linear_params *params, const int8_t *input, int8_t *output);

/* ---- patch embedding (hydra_patch_embed.c) -------------------------- */

typedef struct {
    int32_t channels, height, width; /* input [C][H][W] */
    int32_t patch;                   /* kernel = stride */
    int32_t embed_dim;               /* D */
    const int8_t *weights;           /* [D][C][patch][patch]; where C patch^2 <= 128 (HYDRA_PATCH_GATHER_MAX), as
                                      * [D][C patch^2] in linear's block layout (hydra_linear_params.weights) */
    const int32_t *bias;             /* [D], input zero point folded in */
    const int32_t *multiplier;       /* [D] */
    const int32_t *shift;            /* [D] */
    int32_t output_zero_point;
    int32_t single_rounding;         /* 0: double rounding, 1: single */
    int32_t prefix_tokens;           /* P rows before the patches (a class token), 0 for none */
    const int8_t *prefix;            /* [P][D], already in the output's scale; NULL when P is 0 */
} hydra_patch_embed_params;

/* output [P + (H/p)(W/p)][D]: the prefix rows, then one row per patch. */
hydra_status hydra_patch_embed_s8(const hydra_patch_embed_params *params, const int8_t *input, int8_t *output);

/* ---- convolution on a channels-last feature map (hydra_conv2d.c) ---- */

typedef struct {
    int32_t in_height, in_width, in_channels;
    int32_t chw_input;                       /* 1: input [Cin][H][W] (the graph's image); 0: [H][W][Cin] */
    int32_t out_height, out_width, out_channels;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;               /* bottom and right padding follow from the output size */
    int32_t depthwise;                       /* 1: one filter per channel (in_channels == out_channels) */
    const int8_t *weights;                   /* [Cout][kh][kw][Cin], depthwise [C][kh][kw][1] */
    const int32_t *bias;                     /* [Cout], input zero point folded in */
    const int32_t *multiplier;               /* [Cout] */
    const int32_t *shift;                    /* [Cout] */
    int32_t input_zero_point;                /* what padding reads */
    int32_t output_zero_point;
    int32_t activation_min, activation_max;  /* a fused ReLU / ReLU6 / hardtanh, or -128, 127 */
    int32_t single_rounding;                 /* 0: double rounding, 1: single */
} hydra_conv2d_params;

/* output [OH][OW][Cout] (= [OH*OW][Cout] rows); output must not alias input. */
hydra_status hydra_conv2d_s8(const hydra_conv2d_params *params, const int8_t *input, int8_t *output);

/* ---- pooling on a channels-last feature map (hydra_max_pool2d.c, hydra_avg_pool2d.c) ---- */

/* The window geometry both poolings share. */
typedef struct {
    int32_t in_height, in_width, channels;
    int32_t out_height, out_width;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left; /* each smaller than the kernel: no window is all padding */
} hydra_pool2d_window;

/* HYDRA_OK when every size is in [1, 32767] (pads in [0, kernel)) and every window holds a pixel
 * (defined in hydra_max_pool2d.c). */
hydra_status hydra_pool2d_window_check(const hydra_pool2d_window *window);

typedef struct {
    hydra_pool2d_window window;
} hydra_max_pool2d_params;

/* output [OH][OW][C] in the input's scale and zero point; output must not alias input. */
hydra_status hydra_max_pool2d_s8(const hydra_max_pool2d_params *params, const int8_t *input, int8_t *output);

typedef struct {
    hydra_pool2d_window window; /* at most 2^16 pixels a window; padding is not counted */
} hydra_avg_pool2d_params;

/* output [OH][OW][C] in the input's scale and zero point: round(sum / count), ties away from zero (TFLM's). */
hydra_status hydra_avg_pool2d_s8(const hydra_avg_pool2d_params *params, const int8_t *input, int8_t *output);

/* ---- a feature map as one vector (hydra_flatten.c) ------------------ */

typedef struct {
    int32_t size; /* H * W * C bytes */
} hydra_flatten_params;

/* output [size] = input [H*W][C]; output == input is allowed (in place), other overlaps are not. */
hydra_status hydra_flatten_s8(const hydra_flatten_params *params, const int8_t *input, int8_t *output);

/* ---- layernorm (hydra_layernorm.c) ---------------------------------- */

typedef struct {
    int32_t tokens, dim;
    int32_t input_zero_point;
    int64_t eps;           /* eps_q */
    const int32_t *gamma;  /* gamma_q [dim] */
    const int64_t *beta;   /* beta_q [dim] */
    int32_t output_shift;
    int32_t output_zero_point;
    /* 1: out_shift s is in [2, 31] and every |gamma_q| <= 2^(s+1), |beta_q| <= 2^(s+28), so that each output's
     * z gamma_q + beta_q is below 2^(s+29) and its shift takes 32-bit words (the compiler sets it; _check refuses it
     * where it does not hold, so that _rows need not look); 0 (or a struct left zero): the general path. The same
     * bits either way. */
    int32_t narrow_output;
} hydra_layernorm_params;

hydra_status hydra_layernorm_s8(const hydra_layernorm_params *params, const int8_t *input, int8_t *output);
/* The same in two halves for a token loop, as hydra_linear_s8_check / hydra_linear_rows_s8. */
hydra_status hydra_layernorm_s8_check(const hydra_layernorm_params *params);
hydra_status hydra_layernorm_rows_s8(const hydra_layernorm_params *params, const int8_t *input, int8_t *output);

/* ---- table lookup (hydra_lut.c) ------------------------------------- */

typedef struct {
    int32_t size;          /* number of elements */
    const int8_t *table;   /* [256], indexed by x + 128 */
} hydra_lut_params;

hydra_status hydra_lut_s8(const hydra_lut_params *params, const int8_t *input, int8_t *output);

/* ---- hydra attention (hydra_attention.c) ---------------------------- */

typedef struct {
    int32_t tokens, dim;
    int32_t q_zero_point, k_zero_point, v_zero_point;
    int32_t kv_shift;
    int32_t multiplier, shift;
    int32_t output_zero_point;
    int32_t single_rounding; /* 0: double rounding, 1: single */
} hydra_attention_params;

/* Scratch bytes: the int32 attention state and one phi row (0 for invalid params).
 * The scratch pointer must be 4-byte aligned (HYDRA_ERR_ARG otherwise). */
int32_t hydra_attention_s8_get_buffer_size(const hydra_attention_params *params);

hydra_status hydra_attention_s8(const hydra_attention_params *params, const int8_t *q, const int8_t *k,
                                const int8_t *v, void *scratch, int8_t *output);

/* hydra_attention_s8 is these three steps; a streamed block calls them a few rows at a time.
 * Their params->tokens is ignored (row counts are arguments); dim, zero points and shifts are
 * checked as by hydra_attention_s8. phi_scratch holds one phi row: int8 [dim].
 *
 * T_max of docs/numerics.md: the most tokens whose state cannot overflow int32 (0 for an
 * invalid zero point). */
int32_t hydra_attention_max_tokens(int32_t v_zero_point);

/* acc[d] += sum over the rows of phi(k_t)[d] * (v[t, d] - zv). k, v: int8 [rows][dim].
 * acc starts at zero; the caller keeps the total rows accumulated within T_max. */
hydra_status hydra_attention_accumulate_s8(const hydra_attention_params *params, const int8_t *k, const int8_t *v,
                                           int32_t rows, int32_t *acc, int8_t *phi_scratch);

/* kv[d] = round_shift(acc[d], kv_shift), in place: the state after the last accumulate. */
hydra_status hydra_attention_round_state_s8(const hydra_attention_params *params, int32_t *acc);

/* output[t, d] = clamp(zy + requant(phi(q_t)[d] * kv[d], M, shift)) for the rows of q
 * (int8 [rows][dim]); output == q is allowed. */
hydra_status hydra_attention_apply_s8(const hydra_attention_params *params, const int8_t *q, const int32_t *kv,
                                      int32_t rows, int8_t *phi_scratch, int8_t *output);

/* ---- add (hydra_add.c) ---------------------------------------------- */

typedef struct {
    int32_t size;
    int32_t left_shift;
    int32_t a_zero_point, a_multiplier, a_shift;
    int32_t b_zero_point, b_multiplier, b_shift;
    int32_t output_multiplier, output_shift, output_zero_point;
    int32_t single_rounding; /* 0: double rounding, 1: single */
} hydra_add_params;

hydra_status hydra_add_s8(const hydra_add_params *params, const int8_t *a, const int8_t *b, int8_t *output);

/* ---- mean pool over tokens (hydra_mean_pool.c) ---------------------- */

typedef struct {
    int32_t tokens, dim;
    int32_t input_zero_point;
    int32_t multiplier, shift;
    int32_t output_zero_point;
    int32_t single_rounding; /* 0: double rounding, 1: single */
} hydra_mean_pool_params;

hydra_status hydra_mean_pool_s8(const hydra_mean_pool_params *params, const int8_t *input, int8_t *output);

/* The same mean in steps, for a token loop: acc[dim] = 0; accumulate over any row groups (rows in
 * [1, tokens] per call, tokens in all); finish. The int32 sums are the same integers, so the same bits. */
void hydra_mean_pool_begin_s8(const hydra_mean_pool_params *params, int32_t *acc);
hydra_status hydra_mean_pool_accumulate_s8(const hydra_mean_pool_params *params, const int8_t *input, int32_t rows,
                                           int32_t *acc);
hydra_status hydra_mean_pool_finish_s8(const hydra_mean_pool_params *params, const int32_t *acc, int8_t *output);

/* ---- one token's row (hydra_select_token.c) ------------------------- */

typedef struct {
    int32_t tokens, dim;
    int32_t index; /* the row copied, in [0, tokens) */
} hydra_select_token_params;

/* output[dim] = input[index][dim]: a copy in the input's scale (a class token read out). */
hydra_status hydra_select_token_s8(const hydra_select_token_params *params, const int8_t *input, int8_t *output);
/* For a token loop: rows_in holds rows first_row .. first_row + rows - 1; copies row index when among them. */
hydra_status hydra_select_token_rows_s8(const hydra_select_token_params *params, const int8_t *rows_in,
                                        int32_t first_row, int32_t rows, int8_t *output);

/* ---- softmax attention, one query row at a time (hydra_softmax_attention.c) ----
 *
 * Multi-head softmax attention on q, k, v int8 [tokens][dim] (after the projections), heads of
 * dim / heads features, written to output [tokens][dim] (heads concatenated). docs/numerics.md
 * "softmax_attention" gives the arithmetic; per head and query row the kernel holds the row's
 * int32 scores (then exp values) and the head's key sums, never a tokens x tokens matrix. output must not alias
 * q, k or v. exp_table[0] must be 2^15 and every entry in [0, 2^15]. */
#define HYDRA_SOFTMAX_MAX_TOKENS 65535    /* tokens * 2^15 fits the int32 sum of exp values */
#define HYDRA_SOFTMAX_MAX_HEAD_DIM 16384  /* |q.k| < 2^30: score differences fit int32 */

typedef struct {
    int32_t tokens, dim, heads;        /* tokens: the key and value rows */
    int32_t query_rows;                /* the q and output rows of this call (tokens, or a streamed group) */
    int32_t q_zero_point, k_zero_point, v_zero_point;
    int32_t exp_multiplier, exp_shift; /* score difference -> exp table index */
    const int32_t *exp_table;          /* [exp_table_size], Q15 */
    int32_t exp_table_size;
    int32_t multiplier, shift;         /* normalised Q15 sum -> output units */
    int32_t output_zero_point;
    int32_t single_rounding;           /* 0: double rounding, 1: single (both requantisations) */
} hydra_softmax_attention_params;

/* Scratch bytes: int32 scores of one query row and key sums of one head, 8 * tokens (0 for invalid params).
 * The scratch pointer must be 4-byte aligned (HYDRA_ERR_ARG otherwise). */
int32_t hydra_softmax_attention_s8_get_buffer_size(const hydra_softmax_attention_params *params);

hydra_status hydra_softmax_attention_s8(const hydra_softmax_attention_params *params, const int8_t *q,
                                        const int8_t *k, const int8_t *v, int8_t *output, void *scratch);

/* The same in a token loop, where the keys stay the same for every group of query rows: the key sums
 * of every head once, key_sums[heads][tokens] (int32, 4-byte aligned), before the loop (it checks the
 * params, exp table included); then per group query_rows rows of q and output (pointing at the group's
 * first row) with the scratch above (it checks all but the exp table's entries). */
hydra_status hydra_softmax_attention_key_sums_s8(const hydra_softmax_attention_params *params, const int8_t *k,
                                                 int32_t *key_sums);
hydra_status hydra_softmax_attention_rows_s8(const hydra_softmax_attention_params *params, const int8_t *q,
                                             const int8_t *k, const int8_t *v, const int32_t *key_sums,
                                             int8_t *output, void *scratch);

#ifdef __cplusplus
}
#endif

#endif /* HYDRA_RT_H */
