/*
 * tfl_pad.c - TFLite Micro's int8 PAD (reference_ops::PadImpl): the input placed at pad_before in each of
 * the HYDRA_TFL_MAX_DIMS dimensions of the output, pad_value (the output zero point) everywhere else.
 */
#include <stddef.h>

#include "hydra_tfl.h"

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__ARM_FEATURE_SIMD32)
#include <string.h> /* memset / memcpy: the targets' libc (the portable build stays freestanding) */
#define HYDRA_PAD_LIBC 1
#endif

hydra_status hydra_tfl_pad_s8(const hydra_tfl_pad_params *p, const int8_t *input, const void *paddings,
                              int8_t *output)
{
    (void)paddings; /* folded into the params */
    if (p == NULL || input == NULL || output == NULL || p->pad_value < -128 || p->pad_value > 127)
        return HYDRA_ERR_ARG;
    size_t total = 1;
    for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++) {
        if (p->input_shape[d] <= 0 || p->pad_before[d] < 0 ||
            (int64_t)p->pad_before[d] + p->input_shape[d] > p->output_shape[d])
            return HYDRA_ERR_SHAPE;
        total *= (size_t)p->output_shape[d];
    }
    /* The pad value everywhere, then each input row copied to its place: the same bytes as TFLM's element-by-element
     * walk. Trailing dimensions without padding join the row (they are contiguous in both tensors). memset and
     * memcpy on the SIMD targets, plain loops elsewhere (the portable library builds freestanding). */
#if defined(HYDRA_PAD_LIBC)
    memset(output, p->pad_value, total);
#else
    for (size_t o = 0; o < total; o++)
        output[o] = (int8_t)p->pad_value;
#endif
    int last = HYDRA_TFL_MAX_DIMS - 1;
    size_t row = (size_t)p->input_shape[last];
    while (last > 0 && p->input_shape[last] == p->output_shape[last] && p->pad_before[last] == 0) {
        last--; /* dimension last + 1 is whole: the row spans it */
        row *= (size_t)p->input_shape[last];
    }
    size_t rows = 1;
    for (int d = 0; d < last; d++)
        rows *= (size_t)p->input_shape[d];
    int32_t idx[HYDRA_TFL_MAX_DIMS] = {0}; /* the row's input index in the outer dimensions */
    for (size_t r = 0; r < rows; r++) {
        size_t at = 0;
        for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++)
            at = at * (size_t)p->output_shape[d] + (size_t)(p->pad_before[d] + (d < last ? idx[d] : 0));
        const int8_t *from = input + r * row;
#if defined(HYDRA_PAD_LIBC)
        memcpy(output + at, from, row);
#else
        for (size_t i = 0; i < row; i++)
            output[at + i] = from[i];
#endif
        for (int d = last - 1; d >= 0; d--) {
            if (++idx[d] < p->input_shape[d])
                break;
            idx[d] = 0;
        }
    }
    return HYDRA_OK;
}
