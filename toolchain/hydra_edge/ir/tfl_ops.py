"""The tfl_* ops of an imported int8 .tflite: their shape rules (hydra_edge.ops.check_shapes reads them beside the native ops' OpDef.shape).

A tfl_* node is one TFLite builtin operator (IR op ``tfl_`` + its name in lower case); its inputs are the
operator's tensors in order, constants included, and its attrs TFLite Micro's prepared parameters
(frontend/tflite_types.py states the contract). Shapes are TFLite's own, batch dimension included.
Each rule recomputes the output shape from the input shapes and the attrs, so that check_shapes catches
a node whose attrs and tensors disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .graph import IRError, Node

Shape = tuple[int, ...]


def _size(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _strip(shape: tuple, rank: int) -> Shape:
    """A 6-D (or 4-D) attr shape without the leading 1s beyond `rank` dimensions."""
    return tuple(int(v) for v in shape[len(shape) - rank:])


def _fully_connected(node: Node, shapes: list[Shape]) -> Shape:
    a = node.attrs
    x, w = shapes[0], shapes[1]
    if tuple(w) != (a["output_depth"], a["accum_depth"]) or _size(x) != a["batches"] * a["accum_depth"]:
        raise IRError(f"{node.name}: fully_connected input {x} and filter {w} do not match its attrs")
    # keep_num_dims keeps the input's leading dimensions: compared by size (SIZE_ONLY)
    return (a["batches"], a["output_depth"])


def _nhwc_out(node: Node, shapes: list[Shape]) -> Shape:
    a = node.attrs
    if tuple(shapes[0]) != tuple(a["input_shape"]):
        raise IRError(f"{node.name}: input {shapes[0]} is not the prepared {a['input_shape']}")
    return tuple(int(v) for v in a["output_shape"])


def _pad(node: Node, shapes: list[Shape]) -> Shape:
    a = node.attrs
    rank = len(shapes[0])
    if _strip(a["input_shape"], rank) != tuple(shapes[0]):
        raise IRError(f"{node.name}: input {shapes[0]} is not the prepared {a['input_shape']}")
    return _strip(a["output_shape"], rank)


def _same_size(node: Node, shapes: list[Shape]) -> Shape:
    return shapes[0]


def _transpose(node: Node, shapes: list[Shape]) -> Shape:
    a = node.attrs
    rank = len(shapes[0])
    out = _strip(a["output_shape"], rank)
    if _size(out) != _size(shapes[0]):
        raise IRError(f"{node.name}: transpose output {out} has another size than input {shapes[0]}")
    return out


def _batch_matmul(node: Node, shapes: list[Shape]) -> Shape:
    a = node.attrs
    rank = max(len(shapes[0]), len(shapes[1]))
    full = (*a["batch_shape"], a["rows"], a["cols"])
    return tuple(int(v) for v in full[len(full) - rank:])


def _reduce(node: Node, shapes: list[Shape]) -> Shape:
    a = node.attrs
    rank = len(shapes[0])
    if _strip(a["input_shape"], rank) != tuple(shapes[0]):
        raise IRError(f"{node.name}: input {shapes[0]} is not the prepared {a['input_shape']}")
    red = _strip(a["reduce_shape"], rank)
    return tuple(1 if r > 1 else s for s, r in zip(shapes[0], red))  # keep_dims form; compared by size


def _broadcast(node: Node, shapes: list[Shape]) -> Shape:
    try:
        return tuple(int(v) for v in np.broadcast_shapes(tuple(shapes[0]), tuple(shapes[1])))
    except ValueError:
        raise IRError(f"{node.name}: operands {shapes[0]} and {shapes[1]} do not broadcast") from None


def _hydra_attention(node: Node, shapes: list[Shape]) -> Shape:
    """tfl_hydra_attention (passes/lift_tfl_hydra.py): q, k, v and the output are [tokens, depth] row-major."""
    a = node.attrs
    size = a["tokens"] * a["depth"]
    if len(shapes) != 3 or any(_size(s) != size for s in shapes):
        raise IRError(f"{node.name}: q, k, v {shapes} are not [{a['tokens']}, {a['depth']}]")
    return (a["tokens"], a["depth"])


def _hydra_kv_state(node: Node, shapes: list[Shape]) -> Shape:
    """tfl_hydra_kv_state(k, v) -> kv [depth] (passes/stream.py splits tfl_hydra_attention into it and apply)."""
    a = node.attrs
    if len(shapes) != 2 or any(_size(s) != a["tokens"] * a["depth"] for s in shapes):
        raise IRError(f"{node.name}: k, v {shapes} are not [{a['tokens']}, {a['depth']}]")
    return (a["depth"],)


def _hydra_apply(node: Node, shapes: list[Shape]) -> Shape:
    """tfl_hydra_apply(q, kv) -> out, q's shape."""
    a = node.attrs
    if len(shapes) != 2 or _size(shapes[0]) != a["tokens"] * a["depth"] or tuple(shapes[1]) != (a["depth"],):
        raise IRError(f"{node.name}: q, kv {shapes} are not [{a['tokens']}, {a['depth']}] and [{a['depth']}]")
    return shapes[0]


