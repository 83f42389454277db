"""mean_pool: the mean over tokens, x[T, D] -> [D]."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..numerics.fixedpoint import requantize
from .base import I64, OpDef, Shape, clamp_s8, multiplier, numel, register, unary_call


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes[0]) < 2 or any(s != 1 for s in shapes[0][:-2]):  # leading 1s: a legalised TFLite MEAN's batch
        raise IRError(f"{node.name}: mean_pool needs [T, D], got {shapes[0]}")
    return (shapes[0][-1],)


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0)


def int_ref(node: Node, x: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    acc = (x.reshape(-1, x.shape[-1]).astype(I64) - a["in_zp"]).sum(axis=0)
    return clamp_s8(a["out_zp"] + requantize(acc, a["multiplier"], a["shift"], rounding))


def quantize(q: Any, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    tokens = q.src.tensor(x).shape[0]
    mult, shift = multiplier(q.scale(x) / (tokens * q.scale(y)), f"node {node.name} (mean_pool)")
    q.emit(node, [x], in_zp=q.zp(x), multiplier=mult, shift=shift, out_zp=q.zp(y))


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    t, d = em.tensor(node, 0).shape[-2:]
    return [
        ("tokens", str(t)),
        ("dim", str(d)),
        ("input_zero_point", em.zp(node, "in_zp")),
        ("multiplier", em.multiplier(node, "multiplier")),
        ("shift", em.shift(node, "shift")),
        ("output_zero_point", em.zp(node, "out_zp")),
        ("single_rounding", em.single_rounding(node)),
    ]


def macs(graph: Graph, node: Node) -> int:
    return numel(graph.tensor(node.inputs[0]).shape)


OP = register(OpDef(
    "mean_pool", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_mean_pool.c", c_function="hydra_mean_pool_s8", param_struct="hydra_mean_pool_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP),
))
