"""lut (quantised graphs only, made from gelu): y = table[x + 128], table int8[256]."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Node
from .base import OpDef, elementwise_macs, register, same_as_first, unary_call


def int_ref(node: Node, x: np.ndarray, table: np.ndarray, rounding: str) -> np.ndarray:
    return table[x.astype(np.int64) + 128]


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    x, table = em.tensor(node, 0), em.tensor(node, 1)
    if table.shape != (256,):
        raise em.error(f"node {node.name} (lut): table {table.name!r} has shape {table.shape}, expected (256,)")
    return [("size", str(x.numel)), ("table", em.const(node, 1, "int8"))]


OP = register(OpDef(
    "lut", same_as_first, elementwise_macs, graphs="int", int_ref=int_ref,
    c_source="hydra_lut.c", c_function="hydra_lut_s8", param_struct="hydra_lut_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP), in_place=(0,), row_local=True,
    row_inputs=(0,), rows_field="size", rows_field_elements=True,
))
