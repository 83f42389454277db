"""conv2d: a 2-d convolution on a channels-last feature map; quantised exactly as linear, window by window.

Layout (docs/architecture.md, "Feature maps"): a feature map of H x W pixels and C channels is the tensor
[H*W, C], row y*W + x holding pixel (y, x): the memory of TFLite Micro's [H, W, C], and a token matrix, so
mean_pool (global average pooling), add (residuals), lut (activations) and linear (1x1 work, heads) apply to
it unchanged and a conv tokenizer's output is the token matrix. The windowed ops (conv2d, max_pool2d,
avg_pool2d) carry the spatial size in attrs: in_hw [H, W]. The graph's input stays the image as torch takes
it, [C, H, W]: a conv2d whose input has rank 3 reads it channels first (the C kernel's chw_input), so that no
layout conversion runs.

    inputs   x [H*W, Cin] (or [Cin, H, W]), weight [Cout, kh, kw, Cin / groups], bias [Cout]
    attrs    in_hw [H, W], stride [sh, sw], padding [top, left, bottom, right], groups (1, or Cin == Cout:
             depthwise, weight [C, kh, kw, 1]); float graphs: clamp_min / clamp_max (a fused ReLU, ReLU6,
             hardtanh); int8 graphs: multiplier [Cout], shift [Cout], in_zp, out_zp, act_min, act_max
    output   [OH*OW, Cout], OH = (H + top + bottom - kh) / sh + 1 (floor), likewise OW

Padding reads the input zero point (a real 0), so the bias keeps linear's folded zero point for every window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..numerics.fixedpoint import requantize
from .base import I64, INT32_MAX, OpDef, Shape, clamp_attrs, clamp_s8, float_clamp, numel, register, unary_call
from .linear import activation_fields, activation_range, quantized_weights

MAX_DIM = 32767  # every spatial size, stride, kernel and padding (the C kernel's int32 index arithmetic)


def window_attrs(node: Node) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """in_hw, stride and padding [top, left, bottom, right] of a windowed op (conv2d, max_pool2d, avg_pool2d)."""
    h, w = (int(v) for v in node.attrs["in_hw"])
    sh, sw = (int(v) for v in node.attrs.get("stride", (1, 1)))
    pad = tuple(int(v) for v in node.attrs.get("padding", (0, 0, 0, 0)))
    if len(pad) != 4:
        raise IRError(f"{node.name}: padding {pad} is not [top, left, bottom, right]")
    if min(h, w, sh, sw) < 1 or min(pad) < 0 or max(h, w, sh, sw, *pad) > MAX_DIM:
        raise IRError(f"{node.name}: in_hw {[h, w]}, stride {[sh, sw]} or padding {list(pad)} out of range")
    return (h, w), (sh, sw), pad  # type: ignore[return-value]


def out_hw(node: Node, kernel: tuple[int, int]) -> tuple[int, int]:
    (h, w), (sh, sw), (pt, pl, pb, pr) = window_attrs(node)
    kh, kw = kernel
    if not (1 <= kh <= MAX_DIM and 1 <= kw <= MAX_DIM) or h + pt + pb < kh or w + pl + pr < kw:
        raise IRError(f"{node.name}: a {kh}x{kw} window does not fit the padded {h}x{w} input")
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def input_hwc(node: Node, shape: Shape) -> tuple[int, int, int, bool]:
    """(H, W, C, channels first) of a windowed op's input: [H*W, C], or the image [C, H, W]."""
    (h, w), _, _ = window_attrs(node)
    if len(shape) == 3:
        c, hh, ww = shape
        if (hh, ww) != (h, w):
            raise IRError(f"{node.name}: input {shape} is not [C, {h}, {w}] (in_hw)")
        return h, w, c, True
    if len(shape) != 2 or shape[0] != h * w:
        raise IRError(f"{node.name}: input {shape} is not a [{h}*{w}, C] feature map (in_hw {[h, w]})")
    return h, w, shape[1], False


