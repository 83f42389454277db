"""linear: x[T, K] or x[K] @ w[N, K]^T + b[N]; quantised: int8 x, w, int32 b (zp folded), per-channel requantise."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..optimize import for_size
from ..numerics.fixedpoint import quantize_multipliers, requantize, round_half_away
from .base import (
    I64, INT32_MAX, OpDef, QuantizationError, Shape, clamp_attrs, clamp_s8, float_clamp, node_rounding, numel,
    quantize_array, quantize_weights, register, unary_call,
)


def shape(node: Node, shapes: list[Shape]) -> Shape:
    x, w = shapes[0], shapes[1]
    if len(w) != 2 or x[-1] != w[1]:
        raise IRError(f"{node.name}: linear input {x} does not match weight {w}")
    return (*x[:-1], w[0])


def float_ref(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return float_clamp(node, x @ w.T + b)


def int_ref(node: Node, x: np.ndarray, w: np.ndarray, bias: np.ndarray, rounding: str) -> np.ndarray:
    acc = x.astype(I64) @ w.reshape(len(w), -1).astype(I64).T + bias.astype(I64)  # int32 by the compile-time bound
    y = requantize(acc, node.attrs["multiplier"].astype(I64), node.attrs["shift"].astype(I64), rounding)
    lo, hi = activation_range(node)
    return np.clip(clamp_s8(node.attrs["out_zp"] + y), lo, hi).astype(np.int8)


def activation_range(node: Node) -> tuple[int, int]:
    """The output clamp [act_min, act_max] (a fused ReLU / ReLU6 / hardtanh, or the fused RELU / RELU6 of a
    legalised FULLY_CONNECTED); int8's without."""
    return int(node.attrs.get("act_min", -128)), int(node.attrs.get("act_max", 127))


def quantize(q: Any, node: Node) -> None:
    """Also patch_embed's: per-channel weights, the input zero point folded into the int32 bias."""
    inputs, attrs = quantized_weights(q, node)
    attrs.update(clamp_attrs(q, node))  # a fused ReLU / ReLU6 / hardtanh
    if node.op == "patch_embed":
        attrs = {"patch": int(node.attrs["patch"]), **attrs}
        if len(node.inputs) == 4:  # prefix tokens (a class token): int8 rows in the output's own scale
            y = node.outputs[0]
            prefix = quantize_array(q.src.tensor(node.inputs[3]).data, q.scale(y), q.zp(y))
            inputs.append(q.const(node, "prefix", prefix))
    q.emit(node, inputs, **attrs)


def quantized_weights(q: Any, node: Node) -> tuple[list[str], dict[str, Any]]:
    """The int8 node's [x, weight, bias] and attrs (multiplier, shift, out_zp) of a linear-like node (linear,
    patch_embed, conv2d): weights per output channel (axis 0), bias int32 with the input zero point folded in
    (bias - zx * sum of the channel's weights), the int32 accumulator's bound checked."""
    x, w_name, b_name = node.inputs[:3]
    y = node.outputs[0]
    w = q.src.tensor(w_name).data
    b = q.src.tensor(b_name).data.astype(np.float64)
    wq, ws = quantize_weights(w)
    sx, zx = q.scale(x), q.zp(x)
    k = int(np.prod(w.shape[1:]))
    bias = round_half_away(b / (sx * ws)).astype(np.int64)
    bias_k = bias - zx * wq.reshape(len(wq), -1).astype(np.int64).sum(axis=1)
    worst = int(np.abs(bias_k).max()) + k * 128 * 127
    if worst > INT32_MAX:
        raise QuantizationError(
            f"node {node.name} ({node.op}): the int32 accumulator could reach {worst} (> 2^31-1); "
            "the bias is too large for the input and weight scales"
        )
    try:
        mult, shift = quantize_multipliers(sx * ws / q.scale(y))
    except ValueError as exc:
        raise QuantizationError(f"node {node.name} ({node.op}): {exc}") from None
    attrs = dict(multiplier=mult, shift=shift, out_zp=q.zp(y))
    return [x, q.const(node, "weight", wq), q.const(node, "bias", bias_k.astype(np.int32))], attrs


WEIGHT_BLOCK = 4  # output rows per block in the C kernel's weight layout (runtime_c/src/hydra_dot.c)


def blocked_weights(w: np.ndarray) -> np.ndarray:
    """[N, K] weights in the order hydra_linear.c reads them (a reordering, the same bytes): rows in blocks of
    4; in a block, for each group of 4 columns, the 4 rows' 4 bytes (16 bytes: one load feeds 4 outputs), then
    the K % 4 tail columns row by row; the N % 4 rows after the last block as they are."""
    n, k = w.shape
    full_n, full_k = n - n % WEIGHT_BLOCK, k - k % 4
    parts = []
    for n0 in range(0, full_n, WEIGHT_BLOCK):
        block = w[n0:n0 + WEIGHT_BLOCK]
        parts.append(block[:, :full_k].reshape(WEIGHT_BLOCK, -1, 4).transpose(1, 0, 2).reshape(-1))
        parts.append(block[:, full_k:].reshape(-1))
    parts.append(w[full_n:].reshape(-1))
    return np.concatenate(parts).astype(w.dtype)


def fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    x, w = em.tensor(node, 0), em.tensor(node, 1)
    n, k = w.shape
    rows = numel(x.shape[:-1])
    em.check_array_range(node, "multiplier", 0, INT32_MAX)
    em.check_array_range(node, "shift", -31, 30)
    return [
        ("rows", str(rows)),
        ("in_features", str(k)),
        ("out_features", str(n)),
        ("weights", em.const(node, 1, "int8", layout=blocked_weights, suffix="_blocked")),
        ("bias", em.const(node, 2, "int32")),
        ("multiplier", em.attr_array(node, "multiplier", n)),
        ("shift", em.attr_array(node, "shift", n)),
        ("output_zero_point", em.zp(node, "out_zp")),
        *activation_fields(em, node),
        ("single_rounding", em.single_rounding(node)),
        ("right_only", "1" if right_only(em.tensor(node, 2).data, node.attrs["multiplier"], node.attrs["shift"], k)
         else "0"),
    ]


def right_only(bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, k: int) -> bool:
    """hydra_channels_right_only (runtime_c/include/hydra_rt.h) at compile time: K <= 2^15, |bias| < 2^29, every
    multiplier >= 0 with a shift <= 0, so that the outputs may take hydra_requantize_right."""
    b, m, s = (np.asarray(a).astype(np.int64) for a in (bias, multiplier, shift))
    return bool(k <= 32768 and (np.abs(b) < 2**29).all() and (m >= 0).all() and (s <= 0).all())


def activation_fields(em: Any, node: Node) -> list[tuple[str, Any]]:
    lo, hi = activation_range(node)
    if not -128 <= lo <= hi <= 127:
        raise em.error(f"node {node.name} ({node.op}): activation range [{lo}, {hi}] is not inside int8")
    return [("activation_min", str(lo)), ("activation_max", str(hi))]


def macs(graph: Graph, node: Node) -> int:
    x, (n, k) = graph.tensor(node.inputs[0]).shape, graph.tensor(node.inputs[1]).shape
    return numel(x[:-1]) * k * n


def _one_row(graph: Graph) -> bool:
    """Every linear call takes one row (no token loop runs one on 2+ tokens a step, no whole-tensor one has 2+ rows)."""
    for node in graph.nodes:
        if node.op == "token_loop" and int(node.attrs["tokens_per_step"]) >= 2 and any(
                sub["op"] == "linear" for sub in node.attrs["body"]):
            return False
        if node.op == "linear" and numel(graph.tensor(node.inputs[0]).shape[:-1]) >= 2:
            return False
    return True


# ops whose kernels also call hydra_linear.c (their OpDef's c_depends): patch_embed runs small patches through it
LINEAR_CALLERS = ("linear", "patch_embed")


def _right_only_double(graph: Graph) -> bool:
    """Every node that may call linear's kernel (LINEAR_CALLERS, token loops' bodies included) rounds twice and takes
    right_only (fields' params; a patch_embed's K is its patch, C p p): its outputs all take hydra_linear.c's inline
    requantisation."""
    from .token_loop import flat_nodes  # a sibling op module: imported when called, not at registration

    default = graph.meta.get("rounding", "double")
    for node in flat_nodes(graph):
        if node.op not in LINEAR_CALLERS:
            continue
        k = numel(graph.tensor(node.inputs[1]).shape[1:])
        bias = graph.tensor(node.inputs[2]).data
        if node_rounding(node, default) != "double" or bias is None or not right_only(
                bias, node.attrs["multiplier"], node.attrs["shift"], k):
            return False
    return True


def c_defines(graph: Graph) -> list[str]:
    """Code hydra_linear.c and hydra_dot.c may leave out (flash; the bits never depend on it):
    HYDRA_LINEAR_ONE_ROW where every linear call takes one row, or the build is for size (optimize.py): the Cortex-M's
    token pairs (about 1.5 KB); HYDRA_DOT4_NO_EVEN_BLOCKS in a build for size: the one-token loop's even-block
    assembly (~260 B); HYDRA_LINEAR_RIGHT_ONLY where every node that may call the kernel (LINEAR_CALLERS) rounds twice
    and takes right_only: the out-of-line general requantisation (a call with other params fails with
    HYDRA_ERR_ARG)."""
    size = for_size(graph)
    return (["HYDRA_LINEAR_ONE_ROW"] if size or _one_row(graph) else []) + (
        ["HYDRA_DOT4_NO_EVEN_BLOCKS"] if size else []) + (
        ["HYDRA_LINEAR_RIGHT_ONLY"] if _right_only_double(graph) else [])


OP = register(OpDef(
    "linear", shape, macs, float_ref=float_ref, int_ref=int_ref, quantize=quantize,
    c_source="hydra_linear.c", c_function="hydra_linear_s8", param_struct="hydra_linear_params",
    c_defines=c_defines,
    fields=fields, emit=lambda em, node: unary_call(em, node, OP), row_local=True,
    row_inputs=(0,), rows_field="rows",
    loop_functions=("hydra_linear_s8_check", "hydra_linear_rows_s8"),
))
