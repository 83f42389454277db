/*
 * tfl_mul.c - TFLite Micro's int8 MUL (reference_integer_ops::MulElementwise / BroadcastMul6DSlow).
 *
 * output = offset + MBQM((x + off1) * (y + off2), M, shift), clamped to the activation range. The
 * product fits 17 bits; the multiplier may exceed 1 (shift > 0), where hydra_tfl_requantize saturates what
 * TFLM's int32 arithmetic would overflow, so the final sum is formed in int64.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* One element, rounding as `single` says: a constant in each of the two callbacks below, one per rounding
 * mode, so that no element tests the params' single_rounding. */
static inline int8_t mul_one(int32_t x, int32_t y, const hydra_tfl_mul_params *p, int32_t single)
{
    const int32_t product = (p->input1_offset + x) * (p->input2_offset + y);
    const int32_t out = hydra_tfl_requantize(product, p->output_multiplier, p->output_shift, single);
    return hydra_tfl_output_s8(out, p->output_offset, p->output_activation_min, p->output_activation_max);
}

static int8_t mul_double(int32_t x, int32_t y, const void *params)
{
    return mul_one(x, y, (const hydra_tfl_mul_params *)params, 0);
}

static int8_t mul_single(int32_t x, int32_t y, const void *params)
{
    return mul_one(x, y, (const hydra_tfl_mul_params *)params, 1);
}

hydra_status hydra_tfl_mul_s8(const hydra_tfl_mul_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    if (p == NULL || !hydra_tfl_binary_quant_ok(p->input1_offset, p->input2_offset, p->output_offset,
                                                p->output_activation_min, p->output_activation_max))
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         p->single_rounding ? mul_single : mul_double, p);
}
