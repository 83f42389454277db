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


def emit(em: Any, node: Node) -> Any:
    """The whole kernel; in a token loop, begin / accumulate per group / finish on int32 sums held across it."""
    if em.rows is None:
        return unary_call(em, node, OP)
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    acc = em.loop_state(node)
    return em.call(node, decl, f"hydra_mean_pool_accumulate_s8(&{ident}, {em.act(node, 0)}, {em.rows}, {acc})",
                   before=f"hydra_mean_pool_begin_s8(&{ident}, {acc});",
                   after=f"hydra_mean_pool_finish_s8(&{ident}, {acc}, {em.act(node, 0, 'output')})")


OP = register(OpDef(
    "mean_pool", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_mean_pool.c", c_function="hydra_mean_pool_s8", param_struct="hydra_mean_pool_params",
    fields=fields, emit=emit, row_inputs=(0,), reduces=True,
    loop_state=lambda graph, node: 4 * graph.tensor(node.inputs[0]).shape[-1],
))
