"""Prepare for the linear family of int8 TFLite ops: what TFLite Micro's Prepare() computes, in Python.

``PREPARE[op_name](inputs, outputs, options) -> attrs`` (the contract: frontend/tflite_types.py). The
attrs are the fields of ``hydra_tfl_<op>_params`` (runtime_c/include/hydra_tfl.h, linear section).
Facts followed to the bit (TFLM kernels and tensorflow/lite/kernels/kernel_util.cc):

- multipliers: QuantizeMultiplier (= numerics.fixedpoint.quantize_multiplier) of a double real multiplier.
  Per-tensor FULLY_CONNECTED and BATCH_MATMUL form ``double(float(s_in * s_w)) / double(s_out)`` (the
  scale product is rounded to float32 first: GetQuantizedConvolutionMultipler); per-channel ones (CONV_2D,
  DEPTHWISE_CONV_2D, per-channel FULLY_CONNECTED) ``double(s_in) * double(s_w[c]) / double(s_out)``;
  MEAN and SUM ``double(s_in) / double(s_out)``.
- fused activation bounds: CalculateActivationRangeQuantized, ``zp + round(f / scale)`` in float32 with
  rounding half away from zero, clamped to [-128, 127].
- padding: ComputePaddingHeightWidth (SAME: out = ceil(in / stride), total padding halved, floor).

Shapes that a C kernel walks are extended with leading 1s: to 4-D for NHWC ops (like RuntimeShape), to
MAX_DIMS = 6 for PAD, TRANSPOSE, BATCH_MATMUL, MEAN and SUM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..numerics.fixedpoint import quantize_multiplier, quantize_multipliers
from ..numerics.tfl_fixedpoint import tfl_round
from .tflite_prepare_common import (
    ACTIVATION_BOUNDS,
    INT8_MAX,
    INT8_MIN,
    activation_bounds,
)
from .tflite_types import TflTensorInfo

MAX_DIMS = 6  # HYDRA_TFL_MAX_DIMS in hydra_tfl.h


class PrepareError(ValueError):
    """Why an op cannot be prepared (the frontend lists it among the unsupported ops)."""


# ---------------------------------------------------------------- shared helpers


def _zp(t: TflTensorInfo) -> int:
    return t.per_tensor_zero_point


def _scale(t: TflTensorInfo, what: str) -> float:
    if len(t.scale) != 1:
        raise PrepareError(f"{what} {t.name!r} must be quantised per tensor")
    if not t.scale[0] > 0:
        raise PrepareError(f"{what} {t.name!r} has scale {t.scale[0]}")
    return float(t.scale[0])


def _int8(t: TflTensorInfo | None, what: str) -> TflTensorInfo:
    if t is None or t.dtype != "int8":
        raise PrepareError(f"{what} must be int8")
    return t


def _multiplier(real: float, name: str) -> tuple[int, int]:
    try:
        return quantize_multiplier(real, name)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None


def activation_range(act: str, out: TflTensorInfo) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for an int8 output (float32 arithmetic as in TFLite)."""
    scale, zp = np.float32(out.per_tensor_scale), _zp(out)

    def q(f: float) -> int:
        r = np.float32(f) / scale  # float32 division, as TFLite's Quantize()
        return zp + tfl_round(float(r))  # TfLiteRound on the float32 value: half away from 0, exactly

    if act not in ACTIVATION_BOUNDS:
        raise PrepareError(f"fused activation {act}")
    return activation_bounds(act, q)


def ext(shape: tuple[int, ...], n: int) -> tuple[int, ...]:
    if len(shape) > n:
        raise PrepareError(f"shape {list(shape)} has more than {n} dimensions")
    return (1,) * (n - len(shape)) + tuple(int(s) for s in shape)


