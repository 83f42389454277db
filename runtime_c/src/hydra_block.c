/*
 * hydra_block.c - a whole Hydra encoder block, streamed over the tokens and
 * written in place (docs/numerics.md, "hydra_block (a fused encoder block)"; docs/memory.md):
 *
 *     x = x + proj(hydra(q(LN1(x)), k(LN1(x)), v(LN1(x))))
 *     x = x + fc2(act(fc1(LN2(x))))
 *
 * The attention state is the only thing that spans tokens, so two passes over
 * groups of G = min(tokens_per_step, tokens) tokens (the last group may be shorter)
 * do it with O(G * hidden) scratch instead of several [T, D] and [T, hidden] tensors:
 *
 *     state = 0
 *     pass 1, per group:  a = LN1(x); k = k(a); v = v(a); state += phi(k) * (v - zv)
 *     state = round_shift(state, kv_shift)
 *     pass 2, per group:  a = LN1(x); b = q(a); b = phi(b) * state (in place); a = proj(b);
 *                         x = residual1(x, a); a = LN2(x); b = act(fc1(a)); a = fc2(b);
 *                         x = residual2(x, a)
 *
 * Every step is the existing kernel on the group's rows (a copy of the member
 * params with rows/tokens/size set), and every kernel is row-wise except the
 * state, which is the exact sum the unfused hydra_attention_s8 forms (the same
 * int32 additions, in the same token order). So the bits equal those of the
 * unfused ops run one after the other over the whole [T, D] tensors.
 * residual1 may overwrite the group's rows of x: pass 1 is over, and pass 2
 * reads each token's x only within its own group.
 *
 * Scratch (4-byte aligned; H2 = max(2 * dim, hidden)):
 *
 *     offset 0                  int32 state[dim]    the attention accumulator, then kv
 *     4 * dim                   int8  phi[dim]      one phi row (k in pass 1, q in pass 2)
 *     5 * dim                   int8  a[G * dim]    LN1 out; proj out; LN2 out; fc2 out
 *     5 * dim + G * dim         int8  b[G * H2]     pass 1: k[G * dim], v[G * dim];
 *                                                   pass 2: q and attention out [G * dim],
 *                                                   then fc1 and act out [G * hidden]
 *
 *     bytes = 5 * dim + G * dim + G * max(2 * dim, hidden)
 *
 * The block's own checks (pointers, alignment, shapes) run before anything is
 * written. A sub-op that rejects its constants in pass 2 returns its status
 * after the first group's rows may have been updated (the compiler's constants
 * never do).
 */
#include <stddef.h>

#include "hydra_rt.h"

static int linear_is(const hydra_linear_params *p, int32_t in_features, int32_t out_features)
{
    return p->in_features == in_features && p->out_features == out_features;
}

/* The block's shape contract: HYDRA_OK, or the status to return. */
static hydra_status check_shapes(const hydra_block_params *p)
{
    const int32_t T = p->tokens, D = p->dim, H = p->hidden;
    if (T <= 0 || D <= 0 || H <= 0 || p->tokens_per_step <= 0)
        return HYDRA_ERR_SHAPE;
    if (p->norm1.dim != D || p->norm2.dim != D || p->attn.dim != D || p->attn.tokens != T)
        return HYDRA_ERR_SHAPE;
    if (!linear_is(&p->q, D, D) || !linear_is(&p->k, D, D) || !linear_is(&p->v, D, D) ||
        !linear_is(&p->proj, D, D) || !linear_is(&p->fc1, D, H) || !linear_is(&p->fc2, H, D))
        return HYDRA_ERR_SHAPE;
    if (!hydra_zero_point_ok(p->attn.v_zero_point))
        return HYDRA_ERR_ARG;
    if (T > hydra_attention_max_tokens(p->attn.v_zero_point)) /* the int32 state could overflow */
        return HYDRA_ERR_SHAPE;
    return HYDRA_OK;
}

/* G, the tokens per group. */
static int32_t group_tokens(const hydra_block_params *p)
{
    return p->tokens_per_step < p->tokens ? p->tokens_per_step : p->tokens;
}

/* max(2 * dim, hidden): the b region holds k and v, or the hidden activations. */
static int64_t b_width(const hydra_block_params *p)
{
    const int64_t two_d = 2 * (int64_t)p->dim;
    return two_d > p->hidden ? two_d : p->hidden;
}

/* A member's kernel on `rows` rows (or `n` elements): a copy of its params with only that
 * field changed, made in the helper's own frame so the block holds one copy at a time. */
