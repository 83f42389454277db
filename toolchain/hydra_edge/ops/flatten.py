"""flatten: a feature map [H*W, C] as one vector [H*W*C] (torch's flatten(1) of a [1, C, H, W] map before a
Linear). The bytes stay in their channels-last order: lowering permutes the Linear's weight columns from
torch's (c, y, x) order to (y, x, c) at compile time, so the copy is the whole op, and the planner may run it
in place (output == input: nothing moves). The output keeps the input's scale and zero point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import IRError, Node
from .base import OpDef, Shape, elementwise_macs, numel, register, unary_call


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes[0]) != 2:
        raise IRError(f"{node.name}: flatten takes a [H*W, C] feature map, got {shapes[0]}")
    return (numel(shapes[0]),)


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(-1)


def int_ref(node: Node, x: np.ndarray, rounding: str) -> np.ndarray:
    return np.asarray(x).reshape(-1)


def quantize(q: Any, node: Node) -> None:
    q.share_quant(node.outputs[0], node.inputs[0])
    q.emit(node, [node.inputs[0]])


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    return [("size", str(em.tensor(node, 0).numel))]


OP = register(OpDef(
    "flatten", shape, elementwise_macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_flatten.c", c_function="hydra_flatten_s8", param_struct="hydra_flatten_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP), in_place=(0,),
))
