/*
 * tfl_add.c - TFLite Micro's int8 ADD (reference_integer_ops::AddFunc), broadcasting up to 6-D.
 *
 * Both inputs: (x + offset) * 2^left_shift, scaled by a multiplier < 1; the sum scaled by the output
 * multiplier, plus the output offset, clamped to the fused activation's range. |(x + offset) 2^20|
 * <= 2^28, so nothing overflows int32.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* One run's elements, rescaled by hydra_requantize_right where `right_only` (a constant at each call). An operand
 * that stays along the run (step 0) is rescaled once. */
static HYDRA_ALWAYS_INLINE void add_loop(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                                           int8_t *out, int32_t n, const hydra_tfl_add_params *p, int32_t single,
                                           int32_t right_only)
{
    int32_t scaled1 = a_step == 0 ? hydra_tfl_rescale_input(p, 1, *a, single, right_only) : 0;
    int32_t scaled2 = b_step == 0 ? hydra_tfl_rescale_input(p, 2, *b, single, right_only) : 0;
    const int32_t m = p->output_multiplier, s = p->output_shift, zo = p->output_offset;
    const int32_t lo = p->output_activation_min, hi = p->output_activation_max;
    for (int32_t i = 0; i < n; i++, a += a_step, b += b_step) {
        if (a_step != 0)
            scaled1 = hydra_tfl_rescale_input(p, 1, *a, single, right_only);
        if (b_step != 0)
            scaled2 = hydra_tfl_rescale_input(p, 2, *b, single, right_only);
        if (right_only) { /* |y| < 2^30: the offset sum stays in int32 */
            const int32_t y = hydra_requantize_right(scaled1 + scaled2, m, s, single) + zo;
            out[i] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
        } else {
            out[i] = hydra_tfl_output_s8(hydra_tfl_requantize(scaled1 + scaled2, m, s, single), zo, lo, hi);
        }
    }
}

/* One run (hydra_tfl_broadcast_binary_s8), rounding as `single` says: a constant in each of the two callbacks
 * below, one per rounding mode, so that no element tests the params' single_rounding. */
static HYDRA_ALWAYS_INLINE void add_run(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                                          int8_t *out, int32_t n, const hydra_tfl_add_params *p, int32_t single)
{
    if (hydra_tfl_rescaled_binary_right_only(p))
        add_loop(a, a_step, b, b_step, out, n, p, single, 1);
    else
        add_loop(a, a_step, b, b_step, out, n, p, single, 0);
}

static void add_double(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                          int32_t n, const void *params)
{
    add_run(a, a_step, b, b_step, out, n, (const hydra_tfl_add_params *)params, 0);
}

static void add_single(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                          int32_t n, const void *params)
{
    add_run(a, a_step, b, b_step, out, n, (const hydra_tfl_add_params *)params, 1);
}

hydra_status hydra_tfl_add_s8(const hydra_tfl_add_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    if (p == NULL || !hydra_tfl_rescaled_binary_ok(p, 20))
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         p->single_rounding ? add_single : add_double, p);
}
