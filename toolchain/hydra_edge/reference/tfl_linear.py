"""Reference kernels of the linear family of int8 TFLite ops: TFLite Micro's reference kernels, in numpy.

``KERNELS[ir_op](attrs, inputs, rounding) -> np.ndarray`` (the contract: frontend/tflite_types.py). attrs
come from frontend/tflite_prepare_linear.py; inputs are numpy arrays in the node's input order. Every
integer step is TFLM's: int32 sums (exact here, in int64: the compiled C has the same values), then
MultiplyByQuantizedMultiplier (numerics.fixedpoint.requantize, "double" as TFLM, or "single"), then the
offset and the activation clamp. The interpreter reshapes each result to its output tensor's shape.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..numerics.fixedpoint import requantize

I64 = np.int64


def _out(acc: np.ndarray, mult, shift, offset: int, lo: int, hi: int, rounding: str) -> np.ndarray:
    y = requantize(acc, np.asarray(mult, I64), np.asarray(shift, I64), rounding) + offset
    return np.clip(y, lo, hi).astype(np.int8)


def fully_connected(a: dict, inputs: list, rounding: str) -> np.ndarray:
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    k, n = a["accum_depth"], a["output_depth"]
    xs = x.reshape(-1, k).astype(I64) + a["input_offset"]
    acc = xs @ (w.reshape(n, k).astype(I64) + a["filter_offset"]).T
    if b is not None:
        acc = acc + b.astype(I64)
    mult, shift = np.asarray(a["output_multiplier"]), np.asarray(a["output_shift"])
    if not a["per_channel"]:
        mult, shift = mult[:1], shift[:1]
    return _out(acc, mult, shift, a["output_offset"], a["activation_min"], a["activation_max"], rounding)


def _windows(x: np.ndarray, a: dict, fh: int, fw: int, dil_h: int, dil_w: int, fill: int):
    """x [N,H,W,C] padded with `fill` -> a view of every output position's window [N,OH,OW,FH,FW,C] and a mask
    of the taps inside the image."""
    n, h, w, c = a["input_shape"]
    _, oh, ow, _ = a["output_shape"]
    ph, pw = a["padding_height"], a["padding_width"]
    sh, sw = a["stride_height"], a["stride_width"]
    ys = np.arange(oh)[:, None] * sh - ph + np.arange(fh)[None, :] * dil_h  # [OH, FH]
    xs = np.arange(ow)[:, None] * sw - pw + np.arange(fw)[None, :] * dil_w  # [OW, FW]
    iny = (ys >= 0) & (ys < h)
    inx = (xs >= 0) & (xs < w)
    xi = x.reshape(n, h, w, c)
    g = xi[:, np.clip(ys, 0, h - 1)][:, :, :, np.clip(xs, 0, w - 1)]  # [N, OH, FH, OW, FW, C]
    mask = iny[:, :, None, None] & inx[None, None, :, :]  # [OH, FH, OW, FW]
    g = np.where(mask[None, :, :, :, :, None], g, fill)
    return g.transpose(0, 1, 3, 2, 4, 5), mask.transpose(0, 2, 1, 3)  # [N,OH,OW,FH,FW,C], [OH,OW,FH,FW]


def conv_2d(a: dict, inputs: list, rounding: str) -> np.ndarray:
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    oc, fh, fw, ic = a["filter_shape"]
    c = a["input_shape"][3]
    groups = c // ic
    # Taps outside the image add nothing: pad with -input_offset so that (x + input_offset) is 0 there.
    win, _ = _windows(x, a, fh, fw, a["dilation_height_factor"], a["dilation_width_factor"], -a["input_offset"])
    win = win.astype(I64) + a["input_offset"]
    n, oh, ow = win.shape[:3]
    per = oc // groups
    acc = np.zeros((n, oh, ow, oc), I64)
    wk = w.astype(I64)
    for g in range(groups):
        xin = win[..., g * ic:(g + 1) * ic].reshape(n, oh, ow, -1)  # (fy, fx, ic) order
        wg = wk[g * per:(g + 1) * per].reshape(per, -1)
        acc[..., g * per:(g + 1) * per] = xin @ wg.T
    if b is not None:
        acc = acc + b.astype(I64)
    return _out(acc, a["output_multiplier"], a["output_shift"], a["output_offset"], a["activation_min"],
                a["activation_max"], rounding)


def depthwise_conv_2d(a: dict, inputs: list, rounding: str) -> np.ndarray:
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    _, fh, fw, oc = a["filter_shape"]
    dm = a["depth_multiplier"]
    win, _ = _windows(x, a, fh, fw, a["dilation_height_factor"], a["dilation_width_factor"], -a["input_offset"])
    win = np.repeat(win.astype(I64) + a["input_offset"], dm, axis=-1)  # output channel ic * dm + m reads ic
    acc = (win * w.reshape(fh, fw, oc).astype(I64)).sum(axis=(3, 4))
    if b is not None:
        acc = acc + b.astype(I64)
    return _out(acc, a["output_multiplier"], a["output_shift"], a["output_offset"], a["activation_min"],
                a["activation_max"], rounding)


def average_pool_2d(a: dict, inputs: list, rounding: str) -> np.ndarray:
    win, mask = _windows(inputs[0], a, a["filter_height"], a["filter_width"], 1, 1, 0)
    acc = win.astype(I64).sum(axis=(3, 4))
    count = mask.sum(axis=(2, 3)).astype(I64)[None, :, :, None]  # taps inside the image
    half = count // 2
    # Round to nearest, ties away from zero, with C's truncating division.
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.sign(num) * (np.abs(num) // count)
    return np.clip(q, a["activation_min"], a["activation_max"]).astype(np.int8)


def max_pool_2d(a: dict, inputs: list, rounding: str) -> np.ndarray:
    win, _ = _windows(inputs[0], a, a["filter_height"], a["filter_width"], 1, 1, -128)
    m = win.astype(I64).max(axis=(3, 4))
    return np.clip(m, a["activation_min"], a["activation_max"]).astype(np.int8)


def pad(a: dict, inputs: list, rounding: str) -> np.ndarray:
    ishape, oshape = a["input_shape"], a["output_shape"]
    out = np.full(oshape, a["pad_value"], np.int8)
    region = tuple(slice(p, p + s) for p, s in zip(a["pad_before"], ishape))
    out[region] = inputs[0].reshape(ishape)
    return out


def reshape(a: dict, inputs: list, rounding: str) -> np.ndarray:
    return inputs[0].reshape(-1).copy()


def transpose(a: dict, inputs: list, rounding: str) -> np.ndarray:
    x = inputs[0].reshape(-1)
    idx = np.zeros(a["output_shape"], I64)
    for d, (size, stride) in enumerate(zip(a["output_shape"], a["input_strides"])):
        shape = [1] * len(a["output_shape"])
        shape[d] = size
        idx = idx + (np.arange(size, dtype=I64) * stride).reshape(shape)
    return x[idx]


def batch_matmul(a: dict, inputs: list, rounding: str) -> np.ndarray:
    lhs, rhs = inputs[0].reshape(-1).astype(I64), inputs[1].reshape(-1).astype(I64)
    rows, cols, depth = a["rows"], a["cols"], a["depth"]
    b0, b1, b2 = a["batch_shape"]
    out = np.zeros((b0, b1, b2, rows, cols), I64)
    i, k, j = np.arange(rows)[:, None], np.arange(depth), np.arange(cols)
    for p in range(b0):
        for q in range(b1):
            for r in range(b2):
                lb = p * a["lhs_batch_strides"][0] + q * a["lhs_batch_strides"][1] + r * a["lhs_batch_strides"][2]
                rb = p * a["rhs_batch_strides"][0] + q * a["rhs_batch_strides"][1] + r * a["rhs_batch_strides"][2]
                lm = lhs[lb + i * a["lhs_row_stride"] + k[None, :] * a["lhs_depth_stride"]] + a["lhs_offset"]
                rm = rhs[rb + k[:, None] * a["rhs_depth_stride"] + j[None, :] * a["rhs_col_stride"]] + a["rhs_offset"]
                out[p, q, r] = lm @ rm
    return _out(out, a["output_multiplier"], a["output_shift"], a["output_offset"], a["activation_min"],
                a["activation_max"], rounding)


def reduce_rows(a: dict, inputs: list, rounding: str) -> np.ndarray:
    x = inputs[0].reshape(a["input_shape"]).astype(I64)
    axes = tuple(d for d, r in enumerate(a["reduce_shape"]) if r > 1)
    s = x.sum(axis=axes) if axes else x
    return requantize_sum(a, s, rounding)


def requantize_sum(a: dict, s: np.ndarray, rounding: str) -> np.ndarray:
    """The end of QuantizedMeanOrSum: raw int8 sums `s` (int64) -> int8. tfl_hydra_attention's kv uses it too."""
    # int32 sums as TFLM's (which wrap on overflow, never reached by int8 models of sane size)
    shifted = s - a["input_zero_point"] * a["num_elements"]
    shifted = (shifted + 2**31) % 2**32 - 2**31
    return _out(shifted, a["output_multiplier"], a["output_shift"], a["output_zero_point"], -128, 127, rounding)


