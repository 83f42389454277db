/*
 * tfl_mul.c - TFLite Micro's int8 MUL (reference_integer_ops::MulElementwise / BroadcastMul6DSlow).
 *
 * output = offset + MBQM((x + off1) * (y + off2), M, shift), clamped to the activation range. The
 * product fits 17 bits; the multiplier may exceed 1 (shift > 0), where hydra_tfl_requantize saturates what
 * TFLM's int32 arithmetic would overflow, so the final sum is formed in int64.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* out[i] = requant((x_i + off1) * factor_i) + zo over one run, where |product| < 2^16, the rounding is double, the
 * multiplier is below 1 and the activation range is all of int8: hydra_requantize_right and a saturation, few enough
 * values to stay in registers. `b` advances by b_step (1, or 0 when input 2 is broadcast along the run: its factor is
 * formed once). */
static HYDRA_ALWAYS_INLINE void mul_loop_fast(const int8_t *a, const int8_t *b, int32_t b_step, int32_t off1,
                                              int32_t off2, int8_t *out, int32_t n, int32_t m, int32_t s, int32_t zo)
{
    if (b_step == 0) {
        const int32_t factor = off2 + *b;
        for (int32_t i = 0; i < n; i++)
            out[i] = hydra_clamp_s8(hydra_requantize_right((off1 + a[i]) * factor, m, s, 0) + zo);
        return;
    }
    for (int32_t i = 0; i < n; i++)
        out[i] = hydra_clamp_s8(hydra_requantize_right((off1 + a[i]) * (off2 + b[i]), m, s, 0) + zo);
}

/* One run (the run callback of hydra_tfl_broadcast_binary_s8): the fast loop where it applies, else every element
 * through hydra_tfl_requantize_call (a multiplier above 1, a fused activation, single rounding). */
static void mul_run(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out, int32_t n,
                    const void *params)
{
    const hydra_tfl_mul_params *p = (const hydra_tfl_mul_params *)params;
    const int32_t m = p->output_multiplier, s = p->output_shift, zo = p->output_offset;
    const int32_t lo = p->output_activation_min, hi = p->output_activation_max;
    if (!p->single_rounding && m >= 0 && s <= 0 && lo == -128 && hi == 127) {
        if (a_step == 0) /* the product commutes: the broadcast operand second */
            mul_loop_fast(b, a, 0, p->input2_offset, p->input1_offset, out, n, m, s, zo);
        else
            mul_loop_fast(a, b, b_step, p->input1_offset, p->input2_offset, out, n, m, s, zo);
        return;
    }
    for (int32_t i = 0; i < n; i++, a += a_step, b += b_step) {
        const int32_t product = (p->input1_offset + *a) * (p->input2_offset + *b);
        out[i] = hydra_tfl_output_s8(hydra_tfl_requantize_call(product, m, s, p->single_rounding), zo, lo, hi);
    }
}

hydra_status hydra_tfl_mul_s8(const hydra_tfl_mul_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    if (p == NULL || !hydra_tfl_binary_quant_ok(p->input1_offset, p->input2_offset, p->output_offset,
                                                p->output_activation_min, p->output_activation_max))
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         mul_run, p);
}
