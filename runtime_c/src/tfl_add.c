/*
 * tfl_add.c - TFLite Micro's int8 ADD (reference_integer_ops::AddFunc), broadcasting up to 6-D.
 *
 * Both inputs: (x + offset) * 2^left_shift, scaled by a multiplier < 1; the sum scaled by the output
 * multiplier, plus the output offset, clamped to the fused activation's range. |(x + offset) 2^20|
 * <= 2^28, so nothing overflows int32.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* One element, rounding as `single` says: a constant in each of the two callbacks below, one per rounding
 * mode, so that no element tests the params' single_rounding. */
static inline int8_t add_one(int32_t x, int32_t y, const hydra_tfl_add_params *p, int32_t single)
{
    int32_t scaled1, scaled2;
    hydra_tfl_rescale_inputs(p, x, y, single, &scaled1, &scaled2);
    const int32_t out = hydra_tfl_requantize(scaled1 + scaled2, p->output_multiplier, p->output_shift, single);
    return hydra_tfl_output_s8(out, p->output_offset, p->output_activation_min, p->output_activation_max);
}

static int8_t add_double(int32_t x, int32_t y, const void *params)
{
    return add_one(x, y, (const hydra_tfl_add_params *)params, 0);
}

static int8_t add_single(int32_t x, int32_t y, const void *params)
{
    return add_one(x, y, (const hydra_tfl_add_params *)params, 1);
}

hydra_status hydra_tfl_add_s8(const hydra_tfl_add_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    if (p == NULL || !hydra_tfl_rescaled_binary_ok(p, 20))
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         p->single_rounding ? add_single : add_double, p);
}
