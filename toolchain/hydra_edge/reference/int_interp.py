"""The reference interpreter of the int8 IR: docs/numerics.md, executable.

Each kernel mirrors its section of the spec line by line, in int64 numpy
arithmetic, so that a reader can check one against the other. The C runtime
must produce the same bits; `hydra-edge validate` compares them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.ops import block_body
from ..numerics.fixedpoint import inv_sqrt, requantize, round_shift

I64 = np.int64


def _clamp_s8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -128, 127).astype(np.int8)


def _linear(node: Node, x: np.ndarray, w: np.ndarray, bias: np.ndarray, rounding: str) -> np.ndarray:
    acc = x.astype(I64) @ w.reshape(len(w), -1).astype(I64).T + bias.astype(I64)  # int32 by the compile-time bound
    y = requantize(acc, node.attrs["multiplier"].astype(I64), node.attrs["shift"].astype(I64), rounding)
    return _clamp_s8(node.attrs["out_zp"] + y)


def _patch_embed(node: Node, x: np.ndarray, w: np.ndarray, bias: np.ndarray, rounding: str) -> np.ndarray:
    p = int(node.attrs["patch"])
    c, h, wd = x.shape
    patches = x.reshape(c, h // p, p, wd // p, p).transpose(1, 3, 0, 2, 4).reshape(-1, c * p * p)  # (c, ky, kx) order
    return _linear(node, patches, w, bias, rounding)


def _layernorm(node: Node, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    d = x.shape[-1]
    xi = x.astype(I64) - a["in_zp"]
    s1 = xi.sum(axis=-1, keepdims=True)
    s2 = (xi * xi).sum(axis=-1, keepdims=True)
    v = d * s2 - s1 * s1 + int(a["eps_q"])
    inv, p = inv_sqrt(v)
    z = round_shift((d * xi - s1) * inv, 41 - p)
    acc = z * gamma.astype(I64) + beta.astype(I64)
    return _clamp_s8(round_shift(acc, int(a["out_shift"])) + a["out_zp"])


def _phi(rows: np.ndarray, zero_point: int) -> np.ndarray:
    """L2-normalise each row at scale 1/128; a zero row stays zero."""
    xi = rows.astype(I64) - zero_point
    ss = (xi * xi).sum(axis=-1, keepdims=True)
    inv, p = inv_sqrt(np.maximum(ss, 1))
    phi = np.clip(round_shift(xi * inv, 54 - p), -128, 127)
    return np.where(ss == 0, 0, phi)


def _hydra(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    acc = (_phi(k, a["zk"]) * (v.astype(I64) - a["zv"])).sum(axis=0)  # int32 by the max_tokens proof
    kv = round_shift(acc, int(a["kv_shift"]))
    y = requantize(_phi(q, a["zq"]) * kv, a["multiplier"], a["shift"], rounding)
    return _clamp_s8(a["out_zp"] + y)


SOFTMAX_RECIP_BITS = 46  # recip = floor((2^46 - 1) / S): 2^15 / S in Q31


def _softmax_attention(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, table: np.ndarray,
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
    return _clamp_s8(a["out_zp"] + y).transpose(1, 0, 2).reshape(t, d)


def _add(node: Node, x_a: np.ndarray, x_b: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    lift = 1 << int(a["left_shift"])
    sa = requantize((x_a.astype(I64) - a["za"]) * lift, a["ma"], a["sa"], rounding)
    sb = requantize((x_b.astype(I64) - a["zb"]) * lift, a["mb"], a["sb"], rounding)
    return _clamp_s8(a["out_zp"] + requantize(sa + sb, a["my"], a["sy"], rounding))


def _mean_pool(node: Node, x: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    acc = (x.astype(I64) - a["in_zp"]).sum(axis=0)
    return _clamp_s8(a["out_zp"] + requantize(acc, a["multiplier"], a["shift"], rounding))


def _lut(node: Node, x: np.ndarray, table: np.ndarray, rounding: str) -> np.ndarray:
    return table[x.astype(np.int64) + 128]


def _run_body(node: Node, values: dict[str, np.ndarray], rounding: str) -> np.ndarray:
    """A hydra_block: its body nodes in order, each by its own kernel above (values gets every intermediate)."""
    out = values[node.inputs[0]]
    for sub in block_body(node).values():
        out = values[sub.outputs[0]] = INT_KERNELS[sub.op](sub, *(values[n] for n in sub.inputs), rounding)
    return out


def _hydra_block(node: Node, *args: np.ndarray | str) -> np.ndarray:
    *arrays, rounding = args
    return _run_body(node, dict(zip(node.inputs, arrays)), str(rounding))


INT_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "patch_embed": _patch_embed,
    "linear": _linear,
    "layernorm": _layernorm,
    "lut": _lut,
    "hydra_attention": _hydra,
    "softmax_attention": _softmax_attention,
    "add": _add,
    "mean_pool": _mean_pool,
    "hydra_block": _hydra_block,
}


def tfl_kernels() -> dict[str, Callable[..., np.ndarray]]:
    """The reference kernels of imported TFLite ops: the linear family, the elementwise one, tfl_hydra_attention."""
    from .tfl_elementwise import KERNELS as elementwise
    from .tfl_linear import KERNELS as linear
    from .tfl_hydra import KERNELS as hydra  # tfl_hydra_attention (passes/lift_tfl_hydra.py)

    return {**linear, **elementwise, **hydra}


def run_int(graph: Graph, x: np.ndarray, keep_all: bool = False) -> list[np.ndarray] | dict[str, np.ndarray]:
    """Run one int8 input (no batch dimension). keep_all returns every tensor by name."""
    rounding = graph.meta.get("rounding", "double")
    values: dict[str, np.ndarray] = {n: t.data for n, t in graph.tensors.items() if t.is_constant}
    values[graph.inputs[0]] = np.asarray(x, np.int8).reshape(graph.tensor(graph.inputs[0]).shape)
    for node in graph.nodes:
        if node.op == "hydra_block":  # the body's intermediates land in `values` too (keep_all shows them)
            values[node.outputs[0]] = _run_body(node, values, rounding)
            continue
        if node.op.startswith("tfl_"):  # an imported .tflite op: reference/tfl_*.py, shaped as its output tensor
            out = tfl_kernels()[node.op](node.attrs, [values.get(n) if n else None for n in node.inputs], rounding)
            values[node.outputs[0]] = np.asarray(out).reshape(graph.tensor(node.outputs[0]).shape)
            continue
        values[node.outputs[0]] = INT_KERNELS[node.op](node, *(values[n] for n in node.inputs), rounding)
    if keep_all:
        return values
    return [values[n] for n in graph.outputs]
