/* hydra_tfl.h: int8 kernels that follow TensorFlow Lite Micro's reference kernels to the bit.
 *
 * Used when the input model is an int8 .tflite: each op keeps the file's quantisation and gives the
 * same output bytes as TFLM's interpreter. The contract (op names, params, argument order) is in
 * toolchain/hydra_edge/frontend/tflite_types.py; the rounding of every step is TFLM's
 * (MultiplyByQuantizedMultiplier, double rounding; HYDRA_SINGLE_ROUNDING selects the single-rounding
 * variant, TFLITE_SINGLE_ROUNDING in TFLite). */
#ifndef HYDRA_TFL_H
#define HYDRA_TFL_H

#include <stdint.h>

#include "hydra_rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== linear algebra, convolution, pooling, reductions, shape ops ==== */
/* (end of linear section) */

/* ==== elementwise, activations, softmax, normalisation, (de)quantisation ==== */
/* (end of elementwise section) */

#ifdef __cplusplus
}
#endif

#endif /* HYDRA_TFL_H */
