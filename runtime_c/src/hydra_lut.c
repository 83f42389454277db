/*
 * hydra_lut.c - y = table[x + 128], docs/numerics.md "lut" (GELU and other
 * unary functions, tabulated at compile time). Works in place.
 */
#include <stddef.h>

#include "hydra_rt.h"

#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

hydra_status hydra_lut_s8(const hydra_lut_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || params->table == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    if (params->size <= 0)
        return HYDRA_ERR_SHAPE;
    /* Locals: a store through int8_t * may alias the params, and the compiler would reload the table and the size
     * for every element. The table's middle entry, indexed by x itself. */
    const int8_t *table = params->table + 128;
    const int32_t size = params->size;
    int32_t i = 0;
#if !defined(HYDRA_PORTABLE_KERNELS) && defined(__aarch64__) && defined(__ARM_NEON)
    /* 16 elements a turn (aarch64): the table in 16 vector registers, four 64-byte quarters; TBL gives the entry of
     * the indices in the first quarter (0 for any other), TBX each further quarter's at the index less its start
     * (indices past a quarter's 64 bytes leave the lane as it is): table[x + 128] for every lane. */
    const int8x16x4_t q0 = vld1q_s8_x4(params->table), q1 = vld1q_s8_x4(params->table + 64);
    const int8x16x4_t q2 = vld1q_s8_x4(params->table + 128), q3 = vld1q_s8_x4(params->table + 192);
    const uint8x16_t quarter = vdupq_n_u8(64);
    for (; i + 16 <= size; i += 16) {
        const uint8x16_t idx = veorq_u8(vreinterpretq_u8_s8(vld1q_s8(input + i)), vdupq_n_u8(0x80)); /* x + 128 */
        int8x16_t y = vqtbl4q_s8(q0, idx);
        const uint8x16_t idx1 = vsubq_u8(idx, quarter), idx2 = vsubq_u8(idx1, quarter);
        y = vqtbx4q_s8(y, q1, idx1);
        y = vqtbx4q_s8(y, q2, idx2);
        y = vqtbx4q_s8(y, q3, vsubq_u8(idx2, quarter));
        vst1q_s8(output + i, y);
    }
#endif
    /* Four elements a turn, each read before its own output is written (in place: output == input). */
    for (; i + 4 <= size; i += 4) {
        const int8_t x0 = input[i], x1 = input[i + 1], x2 = input[i + 2], x3 = input[i + 3];
        output[i] = table[x0];
        output[i + 1] = table[x1];
        output[i + 2] = table[x2];
        output[i + 3] = table[x3];
    }
    for (; i < size; i++)
        output[i] = table[input[i]];
    return HYDRA_OK;
}
