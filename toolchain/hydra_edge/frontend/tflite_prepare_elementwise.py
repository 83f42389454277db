"""Prepare for the elementwise int8 TFLite ops: what TFLite Micro's Prepare() computes, once, in Python.

``PREPARE[op](inputs, outputs, options) -> attrs`` (the contract is in
``frontend/tflite_types.py``): ``inputs``/``outputs`` are the operator's
tensors (``None`` for an omitted optional input), ``options`` its builtin
options as snake_case names (``fused_activation_function`` as "NONE", "RELU",
"RELU6" or "RELU_N1_TO_1"; ``beta`` for SOFTMAX). The attrs are the fields of
``hydra_tfl_<op>_params`` in ``runtime_c/include/hydra_tfl.h``.

Every number is computed as TFLM computes it, including where TFLM works in
float32 rather than double (SUB's multipliers, the activation bounds, the
squared-difference output scale), because a multiplier that differs in its
last bit changes output bytes. Binary ops broadcast up to 6-D like TFLM's
BroadcastBinaryOpSimple: their shapes are extended to 6-D (leading 1s).

TFLM keeps a few degenerate cases where its own arithmetic overflows (a
multiplier of 2^30 or more, SOFTMAX with beta * input scale above 16);
they are refused here with a message rather than compiled to different bits.

QUANTIZE from float32 and DEQUANTIZE only occur at the graph's edges; their
attrs carry the float32 ``scale`` for the host-side numpy functions of
``reference/tfl_elementwise.py`` (there is no C kernel for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..numerics.fixedpoint import quantize_multiplier
from ..numerics.tfl_fixedpoint import (
    INT32_MAX,
    calculate_input_radius,
    tfl_round,
)
from .errors import FrontendError
from .tflite_prepare_common import ACTIVATIONS, activation_bounds
from .tflite_types import TflTensorInfo

MAX_BROADCAST_DIMS = 6
# Softmax and logistic/tanh keep their inputs in these fixed-point formats (TFLM's constants).
SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
SIGMOID_INPUT_INTEGER_BITS = 4

Prepare = Callable[[list[TflTensorInfo | None], list[TflTensorInfo], dict], dict]


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _fail(op: str, tensor: TflTensorInfo | None, what: str) -> FrontendError:
    where = f" tensor {tensor.name!r}" if tensor is not None else ""
    return FrontendError(f"TFLite {op}{where}: {what}")


def _int8(op: str, t: TflTensorInfo | None, role: str) -> TflTensorInfo:
    """``t`` as an int8 per-tensor-quantised tensor, or a FrontendError saying what is wrong."""
    if t is None:
        raise _fail(op, None, f"the {role} is missing; this op needs it")
    if t.dtype != "int8":
        raise _fail(op, t, f"the {role} is {t.dtype}; only int8 is supported (int16 variants are not)")
    if len(t.scale) != 1 or len(t.zero_point) != 1:
        raise _fail(op, t, f"the {role} must be quantised per tensor (one scale, one zero point), got {len(t.scale)}")
    scale = t.per_tensor_scale
    if not (math.isfinite(scale) and scale > 0):
        raise _fail(op, t, f"the {role} scale {scale!r} is not a positive finite number")
    if not -128 <= t.per_tensor_zero_point <= 127:
        raise _fail(op, t, f"the {role} zero point {t.per_tensor_zero_point} is outside [-128, 127]")
    return t


def _scale32(t: TflTensorInfo) -> float:
    """The scale as TFLM holds it (a float32 in TfLiteQuantizationParams), as a Python float."""
    return float(_f32(t.per_tensor_scale))


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _smaller_than_one(op: str, t: TflTensorInfo, real: float) -> tuple[int, int]:
    """TFLM QuantizeMultiplierSmallerThanOneExp (it CHECK-fails outside (0, 1))."""
    if not 0.0 < real < 1.0:
        raise _fail(op, t, f"a rescaling multiplier is {real!r}, outside (0, 1) as TFLM requires; check the scales")
    return quantize_multiplier(real, large_shift="keep")


def _any_multiplier(op: str, t: TflTensorInfo, real: float) -> tuple[int, int]:
    """TFLM QuantizeMultiplier; a shift above 30 (multiplier >= 2^30) overflows TFLM's own int32 arithmetic."""
    m, shift = quantize_multiplier(real, large_shift="keep")
    if shift > 30:
        raise _fail(op, t, f"the output multiplier {real!r} is 2^30 or more: TFLM overflows int32; check the scales")
    return m, shift


