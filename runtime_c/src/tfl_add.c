/*
 * tfl_add.c - TFLite Micro's int8 ADD (reference_integer_ops::AddFunc), broadcasting up to 6-D.
 *
 * Both inputs: (x + offset) * 2^left_shift, scaled by a multiplier < 1; the sum scaled by the output
 * multiplier, plus the output offset, clamped to the fused activation's range. |(x + offset) 2^20|
 * <= 2^28, so nothing overflows int32.
 */
#include <stddef.h>

#include "hydra_tfl.h"

/* The run callback of hydra_tfl_broadcast_binary_s8. */
static void add_run(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out, int32_t n,
                    const void *params)
{
    hydra_tfl_rescaled_binary_run(a, a_step, b, b_step, out, n, params, HYDRA_TFL_COMBINE_ADD);
}

hydra_status hydra_tfl_add_s8(const hydra_tfl_add_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    if (p == NULL || !hydra_tfl_rescaled_binary_ok(p, 20))
        return HYDRA_ERR_ARG;
    return hydra_tfl_broadcast_binary_s8(p->input1_shape, p->input2_shape, p->output_shape, input1, input2, output,
                                         add_run, p);
}
