"""select_token: one token's row, x[T, D] -> x[index] [D] (a class token read out by x[:, 0]).

A copy: the output keeps the input's scale and zero point, so the int8 row is the same bytes. In a token
loop it reduces like mean_pool: the group that holds row `index` copies it, and the row is complete after
the loop, so a class-token ViT streams its final norm with no [T, D] tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from .base import OpDef, Shape, register, unary_call


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes[0]) != 2:
        raise IRError(f"{node.name}: select_token needs [T, D], got {shapes[0]}")
    index = int(node.attrs["index"])
    if not 0 <= index < shapes[0][0]:
        raise IRError(f"{node.name}: token {index} of {shapes[0][0]}")
    return (shapes[0][1],)


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    return x[int(node.attrs["index"])]


def int_ref(node: Node, x: np.ndarray, rounding: str) -> np.ndarray:
    return x[int(node.attrs["index"])].copy()


def quantize(q: Any, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    q.share_quant(y, x)  # the same bytes: y takes x's scale and zero point
    q.emit(node, [x], index=int(node.attrs["index"]))


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    t, d = em.tensor(node, 0).shape
    return [("tokens", str(t)), ("dim", str(d)), ("index", em.scalar(node, "index", lo=0))]


def emit(em: Any, node: Node) -> Any:
    """The whole kernel; in a token loop, each group's rows t0 .. t0 + rows - 1, copying row index if there."""
    if em.rows is None:
        return unary_call(em, node, OP)
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    return em.call(node, decl, f"hydra_select_token_rows_s8(&{ident}, {em.act(node, 0)}, t0, {em.rows}, "
                               f"{em.act(node, 0, 'output')})")


OP = register(OpDef(
    "select_token", shape, lambda graph, node: graph.tensor(node.outputs[0]).numel, float_ref=float_ref,
    int_ref=int_ref, quantize=quantize, c_source="hydra_select_token.c", c_function="hydra_select_token_s8",
    param_struct="hydra_select_token_params", fields=fields, emit=emit, row_inputs=(0,), reduces=True,
))
