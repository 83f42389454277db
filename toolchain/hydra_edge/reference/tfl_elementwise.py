"""Reference kernels of the elementwise int8 TFLite ops, step by step as TFLite Micro runs them.

``KERNELS[ir_op](attrs, inputs, rounding) -> np.ndarray`` (contract in
``frontend/tflite_types.py``): ``attrs`` from ``frontend/tflite_prepare_elementwise.py``,
``inputs`` numpy arrays in node input order, ``rounding`` the node's (ops.node_rounding):
"double" (TFLM) or "single" (as TFLITE_SINGLE_ROUNDING: only MultiplyByQuantizedMultiplier changes;
the gemmlowp arithmetic inside LOGISTIC, TANH, SOFTMAX and L2_NORMALIZATION
does not). All arithmetic is int64 numpy on int32 values; each kernel names
the TFLM function it mirrors. Broadcasting is numpy's, which is TFLM's
(every output element is the op of the two input elements it broadcasts from).

The edge ops have host-side numpy functions: ``affine_quantize`` (float32 ->
int8, TFLM's AffineQuantize) and ``dequantize`` (int8 -> float32).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..numerics.tfl_fixedpoint import (
    exp_on_negative_values,
    get_inv_sqrt_quantized_multiplier_exp,
    get_reciprocal,
    logistic,
    multiply_by_quantized_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    tanh,
)

I64 = np.int64
Kernel = Callable[[dict, list, str], np.ndarray]


def _s8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -128, 127).astype(np.int8)


def _operands(inputs: list) -> tuple[np.ndarray, np.ndarray]:
    a, b = (np.asarray(x).astype(I64) for x in inputs[:2])
    return np.broadcast_arrays(a, b)


def _activation(a: dict, x: np.ndarray) -> np.ndarray:
    return _s8(np.minimum(a["output_activation_max"], np.maximum(a["output_activation_min"], x)))


def _rescaled_inputs(a: dict, inputs: list, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """AddFunc / SubElementwise / SquaredDifference: both inputs shifted left, then scaled by multipliers < 1."""
    x, y = _operands(inputs)
    shifted1 = (a["input1_offset"] + x) * (1 << a["left_shift"])
    shifted2 = (a["input2_offset"] + y) * (1 << a["left_shift"])
    mbqm = multiply_by_quantized_multiplier
    return (
        mbqm(shifted1, a["input1_multiplier"], a["input1_shift"], rounding),
        mbqm(shifted2, a["input2_multiplier"], a["input2_shift"], rounding),
    )


def tfl_add(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_integer_ops::AddFunc."""
    s1, s2 = _rescaled_inputs(a, inputs, rounding)
    raw = multiply_by_quantized_multiplier(s1 + s2, a["output_multiplier"], a["output_shift"], rounding)
    return _activation(a, raw + a["output_offset"])


