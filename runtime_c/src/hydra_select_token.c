/*
 * hydra_select_token.c - one token's row, y = x[index] (docs/numerics.md "select_token"): a copy, the
 * input's scale and zero point kept. The rows entry point serves a token loop: it is called with each
 * group of rows and copies row `index` when the group holds it.
 */
#include <stddef.h>

#include "hydra_rt.h"

static hydra_status check_params(const hydra_select_token_params *params)
{
    if (params->tokens <= 0 || params->dim <= 0 || params->index < 0 || params->index >= params->tokens)
        return HYDRA_ERR_SHAPE;
    return HYDRA_OK;
}

hydra_status hydra_select_token_s8(const hydra_select_token_params *params, const int8_t *input, int8_t *output)
{
    if (params == NULL || input == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    return hydra_select_token_rows_s8(params, input, 0, params->tokens, output);
}

hydra_status hydra_select_token_rows_s8(const hydra_select_token_params *params, const int8_t *rows_in,
                                        int32_t first_row, int32_t rows, int8_t *output)
{
    if (params == NULL || rows_in == NULL || output == NULL)
        return HYDRA_ERR_ARG;
    const hydra_status st = check_params(params);
    if (st != HYDRA_OK)
        return st;
    if (first_row < 0 || rows <= 0 || rows > params->tokens - first_row)
        return HYDRA_ERR_SHAPE;
    const int32_t at = params->index - first_row;
    if (at < 0 || at >= rows)
        return HYDRA_OK; /* not in this group */
    const int8_t *row = rows_in + (size_t)at * (size_t)params->dim;
    for (int32_t d = 0; d < params->dim; d++)
        output[d] = row[d];
    return HYDRA_OK;
}