def _softmax_attention(node: Node, shapes: list[Shape]) -> Shape:
    """tfl_softmax_attention (passes/lift_tfl_softmax.py): q [query_rows, D], k and v [tokens, D] (D = heads x
    head_dim, row-major, leading 1s allowed); the output is q's rows."""
    a = node.attrs
    d = a["heads"] * a["head_dim"]
    if len(shapes) != 3 or _size(shapes[0]) != a["query_rows"] * d or \
            any(_size(s) != a["tokens"] * d for s in shapes[1:]):
        raise IRError(f"{node.name}: q, k, v {shapes} are not [{a['query_rows']}, {d}] and [{a['tokens']}, {d}]")
    return (a["query_rows"], d)


# Rules that compare sizes only: the output tensor's own shape is kept when its element count fits
# (RESHAPE, and the reductions whose keep_dims only changes the rank).
SIZE_ONLY = frozenset({"tfl_reshape", "tfl_mean", "tfl_sum", "tfl_fully_connected", "tfl_batch_matmul",
                       "tfl_hydra_attention", "tfl_hydra_apply", "tfl_softmax_attention"})

TFL_SHAPE_RULES: dict[str, Callable[[Node, list[Shape]], Shape]] = {
    "tfl_fully_connected": _fully_connected,
    "tfl_conv_2d": _nhwc_out,
    "tfl_depthwise_conv_2d": _nhwc_out,
    "tfl_average_pool_2d": _nhwc_out,
    "tfl_max_pool_2d": _nhwc_out,
    "tfl_pad": _pad,
    "tfl_reshape": _same_size,
    "tfl_transpose": _transpose,
    "tfl_batch_matmul": _batch_matmul,
    "tfl_mean": _reduce,
    "tfl_sum": _reduce,
    "tfl_hydra_attention": _hydra_attention,
    "tfl_hydra_kv_state": _hydra_kv_state,
    "tfl_hydra_apply": _hydra_apply,
    "tfl_softmax_attention": _softmax_attention,
    # the elementwise family (frontend/tflite_prepare_elementwise.py): binary ops broadcast, the rest keep the shape
    **{f"tfl_{op}": _broadcast for op in ("add", "sub", "mul", "squared_difference")},
    **{f"tfl_{op}": _same_size for op in ("rsqrt", "logistic", "tanh", "softmax", "l2_normalization", "quantize",
                                          "dequantize")},
}


def check_tfl_shape(node: Node, expected: Shape, actual: Shape) -> bool:
    """Whether a tfl node's output shape agrees with its rule (by element count for SIZE_ONLY ops)."""
    if node.op in SIZE_ONLY:
        return _size(tuple(expected)) == _size(tuple(actual))
    return tuple(expected) == tuple(actual)


# -- token loops (passes/stream.py): the tfl ops that run on a group of token rows -------------------------
#
# A tensor's token axis is its first dimension that is not 1 ([1, T, D], [1, T, 1], [1, T], [T, D] and
# [1, T, H, Dh] all put T first after TFLite's leading 1s), so a group of G tokens is G consecutive rows of
# numel / T bytes. An op runs on a group when each output row depends only on the same rows of its row
# inputs: an elementwise op whose other operand is broadcast along T, MEAN / SUM over axes after T, RESHAPE
# and the unary ops keeping T first. The loop gives it a copy of its params with the T dimension of each
# row operand's (6-D, right-aligned) shape, or its element count, set to the group's (TflRows.fields).