def _activation_range(op: str, output: TflTensorInfo, activation: str) -> tuple[int, int]:
    """TFLM CalculateActivationRangeQuantized for int8: bounds quantised in float32, TfLiteRound."""
    if activation not in ACTIVATIONS:
        raise _fail(op, output, f"fused activation {activation!r} is not supported (only {', '.join(ACTIVATIONS)})")
    scale, zp = _f32(output.per_tensor_scale), output.per_tensor_zero_point

    def quantize(f: float) -> int:
        q = float(_f32(f) / scale)
        if not -(2.0**31) <= q <= 2.0**31 - 1:  # TFLM's Quantize() refuses this too
            raise _fail(op, output, f"{activation} bound {f} / output scale {float(scale)!r} overflows int32")
        return zp + tfl_round(q)

    return activation_bounds(activation, quantize)


def _broadcast_shapes(op: str, a: TflTensorInfo, b: TflTensorInfo, out: TflTensorInfo) -> dict:
    """The three shapes extended to 6-D, after checking they broadcast to the output's."""
    for t in (a, b, out):
        if len(t.shape) > MAX_BROADCAST_DIMS:
            raise _fail(op, t, f"has {len(t.shape)} dimensions; TFLM broadcasts at most {MAX_BROADCAST_DIMS}")
        if any(d <= 0 for d in t.shape):
            raise _fail(op, t, f"shape {t.shape} has a dimension that is not positive")

    def ext(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (1,) * (MAX_BROADCAST_DIMS - len(shape)) + tuple(int(d) for d in shape)

    sa, sb, so = ext(a.shape), ext(b.shape), ext(out.shape)
    for da, db, do in zip(sa, sb, so):
        if not ((da == db or da == 1 or db == 1) and do == max(da, db)):
            raise _fail(op, out, f"input shapes {a.shape} and {b.shape} do not broadcast to the output shape {out.shape}")
    return {"input1_shape": sa, "input2_shape": sb, "output_shape": so}


def _binary_operands(op: str, inputs: list, outputs: list) -> tuple[TflTensorInfo, TflTensorInfo, TflTensorInfo]:
    if len(inputs) != 2 or len(outputs) != 1:
        raise _fail(op, None, f"expected 2 inputs and 1 output, got {len(inputs)} and {len(outputs)}")
    return _int8(op, inputs[0], "first input"), _int8(op, inputs[1], "second input"), _int8(op, outputs[0], "output")


def _unary_operands(op: str, inputs: list, outputs: list) -> tuple[TflTensorInfo, TflTensorInfo]:
    if len(inputs) != 1 or len(outputs) != 1:
        raise _fail(op, None, f"expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
    x, y = _int8(op, inputs[0], "input"), _int8(op, outputs[0], "output")
    if _size(x.shape) != _size(y.shape):
        raise _fail(op, y, f"output shape {y.shape} does not match the input shape {x.shape}")
    return x, y


# ---- ADD, SUB, SQUARED_DIFFERENCE, MUL ----------------------------------------


def _binary_attrs(op: str, a: TflTensorInfo, b: TflTensorInfo, y: TflTensorInfo, rescale: dict,
                  output: tuple[int, int], activation: tuple[int, int]) -> dict:
    """The fields every binary params struct has (shapes, offsets, output multiplier, activation range) around
    ``rescale``, the input rescaling fields of ADD, SUB and SQUARED_DIFFERENCE ({} for MUL)."""
    return {
        **_broadcast_shapes(op, a, b, y),
        "input1_offset": -a.per_tensor_zero_point,
        "input2_offset": -b.per_tensor_zero_point,
        "output_offset": y.per_tensor_zero_point,
        **rescale,
        "output_multiplier": output[0], "output_shift": output[1],
        "output_activation_min": activation[0], "output_activation_max": activation[1],
    }


def _rescaled_binary(op: str, operands: tuple[TflTensorInfo, TflTensorInfo, TflTensorInfo], left_shift: int,
                     reals: tuple[float, float, float], *, output_any_size: bool, activation: str) -> dict:
    """ADD, SUB and SQUARED_DIFFERENCE: each input shifted left by ``left_shift`` and scaled by its multiplier
    < 1 (``reals[0]``, ``reals[1]``), the result by the output multiplier ``reals[2]`` (< 1, or of any size)."""
    a, b, y = operands
    m1, s1 = _smaller_than_one(op, a, reals[0])
    m2, s2 = _smaller_than_one(op, b, reals[1])
    output = (_any_multiplier if output_any_size else _smaller_than_one)(op, y, reals[2])
    rescale = {
        "left_shift": left_shift,
        "input1_multiplier": m1, "input1_shift": s1,
        "input2_multiplier": m2, "input2_shift": s2,
    }
    return _binary_attrs(op, a, b, y, rescale, output, _activation_range(op, y, activation))


def prepare_add(inputs: list, outputs: list, options: dict) -> dict:
    """add_common.cc CalculateOpDataAdd: left shift 20, multipliers in double."""
    a, b, y = _binary_operands("ADD", inputs, outputs)
    left_shift = 20
    twice_max_input_scale = 2 * max(_scale32(a), _scale32(b))
    reals = (_scale32(a) / twice_max_input_scale, _scale32(b) / twice_max_input_scale,
             twice_max_input_scale / ((1 << left_shift) * _scale32(y)))
    return _rescaled_binary("ADD", (a, b, y), left_shift, reals, output_any_size=False,
                            activation=options.get("fused_activation_function", "NONE"))


def prepare_sub(inputs: list, outputs: list, options: dict) -> dict:
    """sub_common.cc CalculateOpDataSub: as ADD, but TFLM forms the multipliers in float32."""
    a, b, y = _binary_operands("SUB", inputs, outputs)
    left_shift = 20
    sa, sb, sy = _f32(a.per_tensor_scale), _f32(b.per_tensor_scale), _f32(y.per_tensor_scale)
    twice_max_input_scale = _f32(2) * max(sa, sb)
    reals = (float(sa / twice_max_input_scale), float(sb / twice_max_input_scale),
             float(twice_max_input_scale / (_f32(1 << left_shift) * sy)))
    return _rescaled_binary("SUB", (a, b, y), left_shift, reals, output_any_size=False,
                            activation=options.get("fused_activation_function", "NONE"))


def prepare_squared_difference(inputs: list, outputs: list, options: dict) -> dict:
    """squared_difference.cc PrepareQuantized: left shift 7, an output multiplier of any size, no activation."""
    a, b, y = _binary_operands("SQUARED_DIFFERENCE", inputs, outputs)
    left_shift = 7
    twice_max_input_scale = 2.0 * max(_scale32(a), _scale32(b))
    denominator = float(_f32(1 << (left_shift * 2)) * _f32(y.per_tensor_scale))  # an int times a float: float32
    reals = (_scale32(a) / twice_max_input_scale, _scale32(b) / twice_max_input_scale,
             (twice_max_input_scale * twice_max_input_scale) / denominator)
    return _rescaled_binary("SQUARED_DIFFERENCE", (a, b, y), left_shift, reals, output_any_size=True,
                            activation="NONE")


def prepare_mul(inputs: list, outputs: list, options: dict) -> dict:
    """mul_common.cc CalculateOpDataMul: one multiplier s1 * s2 / s_out (in double), any size."""
    a, b, y = _binary_operands("MUL", inputs, outputs)
    output = _any_multiplier("MUL", y, _scale32(a) * _scale32(b) / _scale32(y))
    activation = _activation_range("MUL", y, options.get("fused_activation_function", "NONE"))
    return _binary_attrs("MUL", a, b, y, {}, output, activation)


# ---- unary ----------------------------------------------------------------------


def _requantize_attrs(x: TflTensorInfo, y: TflTensorInfo, multiplier: tuple[int, int]) -> dict:
    """RSQRT's and QUANTIZE's params: the size, both zero points and one multiplier."""
    return {
        "size": _size(x.shape),
        "input_zero_point": x.per_tensor_zero_point,
        "output_zero_point": y.per_tensor_zero_point,
        "multiplier": multiplier[0],
        "shift": multiplier[1],
    }


def prepare_rsqrt(inputs: list, outputs: list, options: dict) -> dict:
    """elementwise.cc PrepareAbsRsqrt (RSQRT): multiplier 1 / (sqrt(s_in) * s_out)."""
    x, y = _unary_operands("RSQRT", inputs, outputs)
    m, s = _any_multiplier("RSQRT", y, 1.0 / (math.sqrt(_scale32(x)) * _scale32(y)))
    if s > 20:
        # The kernel applies shift - 20; TFLM's left shift of the int32 product overflows beyond this.
        raise _fail("RSQRT", y, "1 / (sqrt(input scale) * output scale) is 2^20 or more; check the scales")
    if s < -11:
        # shift - 20 below -31 is a rounding shift TFLM's RoundingDivideByPOT does not define.
        raise _fail("RSQRT", y, "1 / (sqrt(input scale) * output scale) is below 2^-12; check the scales")
    return _requantize_attrs(x, y, (m, s))


def _sigmoid_like(op: str, x: TflTensorInfo) -> dict:
    """logistic_common.cc / tanh.cc (int8): input rescaled to Q4.27 by frexp(s_in * 2^27), no rounding carry."""
    real = _scale32(x) * float(1 << (31 - SIGMOID_INPUT_INTEGER_BITS))
    q, left_shift = math.frexp(real)
    multiplier = tfl_round(q * (1 << 31))
    if not 0 <= left_shift <= 30 or multiplier > INT32_MAX:
        raise _fail(op, x, f"input scale {x.per_tensor_scale!r} is outside the range TFLM's int8 {op} handles")
    return {
        "input_zero_point": x.per_tensor_zero_point,
        "input_range_radius": calculate_input_radius(SIGMOID_INPUT_INTEGER_BITS, left_shift, 31),
        "input_multiplier": multiplier,
        "input_left_shift": left_shift,
    }


def prepare_logistic(inputs: list, outputs: list, options: dict) -> dict:
    """TFLM requires output zero point -128 (and computes as if the output scale were 1/256)."""
    x, y = _unary_operands("LOGISTIC", inputs, outputs)
    if y.per_tensor_zero_point != -128:
        raise _fail("LOGISTIC", y, f"output zero point is {y.per_tensor_zero_point}; TFLM's int8 LOGISTIC needs -128")
    return {"size": _size(x.shape), **_sigmoid_like("LOGISTIC", x)}


def prepare_tanh(inputs: list, outputs: list, options: dict) -> dict:
    """TFLM checks nothing on the output: it computes as if its scale were 1/128 and zero point 0."""
    x, _ = _unary_operands("TANH", inputs, outputs)
    return {"size": _size(x.shape), **_sigmoid_like("TANH", x)}


def _rows(op: str, x: TflTensorInfo) -> tuple[int, int]:
    if len(x.shape) < 1:
        raise _fail(op, x, "needs at least one dimension")
    depth = int(x.shape[-1])
    return _size(x.shape) // max(depth, 1), depth


def prepare_softmax(inputs: list, outputs: list, options: dict) -> dict:
    """softmax_common.cc (int8 in, int8 out): the gemmlowp exp path, not a table (TFLM's LUTs are int16-only)."""
    x, y = _unary_operands("SOFTMAX", inputs, outputs)
    if y.per_tensor_zero_point != -128 or _f32(y.per_tensor_scale) != _f32(1.0 / 256):
        raise _fail("SOFTMAX", y, "TFLM's int8 SOFTMAX needs output scale 1/256 and zero point -128, "
                    f"got {y.per_tensor_scale!r} and {y.per_tensor_zero_point}")
    beta = float(_f32(options.get("beta", 1.0)))
    real = beta * _scale32(x) * float(1 << (31 - SOFTMAX_SCALED_DIFF_INTEGER_BITS))
    if real > (1 << 30) - 1.0:
        raise _fail("SOFTMAX", x, f"beta * input scale = {beta * _scale32(x)!r} exceeds 16; TFLM saturates there")
    if real <= 1.0:
        raise _fail("SOFTMAX", x, f"beta * input scale = {beta * _scale32(x)!r} is too small for TFLM's int8 SOFTMAX")
    multiplier, left_shift = quantize_multiplier(real, large_shift="keep")
    outer, depth = _rows("SOFTMAX", x)
    return {
        "outer_size": outer,
        "depth": depth,
        "input_multiplier": multiplier,
        "input_left_shift": left_shift,
        "diff_min": -calculate_input_radius(SOFTMAX_SCALED_DIFF_INTEGER_BITS, left_shift, 31),
    }


def prepare_l2_normalization(inputs: list, outputs: list, options: dict) -> dict:
    """l2norm.cc: no activation, at most 4-D; the output is written at scale 1/128, zero point 0."""
    x, y = _unary_operands("L2_NORMALIZATION", inputs, outputs)
    if len(x.shape) > 4:
        raise _fail("L2_NORMALIZATION", x, f"has {len(x.shape)} dimensions; TFLM allows at most 4")
    if options.get("fused_activation_function", "NONE") != "NONE":
        raise _fail("L2_NORMALIZATION", y, "a fused activation is not supported (TFLM refuses it too)")
    outer, depth = _rows("L2_NORMALIZATION", x)
    if depth > 33025:  # 255^2 per element: the int32 sum of squares overflows beyond this depth
        raise _fail("L2_NORMALIZATION", x, f"depth {depth} overflows TFLM's int32 sum of squares (max 33025)")
    return {"outer_size": outer, "depth": depth, "input_zero_point": x.per_tensor_zero_point}


def prepare_quantize(inputs: list, outputs: list, options: dict) -> dict:
    """quantize_common.cc: int8 -> int8 requantisation (s_in / s_out in double), or float32 -> int8 at the edge."""
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0] is None:
        raise _fail("QUANTIZE", None, "expected 1 input and 1 output")
    y = _int8("QUANTIZE", outputs[0], "output")
    x = inputs[0]
    if x.dtype == "float32":
        return {"size": _size(x.shape), "zero_point": y.per_tensor_zero_point, "scale": _scale32(y)}
    x = _int8("QUANTIZE", x, "input")
    m, s = _any_multiplier("QUANTIZE", y, _scale32(x) / _scale32(y))
    return _requantize_attrs(x, y, (m, s))


def prepare_dequantize(inputs: list, outputs: list, options: dict) -> dict:
    """int8 -> float32 at the graph's output edge (host side): float(scale * (q - zero_point)) in double."""
    if len(inputs) != 1 or len(outputs) != 1:
        raise _fail("DEQUANTIZE", None, "expected 1 input and 1 output")
    x = _int8("DEQUANTIZE", inputs[0], "input")
    if outputs[0].dtype != "float32":
        raise _fail("DEQUANTIZE", outputs[0], f"output is {outputs[0].dtype}; only float32 is supported")
    return {"size": _size(x.shape), "zero_point": x.per_tensor_zero_point, "scale": _scale32(x)}


PREPARE: dict[str, Prepare] = {
    "ADD": prepare_add,
    "SUB": prepare_sub,
    "MUL": prepare_mul,
    "SQUARED_DIFFERENCE": prepare_squared_difference,
    "RSQRT": prepare_rsqrt,
    "LOGISTIC": prepare_logistic,
    "TANH": prepare_tanh,
    "SOFTMAX": prepare_softmax,
    "L2_NORMALIZATION": prepare_l2_normalization,
    "QUANTIZE": prepare_quantize,
    "DEQUANTIZE": prepare_dequantize,
}
