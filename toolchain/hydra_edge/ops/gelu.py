"""gelu (float graphs only): quantisation tabulates it over the 256 int8 inputs, and the node becomes a lut."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir.graph import Node
from ..numerics.fixedpoint import round_half_away
from .base import OpDef, elementwise_macs, register, same_as_first

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    return gelu(x, node.attrs.get("approximate", "none"))


def quantize(q: Any, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    real = q.scale(x) * (np.arange(256, dtype=np.float64) - 128 - q.zp(x))
    f = gelu(real, node.attrs.get("approximate", "none"))
    table = np.clip(round_half_away(f / q.scale(y)) + q.zp(y), -128, 127).astype(np.int8)
    q.emit(node, [x, q.const(node, "table", table)], op="lut")


OP = register(OpDef("gelu", same_as_first, elementwise_macs, graphs="float", float_ref=float_ref, quantize=quantize,
                    row_local=True))
