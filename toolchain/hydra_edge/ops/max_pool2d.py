"""max_pool2d: the maximum over each kh x kw window of a channels-last feature map [H*W, C] (ops/conv2d.py
gives the layout and the window attrs); padding never wins (it is not read). The output keeps the input's
scale and zero point, so the int8 maximum is the float one exactly.

    attrs    in_hw [H, W], kernel [kh, kw], stride [sh, sw], padding [top, left, bottom, right] (each < kernel)
    output   [OH*OW, C]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from .base import OpDef, Shape, numel, register, unary_call
from .conv2d import input_hwc, out_hw, window_attrs, windows


def kernel(node: Node) -> tuple[int, int]:
    kh, kw = (int(v) for v in node.attrs["kernel"])
    return kh, kw


def shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c, chw = input_hwc(node, shapes[0])
    if chw:
        raise IRError(f"{node.name}: {node.op} reads a [H*W, C] feature map, not the [C, H, W] image")
    kh, kw = kernel(node)
    _, _, (pt, pl, pb, pr) = window_attrs(node)
    if max(pt, pb) >= kh or max(pl, pr) >= kw:  # torch: padding <= kernel / 2; every window holds a pixel
        raise IRError(f"{node.name}: padding {[pt, pl, pb, pr]} is not smaller than the kernel {[kh, kw]}")
    oh, ow = out_hw(node, (kh, kw))
    return (oh * ow, c)


def float_ref(node: Node, x: np.ndarray) -> np.ndarray:
    return windows(node, np.asarray(x, np.float64), kernel(node), -np.inf).max(axis=(1, 2))


def int_ref(node: Node, x: np.ndarray, rounding: str) -> np.ndarray:
    return windows(node, x.astype(np.int16), kernel(node), -129).max(axis=(1, 2)).astype(np.int8)


def quantize(q: Any, node: Node) -> None:
    """Both poolings': the output keeps the input's scale and zero point."""
    x, y = node.inputs[0], node.outputs[0]
    q.share_quant(y, x)
    q.emit(node, [x], **{k: node.attrs[k] for k in ("in_hw", "kernel", "stride", "padding")})


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    """Both poolings' params: one hydra_pool2d_window."""
    h, w, c, _ = input_hwc(node, em.tensor(node, 0).shape)
    kh, kw = kernel(node)
    oh, ow = out_hw(node, (kh, kw))
    _, (sh, sw), (pt, pl, _, _) = window_attrs(node)
    return [("window", [
        ("in_height", str(h)), ("in_width", str(w)), ("channels", str(c)),
        ("out_height", str(oh)), ("out_width", str(ow)),
        ("kernel_h", str(kh)), ("kernel_w", str(kw)),
        ("stride_h", str(sh)), ("stride_w", str(sw)),
        ("pad_top", str(pt)), ("pad_left", str(pl)),
    ])]


def macs(graph: Graph, node: Node) -> int:
    return numel(graph.tensor(node.outputs[0]).shape) * numel(kernel(node))


OP = register(OpDef(
    "max_pool2d", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_max_pool2d.c", c_function="hydra_max_pool2d_s8", param_struct="hydra_max_pool2d_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP),
))
