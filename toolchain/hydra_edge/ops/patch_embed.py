"""patch_embed: x[C, H, W] cut into p x p patches ((c, ky, kx) order), each a linear row: [(H/p)(W/p), D].

An optional fourth input, prefix [P, D] (a class token, DeiT's class and distillation tokens), comes
first: the output is [P + (H/p)(W/p), D], prefix rows then patch rows (torch.cat([cls, x], dim=1)
right after the patch embedding). Quantised with the output's scale and zero point, the prefix rows are
constants the kernel copies, so the class token costs no tensor of its own and no extra copy of x.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from .linear import blocked_weights
from .linear import int_ref as linear_int_ref
from .linear import quantize as linear_quantize
from .base import INT32_MAX, OpDef, Shape, register, unary_call


def shape(node: Node, shapes: list[Shape]) -> Shape:
    (c, h, w), ws = shapes[0], shapes[1]
    p = int(node.attrs["patch"])
    if len(ws) != 4 or ws[1] != c or ws[2] != p or ws[3] != p:
        raise IRError(f"{node.name}: patch_embed weight {ws} does not match input channels {c} and patch {p}")
    if h % p or w % p:
        raise IRError(f"{node.name}: input {h}x{w} is not a multiple of the patch size {p}")
    prefix = 0
    if len(shapes) > 3:
        if len(shapes[3]) != 2 or shapes[3][1] != ws[0]:
            raise IRError(f"{node.name}: patch_embed prefix {shapes[3]} is not [P, {ws[0]}]")
        prefix = shapes[3][0]
    return (prefix + (h // p) * (w // p), ws[0])


def patches(node: Node, x: np.ndarray) -> np.ndarray:
    p = int(node.attrs["patch"])
    c, h, wd = x.shape
    return x.reshape(c, h // p, p, wd // p, p).transpose(1, 3, 0, 2, 4).reshape(-1, c * p * p)  # (c, ky, kx) order


def float_ref(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray, *prefix: np.ndarray) -> np.ndarray:
    return np.concatenate([*prefix, patches(node, x) @ w.reshape(w.shape[0], -1).T + b])


def int_ref(node: Node, x: np.ndarray, w: np.ndarray, bias: np.ndarray, *rest) -> np.ndarray:
    *prefix, rounding = rest
    return np.concatenate([*prefix, linear_int_ref(node, patches(node, x), w, bias, rounding)])


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    (c, h, wd), w = em.tensor(node, 0).shape, em.tensor(node, 1)
    d = w.shape[0]
    em.check_array_range(node, "multiplier", 0, INT32_MAX)
    em.check_array_range(node, "shift", -31, 30)
    return [
        ("channels", str(c)),
        ("height", str(h)),
        ("width", str(wd)),
        ("patch", em.scalar(node, "patch", lo=1)),
        ("embed_dim", str(d)),
        ("weights", patch_weights(em, node)),
        ("bias", em.const(node, 2, "int32")),
        ("multiplier", em.attr_array(node, "multiplier", d)),
        ("shift", em.attr_array(node, "shift", d)),
        ("output_zero_point", em.zp(node, "out_zp")),
        ("single_rounding", em.single_rounding(node)),
        ("prefix_tokens", str(em.tensor(node, 3).shape[0]) if len(node.inputs) > 3 else "0"),
        ("prefix", em.const(node, 3, "int8") if len(node.inputs) > 3 else "NULL"),
    ]


# hydra_patch_embed.c's HYDRA_PATCH_GATHER_MAX: a patch of at most this many bytes is gathered and run through
# hydra_linear_rows_s8, which reads its weights in linear's block layout.
PATCH_GATHER_MAX = 128


def patch_weights(em: Any, node: Node) -> str:
    """The weights as the kernel reads them: [D, C*p*p] in linear's block layout (ops/linear.py blocked_weights)
    where the patch has at most PATCH_GATHER_MAX bytes, else [D, C, p, p] as they are."""
    d, c, p, _ = em.tensor(node, 1).shape
    if c * p * p > PATCH_GATHER_MAX:
        return em.const(node, 1, "int8")
    return em.const(node, 1, "int8", layout=lambda w: blocked_weights(w.reshape(d, -1)), suffix="_blocked")


def macs(graph: Graph, node: Node) -> int:
    d, c, p, _ = graph.tensor(node.inputs[1]).shape
    prefix = graph.tensor(node.inputs[3]).shape[0] if len(node.inputs) > 3 else 0
    return (graph.tensor(node.outputs[0]).shape[0] - prefix) * d * c * p * p


OP = register(OpDef(
    "patch_embed", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=linear_quantize,
    c_source="hydra_patch_embed.c", c_function="hydra_patch_embed_s8", param_struct="hydra_patch_embed_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP),
    c_depends=("linear",),  # hydra_linear_rows_s8 for the gathered patches
))
