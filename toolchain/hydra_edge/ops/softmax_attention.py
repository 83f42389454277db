"""softmax_attention: multi-head softmax attention on the [T, D] q, k, v projections (heads concatenated in
torch's order: head h reads and writes features [h D/heads, (h+1) D/heads)); quantised, an exp table in Q15
is a fourth (constant) input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..numerics.fixedpoint import requantize, round_half_away, round_shift
from .base import (I64, INT32_MAX, OpDef, QuantizationError, Shape, clamp_s8, multiplier, register,
                   scratch_guard)

# exp table in Q15 over [0, 12) in steps of 1/64 (docs/numerics.md)
SOFTMAX_EXP_BITS = 15
SOFTMAX_EXP_STEP_BITS = 6
SOFTMAX_EXP_ENTRIES = 768
SOFTMAX_MAX_TOKENS = INT32_MAX // 2**SOFTMAX_EXP_BITS  # the int32 sum of exp values: 65535 tokens
SOFTMAX_MAX_HEAD_DIM = 16384  # keeps |q.k| < 2^30 and every score difference inside int32
SOFTMAX_RECIP_BITS = 46  # recip = floor((2^46 - 1) / S): 2^15 / S in Q31


def shape(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes) not in (3, 4) or not (shapes[0] == shapes[1] == shapes[2]) or len(shapes[0]) != 2:
        raise IRError(f"{node.name}: softmax_attention needs q, k, v of one [T, D] shape (and an exp table), "
                      f"got {shapes}")
    heads = node.attrs.get("heads")
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or shapes[0][1] % heads:
        raise IRError(f"{node.name}: softmax_attention heads = {heads!r} must be a positive int dividing D = {shapes[0][1]}")
    if len(shapes) == 4 and len(shapes[3]) != 1:
        raise IRError(f"{node.name}: softmax_attention exp table must be 1-d, got {shapes[3]}")
    return shapes[0]


def softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, scale: float) -> np.ndarray:
    """Multi-head softmax attention on [T, D] projections; heads concatenated in torch's order."""
    t, d = q.shape
    split = lambda x: x.reshape(t, heads, d // heads).transpose(1, 0, 2)  # noqa: E731 - [H, T, dh]
    s = split(q) @ split(k).transpose(0, 2, 1) * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    out = (p / p.sum(axis=-1, keepdims=True)) @ split(v)
    return out.transpose(1, 0, 2).reshape(t, d)


def float_ref(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    return softmax_attention(q, k, v, int(node.attrs["heads"]), float(node.attrs["scale"]))


def softmax_exp_table() -> np.ndarray:
    """exp(-i / 64) in Q15 for i in [0, 768): table[0] = 2^15, and 0 from i = 710 on."""
    i = np.arange(SOFTMAX_EXP_ENTRIES, dtype=np.float64)
    return round_half_away(np.exp(-i / 2**SOFTMAX_EXP_STEP_BITS) * 2**SOFTMAX_EXP_BITS).astype(np.int32)


def int_ref(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, table: np.ndarray,
            rounding: str) -> np.ndarray:
    a = node.attrs
    t, d = q.shape
    heads = int(a["heads"])

    def split(x: np.ndarray, z: int) -> np.ndarray:  # [T, D] -> [H, T, dh], zero point removed
        return (x.astype(I64) - z).reshape(t, heads, d // heads).transpose(1, 0, 2)

    qi, ki, vi = split(q, a["zq"]), split(k, a["zk"]), split(v, a["zv"])
    s = qi @ ki.transpose(0, 2, 1)  # [H, T, T] but only one row at a time in C; int32 by the head-dim bound
    diff = s.max(axis=-1, keepdims=True) - s  # >= 0, int32
    idx = np.clip(requantize(diff, a["exp_multiplier"], a["exp_shift"], rounding), 0, len(table) - 1)
    w = table.astype(I64)[idx]  # Q15 exp values
    total = w.sum(axis=-1, keepdims=True)  # in [2^15, T * 2^15]: int32 by max_tokens
    recip = ((1 << SOFTMAX_RECIP_BITS) - 1) // total  # floor, in [2^15, 2^31)
    acc = w @ vi  # int64, |acc| <= 255 * total
    n = round_shift(acc * recip, 31)  # normalised, Q15 units of (v - zv); |acc * recip| < 2^54
    y = requantize(n, a["multiplier"], a["shift"], rounding)
    return clamp_s8(a["out_zp"] + y).transpose(1, 0, 2).reshape(t, d)


def quantize(qz: Any, node: Node) -> None:
    q, k, v = node.inputs
    y = node.outputs[0]
    tokens, dim = qz.src.tensor(q).shape
    heads = int(node.attrs["heads"])
    scale = float(node.attrs["scale"])
    where = f"node {node.name} (softmax_attention)"
    if tokens > SOFTMAX_MAX_TOKENS:
        raise QuantizationError(f"{where}: {tokens} tokens, but the int32 sum of exp values is proven "
                                f"overflow-free only up to {SOFTMAX_MAX_TOKENS} tokens")
    if dim // heads > SOFTMAX_MAX_HEAD_DIM:
        raise QuantizationError(f"{where}: head dim {dim // heads} > {SOFTMAX_MAX_HEAD_DIM} is not supported; "
                                "use more heads")
    if not math.isfinite(scale) or scale < 0:
        raise QuantizationError(f"{where}: attention scale {scale!r} must be a finite real >= 0")
    # A score difference d (integer units of s_q s_k) is scale * s_q * s_k * d in the exponent: 64 table steps per unit.
    em, es = multiplier(scale * qz.scale(q) * qz.scale(k) * 2**SOFTMAX_EXP_STEP_BITS, where)
    # The normalised sum is in Q15 units of s_v.
    mult, shift = multiplier(qz.scale(v) / (2**SOFTMAX_EXP_BITS * qz.scale(y)), where)
    table = qz.const(node, "exp_table", softmax_exp_table())
    qz.emit(node, [q, k, v, table], heads=heads, zq=qz.zp(q), zk=qz.zp(k), zv=qz.zp(v),
            exp_multiplier=em, exp_shift=es, multiplier=mult, shift=shift, out_zp=qz.zp(y),
            max_tokens=SOFTMAX_MAX_TOKENS)


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    t, d = em.tensor(node, 0).shape
    table = em.tensor(node, 3)
    max_tokens = node.attrs.get("max_tokens")
    if max_tokens is not None and t > int(max_tokens):
        raise em.error(f"node {node.name} (softmax_attention): {t} tokens exceed max_tokens = {int(max_tokens)}, "
                       "beyond which the int32 sum of exp values could overflow")
    return [
        ("tokens", str(t)),
        ("dim", str(d)),
        ("heads", em.scalar(node, "heads", lo=1, hi=d)),
        ("query_rows", str(t)),
        ("q_zero_point", em.zp(node, "zq")),
        ("k_zero_point", em.zp(node, "zk")),
        ("v_zero_point", em.zp(node, "zv")),
        ("exp_multiplier", em.multiplier(node, "exp_multiplier")),
        ("exp_shift", em.shift(node, "exp_shift")),
        ("exp_table", em.const(node, 3, "int32")),
        ("exp_table_size", str(table.numel)),
        ("multiplier", em.multiplier(node, "multiplier")),
        ("shift", em.shift(node, "shift")),
        ("output_zero_point", em.zp(node, "out_zp")),
        ("single_rounding", em.single_rounding(node)),
    ]


def emit(em: Any, node: Node) -> Any:
    """The whole kernel; in a token loop, the key sums of every head once before it (the keys are the same
    for every group) and each group's query rows against them."""
    ident, decl = em.params(node, OP.param_struct, fields(em, node))
    soff, ssize = em.scratch(node)
    check = scratch_guard("hydra_softmax_attention_s8_get_buffer_size", ident, ssize)
    q, k, v, y = em.act(node, 0), em.act(node, 1), em.act(node, 2), em.act(node, 0, "output")
    scratch = f"(void *)(hydra_arena + {soff})"
    if em.rows is None:
        return em.call(node, decl, f"{OP.c_function}(&{ident}, {q}, {k}, {v}, {y}, {scratch})", check)
    key_sums = em.loop_state(node)
    before = em.checked(f"hydra_softmax_attention_key_sums_s8(&{em.static(ident)}, {k}, {key_sums})")
    return em.call(node, decl, f"hydra_softmax_attention_rows_s8(&{ident}, {q}, {k}, {v}, {key_sums}, {y}, {scratch})",
                   check, before=before)


def scratch_size(tokens: int) -> int:
    """hydra_softmax_attention_s8_get_buffer_size: the int32 scores of a query row, the key sums of a head."""
    return 8 * tokens


def macs(graph: Graph, node: Node) -> int:  # q.k for every query and key, then the weighted sum of v rows
    t, d = graph.tensor(node.inputs[0]).shape
    return 2 * t * t * d


OP = register(OpDef(
    "softmax_attention", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_softmax_attention.c", c_function="hydra_softmax_attention_s8",
    param_struct="hydra_softmax_attention_params", fields=fields, emit=emit,
    scratch=lambda graph, node: scratch_size(graph.tensor(node.inputs[0]).shape[0]),
    row_inputs=(0,), rows_field="query_rows",  # a query row reads its own q row, and k and v whole
    loop_state=lambda graph, node: 4 * int(node.attrs["heads"]) * graph.tensor(node.inputs[1]).shape[0],  # key sums
))
