"""hydra_attention: y = phi(q) * sum_t phi(k_t) * v_t, phi = row L2 normalisation; q, k, v of one [T, D] shape."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..numerics.fixedpoint import bitlen, inv_sqrt, requantize, round_shift
from .base import (I64, INT32_MAX, OpDef, QuantizationError, Shape, clamp_s8, multiplier, numel, register,
                   scratch_guard)


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if not (shapes[0] == shapes[1] == shapes[2]) or len(shapes[0]) != 2:
        raise IRError(f"{node.name}: hydra_attention needs q, k, v of one [T, D] shape, got {shapes}")
    return shapes[0]


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """phi of Hydra attention: x / |x| per row, and 0 for the zero row."""
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def float_ref(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    kv = (l2_normalize_rows(k) * v).sum(axis=0, keepdims=True)
    return l2_normalize_rows(q) * kv


def phi(rows: np.ndarray, zero_point: int) -> np.ndarray:
    """L2-normalise each row at scale 1/128; a zero row stays zero."""
    xi = rows.astype(I64) - zero_point
    ss = (xi * xi).sum(axis=-1, keepdims=True)
    inv, p = inv_sqrt(np.maximum(ss, 1))
    out = np.clip(round_shift(xi * inv, 54 - p), -128, 127)
    return np.where(ss == 0, 0, out)


def kv_state(node: Node, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The attention state kv[D]: round_shift(sum_t phi(k_t) (v_t - zv), kv_shift), int32 by the max_tokens proof."""
    a = node.attrs
    acc = (phi(k, a["zk"]) * (v.astype(I64) - a["zv"])).sum(axis=0)
    return round_shift(acc, int(a["kv_shift"])).astype(np.int32)


def apply_state(node: Node, q: np.ndarray, kv: np.ndarray, rounding: str) -> np.ndarray:
    """y_t = clamp(zy + requant(phi(q_t) kv)): each row from its own q row and the state."""
    a = node.attrs
    y = requantize(phi(q, a["zq"]) * kv.astype(I64), a["multiplier"], a["shift"], rounding)
    return clamp_s8(a["out_zp"] + y)


def int_ref(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, rounding: str) -> np.ndarray:
    return apply_state(node, q, kv_state(node, k, v), rounding)


def quantize(qz: Any, node: Node) -> None:
    q, k, v = node.inputs
    y = node.outputs[0]
    tokens = qz.src.tensor(q).shape[0]
    zv = qz.zp(v)
    vmax = max(127 - zv, zv + 128)
    max_tokens = INT32_MAX // (128 * vmax)
    if tokens > max_tokens:
        raise QuantizationError(
            f"node {node.name} (hydra_attention): {tokens} tokens, but the int32 attention state "
            f"is proven overflow-free only up to {max_tokens} tokens for this value zero point"
        )
    kv_shift = max(0, bitlen(tokens * 128 * vmax) - 23)
    mult, shift = multiplier(qz.scale(v) * 2.0**kv_shift / (128 * 128 * qz.scale(y)), f"node {node.name}")
    qz.emit(node, [q, k, v], zq=qz.zp(q), zk=qz.zp(k), zv=zv, kv_shift=kv_shift,
            multiplier=mult, shift=shift, out_zp=qz.zp(y), max_tokens=max_tokens)


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    t, d = em.tensor(node, 0).shape
    max_tokens = node.attrs.get("max_tokens")
    if max_tokens is not None and t > int(max_tokens):
        raise em.error(
            f"node {node.name} (hydra_attention): {t} tokens exceed max_tokens = {int(max_tokens)}, "
            "beyond which the int32 attention state could overflow"
        )
    return [
        ("tokens", str(t)),
        ("dim", str(d)),
        ("q_zero_point", em.zp(node, "zq")),
        ("k_zero_point", em.zp(node, "zk")),
        ("v_zero_point", em.zp(node, "zv")),
        ("kv_shift", em.scalar(node, "kv_shift", lo=0, hi=31)),
        ("multiplier", em.multiplier(node, "multiplier")),
        ("shift", em.shift(node, "shift")),
        ("output_zero_point", em.zp(node, "out_zp")),
        ("single_rounding", em.single_rounding(node)),
    ]


