"""layernorm over the last axis: x[T, D] (or [D]), gamma[D], beta[D]; quantised: int32 gamma_q, int64 beta_q."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node
from ..numerics.fixedpoint import inv_sqrt, round_half_away, round_shift
from .base import I64, INT32_MAX, OpDef, QuantizationError, clamp_s8, numel, register, same_as_first, unary_call

MAX_LAYERNORM_DIM = 4096


def float_ref(node: Node, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + float(node.attrs["eps"])) * gamma + beta


def int_ref(node: Node, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    d = x.shape[-1]
    xi = x.astype(I64) - a["in_zp"]
    s1 = xi.sum(axis=-1, keepdims=True)
    s2 = (xi * xi).sum(axis=-1, keepdims=True)
    v = d * s2 - s1 * s1 + int(a["eps_q"])
    inv, p = inv_sqrt(v)
    z = round_shift((d * xi - s1) * inv, 41 - p)
    acc = z * gamma.astype(I64) + beta.astype(I64)
    return clamp_s8(round_shift(acc, int(a["out_shift"])) + a["out_zp"])


def quantize(q: Any, node: Node) -> None:
    x, g_name, b_name = node.inputs
    y = node.outputs[0]
    d = q.src.tensor(x).shape[-1]
    if d > MAX_LAYERNORM_DIM:
        raise QuantizationError(f"node {node.name} (layernorm): dim {d} > {MAX_LAYERNORM_DIM} is not supported")
    sx, sy = q.scale(x), q.scale(y)
    g = q.src.tensor(g_name).data.astype(np.float64) / sy
    beta = q.src.tensor(b_name).data.astype(np.float64) / sy
    gmax = float(np.abs(g).max())
    gshift = 0 if gmax == 0 else int(np.clip(15 - math.ceil(math.log2(gmax)), 0, 40))
    out_shift = 20 + gshift
    gamma_q = round_half_away(g * 2.0**gshift)
    if np.abs(gamma_q).max() > INT32_MAX:
        raise QuantizationError(f"node {node.name} (layernorm): gamma / output scale does not fit int32")
    eps_q = max(1, int(round_half_away(min(d * d * float(node.attrs["eps"]) / (sx * sx), 2.0**61))))
    beta_q = round_half_away(beta * 2.0**out_shift)
    if np.abs(beta_q).max() > 2.0**62:
        raise QuantizationError(f"node {node.name} (layernorm): beta / output scale does not fit the int64 contract")
    q.emit(
        node,
        [x, q.const(node, "gamma", gamma_q.astype(np.int32)), q.const(node, "beta", beta_q.astype(np.int64))],
        in_zp=q.zp(x), eps_q=eps_q, out_shift=out_shift, out_zp=q.zp(y),
    )


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    shape = em.tensor(node, 0).shape
    beta = np.asarray(em.tensor(node, 2).data)
    if beta.size and np.abs(beta.astype(np.float64)).max() > 2.0**62:
        raise em.error(f"node {node.name} (layernorm): beta_q exceeds 2^62 in magnitude")
    return [
        ("tokens", str(numel(shape[:-1]))),
        ("dim", str(shape[-1])),
        ("input_zero_point", em.zp(node, "in_zp")),
        ("eps", em.scalar(node, "eps_q", "int64_t", lo=1, hi=2**61)),
        ("gamma", em.const(node, 1, "int32")),
        ("beta", em.const(node, 2, "int64")),
        ("output_shift", em.scalar(node, "out_shift", lo=0, hi=62)),
        ("output_zero_point", em.zp(node, "out_zp")),
        ("narrow_output", "1" if narrow_output(em.tensor(node, 1).data, beta, int(node.attrs["out_shift"])) else "0"),
    ]


def narrow_output(gamma: np.ndarray, beta: np.ndarray, out_shift: int) -> bool:
    """hydra_layernorm_params.narrow_output at compile time (runtime_c/include/hydra_rt.h): out_shift s in [2, 31],
    every |gamma_q| <= 2^(s+1) and |beta_q| <= 2^(s+28), so that the C shifts each output's sum on 32-bit words."""
    if not 2 <= out_shift <= 31:
        return False
    g = np.abs(np.asarray(gamma).astype(np.int64))
    b = np.abs(np.asarray(beta).astype(np.int64))
    return bool((g <= 2 ** (out_shift + 1)).all() and (b <= 2 ** (out_shift + 28)).all())


def macs(graph: Graph, node: Node) -> int:  # [T, D], or a LayerNorm's [D] (a norm of the pooled vector)
    return 3 * numel(graph.tensor(node.inputs[0]).shape)


OP = register(OpDef(
    "layernorm", same_as_first, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_layernorm.c", c_function="hydra_layernorm_s8", param_struct="hydra_layernorm_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP), in_place=(0,), row_local=True,
    row_inputs=(0,), rows_field="tokens",
    loop_functions=("hydra_layernorm_s8_check", "hydra_layernorm_rows_s8"),
))