def tfl_sub(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_ops::SubElementwise / BroadcastQuantSubSlow."""
    s1, s2 = _rescaled_inputs(a, inputs, rounding)
    raw = multiply_by_quantized_multiplier(s1 - s2, a["output_multiplier"], a["output_shift"], rounding)
    return _activation(a, raw + a["output_offset"])


def tfl_squared_difference(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """squared_difference.cc SquaredDifference<int8_t>: (s1 - s2)^2 fits int32 (|s1 - s2| < 2^15)."""
    s1, s2 = _rescaled_inputs(a, inputs, rounding)
    diff = s1 - s2
    raw = multiply_by_quantized_multiplier(diff * diff, a["output_multiplier"], a["output_shift"], rounding)
    return _activation(a, raw + a["output_offset"])


def tfl_mul(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_integer_ops::MulElementwise / BroadcastMul6DSlow."""
    x, y = _operands(inputs)
    product = (a["input1_offset"] + x) * (a["input2_offset"] + y)  # |.| <= 2^16
    raw = multiply_by_quantized_multiplier(product, a["output_multiplier"], a["output_shift"], rounding)
    return _activation(a, raw + a["output_offset"])


def tfl_rsqrt(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """elementwise.cc RsqrtEvalQuantized<int8_t>; TFLM fails the op on an input below the zero point."""
    x = np.asarray(inputs[0]).astype(I64)
    value = x - a["input_zero_point"]
    if (value < 0).any():
        raise ValueError("tfl_rsqrt: an input lies below the zero point (a negative real value); "
                         "TFLM's RSQRT fails on it too")
    k_shift = 20
    safe = np.where(value == 0, 1, value)
    inv, inv_shift = get_inv_sqrt_quantized_multiplier_exp(safe, -1)
    mbqm = multiply_by_quantized_multiplier
    data = mbqm(np.ones_like(safe), inv, inv_shift + k_shift, rounding)
    out = mbqm(data, a["multiplier"], a["shift"] - k_shift, rounding) + a["output_zero_point"]
    return np.where(value == 0, 127, _s8(out)).astype(np.int8)


def _sigmoid_input_q4(a: dict, x: np.ndarray, rounding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared front of int8 Logistic and Tanh: (input - zp), the saturated masks, the Q4.27 input."""
    value = x.astype(I64) - a["input_zero_point"]
    radius = a["input_range_radius"]
    low, high = value <= -radius, value >= radius
    inside = np.where(low | high, 0, value)  # outside values are not computed (the C kernel never does)
    q4 = multiply_by_quantized_multiplier(inside, a["input_multiplier"], a["input_left_shift"], rounding)
    return low, high, q4


def tfl_logistic(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_integer_ops::Logistic (int8): gemmlowp logistic on Q4.27, output Q0.31 -> /2^23 - 128."""
    x = np.asarray(inputs[0])
    low, high, q4 = _sigmoid_input_q4(a, x, rounding)
    out = rounding_divide_by_pot(logistic(q4, 4), 31 - 8) - 128
    return np.where(low, -128, np.where(high, 127, _s8(out))).astype(np.int8)


def tfl_tanh(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_integer_ops::Tanh (int8): gemmlowp tanh on Q4.27, output Q0.31 -> /2^24."""
    x = np.asarray(inputs[0])
    low, high, q4 = _sigmoid_input_q4(a, x, rounding)
    out = rounding_divide_by_pot(tanh(q4, 4), 31 - 7)
    return np.where(low, -128, np.where(high, 127, _s8(out))).astype(np.int8)


SOFTMAX_TABLE_SIZE = 256  # the differences x - max of an int8 row: -255 .. 0


def softmax_exp_table(a: dict, rounding: str) -> np.ndarray:
    """exp of each difference d = x - max in [-255, 0] as Softmax<int8_t> forms it (d rescaled to Q5.26, gemmlowp's
    exp, Q0.31), 0 where d < diff_min: entry 255 + d. A row's exponentials are its entries, so the C kernel looks
    them up (runtime_c/src/tfl_softmax.c) instead of running gemmlowp's exp per element."""
    diff = np.arange(-(SOFTMAX_TABLE_SIZE - 1), 1, dtype=I64)
    use = diff >= a["diff_min"]
    # MultiplyByQuantizedMultiplierGreaterThanOne; a shift of 31 leaves only diff == 0 (diff_min is 0 then).
    rescaled = multiply_by_quantized_multiplier(
        np.where(use, diff, 0), a["input_multiplier"], min(a["input_left_shift"], 30), rounding
    )
    return np.where(use, exp_on_negative_values(rescaled, 5), 0).astype(np.int32)


def tfl_softmax(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_ops::Softmax<int8_t, int8_t>: exp of Q5.26 differences, sum in Q12.19, GetReciprocal."""
    x = np.asarray(inputs[0])
    rows = x.reshape(a["outer_size"], a["depth"]).astype(I64)
    diff = rows - rows.max(axis=1, keepdims=True)
    exps = softmax_exp_table(a, rounding).astype(I64)[diff + SOFTMAX_TABLE_SIZE - 1]  # Q0.31; 0 below diff_min
    sum_of_exps = rounding_divide_by_pot(exps, 12).sum(axis=1, keepdims=True)  # Rescale<12>; < 2^31 (depth < 2^12)
    shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, 12)
    exponent = num_bits_over_unit + 31 - 8
    unsat = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted_scale, exps), exponent)
    out = np.where(diff >= a["diff_min"], _s8(unsat - 128), -128)
    return out.astype(np.int8).reshape(x.shape)


def tfl_l2_normalization(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_integer_ops::L2Normalization: 1/sqrt(sum of squares) by GetInvSqrtQuantizedMultiplierExp."""
    x = np.asarray(inputs[0])
    rows = x.reshape(a["outer_size"], a["depth"]).astype(I64) - a["input_zero_point"]
    acc = (rows * rows).sum(axis=1, keepdims=True)  # int32 for depth <= 33025 (checked in prepare)
    inv, shift = get_inv_sqrt_quantized_multiplier_exp(acc, -1)
    out = multiply_by_quantized_multiplier(rows, inv, shift + 7, rounding)
    return _s8(out).reshape(x.shape)


def tfl_quantize(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_ops::Requantize<int8_t, int8_t>, or AffineQuantize for a float32 input (edge)."""
    x = np.asarray(inputs[0])
    if x.dtype.kind == "f":
        return affine_quantize(x, a["scale"], a["zero_point"])
    value = x.astype(I64) - a["input_zero_point"]
    out = multiply_by_quantized_multiplier(value, a["multiplier"], a["shift"], rounding) + a["output_zero_point"]
    return _s8(out)


def tfl_dequantize(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """reference_ops::Dequantize<int8_t, float> (edge)."""
    return dequantize(np.asarray(inputs[0]), a["scale"], a["zero_point"])


def affine_quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """TFLM AffineQuantize to int8: TfLiteRound(x / (float)scale) + zp, clamped; division in float32.

    Non-finite or out-of-int32 quotients (undefined in C++) saturate here.
    """
    q = np.asarray(x, dtype=np.float32) / np.float32(scale)
    mag = np.abs(q.astype(np.float64))  # exact: float32 -> float64
    whole = np.floor(mag)
    rounded = whole + ((mag - whole) >= 0.5)
    rounded = np.where(q < 0, -rounded, rounded)
    rounded = np.nan_to_num(rounded, nan=0.0, posinf=2.0**31 - 1, neginf=-(2.0**31))
    as_int = np.clip(rounded, -(2.0**31), 2.0**31 - 1).astype(I64)
    return _s8(as_int + zero_point)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """TFLM Dequantize: (float)(scale * (q - zp)) with the product in double."""
    return (float(scale) * (np.asarray(q).astype(np.float64) - zero_point)).astype(np.float32)


KERNELS: dict[str, Kernel] = {
    "tfl_add": tfl_add,
    "tfl_sub": tfl_sub,
    "tfl_mul": tfl_mul,
    "tfl_squared_difference": tfl_squared_difference,
    "tfl_rsqrt": tfl_rsqrt,
    "tfl_logistic": tfl_logistic,
    "tfl_tanh": tfl_tanh,
    "tfl_softmax": tfl_softmax,
    "tfl_l2_normalization": tfl_l2_normalization,
    "tfl_quantize": tfl_quantize,
    "tfl_dequantize": tfl_dequantize,
}
