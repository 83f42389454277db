"""The operators of the lowered IR, their operands and shape rules.

The same op names are used before quantisation (float32 tensors, float
constants) and after it (int8 activations, integer constants and attrs as in
docs/numerics.md). The table below is the contract between the passes, the
quantiser, the reference interpreter and the code generator.

| op              | inputs (float)                 | inputs (quantised)                     | quantised attrs                                   |
|-----------------|--------------------------------|----------------------------------------|---------------------------------------------------|
| patch_embed     | x[C,H,W], w[D,C,p,p], b[D]     | x, w int8, b int32 (zp folded)         | patch, multiplier[D], shift[D] (np.int32), out_zp |
| linear          | x[T,K] or x[K], w[N,K], b[N]   | x, w int8, b int32 (zp folded)         | multiplier[N], shift[N] (np.int32), out_zp        |
| layernorm       | x[T,D], gamma[D], beta[D]      | x, gamma_q int32, beta_q int64         | in_zp, eps_q, out_shift, out_zp                   |
| gelu            | x                              | (becomes lut)                          |                                                   |
| lut             | -                              | x, table int8[256]                     |                                                   |
| hydra_attention | q[T,D], k[T,D], v[T,D]         | q, k, v                                | zq, zk, zv, kv_shift, multiplier, shift, out_zp, max_tokens |
| add             | a, b (same shape)              | a, b                                   | left_shift, za, ma, sa, zb, mb, sb, my, sy, out_zp |
| mean_pool       | x[T,D]                         | x                                      | in_zp, multiplier, shift, out_zp                  |

Float attrs: patch_embed `patch`; layernorm `eps`; gelu `approximate`
("none" or "tanh").
"""

from __future__ import annotations

from typing import Callable

from .graph import Graph, IRError, Node

Shape = tuple[int, ...]


def _patch_embed(node: Node, shapes: list[Shape]) -> Shape:
    (c, h, w), ws = shapes[0], shapes[1]
    p = int(node.attrs["patch"])
    if len(ws) != 4 or ws[1] != c or ws[2] != p or ws[3] != p:
        raise IRError(f"{node.name}: patch_embed weight {ws} does not match input channels {c} and patch {p}")
    if h % p or w % p:
        raise IRError(f"{node.name}: input {h}x{w} is not a multiple of the patch size {p}")
    return ((h // p) * (w // p), ws[0])


def _linear(node: Node, shapes: list[Shape]) -> Shape:
    x, w = shapes[0], shapes[1]
    if len(w) != 2 or x[-1] != w[1]:
        raise IRError(f"{node.name}: linear input {x} does not match weight {w}")
    return (*x[:-1], w[0])


def _same_as_first(node: Node, shapes: list[Shape]) -> Shape:
    return shapes[0]


def _hydra(node: Node, shapes: list[Shape]) -> Shape:
    if not (shapes[0] == shapes[1] == shapes[2]) or len(shapes[0]) != 2:
        raise IRError(f"{node.name}: hydra_attention needs q, k, v of one [T, D] shape, got {shapes}")
    return shapes[0]


def _add(node: Node, shapes: list[Shape]) -> Shape:
    if shapes[0] != shapes[1]:
        raise IRError(f"{node.name}: add operands differ in shape: {shapes[0]} and {shapes[1]}")
    return shapes[0]


def _mean_pool(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes[0]) != 2:
        raise IRError(f"{node.name}: mean_pool needs [T, D], got {shapes[0]}")
    return (shapes[0][1],)


SHAPE_RULES: dict[str, Callable[[Node, list[Shape]], Shape]] = {
    "patch_embed": _patch_embed,
    "linear": _linear,
    "layernorm": _same_as_first,
    "gelu": _same_as_first,
    "lut": _same_as_first,
    "hydra_attention": _hydra,
    "add": _add,
    "mean_pool": _mean_pool,
}

LOWERED_OPS = tuple(SHAPE_RULES)


def check_shapes(graph: Graph) -> None:
    """Recompute every output shape from the inputs; raise IRError on a mismatch."""
    for node in graph.nodes:
        rule = SHAPE_RULES.get(node.op)
        if rule is None:
            raise IRError(f"node {node.name}: op {node.op!r} is not a lowered op ({', '.join(LOWERED_OPS)})")
        expected = rule(node, [graph.tensor(n).shape for n in node.inputs])
        actual = graph.tensor(node.outputs[0]).shape
        if tuple(expected) != tuple(actual):
            raise IRError(f"node {node.name} ({node.op}): output shape {actual}, expected {tuple(expected)}")
