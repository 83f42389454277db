/* hydra_tfl.h: int8 kernels that follow TensorFlow Lite Micro's reference kernels to the bit.
 *
 * Used when the input model is an int8 .tflite: each op keeps the file's quantisation and gives the
 * same output bytes as TFLM's interpreter. The contract (op names, params, argument order) is in
 * toolchain/hydra_edge/frontend/tflite_types.py; the rounding of every step is TFLM's
 * (MultiplyByQuantizedMultiplier: hydra_tfl_requantize). */
#ifndef HYDRA_TFL_H
#define HYDRA_TFL_H

#include <stddef.h>
#include <stdint.h>

#include "hydra_rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== linear algebra, convolution, pooling, reductions, shape ops ==== */

/* PAD, TRANSPOSE, MEAN and SUM walk shapes extended with leading 1s to HYDRA_TFL_MAX_DIMS dimensions;
 * NHWC ops (CONV_2D, DEPTHWISE_CONV_2D, the pools) use 4-D shapes [N, H, W, C] (filters [O, H, W, I],
 * depthwise [1, H, W, O]). Offsets follow TFLM: input offset = -zero point, output offset = +zero point.
 * Multipliers and shifts are TFLM's (MultiplyByQuantizedMultiplier: hydra_tfl_requantize, shift in [-31, 30]).
 * Inputs a kernel does not read (RESHAPE's shape, TRANSPOSE's perm, PAD's paddings, the reductions'
 * axes: all folded into the params) are `const void *` and may be NULL. Output buffers must not overlap
 * the inputs, except RESHAPE (output == input is a no-op). No kernel here needs scratch. */
#define HYDRA_TFL_MAX_DIMS 6

/* ---- what the kernels share, CMSIS-NN style: small checks and steps inline here, the loops several kernels
 * walk (broadcast, reduction, LOGISTIC / TANH, convolution, pooling) in tfl_fixedpoint.c. Kernels whose params
 * are identical share one struct under each op's name (typedefs): hydra_tfl_<op>_params still names them. */

/* TFLM's MultiplyByQuantizedMultiplier in a node's rounding mode: every params struct below whose kernel
 * requantises has a `single_rounding` field (0: TFLM's default, double rounding; else single, as a build with
 * TFLITE_SINGLE_ROUNDING or LiteRT's reference FULLY_CONNECTED), which the emitter sets from the node's
 * rounding (ops.node_rounding), as for the native kernels (hydra_rt.h). Double rounding inline; single rounding,
 * which an imported .tflite's tfl_* kernels never run (the frontend rounds as TFLM; `--rounding single` changes only
 * FULLY_CONNECTED, which legalises to linear), through hydra_requantize.c's function: one copy of requant a site. */
static HYDRA_ALWAYS_INLINE int32_t hydra_tfl_requantize(int32_t x, int32_t multiplier, int32_t shift,
                                                        int32_t single_rounding)
{
    return single_rounding ? hydra_requantize_single(x, multiplier, shift)
                           : hydra_requantize_double_inline(x, multiplier, shift);
}

/* hydra_tfl_requantize through the functions of hydra_requantize.c (linked with every model) in both modes: for the
 * cold paths the fast loops leave to a general one (a multiplier above 1, a bound a short form needs), so that each
 * of them is a call, not a copy of requant. */
static inline int32_t hydra_tfl_requantize_call(int32_t x, int32_t multiplier, int32_t shift, int32_t single_rounding)
{
    return single_rounding ? hydra_requantize_single(x, multiplier, shift)
                           : hydra_requantize_double(x, multiplier, shift);
}

/* An int8 input offset (-zero point): [-127, 128]. */
static inline int hydra_tfl_input_offset_ok(int32_t offset)
{
    return offset >= -127 && offset <= 128;
}

/* A fused activation range inside int8. */
static inline int hydra_tfl_activation_ok(int32_t lo, int32_t hi)
{
    return lo >= -128 && hi <= 127 && lo <= hi;
}

/* A TFLM multiplier (MultiplyByQuantizedMultiplier): M >= 0, shift in [-31, 30]. */
static inline int hydra_tfl_multiplier_ok(int32_t multiplier, int32_t shift)
{
    return multiplier >= 0 && shift >= -31 && shift <= 30;
}

/* n per-channel multipliers, each as hydra_tfl_multiplier_ok. */
static inline int hydra_tfl_multipliers_ok(const int32_t *multiplier, const int32_t *shift, int32_t n)
{
    for (int32_t c = 0; c < n; c++)
        if (!hydra_tfl_multiplier_ok(multiplier[c], shift[c]))
            return 0;
    return 1;
}

/* The output stage: a requantised value plus the output offset, clamped to [lo, hi] (inside int8). Formed in
 * int64, so the sum cannot overflow; the same value as TFLM's int32 sum wherever that does not overflow. */