def emit(em: Any, node: Node) -> Any:
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    soff, ssize = em.scratch(node)
    check = scratch_guard("hydra_attention_s8_get_buffer_size", ident, ssize)
    call = (
        f"{OP.c_function}(&{ident}, {em.act(node, 0)}, {em.act(node, 1)}, {em.act(node, 2)}, "
        f"(void *)(hydra_arena + {soff}), {em.act(node, 0, 'output')})"
    )
    return em.call(node, decl, call, check)


def scratch_size(dim: int) -> int:
    """hydra_attention_s8_get_buffer_size: the int32 state [D] and one int8 phi row [D]."""
    return 5 * dim


def macs(graph: Graph, node: Node) -> int:
    return 3 * numel(graph.tensor(node.inputs[0]).shape)



# -- the two halves a token loop runs (passes/stream.py splits hydra_attention into them) ----------------------
#
# hydra_kv_state(k, v) -> kv int32 [D] reads k and v row by row and is complete after the last row; it is
# zeroed before a loop, accumulated per group and rounded after it. hydra_apply(q, kv) -> y reads q row by
# row and kv whole. Together they are hydra_attention_s8's three steps, so the bits are hydra_attention's.


def kv_state_shape(node: Node, shapes: list[Shape]) -> Shape:
    if shapes[0] != shapes[1] or len(shapes[0]) != 2:
        raise IRError(f"{node.name}: hydra_kv_state needs k, v of one [T, D] shape, got {shapes}")
    if node.attrs.get("tokens") != shapes[0][0]:
        raise IRError(f"{node.name}: hydra_kv_state attr tokens = {node.attrs.get('tokens')!r}, k has {shapes[0][0]} rows")
    return (shapes[0][1],)


def apply_shape(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes[0]) != 2 or tuple(shapes[1]) != (shapes[0][1],):
        raise IRError(f"{node.name}: hydra_apply needs q[T, D] and kv[D], got {shapes}")
    return shapes[0]


def kv_state_ref(node: Node, k: np.ndarray, v: np.ndarray, rounding: str) -> np.ndarray:
    return kv_state(node, k, v)


def emit_kv_state(em: Any, node: Node) -> Any:
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    soff, _ = em.scratch(node)  # phi[D] (the state is the output)
    kv, dim = em.act32(node, 0, "output"), em.tensor(node, 0).shape[1]
    rows = em.rows or str(node.attrs["tokens"])
    return em.call(
        node, decl,
        f"hydra_attention_accumulate_s8(&{ident}, {em.act(node, 0)}, {em.act(node, 1)}, {rows}, {kv}, "
        f"HYDRA_ARENA_S8({soff}))",
        before=f"memset({kv}, 0, {4 * dim});", after=f"hydra_attention_round_state_s8(&{ident}, {kv})")


def emit_apply(em: Any, node: Node) -> Any:
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    soff, _ = em.scratch(node)  # phi[D]
    rows = em.rows or str(em.tensor(node, 0).shape[0])
    return em.call(
        node, decl,
        f"hydra_attention_apply_s8(&{ident}, {em.act(node, 0)}, {em.act32(node, 1)}, {rows}, HYDRA_ARENA_S8({soff}), "
        f"{em.act(node, 0, 'output')})")


OP = register(OpDef(
    "hydra_attention", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_attention.c", c_function="hydra_attention_s8", param_struct="hydra_attention_params",
    fields=fields, emit=emit, scratch=lambda graph, node: scratch_size(graph.tensor(node.inputs[0]).shape[-1]),
))

register(OpDef(
    "hydra_kv_state", kv_state_shape, lambda graph, node: 2 * numel(graph.tensor(node.inputs[0]).shape),
    graphs="int", int_ref=kv_state_ref, c_source="hydra_attention.c",
    c_function="hydra_attention_accumulate_s8", param_struct="hydra_attention_params",
    fields=fields, emit=emit_kv_state, scratch=lambda graph, node: graph.tensor(node.inputs[0]).shape[1],
    row_inputs=(0, 1), reduces=True,
))

register(OpDef(
    "hydra_apply", apply_shape, lambda graph, node: numel(graph.tensor(node.inputs[0]).shape),
    graphs="int", int_ref=apply_state, c_source="hydra_attention.c",
    c_function="hydra_attention_apply_s8", param_struct="hydra_attention_params",
    fields=fields, emit=emit_apply, scratch=lambda graph, node: graph.tensor(node.inputs[0]).shape[1],
    row_inputs=(0,), row_local=True,
))