def _padding(padding: str, stride: int, dilation: int, size: int, filt: int) -> tuple[int, int]:
    """(output size, padding before) as ComputeOutSize / ComputePaddingWithOffset."""
    if stride < 1 or dilation < 1:
        raise PrepareError(f"stride {stride} and dilation {dilation} must be >= 1")
    eff = (filt - 1) * dilation + 1
    if padding == "SAME":
        out = (size + stride - 1) // stride
    elif padding == "VALID":
        out = (size + stride - eff) // stride
    else:
        raise PrepareError(f"padding {padding}")
    total = max(0, (out - 1) * stride + eff - size)
    return out, total // 2


def _window(options: dict, size: tuple[int, int], filt: tuple[int, int], dilation: tuple[int, int]
            ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(strides, output size, padding before), each (height, width), of a 2-D window (convolutions, pools)."""
    sh, sw = int(options.get("stride_h", 1)), int(options.get("stride_w", 1))
    padding = options.get("padding", "SAME")
    oh, pad_h = _padding(padding, sh, dilation[0], size[0], filt[0])
    ow, pad_w = _padding(padding, sw, dilation[1], size[1], filt[1])
    return (sh, sw), (oh, ow), (pad_h, pad_w)


def _const(t: TflTensorInfo | None, what: str) -> np.ndarray:
    if t is None or t.data is None:
        raise PrepareError(f"{what} must be a constant tensor")
    return np.asarray(t.data)


def _bias(t: TflTensorInfo | None, channels: int) -> None:
    if t is None:
        return
    if t.dtype != "int32" or t.data is None or t.data.size != channels:
        raise PrepareError(f"bias {t.name!r} must be a constant int32 vector of {channels} values")


def _per_channel_multipliers(inp: TflTensorInfo, filt: TflTensorInfo, out: TflTensorInfo,
                             channels: int) -> tuple[np.ndarray, np.ndarray]:
    """PopulateConvolutionQuantizationParams: double(s_in) * double(s_w[c]) / double(s_out), per channel."""
    s_in, s_out = _scale(inp, "input"), _scale(out, "output")
    if len(filt.scale) not in (1, channels):
        raise PrepareError(f"filter {filt.name!r} has {len(filt.scale)} scales for {channels} output channels")
    fs = np.broadcast_to(filt.scale.astype(np.float64), (channels,))
    try:
        m, s = quantize_multipliers(s_in * fs / s_out, filt.name)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    return m.astype(np.int32), s.astype(np.int32)


# ---------------------------------------------------------------- ops


def fully_connected(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    inp, filt = _int8(inputs[0], "input"), _int8(inputs[1], "filter")
    bias = inputs[2] if len(inputs) > 2 else None
    out = _int8(outputs[0], "output")
    w = _const(filt, "filter")
    if w.ndim != 2:
        raise PrepareError(f"filter {filt.name!r} must be 2-D, got {list(w.shape)}")
    if options.get("weights_format", 0) not in (0,):
        raise PrepareError("shuffled weights format")
    n, k = w.shape
    if int(np.prod(inp.shape)) % k or out.shape[-1] != n:
        raise PrepareError(f"input {list(inp.shape)} / output {list(out.shape)} do not match filter {list(w.shape)}")
    _bias(bias, n)
    if len(filt.scale) > 1:
        mult, shift = _per_channel_multipliers(inp, filt, out, n)
        per_channel = 1
    else:
        # GetQuantizedConvolutionMultipler: the scale product in float32, then double.
        product = float(np.float32(inp.per_tensor_scale) * np.float32(filt.per_tensor_scale))
        m, s = _multiplier(product / float(np.float32(out.per_tensor_scale)), out.name)
        mult, shift, per_channel = np.array([m], np.int32), np.array([s], np.int32), 0
    lo, hi = activation_range(options.get("fused_activation_function", "NONE"), out)
    return {
        "batches": int(np.prod(out.shape)) // n,
        "accum_depth": int(k),
        "output_depth": int(n),
        "input_offset": -_zp(inp),
        "filter_offset": -_zp(filt) if len(filt.scale) == 1 else 0,
        "output_offset": _zp(out),
        "per_channel": per_channel,
        "output_multiplier": mult,
        "output_shift": shift,
        "activation_min": lo,
        "activation_max": hi,
    }


def _conv_common(inputs: list, outputs: list, options: dict, depthwise: bool) -> dict[str, Any]:
    inp, filt = _int8(inputs[0], "input"), _int8(inputs[1], "filter")
    bias = inputs[2] if len(inputs) > 2 else None
    out = _int8(outputs[0], "output")
    w = _const(filt, "filter")
    if len(inp.shape) != 4 or w.ndim != 4 or len(out.shape) != 4:
        raise PrepareError("input, filter and output must be 4-D (NHWC)")
    n, h, wd, c = inp.shape
    oc = out.shape[3]
    dh, dw = int(options.get("dilation_h_factor", 1)), int(options.get("dilation_w_factor", 1))
    (sh, sw), (oh, ow), (pad_h, pad_w) = _window(options, (h, wd), (w.shape[1], w.shape[2]), (dh, dw))
    if (n, oh, ow) != tuple(out.shape[:3]):
        raise PrepareError(f"output {list(out.shape)} does not match the convolution of {list(inp.shape)}")
    if depthwise:
        if w.shape[0] != 1 or w.shape[3] != oc or oc % c:
            raise PrepareError(f"depthwise filter {list(w.shape)} does not match {c} -> {oc} channels")
        dm = oc // c
        if int(options.get("depth_multiplier", dm) or dm) != dm:
            raise PrepareError(f"depth_multiplier {options.get('depth_multiplier')} != {oc} / {c}")
    else:
        if w.shape[0] != oc or c % w.shape[3]:
            raise PrepareError(f"filter {list(w.shape)} does not match {c} -> {oc} channels")
    _bias(bias, oc)
    mult, shift = _per_channel_multipliers(inp, filt, out, oc)
    lo, hi = activation_range(options.get("fused_activation_function", "NONE"), out)
    attrs = {
        "input_shape": tuple(int(v) for v in inp.shape),
        "filter_shape": tuple(int(v) for v in w.shape),
        "output_shape": tuple(int(v) for v in out.shape),
        "stride_height": sh,
        "stride_width": sw,
        "dilation_height_factor": dh,
        "dilation_width_factor": dw,
        "padding_height": pad_h,
        "padding_width": pad_w,
        "input_offset": -_zp(inp),
        "output_offset": _zp(out),
        "output_multiplier": mult,
        "output_shift": shift,
        "activation_min": lo,
        "activation_max": hi,
    }
    if depthwise:
        attrs["depth_multiplier"] = oc // c
    return attrs


def conv_2d(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    return _conv_common(inputs, outputs, options, depthwise=False)


def depthwise_conv_2d(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    return _conv_common(inputs, outputs, options, depthwise=True)


def _pool(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    inp, out = _int8(inputs[0], "input"), _int8(outputs[0], "output")
    if len(inp.shape) != 4 or len(out.shape) != 4:
        raise PrepareError("input and output must be 4-D (NHWC)")
    n, h, w, c = inp.shape
    fh, fw = int(options.get("filter_height", 1)), int(options.get("filter_width", 1))
    if fh < 1 or fw < 1:
        raise PrepareError(f"filter {fh}x{fw}")
    (sh, sw), (oh, ow), (pad_h, pad_w) = _window(options, (h, w), (fh, fw), (1, 1))
    if (n, oh, ow, c) != tuple(out.shape):
        raise PrepareError(f"output {list(out.shape)} does not match pooling {list(inp.shape)}")
    lo, hi = activation_range(options.get("fused_activation_function", "NONE"), out)
    return {
        "input_shape": tuple(int(v) for v in inp.shape),
        "output_shape": tuple(int(v) for v in out.shape),
        "stride_height": sh,
        "stride_width": sw,
        "filter_height": fh,
        "filter_width": fw,
        "padding_height": pad_h,
        "padding_width": pad_w,
        "activation_min": lo,
        "activation_max": hi,
    }


def pad(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    inp, out = _int8(inputs[0], "input"), _int8(outputs[0], "output")
    p = _const(inputs[1], "paddings").astype(np.int64)
    rank = len(inp.shape)
    if p.shape != (rank, 2) or (p < 0).any():
        raise PrepareError(f"paddings {p.tolist()} must be non-negative [{rank}, 2]")
    if tuple(int(s) for s in np.asarray(inp.shape) + p.sum(axis=1)) != tuple(out.shape):
        raise PrepareError(f"output {list(out.shape)} does not match padding {list(inp.shape)} by {p.tolist()}")
    if len(inputs) > 2 and inputs[2] is not None:  # PADV2: the constant value, an int8 scalar
        value = int(_const(inputs[2], "constant value").reshape(-1)[0])
    else:
        value = _zp(out)  # PAD pads int8 with the output zero point (a real 0)
    lead = MAX_DIMS - rank
    if lead < 0:
        raise PrepareError(f"{rank}-D input (at most {MAX_DIMS})")
    return {
        "input_shape": ext(inp.shape, MAX_DIMS),
        "output_shape": ext(out.shape, MAX_DIMS),
        "pad_before": (0,) * lead + tuple(int(v) for v in p[:, 0]),
        "pad_value": value,
    }


def reshape(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    inp, out = _int8(inputs[0], "input"), _int8(outputs[0], "output")
    size = int(np.prod(inp.shape))
    if size != int(np.prod(out.shape)):
        raise PrepareError(f"reshape {list(inp.shape)} -> {list(out.shape)} changes the element count")
    if _zp(inp) != _zp(out) or inp.per_tensor_scale != out.per_tensor_scale:
        raise PrepareError("input and output quantisation differ (TFLite's RESHAPE copies bytes)")
    return {"size": size}


def _strides(shape: tuple[int, ...]) -> list[int]:
    s, acc = [], 1
    for d in reversed(shape):
        s.append(acc)
        acc *= d
    return s[::-1]


def transpose(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    inp, out = _int8(inputs[0], "input"), _int8(outputs[0], "output")
    perm = [int(v) for v in _const(inputs[1], "perm").reshape(-1)]
    rank = len(inp.shape)
    if sorted(perm) != list(range(rank)) or rank > MAX_DIMS:
        raise PrepareError(f"perm {perm} for a {rank}-D input")
    if tuple(inp.shape[p] for p in perm) != tuple(out.shape):
        raise PrepareError(f"output {list(out.shape)} is not {list(inp.shape)} permuted by {perm}")
    strides = _strides(tuple(inp.shape))
    lead = MAX_DIMS - rank
    return {
        "output_shape": ext(out.shape, MAX_DIMS),
        "input_strides": (0,) * lead + tuple(strides[p] for p in perm),  # input stride of each output dim
    }


def batch_matmul(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    lhs, rhs, out = _int8(inputs[0], "lhs"), _int8(inputs[1], "rhs"), _int8(outputs[0], "output")
    if len(lhs.shape) < 2 or len(rhs.shape) < 2 or len(lhs.shape) > 5 or len(rhs.shape) > 5:
        raise PrepareError("lhs and rhs must have 2 to 5 dimensions")
    adj_x, adj_y = bool(options.get("adj_x", False)), bool(options.get("adj_y", False))
    ls, rs = ext(lhs.shape, 5), ext(rhs.shape, 5)
    rows, depth = (ls[4], ls[3]) if adj_x else (ls[3], ls[4])
    rdepth, cols = (rs[4], rs[3]) if adj_y else (rs[3], rs[4])
    if depth != rdepth:
        raise PrepareError(f"lhs {list(lhs.shape)} and rhs {list(rhs.shape)} do not multiply")
    batch, lstride, rstride = [], [], []
    l_st, r_st = _strides(ls), _strides(rs)
    for d in range(3):
        if ls[d] != rs[d] and 1 not in (ls[d], rs[d]):
            raise PrepareError(f"batch dimensions of {list(lhs.shape)} and {list(rhs.shape)} do not broadcast")
        batch.append(max(ls[d], rs[d]))
        lstride.append(0 if ls[d] == 1 else l_st[d])
        rstride.append(0 if rs[d] == 1 else r_st[d])
    if int(np.prod(batch)) * rows * cols != int(np.prod(out.shape)) or tuple(out.shape[-2:]) != (rows, cols):
        raise PrepareError(f"output {list(out.shape)} does not match the product")
    product = float(np.float32(lhs.per_tensor_scale) * np.float32(rhs.per_tensor_scale))
    m, s = _multiplier(product / float(np.float32(out.per_tensor_scale)), out.name)
    return {
        "batch_shape": tuple(batch),
        "lhs_batch_strides": tuple(lstride),
        "rhs_batch_strides": tuple(rstride),
        "rows": rows,
        "cols": cols,
        "depth": depth,
        # element (i, k) of lhs is at i * lhs_row_stride + k * lhs_depth_stride within a batch
        "lhs_row_stride": 1 if adj_x else depth,
        "lhs_depth_stride": rows if adj_x else 1,
        "rhs_depth_stride": 1 if adj_y else cols,
        "rhs_col_stride": depth if adj_y else 1,
        "lhs_offset": -_zp(lhs),
        "rhs_offset": -_zp(rhs),
        "output_offset": _zp(out),
        "output_multiplier": m,
        "output_shift": s,
        "activation_min": INT8_MIN,
        "activation_max": INT8_MAX,
    }


def _reduce(inputs: list, outputs: list, options: dict, mean: bool) -> dict[str, Any]:
    inp, out = _int8(inputs[0], "input"), _int8(outputs[0], "output")
    axis_t = inputs[1]
    if axis_t is None or axis_t.dtype != "int32":
        raise PrepareError("axis must be an int32 tensor")
    axes = [int(a) for a in _const(axis_t, "axis").reshape(-1)]
    rank = len(inp.shape)
    if rank > MAX_DIMS:
        raise PrepareError(f"{rank}-D input (at most {MAX_DIMS})")
    resolved = []
    for a in axes:  # ResolveAxis: negative axes count from the end, duplicates ignored
        r = a + rank if a < 0 else a
        if not 0 <= r < rank:
            raise PrepareError(f"axis {a} out of range for {rank}-D input")
        if r not in resolved:
            resolved.append(r)
    kept = [d for d in range(rank) if d not in resolved]
    if int(np.prod([inp.shape[d] for d in kept])) != int(np.prod(out.shape)):
        raise PrepareError(f"output {list(out.shape)} does not match reducing {list(inp.shape)} over {axes}")
    count = int(np.prod([inp.shape[d] for d in resolved])) if resolved else 1
    m, s = _multiplier(float(inp.per_tensor_scale) / float(out.per_tensor_scale), out.name)
    if mean:  # QuantizedMeanOrSum folds 1/count into the multiplier
        k = min(count.bit_length() - 1, 32, 31 + s)
        m, s = ((m << k) // count) if k >= 0 else m, s - max(k, 0)
    ishape = ext(inp.shape, MAX_DIMS)
    lead = MAX_DIMS - rank
    red = [d + lead for d in resolved]
    return {
        "input_shape": ishape,
        "reduce_shape": tuple(ishape[d] if d in red else 1 for d in range(MAX_DIMS)),
        "num_elements": count,
        "input_zero_point": _zp(inp),
        "output_zero_point": _zp(out),
        "output_multiplier": int(m),
        "output_shift": int(s),
    }


def mean(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    return _reduce(inputs, outputs, options, mean=True)


def sum_(inputs: list, outputs: list, options: dict) -> dict[str, Any]:
    return _reduce(inputs, outputs, options, mean=False)


PREPARE: dict[str, Callable[[list, list, dict], dict[str, Any]]] = {
    "FULLY_CONNECTED": fully_connected,
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "PAD": pad,
    "RESHAPE": reshape,
    "TRANSPOSE": transpose,
    "BATCH_MATMUL": batch_matmul,
    "MEAN": mean,
    "SUM": sum_,
}
