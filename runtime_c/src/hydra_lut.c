/*
 * hydra_lut.c - y = table[x + 128], docs/numerics.md "lut" (GELU and other
 * unary functions, tabulated at compile time). Works in place.
 */
#include <stddef.h>

#include "hydra_rt.h"

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