static hydra_status linear_rows(const hydra_linear_params *p, int32_t rows, const int8_t *in, int8_t *out)
{
    hydra_linear_params step = *p;
    step.rows = rows;
    return hydra_linear_s8(&step, in, out);
}

static hydra_status layernorm_rows(const hydra_layernorm_params *p, int32_t rows, const int8_t *in, int8_t *out)
{
    hydra_layernorm_params step = *p;
    step.tokens = rows;
    return hydra_layernorm_s8(&step, in, out);
}

static hydra_status add_elements(const hydra_add_params *p, int32_t n, const int8_t *a, const int8_t *b, int8_t *out)
{
    hydra_add_params step = *p;
    step.size = n;
    return hydra_add_s8(&step, a, b, out);
}

static hydra_status lut_elements(const hydra_lut_params *p, int32_t n, const int8_t *in, int8_t *out)
{
    hydra_lut_params step = *p;
    step.size = n;
    return hydra_lut_s8(&step, in, out);
}

int32_t hydra_block_s8_get_buffer_size(const hydra_block_params *params)
{
    if (params == NULL || check_shapes(params) != HYDRA_OK)
        return 0;
    const int64_t D = params->dim, G = group_tokens(params);
    const int64_t bytes = 5 * D + G * D + G * b_width(params); /* each term < 2^62: no overflow */
    return bytes > INT32_MAX ? 0 : (int32_t)bytes;
}

hydra_status hydra_block_s8(const hydra_block_params *params, int8_t *tokens, void *scratch)
{
    if (params == NULL || tokens == NULL || scratch == NULL)
        return HYDRA_ERR_ARG;
    if ((uintptr_t)scratch % sizeof(int32_t) != 0) /* state[] is int32 */
        return HYDRA_ERR_ARG;
    hydra_status st = check_shapes(params);
    if (st != HYDRA_OK)
        return st;
    if (hydra_block_s8_get_buffer_size(params) == 0) /* the scratch size would not fit int32 */
        return HYDRA_ERR_SHAPE;

    const int32_t T = params->tokens, D = params->dim, H = params->hidden, G = group_tokens(params);
    int32_t *state = (int32_t *)scratch;
    int8_t *phi = (int8_t *)scratch + 4 * (size_t)D;
    int8_t *a = phi + (size_t)D;
    int8_t *b = a + (size_t)G * (size_t)D;
    int8_t *b_v = b + (size_t)G * (size_t)D; /* v beside k in pass 1 */

    const hydra_attention_params *attn = &params->attn;

    /* Pass 1: the attention state over all tokens. */
    for (int32_t d = 0; d < D; d++)
        state[d] = 0;
    for (int32_t t0 = 0; t0 < T && st == HYDRA_OK; t0 += G) {
        const int32_t rows = T - t0 < G ? T - t0 : G;
        const int8_t *x = tokens + (size_t)t0 * (size_t)D;
        st = layernorm_rows(&params->norm1, rows, x, a);
        if (st == HYDRA_OK)
            st = linear_rows(&params->k, rows, a, b);
        if (st == HYDRA_OK)
            st = linear_rows(&params->v, rows, a, b_v);
        if (st == HYDRA_OK)
            st = hydra_attention_accumulate_s8(attn, b, b_v, rows, state, phi);
    }
    if (st == HYDRA_OK)
        st = hydra_attention_round_state_s8(attn, state);

    /* Pass 2: per group, the rest of the block, written over the group's rows. */
    for (int32_t t0 = 0; t0 < T && st == HYDRA_OK; t0 += G) {
        const int32_t rows = T - t0 < G ? T - t0 : G;
        int8_t *x = tokens + (size_t)t0 * (size_t)D;
        st = layernorm_rows(&params->norm1, rows, x, a);
        if (st == HYDRA_OK)
            st = linear_rows(&params->q, rows, a, b);
        if (st == HYDRA_OK)
            st = hydra_attention_apply_s8(attn, b, state, rows, phi, b); /* output == q */
        if (st == HYDRA_OK)
            st = linear_rows(&params->proj, rows, b, a);
        if (st == HYDRA_OK)
            st = add_elements(&params->residual1, rows * D, x, a, x); /* in place over the block input */
        if (st == HYDRA_OK)
            st = layernorm_rows(&params->norm2, rows, x, a);
        if (st == HYDRA_OK)
            st = linear_rows(&params->fc1, rows, a, b);
        if (st == HYDRA_OK)
            st = lut_elements(&params->act, rows * H, b, b);
        if (st == HYDRA_OK)
            st = linear_rows(&params->fc2, rows, b, a);
        if (st == HYDRA_OK)
            st = add_elements(&params->residual2, rows * D, x, a, x);
    }
    return st;
}