TFL_ROW_OPS = frozenset({"tfl_add", "tfl_sub", "tfl_mul", "tfl_squared_difference", "tfl_mean", "tfl_sum",
                         "tfl_reshape", "tfl_rsqrt", "tfl_logistic", "tfl_tanh", "tfl_hydra_kv_state",
                         "tfl_hydra_apply", "tfl_softmax_attention"})
# the inputs whose bytes a tfl op's output may take (the kernel accepts output == that input)
TFL_IN_PLACE = {"tfl_reshape": (0,), "tfl_hydra_attention": (0, 1, 2), "tfl_hydra_apply": (0,),
                "tfl_softmax_attention": (0,)}  # q[t, h] is read before out[t, h] is written
BINARY = ("tfl_add", "tfl_sub", "tfl_mul", "tfl_squared_difference")
UNARY = ("tfl_rsqrt", "tfl_logistic", "tfl_tanh")


def token_axis(shape: Shape) -> int | None:
    """The index of a shape's token axis (its first dimension that is not 1), or None when it has none."""
    return next((i for i, s in enumerate(shape) if int(s) != 1), None)


def token_rows(shape: Shape) -> int:
    """T of a row tensor: its token axis's size (1 when it has none)."""
    axis = token_axis(shape)
    return 1 if axis is None else int(shape[axis])


@dataclass(frozen=True)
class TflRows:
    """How a tfl node runs in a token loop: its row inputs, whether it reduces over the tokens, and the params
    fields a group sets: (C field, elements per row), set to rows * elements per row."""

    tokens: int
    row_inputs: tuple[int, ...]
    reduces: bool = False
    fields: tuple[tuple[str, int], ...] = ()


def _six(attr: tuple, shape: Shape, axis: int) -> int | None:
    """The index of `shape`'s axis in a 6-D right-aligned attr shape, when the attr agrees with the shape there."""
    idx = len(attr) - len(shape) + axis
    return idx if 0 <= idx < len(attr) and int(attr[idx]) == int(shape[axis]) else None


def tfl_rows(node: Node, ins: list[Shape | None], out: Shape) -> TflRows | None:
    """The token-loop facts of a tfl node with input shapes `ins` (None: an absent input) and output `out`; None
    when it cannot run on a group of rows."""
    a, op = node.attrs, node.op
    if op in ("tfl_hydra_kv_state", "tfl_hydra_apply"):
        t = int(a["tokens"])
        return TflRows(t, (0, 1) if op == "tfl_hydra_kv_state" else (0,), op == "tfl_hydra_kv_state")
    if op == "tfl_softmax_attention":  # query rows against k and v whole: the group's rows are its query_rows
        return TflRows(int(a["tokens"]), (0,), False, (("query_rows", 1),))
    ax = token_axis(out)
    if ax is None or int(out[ax]) < 2 or not ins or ins[0] is None:
        return None
    t = int(out[ax])
    if op in BINARY and len(ins) == 2 and all(s is not None for s in ins):
        fields, rows = [], []
        for k, name in enumerate(("input1_shape", "input2_shape")):
            s = tuple(ins[k])
            p = ax - (len(out) - len(s))
            if p >= 0 and int(s[p]) == t and token_axis(s) == p:
                idx = _six(a[name], s, p)
                if idx is None:
                    return None
                rows.append(k)
                fields.append((f"{name}[{idx}]", 1))
            elif p >= 0 and int(s[p]) != 1:
                return None
        idx = _six(a["output_shape"], out, ax)
        if not rows or idx is None:
            return None
        return TflRows(t, tuple(rows), False, (*fields, (f"output_shape[{idx}]", 1)))
    if token_axis(ins[0]) is None or token_rows(ins[0]) != t:
        return None
    if op in ("tfl_mean", "tfl_sum"):
        s = tuple(ins[0])
        idx = _six(a["input_shape"], s, token_axis(s))
        if idx is None or int(a["reduce_shape"][idx]) != 1:
            return None
        return TflRows(t, (0,), False, ((f"input_shape[{idx}]", 1),))
    if op == "tfl_reshape" or op in UNARY:
        return TflRows(t, (0,), False, (("size", _size(out) // t),))
    return None
