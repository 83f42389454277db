"""Legalise an int8 TFLite graph: tfl_* nodes whose arithmetic a native op computes to the bit become that op.

An imported .tflite arrives as tfl_* nodes with TFLM's prepared attrs (frontend/tflite.py). Where a native op
of the registry (ops/) forms the same integers, the node is rewritten to it, so that it runs the native,
optimised kernel (SIMD dot products, requantisation inline, in-place elementwise ops) with TFLM's bits:

- tfl_conv_2d 1x1, stride 1, no padding, groups 1 -> linear, as the FULLY_CONNECTED of its [N*H*W, C] pixels.
- tfl_fully_connected -> linear. TFLM's sum of (w + filter_offset) * (x + input_offset) plus bias is, with
  filter_offset 0, exactly bias_k + sum x * w with bias_k = bias + input_offset * sum_k w (docs/numerics.md
  "linear": the input zero point folded into the bias). A per-tensor multiplier is repeated per channel; the
  fused RELU / RELU6 is linear's activation clamp.
- tfl_add -> add. TFLM's int8 ADD (left shift 20, two input multipliers and an output one, each
  MultiplyByQuantizedMultiplier) is the native add's formula; its prepared multipliers are copied over.
- tfl_mean over the tokens of [T, D] (batch 1) -> mean_pool: QuantizedMeanOrSum's (sum - zp * T), requantised
  by the multiplier that already holds 1 / T, is mean_pool's requant(sum (x - zx)).
(LOGISTIC, TANH, RSQRT and QUANTIZE become tables in quant/tabulate_tfl.py, which runs their reference kernels.)

A mapped node keeps the tfl node's rounding (ops.node_rounding: LiteRT's single-rounding FULLY_CONNECTED, or
the graph's) as its own "rounding" attr, and TFLite's tensors, so shapes differ from the native rules only by
TFLite's leading batch 1 (ops.check_shapes compares up to leading 1s, the same bytes in the same order). It is
left as it is when it cannot map:

- FULLY_CONNECTED with a filter zero point (filter_offset != 0: a term in sum x that no bias can fold), an input
  whose last dimension is not accum_depth (TFLite's implicit flatten), accum_depth above 33025 (TFLM's int32 sum
  can overflow) or a folded bias for which |bias_k| + K * 2^14 does not fit int32 (the native bound);
- ADD that broadcasts or has a fused activation (the native add has neither);
- MEAN over anything but the tokens of a [1, T, D] input (e.g. a CNN's spatial mean over the inner axis).

Ops with no native twin keep their own kernels: SUB (TFLM rounds scaled1 - scaled2, and gemmlowp's rounding is
not odd-symmetric, so it is not an add of a negated operand), MUL and SQUARED_DIFFERENCE (no native multiply),
the other convolutions, pools, PAD, TRANSPOSE, RESHAPE, BATCH_MATMUL, SUM, the gemmlowp SOFTMAX, L2_NORMALIZATION and the lifted tfl_hydra_attention and tfl_softmax_attention.

Pure: graph in, graph out (a copy; the input graph is not touched).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir.graph import Graph, Node
from ..ops import node_rounding

INT32_MAX = 2**31 - 1
INT8_RANGE = (-128, 127)
TFL_FC_MAX_DEPTH = 33025  # runtime_c/src/tfl_fully_connected.c: beyond it TFLM's int32 sum can overflow
MEAN_POOL_MAX_TOKENS = INT32_MAX // 255  # runtime_c/src/hydra_mean_pool.c
IMPORTED_OP = "imported_op"  # attr of a legalised node: the tfl_* op it replaced


def _rounding(g: Graph, node: Node) -> str:
    """The tfl node's rounding (its attr, else the graph's: TFLM's double for an imported .tflite), which the
    native node keeps as its own attr (LiteRT's single-rounding FULLY_CONNECTED is a node's "single")."""
    return node_rounding(node, g.meta.get("rounding", "double"))


def _linear(g: Graph, node: Node) -> Node | None:
    a = node.attrs
    if len(node.inputs) != 3 or len(node.outputs) != 1 or a["filter_offset"] != 0:
        return None
    x, w, b = (g.tensor(n) for n in node.inputs)
    k, n = int(a["accum_depth"]), int(a["output_depth"])
    if x.is_constant or not w.is_constant or not b.is_constant or x.shape[-1] != k or k > TFL_FC_MAX_DEPTH:
        return None
    weights = np.asarray(w.data).astype(np.int64).reshape(n, k)
    bias_k = np.asarray(b.data).astype(np.int64).reshape(n) + int(a["input_offset"]) * weights.sum(axis=1)
    if int(np.abs(bias_k).max()) + k * 2**14 > INT32_MAX:  # linear's bound: the int32 accumulator never saturates
        return None
    channels = n if a["per_channel"] else 1
    mult = np.broadcast_to(np.asarray(a["output_multiplier"]).reshape(-1)[:channels], (n,))
    shift = np.broadcast_to(np.asarray(a["output_shift"]).reshape(-1)[:channels], (n,))
    bias = g.add_constant(g.unique_name(f"{node.name}_bias_folded"), bias_k.astype(np.int32))
    attrs = {
        "multiplier": mult.astype(np.int32), "shift": shift.astype(np.int32), "out_zp": int(a["output_offset"]),
        "act_min": int(a["activation_min"]), "act_max": int(a["activation_max"]),
        "rounding": _rounding(g, node),
    }
    return Node(node.name, "linear", [node.inputs[0], node.inputs[1], bias.name], list(node.outputs), attrs,
                node.source)


def _pointwise_conv(g: Graph, node: Node) -> Node | None:
    """A 1x1 CONV_2D of stride 1 without padding (groups 1) is FULLY_CONNECTED on the [N*H*W, C] pixels: TFLM's
    per-channel sum of w * (x + input_offset) plus bias, MBQM per channel, output offset, clamp."""
    a = node.attrs
    o, fh, fw, i = (int(v) for v in a["filter_shape"])
    if (fh, fw) != (1, 1) or i != int(a["input_shape"][3]) or len(node.inputs) != 3 or not node.inputs[2]:
        return None
    if (a["stride_height"], a["stride_width"], a["padding_height"], a["padding_width"]) != (1, 1, 0, 0):
        return None
    fc = {"filter_offset": 0, "accum_depth": i, "output_depth": o, "input_offset": a["input_offset"],
          "output_offset": a["output_offset"], "output_multiplier": a["output_multiplier"],
          "output_shift": a["output_shift"], "per_channel": True, "activation_min": a["activation_min"],
          "activation_max": a["activation_max"], **({"rounding": a["rounding"]} if "rounding" in a else {})}
    w = g.tensor(node.inputs[1])
    if not w.is_constant:
        return None
    weights = g.add_constant(g.unique_name(f"{node.name}_weights"), np.asarray(w.data).reshape(o, i))
    return _linear(g, Node(node.name, "tfl_fully_connected", [node.inputs[0], weights.name, node.inputs[2]],
                           list(node.outputs), fc, node.source))


def _add(g: Graph, node: Node) -> Node | None:
    a = node.attrs
    same = tuple(a["input1_shape"]) == tuple(a["input2_shape"]) == tuple(a["output_shape"])
    if not same or (a["output_activation_min"], a["output_activation_max"]) != INT8_RANGE:
        return None
    attrs = {
        "left_shift": int(a["left_shift"]),
        "za": -int(a["input1_offset"]), "ma": int(a["input1_multiplier"]), "sa": int(a["input1_shift"]),
        "zb": -int(a["input2_offset"]), "mb": int(a["input2_multiplier"]), "sb": int(a["input2_shift"]),
        "my": int(a["output_multiplier"]), "sy": int(a["output_shift"]), "out_zp": int(a["output_offset"]),
        "rounding": _rounding(g, node),
    }
    return Node(node.name, "add", list(node.inputs[:2]), list(node.outputs), attrs, node.source)


def _mean_pool(g: Graph, node: Node) -> Node | None:
    a = node.attrs
    *lead, tokens, dim = (int(v) for v in a["input_shape"])
    over_tokens = tuple(int(v) for v in a["reduce_shape"]) == (1,) * len(lead) + (tokens, 1)
    if any(v != 1 for v in lead) or not over_tokens or int(a["num_elements"]) != tokens:
        return None
    if g.tensor(node.outputs[0]).numel != dim or tokens > MEAN_POOL_MAX_TOKENS or not -31 <= a["output_shift"] <= 30:
        return None
    attrs = {
        "in_zp": int(a["input_zero_point"]), "multiplier": int(a["output_multiplier"]),
        "shift": int(a["output_shift"]), "out_zp": int(a["output_zero_point"]), "rounding": _rounding(g, node),
    }
    return Node(node.name, "mean_pool", [node.inputs[0]], list(node.outputs), attrs, node.source)


RULES: dict[str, Callable[[Graph, Node], Node | None]] = {
    "tfl_fully_connected": _linear,
    "tfl_conv_2d": _pointwise_conv,
    "tfl_add": _add,
    "tfl_mean": _mean_pool,
}


def legalise_tfl(graph: Graph) -> Graph:
    """The graph with every tfl_* node that has a native twin of the same bits rewritten to it (see above)."""
    g = graph.copy()
    nodes = []
    for node in g.nodes:
        rule = RULES.get(node.op)
        native = rule(g, node) if rule is not None else None
        if native is not None:
            native.attrs[IMPORTED_OP] = node.op  # the TFLite operator it runs (bench's per-op table)
        nodes.append(native or node)
    g.nodes = nodes
    used = {n for node in g.nodes for n in node.inputs} | set(g.inputs) | set(g.outputs)
    g.tensors = {k: t for k, t in g.tensors.items() if k in used or not t.is_constant}  # a replaced bias, an axis
    g.validate()
    return g
