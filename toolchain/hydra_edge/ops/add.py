"""add: a + b of one shape; quantised, both rescaled to a common scale (gemmlowp style) and requantised."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import IRError, Node
from ..numerics.fixedpoint import requantize
from .base import (I64, OpDef, Shape, clamp_s8, elementwise_macs, multiplier, qparams_for_range, quantize_array,
                   register, strip_leading_ones)

ADD_LEFT_SHIFT = 20


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if strip_leading_ones(shapes[0]) != strip_leading_ones(shapes[1]):  # leading 1s: TFLite's batch
        raise IRError(f"{node.name}: add operands differ in shape: {shapes[0]} and {shapes[1]}")
    return shapes[0]


def float_ref(node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def int_ref(node: Node, x_a: np.ndarray, x_b: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    lift = 1 << int(a["left_shift"])
    sa = requantize((x_a.astype(I64) - a["za"]) * lift, a["ma"], a["sa"], rounding)
    sb = requantize((x_b.astype(I64) - a["zb"]) * lift, a["mb"], a["sb"], rounding)
    return clamp_s8(a["out_zp"] + requantize(sa + sb, a["my"], a["sy"], rounding))


def quantize(q: Any, node: Node) -> None:
    a, b = node.inputs
    y = node.outputs[0]
    if q.src.tensor(b).is_constant:  # e.g. a position embedding: quantise it per tensor like an activation
        data = q.src.tensor(b).data
        qp = qparams_for_range(float(data.min()), float(data.max()))
        b = q.const(node, "constant", quantize_array(data, qp.scalar_scale, qp.scalar_zero_point))
        q.out.tensor(b).quant = qp
        q.qp[b] = qp
    sa, sb = q.scale(a), q.scale(b)
    twice_max = 2.0 * max(sa, sb)
    where = f"node {node.name} (add)"
    ma, sha = multiplier(sa / twice_max, where)
    mb, shb = multiplier(sb / twice_max, where)
    my, shy = multiplier(twice_max / (2**ADD_LEFT_SHIFT * q.scale(y)), where)
    q.emit(node, [a, b], left_shift=ADD_LEFT_SHIFT, za=q.zp(a), ma=ma, sa=sha,
           zb=q.zp(b), mb=mb, sb=shb, my=my, sy=shy, out_zp=q.zp(y))


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    return [
        ("size", str(em.tensor(node, 0).numel)),
        ("left_shift", em.scalar(node, "left_shift", lo=0, hi=30)),
        ("a_zero_point", em.zp(node, "za")),
        ("a_multiplier", em.multiplier(node, "ma")),
        ("a_shift", em.shift(node, "sa")),
        ("b_zero_point", em.zp(node, "zb")),
        ("b_multiplier", em.multiplier(node, "mb")),
        ("b_shift", em.shift(node, "sb")),
        ("output_multiplier", em.multiplier(node, "my")),
        ("output_shift", em.shift(node, "sy")),
        ("output_zero_point", em.zp(node, "out_zp")),
        ("single_rounding", em.single_rounding(node)),
    ]


def emit(em: Any, node: Node) -> Any:
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    call = f"{OP.c_function}(&{ident}, {em.act(node, 0)}, {em.act(node, 1)}, {em.act(node, 0, 'output')})"
    return em.call(node, decl, call)


OP = register(OpDef(
    "add", shape, elementwise_macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_add.c", c_function="hydra_add_s8", param_struct="hydra_add_params",
    fields=fields, emit=emit, in_place=(0, 1), row_local=True,
    row_inputs=(0, 1), rows_field="size", rows_field_elements=True,
))
