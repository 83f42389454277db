"""Float interpreter of the lowered IR, in numpy (float64).

It gives the float semantics that quantisation approximates, and it is how
calibration observes the range of every tensor (`observe`), so that ranges
are collected on exactly the tensors the integer graph will have.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..ir.graph import Graph, Node

_erf = np.vectorize(math.erf, otypes=[np.float64])

Observer = Callable[[str, np.ndarray], None]


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """phi of Hydra attention: x / |x| per row, and 0 for the zero row."""
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _patch_embed(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = int(node.attrs["patch"])
    c, h, wd = x.shape
    patches = x.reshape(c, h // p, p, wd // p, p).transpose(1, 3, 0, 2, 4).reshape(-1, c * p * p)
    return patches @ w.reshape(w.shape[0], -1).T + b


def _layernorm(node: Node, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + float(node.attrs["eps"])) * gamma + beta


def _hydra(node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    kv = (l2_normalize_rows(k) * v).sum(axis=0, keepdims=True)
    return l2_normalize_rows(q) * kv


def softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, scale: float) -> np.ndarray:
    """Multi-head softmax attention on [T, D] projections; heads concatenated in torch's order."""
    t, d = q.shape
    split = lambda x: x.reshape(t, heads, d // heads).transpose(1, 0, 2)  # noqa: E731 - [H, T, dh]
    s = split(q) @ split(k).transpose(0, 2, 1) * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    out = (p / p.sum(axis=-1, keepdims=True)) @ split(v)
    return out.transpose(1, 0, 2).reshape(t, d)


FLOAT_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "patch_embed": _patch_embed,
    "linear": lambda node, x, w, b: x @ w.T + b,
    "layernorm": _layernorm,
    "gelu": lambda node, x: gelu(x, node.attrs.get("approximate", "none")),
    "hydra_attention": _hydra,
    "softmax_attention": lambda node, q, k, v: softmax_attention(q, k, v, int(node.attrs["heads"]),
                                                                 float(node.attrs["scale"])),
    "add": lambda node, a, b: a + b,
    "mean_pool": lambda node, x: x.mean(axis=0),
}


def run_float(graph: Graph, x: np.ndarray, observe: Observer | None = None) -> list[np.ndarray]:
    """Run one input (no batch dimension); `observe(name, value)` sees every activation."""
    values: dict[str, np.ndarray] = {n: t.data.astype(np.float64) for n, t in graph.tensors.items() if t.is_constant}
    values[graph.inputs[0]] = np.asarray(x, np.float64).reshape(graph.tensor(graph.inputs[0]).shape)
    if observe:
        observe(graph.inputs[0], values[graph.inputs[0]])
    for node in graph.nodes:
        out = FLOAT_KERNELS[node.op](node, *(values[n] for n in node.inputs))
        values[node.outputs[0]] = out
        if observe:
            observe(node.outputs[0], out)
    return [values[n] for n in graph.outputs]