static inline int8_t hydra_tfl_output_s8(int32_t y, int32_t offset, int32_t lo, int32_t hi)
{
    const int64_t r = (int64_t)y + offset;
    return (int8_t)(r < lo ? lo : (r > hi ? hi : r));
}

/* Element (n, y, x, c) of a row-major NHWC tensor of shape [N, H, W, C] (non-negative indices in range). */
static inline size_t hydra_tfl_nhwc(const int32_t shape[4], int32_t n, int32_t y, int32_t x, int32_t c)
{
    return (((size_t)n * (size_t)shape[1] + (size_t)y) * (size_t)shape[2] + (size_t)x) * (size_t)shape[3] +
           (size_t)c;
}

/* Strides, dilations and paddings of a 2-D window (convolutions, pools) in range. */
static inline int hydra_tfl_window_ok(int32_t stride_h, int32_t stride_w, int32_t dilation_h, int32_t dilation_w,
                                      int32_t padding_h, int32_t padding_w)
{
    return stride_h > 0 && stride_w > 0 && dilation_h > 0 && dilation_w > 0 && padding_h >= 0 && padding_w >= 0;
}

/* FULLY_CONNECTED: output[b, o] = clamp(output_offset + MBQM(bias[o] + sum_d (filter[o, d] + filter_offset)
 * * (input[b, d] + input_offset), M[c], shift[c])), c = o when per_channel, else 0. bias may be NULL. */