def windows(node: Node, x: np.ndarray, kernel: tuple[int, int], pad_value) -> np.ndarray:
    """x as [OH*OW, kh, kw, C]: each output pixel's window, padding filled with pad_value."""
    h, w, c, chw = input_hwc(node, x.shape)
    img = x.transpose(1, 2, 0) if chw else x.reshape(h, w, c)
    _, (sh, sw), (pt, pl, pb, pr) = window_attrs(node)
    oh, ow = out_hw(node, kernel)
    padded = np.pad(img, ((pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=(0, 1))  # [H', W', C, kh, kw]
    win = win[: (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    return win.transpose(0, 1, 3, 4, 2).reshape(oh * ow, kernel[0], kernel[1], c)


def _kernel(w_shape: Shape) -> tuple[int, int]:
    return int(w_shape[1]), int(w_shape[2])


def depthwise(node: Node) -> bool:
    return int(node.attrs.get("groups", 1)) != 1


def shape(node: Node, shapes: list[Shape]) -> Shape:
    ws = shapes[1]
    if len(ws) != 4:
        raise IRError(f"{node.name}: conv2d weight {ws} is not [Cout, kh, kw, Cin / groups]")
    _, _, c, _ = input_hwc(node, shapes[0])
    groups = int(node.attrs.get("groups", 1))
    if groups == 1 and ws[3] != c:
        raise IRError(f"{node.name}: conv2d weight {ws} does not match the input's {c} channels")
    if groups != 1 and (groups != c or ws[0] != c or ws[3] != 1):
        raise IRError(f"{node.name}: groups {groups} with weight {ws} and {c} input channels is not a depthwise "
                      "convolution (groups == in channels == out channels)")
    if len(shapes) > 2 and tuple(shapes[2]) != (ws[0],):
        raise IRError(f"{node.name}: conv2d bias {shapes[2]} is not [{ws[0]}]")
    oh, ow = out_hw(node, _kernel(ws))
    return (oh * ow, ws[0])


def _accumulate(node: Node, win: np.ndarray, w: np.ndarray) -> np.ndarray:
    if depthwise(node):
        return np.einsum("tijc,cij->tc", win, w[..., 0])
    return win.reshape(len(win), -1) @ w.reshape(len(w), -1).T


def float_ref(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    win = windows(node, np.asarray(x, np.float64), _kernel(w.shape), 0.0)
    return float_clamp(node, _accumulate(node, win, np.asarray(w, np.float64)) + b)


def int_ref(node: Node, x: np.ndarray, w: np.ndarray, bias: np.ndarray, rounding: str) -> np.ndarray:
    a = node.attrs
    win = windows(node, x.astype(I64), _kernel(w.shape), int(a["in_zp"]))
    acc = _accumulate(node, win, w.astype(I64)) + bias.astype(I64)  # int32 by the compile-time bound
    y = requantize(acc, a["multiplier"].astype(I64), a["shift"].astype(I64), rounding)
    lo, hi = activation_range(node)
    return np.clip(clamp_s8(a["out_zp"] + y), lo, hi).astype(np.int8)


def quantize(q: Any, node: Node) -> None:
    inputs, attrs = quantized_weights(q, node)
    structure = {k: node.attrs[k] for k in ("in_hw", "stride", "padding", "groups") if k in node.attrs}
    q.emit(node, inputs, **structure, **attrs, in_zp=q.zp(node.inputs[0]), **clamp_attrs(q, node))


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    x, w = em.tensor(node, 0), em.tensor(node, 1)
    h, wd, c, chw = input_hwc(node, x.shape)
    cout, kh, kw, _ = w.shape
    oh, ow = out_hw(node, (kh, kw))
    _, (sh, sw), (pt, pl, _, _) = window_attrs(node)
    em.check_array_range(node, "multiplier", 0, INT32_MAX)
    em.check_array_range(node, "shift", -31, 30)
    return [
        ("in_height", str(h)), ("in_width", str(wd)), ("in_channels", str(c)),
        ("chw_input", "1" if chw else "0"),
        ("out_height", str(oh)), ("out_width", str(ow)), ("out_channels", str(cout)),
        ("kernel_h", str(kh)), ("kernel_w", str(kw)),
        ("stride_h", str(sh)), ("stride_w", str(sw)),
        ("pad_top", str(pt)), ("pad_left", str(pl)),
        ("depthwise", "1" if depthwise(node) else "0"),
        ("weights", em.const(node, 1, "int8")),
        ("bias", em.const(node, 2, "int32")),
        ("multiplier", em.attr_array(node, "multiplier", cout)),
        ("shift", em.attr_array(node, "shift", cout)),
        ("input_zero_point", em.zp(node, "in_zp")),
        ("output_zero_point", em.zp(node, "out_zp")),
        *activation_fields(em, node),
        ("single_rounding", em.single_rounding(node)),
    ]


def macs(graph: Graph, node: Node) -> int:
    w = graph.tensor(node.inputs[1]).shape
    return graph.tensor(node.outputs[0]).shape[0] * numel(w)


OP = register(OpDef(
    "conv2d", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_conv2d.c", c_function="hydra_conv2d_s8", param_struct="hydra_conv2d_params",
    fields=fields, emit=lambda em, node: unary_call(em, node, OP),
))
