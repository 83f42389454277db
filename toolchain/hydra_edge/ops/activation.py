"""activation (float graphs only): an elementwise function that no producer fuses as its clamp; quantisation
tabulates it over the 256 int8 inputs (as gelu), and the node becomes a lut.

    attrs  function: relu, relu6, hardtanh (min_val, max_val), sigmoid, tanh, silu, hardswish, hardsigmoid
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import IRError, Node
from ..numerics.fixedpoint import round_half_away
from .base import OpDef, Shape, elementwise_macs, register

FUNCTIONS = ("relu", "relu6", "hardtanh", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid")


def apply(node: Node, x: np.ndarray) -> np.ndarray:
    f = node.attrs["function"]
    x = np.asarray(x, np.float64)
    if f == "relu":
        return np.maximum(x, 0.0)
    if f == "relu6":
        return np.clip(x, 0.0, 6.0)
    if f == "hardtanh":
        return np.clip(x, float(node.attrs.get("min_val", -1.0)), float(node.attrs.get("max_val", 1.0)))
    if f == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if f == "tanh":
        return np.tanh(x)
    if f == "silu":
        return x / (1.0 + np.exp(-x))
    if f == "hardswish":
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    if f == "hardsigmoid":
        return np.clip(x + 3.0, 0.0, 6.0) / 6.0
    raise IRError(f"{node.name}: activation function {f!r} is not one of {FUNCTIONS}")


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if node.attrs.get("function") not in FUNCTIONS:
        raise IRError(f"{node.name}: activation function {node.attrs.get('function')!r} is not one of {FUNCTIONS}")
    return shapes[0]


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    return apply(node, x)


def quantize(q: Any, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    real = q.scale(x) * (np.arange(256, dtype=np.float64) - 128 - q.zp(x))
    table = np.clip(round_half_away(apply(node, real) / q.scale(y)) + q.zp(y), -128, 127).astype(np.int8)
    q.emit(node, [x, q.const(node, "table", table)], op="lut")


OP = register(OpDef("activation", shape, elementwise_macs, graphs="float", float_ref=float_ref, quantize=quantize,
                    row_local=True))
