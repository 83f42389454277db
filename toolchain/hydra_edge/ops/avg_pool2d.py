"""avg_pool2d: the mean over each kh x kw window of a channels-last feature map [H*W, C] (ops/conv2d.py gives
the layout and the window attrs), over the window's pixels inside the input (padding is not counted: torch's
count_include_pad=False, ONNX's default, TFLite's). TFLite Micro's arithmetic: the output keeps the input's
scale and zero point, sum the raw int8 values, divide by the count rounding half away from zero.

    attrs    in_hw [H, W], kernel [kh, kw], stride [sh, sw], padding [top, left, bottom, right] (each < kernel)
    output   [OH*OW, C]
"""

from __future__ import annotations


import numpy as np

from ..ir.graph import Node
from .base import OpDef, register, unary_call
from .conv2d import windows
from .max_pool2d import fields, kernel, macs, quantize, shape


def _counts(node: Node, x: np.ndarray) -> np.ndarray:
    return windows(node, np.ones(x.shape, np.int64), kernel(node), 0).sum(axis=(1, 2))


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return windows(node, x, kernel(node), 0.0).sum(axis=(1, 2)) / _counts(node, x)


def int_ref(node: Node, x: np.ndarray, rounding: str) -> np.ndarray:
    total = windows(node, x.astype(np.int64), kernel(node), 0).sum(axis=(1, 2))
    count = _counts(node, x)
    avg = np.sign(total) * ((np.abs(total) + count // 2) // count)  # ties away from zero (TFLM's)
    return np.clip(avg, -128, 127).astype(np.int8)


OP = register(OpDef(
    "avg_pool2d", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_avg_pool2d.c", c_function="hydra_avg_pool2d_s8", param_struct="hydra_avg_pool2d_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP),
    c_depends=("max_pool2d",),  # hydra_pool2d_window_check
))
