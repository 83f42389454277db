/*
 * tfl_softmax.c - TFLite Micro's int8 SOFTMAX (reference_ops::Softmax<int8_t, int8_t>), over the last dim.
 *
 * Per row: diff = x - max; the diffs >= diff_min are rescaled to Q5.26 (MBQM, multiplier > 1) and
 * exponentiated by gemmlowp (Q0.31); their sum in Q12.19 is inverted by GetReciprocal; each output is
 * round(exp * 1/sum / 2^exponent) - 128. A difference of two int8 lies in [-255, 0], so the exponentials are
 * the params' exp_table, which the compiler computes from the same formula (0 below diff_min, which makes
 * such an output -128 with no test). The input row is read again in the second pass, so the exponentials need
 * no scratch (and output == input works: each element is read before it is written).
 */
#include <stddef.h>

#include "hydra_tfl.h"

hydra_status hydra_tfl_softmax_s8(const hydra_tfl_softmax_params *p, const int8_t *input, int8_t *output)
{
    if (p == NULL || input == NULL || output == NULL || p->exp_table == NULL)
        return HYDRA_ERR_ARG;
    if (p->outer_size < 0 || p->depth <= 0 || p->depth >= 4096)
        return HYDRA_ERR_SHAPE;
    if (p->input_left_shift < 0 || p->input_left_shift > 31 || p->diff_min > 0)
        return HYDRA_ERR_ARG;
    const int32_t *exps = p->exp_table + 255; /* exps[d] for d in [-255, 0] */
    for (int32_t row = 0; row < p->outer_size; row++) {
        const int8_t *x = input + (int64_t)row * p->depth;
        int8_t *y = output + (int64_t)row * p->depth;
        int32_t max_in_row = -128;
        for (int32_t c = 0; c < p->depth; c++)
            max_in_row = x[c] > max_in_row ? x[c] : max_in_row;
        int32_t sum_of_exps = 0; /* Q12.19; < 2^31 since depth < 4096 */
        for (int32_t c = 0; c < p->depth; c++)
            sum_of_exps += hydra_rdbpot(exps[x[c] - max_in_row], 12); /* Rescale<12> */
        int32_t num_bits_over_unit;
        const int32_t shifted_scale = hydra_tfl_get_reciprocal(sum_of_exps, 12, &num_bits_over_unit);
        int32_t exponent = num_bits_over_unit + 31 - 8;
        exponent = exponent < 0 ? 0 : (exponent > 31 ? 31 : exponent); /* TFLM CHECKs [0, 31] */
        for (int32_t c = 0; c < p->depth; c++)
            y[c] = hydra_clamp_s8(hydra_rdbpot(hydra_srdhm(shifted_scale, exps[x[c] - max_in_row]), exponent) - 128);
    }
    return HYDRA_OK;
}