def scratch_bytes(attrs: dict, op: str, byte_window: bool = False) -> int:
    """The C kernel's scratch (hydra_tfl_conv_2d_get_buffer_size): CONV_2D's, two output pixels' windows as int16,
    16 ceil(k / 4) bytes for filter rows of k = H W I bytes, and where the window is copied as bytes first (I % 4 != 0,
    or every CONV_2D where `byte_window`: a build for size, HYDRA_TFL_NO_CONV_WORD_WINDOW) one window as bytes,
    4 ceil(k / 4) more (the SIMD cores' im2col; every build plans it). The other kernels of this family need none
    (sums and transposes are indexed in place)."""
    if op != "tfl_conv_2d":
        return 0
    _, f_h, f_w, f_c = (int(d) for d in attrs["filter_shape"])
    groups = (f_h * f_w * f_c + 3) // 4
    return (16 if f_c % 4 == 0 and not byte_window else 20) * groups


KERNELS: dict[str, Callable[[dict, list, str], np.ndarray]] = {
    "tfl_fully_connected": fully_connected,
    "tfl_conv_2d": conv_2d,
    "tfl_depthwise_conv_2d": depthwise_conv_2d,
    "tfl_average_pool_2d": average_pool_2d,
    "tfl_max_pool_2d": max_pool_2d,
    "tfl_pad": pad,
    "tfl_reshape": reshape,
    "tfl_transpose": transpose,
    "tfl_batch_matmul": batch_matmul,
    "tfl_mean": reduce_rows,
    "tfl_sum": reduce_rows,
}