typedef struct {
    int32_t batches, accum_depth, output_depth;
    int32_t input_offset, filter_offset, output_offset;
    int32_t per_channel;                /* 1: output_multiplier/shift hold output_depth entries, 0: one */
    const int32_t *output_multiplier;
    const int32_t *output_shift;
    int32_t activation_min, activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single (LiteRT's reference FC) */
} hydra_tfl_fully_connected_params;

hydra_status hydra_tfl_fully_connected_s8(const hydra_tfl_fully_connected_params *p, const int8_t *input,
                                          const int8_t *filter, const int32_t *bias, int8_t *output);

/* CONV_2D (ConvPerChannel; groups = input channels / filter input channels) and DEPTHWISE_CONV_2D
 * (DepthwiseConvPerChannel: output channel i * depth_multiplier + m reads input channel i). Taps outside
 * the image are skipped. Multipliers and shifts per output channel. bias may be NULL. */
typedef struct {
    int32_t input_shape[4], filter_shape[4], output_shape[4];
    int32_t stride_height, stride_width;
    int32_t dilation_height_factor, dilation_width_factor;
    int32_t padding_height, padding_width;
    int32_t input_offset, output_offset;
    const int32_t *output_multiplier;   /* [output channels] */
    const int32_t *output_shift;
    int32_t activation_min, activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_conv_2d_params;

typedef struct {
    int32_t input_shape[4], filter_shape[4], output_shape[4];
    int32_t stride_height, stride_width;
    int32_t dilation_height_factor, dilation_width_factor;
    int32_t padding_height, padding_width;
    int32_t depth_multiplier;
    int32_t input_offset, output_offset;
    const int32_t *output_multiplier;   /* [output channels] */
    const int32_t *output_shift;
    int32_t activation_min, activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_depthwise_conv_2d_params;

/* CONV_2D's scratch: hydra_tfl_conv_2d_get_buffer_size bytes, 4-byte aligned: two output pixels' windows as int16,
 * 16 ceil(k / 4) for filter rows of k = H W I bytes, and where I % 4 != 0 one window as bytes, 4 ceil(k / 4) more.
 * Every build asks for it; the portable kernels leave it unused. -1 for a filter of more than 33025 taps. */
int32_t hydra_tfl_conv_2d_get_buffer_size(const hydra_tfl_conv_2d_params *p);
hydra_status hydra_tfl_conv_2d_s8(const hydra_tfl_conv_2d_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, int32_t *scratch);
hydra_status hydra_tfl_depthwise_conv_2d_s8(const hydra_tfl_depthwise_conv_2d_params *p, const int8_t *input,
                                            const int8_t *filter, const int32_t *bias, int8_t *output);

/* What CONV_2D and DEPTHWISE_CONV_2D share, the same fields of either params struct: HYDRA_TFL_CONV_VIEW(p). */
typedef struct {
    const int32_t *input_shape, *filter_shape, *output_shape;
    int32_t stride_height, stride_width;
    int32_t dilation_height_factor, dilation_width_factor;
    int32_t padding_height, padding_width;
    int32_t input_offset, output_offset;
    const int32_t *output_multiplier, *output_shift;
    int32_t activation_min, activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_conv_view;

#define HYDRA_TFL_CONV_VIEW(p)                                                                                    \
    {(p)->input_shape, (p)->filter_shape, (p)->output_shape, (p)->stride_height, (p)->stride_width,              \
     (p)->dilation_height_factor, (p)->dilation_width_factor, (p)->padding_height, (p)->padding_width,           \
     (p)->input_offset, (p)->output_offset, (p)->output_multiplier, (p)->output_shift, (p)->activation_min,       \
     (p)->activation_max, (p)->single_rounding}

/* The walks (tfl_fixedpoint.c), after the kernel's own shape checks: HYDRA_ERR_ARG for the window, offsets,
 * activation range or a multiplier, else every output (b, oy, ox, oc). CONV_2D: output channel oc reads filter
 * (oc, fy, fx, i) times input channel g * I + i (g = oc / (outputs per group), I = filter_shape[3]).
 * DEPTHWISE_CONV_2D: filter (0, fy, fx, oc) times input channel oc / depth_multiplier. Taps outside the image are
 * skipped. Two functions, so that a model links only the walk its convolutions take. The conv walk's scratch:
 * hydra_tfl_conv_2d_get_buffer_size's bytes (not NULL on the SIMD cores, where it holds the im2col windows). */
hydra_status hydra_tfl_conv_walk_s8(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                                    const int32_t *bias, int8_t *output, int32_t *scratch);
hydra_status hydra_tfl_depthwise_walk_s8(const hydra_tfl_conv_view *v, const int8_t *input, const int8_t *filter,
                                         const int32_t *bias, int8_t *output);

/* AVERAGE_POOL_2D (sum of the taps inside the image, divided by their count rounding half away from
 * zero, no zero point involved) and MAX_POOL_2D; both clamp to the activation range. */
typedef struct {
    int32_t input_shape[4], output_shape[4];
    int32_t stride_height, stride_width;
    int32_t filter_height, filter_width;
    int32_t padding_height, padding_width;
    int32_t activation_min, activation_max;
} hydra_tfl_pool_2d_params;

typedef hydra_tfl_pool_2d_params hydra_tfl_average_pool_2d_params;
typedef hydra_tfl_pool_2d_params hydra_tfl_max_pool_2d_params;

hydra_status hydra_tfl_average_pool_2d_s8(const hydra_tfl_average_pool_2d_params *p, const int8_t *input,
                                          int8_t *output);
hydra_status hydra_tfl_max_pool_2d_s8(const hydra_tfl_max_pool_2d_params *p, const int8_t *input, int8_t *output);

/* The walk both pools share (tfl_fixedpoint.c), kind HYDRA_TFL_POOL_MAX or HYDRA_TFL_POOL_AVERAGE: checks the
 * params (HYDRA_ERR_SHAPE for the shapes and, for AVERAGE_POOL_2D, a window of more than 2^23 taps or one wholly
 * in the padding, then HYDRA_ERR_ARG), then output (b, oy, ox, c) = the largest / the rounded average of the
 * window's taps inside the image (-128 for an empty MAX_POOL_2D window) clamped to the activation range. */
#define HYDRA_TFL_POOL_MAX 0
#define HYDRA_TFL_POOL_AVERAGE 1
hydra_status hydra_tfl_pool_2d_s8(const hydra_tfl_pool_2d_params *p, const int8_t *input, int8_t *output,
                                  int32_t kind);

/* PAD: the input copied at pad_before[d] in every dimension, pad_value (the output zero point) elsewhere. */
typedef struct {
    int32_t input_shape[HYDRA_TFL_MAX_DIMS], output_shape[HYDRA_TFL_MAX_DIMS];
    int32_t pad_before[HYDRA_TFL_MAX_DIMS];
    int32_t pad_value;
} hydra_tfl_pad_params;

hydra_status hydra_tfl_pad_s8(const hydra_tfl_pad_params *p, const int8_t *input, const void *paddings,
                              int8_t *output);

/* RESHAPE: a copy of size bytes, nothing when the planner gave output the input's bytes. */
typedef struct {
    int32_t size;
} hydra_tfl_reshape_params;

hydra_status hydra_tfl_reshape_s8(const hydra_tfl_reshape_params *p, const int8_t *input, const void *shape,
                                  int8_t *output);

/* TRANSPOSE: output (row-major over output_shape) element at index i reads input[sum_d i_d input_strides[d]]. */
typedef struct {
    int32_t output_shape[HYDRA_TFL_MAX_DIMS];
    int32_t input_strides[HYDRA_TFL_MAX_DIMS];
} hydra_tfl_transpose_params;

hydra_status hydra_tfl_transpose_s8(const hydra_tfl_transpose_params *p, const int8_t *input, const void *perm,
                                    int8_t *output);

/* BATCH_MATMUL: out[b, i, j] = clamp(output_offset + MBQM(sum_k (lhs[b, i, k] + lhs_offset)
 * * (rhs[b, k, j] + rhs_offset), M, shift)); batches broadcast (stride 0), adj_x / adj_y folded into the
 * strides: lhs[b, i, k] is at lhs_b + i * lhs_row_stride + k * lhs_depth_stride. */
typedef struct {
    int32_t batch_shape[3], lhs_batch_strides[3], rhs_batch_strides[3];
    int32_t rows, cols, depth;
    int32_t lhs_row_stride, lhs_depth_stride, rhs_depth_stride, rhs_col_stride;
    int32_t lhs_offset, rhs_offset, output_offset;
    int32_t output_multiplier, output_shift;
    int32_t activation_min, activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_batch_matmul_params;

hydra_status hydra_tfl_batch_matmul_s8(const hydra_tfl_batch_matmul_params *p, const int8_t *lhs,
                                       const int8_t *rhs, int8_t *output);

/* MEAN and SUM (QuantizedMeanOrSum): per output, the int32 sum over the reduced dimensions
 * (reduce_shape[d] > 1), minus input_zero_point * num_elements, MBQM, plus the output zero point.
 * MEAN's multiplier already holds 1/num_elements, as TFLM folds it. */
typedef struct {
    int32_t input_shape[HYDRA_TFL_MAX_DIMS], reduce_shape[HYDRA_TFL_MAX_DIMS];
    int32_t num_elements;
    int32_t input_zero_point, output_zero_point;
    int32_t output_multiplier, output_shift;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_reduce_params;

typedef hydra_tfl_reduce_params hydra_tfl_mean_params;
typedef hydra_tfl_reduce_params hydra_tfl_sum_params;

hydra_status hydra_tfl_mean_s8(const hydra_tfl_mean_params *p, const int8_t *input, const void *axis,
                               int8_t *output);
hydra_status hydra_tfl_sum_s8(const hydra_tfl_sum_params *p, const int8_t *input, const void *axis,
                              int8_t *output);

/* The walk MEAN and SUM share (tfl_fixedpoint.c): the two differ only in the multiplier the compiler folds. */
hydra_status hydra_tfl_reduce_s8(const hydra_tfl_reduce_params *p, const int8_t *input, int8_t *output);

/* The zero points and the multiplier in range. */
static inline int hydra_tfl_reduce_quant_ok(const hydra_tfl_reduce_params *p)
{
    return hydra_zero_point_ok(p->input_zero_point) && hydra_zero_point_ok(p->output_zero_point) &&
           hydra_tfl_multiplier_ok(p->output_multiplier, p->output_shift);
}

/* QuantizedMeanOrSum's ending for one output from the exact sum of its count int8 inputs: TFLM's
 * (int32)(sum - zp * count) in wrapping int32 arithmetic (reduced modulo 2^32), MBQM, plus the output zero
 * point, clamped to int8 (tfl_fixedpoint.c; the reduction walk's and Hydra attention's kv_sum's). */
int8_t hydra_tfl_reduce_output_s8(const hydra_tfl_reduce_params *p, int64_t sum, int64_t count);

/* (end of linear section) */

/* ==== elementwise, activations, softmax, normalisation, (de)quantisation ==== */

/* Binary ops broadcast like TFLM's BroadcastBinaryOpSimple: up to 6-D, so their shapes are extended to
 * HYDRA_TFL_MAX_BROADCAST_DIMS with leading 1s (not 4-D). Offsets follow TFLM: input offset = -zero point,
 * output offset = +zero point. All kernels accept output == an input of the same size (in place). */
#define HYDRA_TFL_MAX_BROADCAST_DIMS 6

/* ---- gemmlowp fixed point as TFLM ships it (tfl_fixedpoint.c); values are raw int32 of FixedPoint<int32, I> */
int32_t hydra_tfl_srdhm(int32_t a, int32_t b);                  /* SaturatingRoundingDoublingHighMul */
int32_t hydra_tfl_rounding_divide_by_pot(int32_t x, int32_t exponent); /* exponent in [0, 31] */
int32_t hydra_tfl_exp_on_negative_values(int32_t a, int32_t integer_bits); /* Q(integer_bits) -> Q0.31 */
int32_t hydra_tfl_one_over_one_plus_x_for_x_in_0_1(int32_t a);  /* Q0.31 -> Q0.31 */
int32_t hydra_tfl_logistic(int32_t a, int32_t integer_bits);     /* Q(integer_bits) -> Q0.31 */
int32_t hydra_tfl_tanh(int32_t a, int32_t integer_bits);         /* Q(integer_bits) -> Q0.31 */
/* GetReciprocal: 1/x for x > 0 in Q(integer_digits), as Q0.31 and *num_bits_over_unit. */
int32_t hydra_tfl_get_reciprocal(int32_t x, int32_t integer_digits, int32_t *num_bits_over_unit);
/* GetInvSqrtQuantizedMultiplierExp: 1/sqrt(input) ~ *multiplier * 2^*shift / 2^31 (input >= 0). */
void hydra_tfl_inv_sqrt_multiplier_exp(int32_t input, int32_t reverse_shift, int32_t *multiplier, int32_t *shift);

/* The broadcast loop of the binary kernels. Dimensions of size 1 are dropped and neighbours that broadcast alike
 * merged, so that the innermost run is as long as it can be; `run` computes one run:
 * out[i] = op(a[i * a_step], b[i * b_step]) for i < n, where a_step and b_step are 1, or 0 for an operand
 * broadcast along the run (a kernel computes what depends on that operand alone once per run). */
typedef void (*hydra_tfl_binary_run_fn)(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                                        int32_t n, const void *params);
hydra_status hydra_tfl_broadcast_binary_s8(const int32_t *a_shape, const int32_t *b_shape, const int32_t *out_shape,
                                           const int8_t *a, const int8_t *b, int8_t *output,
                                           hydra_tfl_binary_run_fn run, const void *params);

/* ADD, SUB, SQUARED_DIFFERENCE: both inputs shifted left by left_shift (20, 20, 7) and scaled by
 * multipliers < 1, then combined and scaled by the output multiplier (any size for SQUARED_DIFFERENCE). */
typedef struct {
    int32_t input1_shape[HYDRA_TFL_MAX_BROADCAST_DIMS];
    int32_t input2_shape[HYDRA_TFL_MAX_BROADCAST_DIMS];
    int32_t output_shape[HYDRA_TFL_MAX_BROADCAST_DIMS];
    int32_t input1_offset, input2_offset, output_offset;
    int32_t left_shift;
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t output_activation_min, output_activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_rescaled_binary_params;

typedef hydra_tfl_rescaled_binary_params hydra_tfl_add_params;
typedef hydra_tfl_rescaled_binary_params hydra_tfl_sub_params;
typedef hydra_tfl_rescaled_binary_params hydra_tfl_squared_difference_params;

/* The offsets and the activation range every binary kernel checks. */
static inline int hydra_tfl_binary_quant_ok(int32_t input1_offset, int32_t input2_offset, int32_t output_offset,
                                            int32_t activation_min, int32_t activation_max)
{
    return hydra_tfl_input_offset_ok(input1_offset) && hydra_tfl_input_offset_ok(input2_offset) &&
           hydra_zero_point_ok(output_offset) && hydra_tfl_activation_ok(activation_min, activation_max);
}

/* ADD, SUB and SQUARED_DIFFERENCE's params in range, left_shift at most max_left_shift. */
static inline int hydra_tfl_rescaled_binary_ok(const hydra_tfl_rescaled_binary_params *p, int32_t max_left_shift)
{
    return p->left_shift >= 0 && p->left_shift <= max_left_shift &&
           hydra_tfl_binary_quant_ok(p->input1_offset, p->input2_offset, p->output_offset, p->output_activation_min,
                                     p->output_activation_max);
}

/* Their first step on input 1 or 2 in the fast loop below: (x + offset) * 2^left_shift, scaled by the input's
 * multiplier (>= 0, shift <= 0: hydra_tfl_rescaled_binary_fast) by hydra_requantize_right in double rounding.
 * |(x + offset) 2^20| <= 2^28, so nothing overflows int32. */
static HYDRA_ALWAYS_INLINE int32_t hydra_tfl_rescale_input(const hydra_tfl_rescaled_binary_params *p, int input,
                                                           int32_t x)
{
    const int32_t offset = input == 1 ? p->input1_offset : p->input2_offset;
    const int32_t multiplier = input == 1 ? p->input1_multiplier : p->input2_multiplier;
    const int32_t shift = input == 1 ? p->input1_shift : p->input2_shift;
    return hydra_requantize_right((offset + x) * (INT32_C(1) << p->left_shift), multiplier, shift, 0);
}

/* How ADD, SUB and SQUARED_DIFFERENCE combine their two rescaled inputs (hydra_tfl_rescaled_binary_run). */
enum { HYDRA_TFL_COMBINE_ADD, HYDRA_TFL_COMBINE_SUB, HYDRA_TFL_COMBINE_SQUARED_DIFFERENCE };

/* Whether a run of ADD, SUB or SQUARED_DIFFERENCE may take the fast loop: double rounding (TFLM's) and every input
 * multiplier >= 0 with a shift <= 0; for ADD and SUB (left_shift <= 20) the output's too, so that each requantisation
 * may use hydra_requantize_right: each input's |(x + offset) 2^20| <= 2^28 and the sum of two rescaled inputs below
 * 2^30. SQUARED_DIFFERENCE's output multiplier may be any size (diff * diff may reach 2^30): its output stage is the
 * full one. */
static inline int hydra_tfl_rescaled_binary_fast(const hydra_tfl_rescaled_binary_params *p, int combine)
{
    return !p->single_rounding && p->input1_multiplier >= 0 && p->input2_multiplier >= 0 && p->input1_shift <= 0 &&
           p->input2_shift <= 0 &&
           (combine == HYDRA_TFL_COMBINE_SQUARED_DIFFERENCE || (p->output_multiplier >= 0 && p->output_shift <= 0));
}

/* One run's elements of ADD / SUB / SQUARED_DIFFERENCE where hydra_tfl_rescaled_binary_fast allows it, combined as
 * `combine` says (a constant at each call). An operand that stays along the run (step 0) is rescaled once. */
static HYDRA_ALWAYS_INLINE void hydra_tfl_rescaled_binary_loop(const int8_t *a, int32_t a_step, const int8_t *b,
                                                               int32_t b_step, int8_t *out, int32_t n,
                                                               const hydra_tfl_rescaled_binary_params *p, int combine)
{
    int32_t scaled1 = a_step == 0 ? hydra_tfl_rescale_input(p, 1, *a) : 0;
    int32_t scaled2 = b_step == 0 ? hydra_tfl_rescale_input(p, 2, *b) : 0;
    const int32_t m = p->output_multiplier, s = p->output_shift, zo = p->output_offset;
    const int32_t lo = p->output_activation_min, hi = p->output_activation_max;
    for (int32_t i = 0; i < n; i++, a += a_step, b += b_step) {
        if (a_step != 0)
            scaled1 = hydra_tfl_rescale_input(p, 1, *a);
        if (b_step != 0)
            scaled2 = hydra_tfl_rescale_input(p, 2, *b);
        const int32_t diff = scaled1 - scaled2;
        if (combine == HYDRA_TFL_COMBINE_SQUARED_DIFFERENCE)
            out[i] = hydra_tfl_output_s8(hydra_requantize_double_inline(diff * diff, m, s), zo, lo, hi);
        else /* |value| < 2^30 */
            out[i] = hydra_output_right_s8(combine == HYDRA_TFL_COMBINE_ADD ? scaled1 + scaled2 : diff, m, s, 0, zo,
                                           lo, hi);
    }
}

/* The same elements in any case (tfl_fixedpoint.c): every requantisation through hydra_tfl_requantize_call. */
void hydra_tfl_rescaled_binary_general(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int8_t *out,
                                       int32_t n, const hydra_tfl_rescaled_binary_params *p, int combine);

/* One run (the run callback of hydra_tfl_broadcast_binary_s8) of ADD, SUB or SQUARED_DIFFERENCE. */
static HYDRA_ALWAYS_INLINE void hydra_tfl_rescaled_binary_run(const int8_t *a, int32_t a_step, const int8_t *b,
                                                              int32_t b_step, int8_t *out, int32_t n,
                                                              const hydra_tfl_rescaled_binary_params *p, int combine)
{
    if (hydra_tfl_rescaled_binary_fast(p, combine))
        hydra_tfl_rescaled_binary_loop(a, a_step, b, b_step, out, n, p, combine);
    else
        hydra_tfl_rescaled_binary_general(a, a_step, b, b_step, out, n, p, combine);
}

/* MUL: output = offset + MBQM((a + off1) * (b + off2), M, shift), clamped to the activation range. */
typedef struct {
    int32_t input1_shape[HYDRA_TFL_MAX_BROADCAST_DIMS];
    int32_t input2_shape[HYDRA_TFL_MAX_BROADCAST_DIMS];
    int32_t output_shape[HYDRA_TFL_MAX_BROADCAST_DIMS];
    int32_t input1_offset, input2_offset, output_offset;
    int32_t output_multiplier, output_shift;
    int32_t output_activation_min, output_activation_max;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_mul_params;

hydra_status hydra_tfl_add_s8(const hydra_tfl_add_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output);
hydra_status hydra_tfl_sub_s8(const hydra_tfl_sub_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output);
hydra_status hydra_tfl_squared_difference_s8(const hydra_tfl_squared_difference_params *p, const int8_t *input1,
                                             const int8_t *input2, int8_t *output);
hydra_status hydra_tfl_mul_s8(const hydra_tfl_mul_params *p, const int8_t *input1, const int8_t *input2,
                              int8_t *output);

/* RSQRT: 1/sqrt(x - zp) by GetInvSqrtQuantizedMultiplierExp, then the output multiplier
 * 1/(sqrt(s_in) s_out); x == zp gives 127. An input below the zero point returns HYDRA_ERR_ARG
 * (TFLM fails the op); the output is then incomplete. */
typedef struct {
    int32_t size;
    int32_t input_zero_point, output_zero_point;
    int32_t multiplier, shift;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_rsqrt_params;

hydra_status hydra_tfl_rsqrt_s8(const hydra_tfl_rsqrt_params *p, const int8_t *input, int8_t *output);

/* LOGISTIC and TANH: input - zp rescaled to Q4.27 (input_multiplier, input_left_shift), saturated outside
 * +-input_range_radius, gemmlowp logistic / tanh; outputs at scale 1/256 zp -128 (logistic) and 1/128 zp 0. */
typedef struct {
    int32_t size;
    int32_t input_zero_point, input_range_radius;
    int32_t input_multiplier, input_left_shift;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_sigmoid_params;

typedef hydra_tfl_sigmoid_params hydra_tfl_logistic_params;
typedef hydra_tfl_sigmoid_params hydra_tfl_tanh_params;

hydra_status hydra_tfl_logistic_s8(const hydra_tfl_logistic_params *p, const int8_t *input, int8_t *output);
hydra_status hydra_tfl_tanh_s8(const hydra_tfl_tanh_params *p, const int8_t *input, int8_t *output);

/* The loop both share (tfl_fixedpoint.c), kind HYDRA_TFL_SIGMOID_LOGISTIC or HYDRA_TFL_SIGMOID_TANH: saturated
 * inputs give -128 / 127, others hydra_tfl_logistic / hydra_tfl_tanh of Q4.27, whose Q0.31 is divided by 2^23
 * minus 128 (logistic) / by 2^24 (tanh). */
#define HYDRA_TFL_SIGMOID_LOGISTIC 0
#define HYDRA_TFL_SIGMOID_TANH 1
hydra_status hydra_tfl_sigmoid_s8(const hydra_tfl_sigmoid_params *p, const int8_t *input, int8_t *output,
                                  int32_t kind);

/* SOFTMAX over the last dimension (depth) of outer_size rows: TFLM's int8 path (gemmlowp exp of Q5.26
 * differences >= diff_min, not a table); output scale 1/256, zero point -128. depth < 4096. */
typedef struct {
    int32_t outer_size, depth;
    int32_t input_multiplier, input_left_shift;
    int32_t diff_min;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
    /* [256]: entry 255 + d is exp(d rescaled) in Q0.31 for a difference d = x - max in [-255, 0], 0 where
     * d < diff_min (reference/tfl_elementwise.py softmax_exp_table, made by the compiler in this rounding) */
    const int32_t *exp_table;
} hydra_tfl_softmax_params;

hydra_status hydra_tfl_softmax_s8(const hydra_tfl_softmax_params *p, const int8_t *input, int8_t *output);

/* L2_NORMALIZATION over the last dimension: output at scale 1/128, zero point 0. depth <= 33025. */
typedef struct {
    int32_t outer_size, depth;
    int32_t input_zero_point;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_l2_normalization_params;

hydra_status hydra_tfl_l2_normalization_s8(const hydra_tfl_l2_normalization_params *p, const int8_t *input,
                                           int8_t *output);

/* QUANTIZE int8 -> int8 (requantisation): zp_out + MBQM(x - zp_in, M, shift). (float -> int8 and
 * DEQUANTIZE happen on the host at the graph's edges: reference/tfl_elementwise.py.) */
typedef struct {
    int32_t size;
    int32_t input_zero_point, output_zero_point;
    int32_t multiplier, shift;
    int32_t single_rounding;            /* 0: double rounding (TFLM), else single */
} hydra_tfl_quantize_params;

hydra_status hydra_tfl_quantize_s8(const hydra_tfl_quantize_params *p, const int8_t *input, int8_t *output);

/* (end of elementwise section) */

/* ==== Hydra attention lifted from an int8 TFLite graph (passes/lift_tfl_hydra.py) ==== */

/* phi of one token's row: kind HYDRA_TFL_PHI_RSQRT is MUL(x, RSQRT([ADD(] SUM(MUL(x, x)) [, eps)])) with the
 * replaced ops' params made per row (square, scale: [1, D] x [1, D] / [1, D] x [1]; sum over one row of D;
 * eps: one element, input2 the constant eps_value, only when has_eps; rsqrt: size 1); kind
 * HYDRA_TFL_PHI_L2 is L2_NORMALIZATION with outer_size 1. */
#define HYDRA_TFL_PHI_RSQRT 0
#define HYDRA_TFL_PHI_L2 1

typedef struct {
    int32_t kind;
    int32_t has_eps, eps_value;
    hydra_tfl_mul_params square;
    hydra_tfl_sum_params sum;
    hydra_tfl_add_params eps;
    hydra_tfl_rsqrt_params rsqrt;
    hydra_tfl_mul_params scale;
    hydra_tfl_l2_normalization_params l2;
} hydra_tfl_hydra_phi_params;

/* HYDRA ATTENTION over q, k, v [tokens, depth] (row-major), TFLM's bits of the unfused ops:
 *   pass 1: acc[d] += kv_mul(phi_k(k_t), v_t)[d] over the tokens (raw int8 values, as TFLM's int8 SUM adds);
 *           kv = kv_sum's requantisation of acc (minus zp * tokens, MBQM, plus zp, clamped);
 *   pass 2: out_t = out_mul(phi_q(q_t), kv).
 * kv_mul and out_mul are per row ([1, depth] operands, input1 the phi row); kv_sum keeps its [T, D] params.
 * Each nested op's params carry their own single_rounding: the emitter sets them all to the node's rounding.
 * Scratch: hydra_tfl_hydra_attention_get_buffer_size bytes (int32 acc [D], int8 row [D], int8 kv [D]), 4-byte
 * aligned. The output may be q, k or v itself (each row of q is read before its output row is written, all
 * of k and v before any output). A negative RSQRT input returns HYDRA_ERR_ARG, as TFLM fails the op. */
typedef struct {
    int32_t tokens, depth;
    hydra_tfl_hydra_phi_params phi_q, phi_k;
    hydra_tfl_mul_params kv_mul;
    hydra_tfl_sum_params kv_sum;
    hydra_tfl_mul_params out_mul;
} hydra_tfl_hydra_attention_params;

int32_t hydra_tfl_hydra_attention_get_buffer_size(const hydra_tfl_hydra_attention_params *p);
hydra_status hydra_tfl_hydra_attention_s8(const hydra_tfl_hydra_attention_params *p, const int8_t *q,
                                          const int8_t *k, const int8_t *v, int8_t *output, int32_t *scratch);
/* The same two passes in a token loop (passes/stream.py splits tfl_hydra_attention into tfl_hydra_kv_state and
 * tfl_hydra_apply): kv_begin zeroes the state (int32 acc [D], then one int8 row [D]: 5 * depth bytes, 4-byte
 * aligned), kv_rows runs pass 1 on `rows` tokens of k and v, kv_end writes kv [D], apply runs pass 2 on `rows`
 * tokens of q (row: depth bytes of scratch; the output may be q). The same calls as the whole kernel's. */
hydra_status hydra_tfl_hydra_kv_begin_s8(const hydra_tfl_hydra_attention_params *p, int32_t *state);
hydra_status hydra_tfl_hydra_kv_rows_s8(const hydra_tfl_hydra_attention_params *p, const int8_t *k,
                                        const int8_t *v, int32_t rows, int32_t *state);
hydra_status hydra_tfl_hydra_kv_end_s8(const hydra_tfl_hydra_attention_params *p, const int32_t *state, int8_t *kv);
hydra_status hydra_tfl_hydra_apply_s8(const hydra_tfl_hydra_attention_params *p, const int8_t *q, const int8_t *kv,
                                      int32_t rows, int8_t *output, int8_t *row);

/* ==== softmax attention lifted from an int8 TFLite graph (passes/lift_tfl_softmax.py) ==== */

/* SOFTMAX ATTENTION over q [query_rows, D], k and v [tokens, D] (row-major, D = heads * head_dim, head h at
 * columns [h head_dim, (h+1) head_dim)), TFLM's bits of the unfused RESHAPE / TRANSPOSE / BATCH_MATMUL / MUL /
 * SOFTMAX / BATCH_MATMUL / TRANSPOSE chain: for each query row t and head h, with the replaced ops' params
 * made per row (the transposes are the pointer offsets and strides):
 *   s   = qk(q[t, h], k[:, h])      BATCH_MATMUL, 1 x tokens, depth head_dim (rhs col stride D)
 *   s   = scale(s, scale_value)     MUL by the one-element constant, when has_scale ([1, tokens] x [1])
 *   p   = softmax(s)                SOFTMAX, outer_size 1, depth tokens
 *   out[t, h] = pv(p, v[:, h])      BATCH_MATMUL, 1 x head_dim, depth tokens (rhs depth stride D)
 * query_rows (1..tokens) rows of q give as many rows of output, so a token loop passes a group's q and output
 * rows and k, v whole. Scratch: hydra_tfl_softmax_attention_get_buffer_size bytes (one head's int8 scores and
 * probabilities), 4-byte aligned. The output must not overlap k or v; it may be q itself (q[t, h] is read before
 * out[t, h] is written, and no later step reads it). */
typedef struct {
    int32_t tokens, heads, head_dim, query_rows;
    int32_t has_scale, scale_value;
    hydra_tfl_batch_matmul_params qk;
    hydra_tfl_mul_params scale;
    hydra_tfl_softmax_params softmax;
    hydra_tfl_batch_matmul_params pv;
} hydra_tfl_softmax_attention_params;

int32_t hydra_tfl_softmax_attention_get_buffer_size(const hydra_tfl_softmax_attention_params *p);
hydra_status hydra_tfl_softmax_attention_s8(const hydra_tfl_softmax_attention_params *p, const int8_t *q,
                                            const int8_t *k, const int8_t *v, int8_t *output, int32_t *scratch);

#ifdef __cplusplus
}
#endif

#endif /* HYDRA_TFL_H */
