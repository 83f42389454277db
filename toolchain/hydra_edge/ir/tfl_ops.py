"""The tfl_* ops of an imported int8 .tflite: their shape rules (hydra_edge.ops.check_shapes reads them beside the native ops' OpDef.shape).

A tfl_* node is one TFLite builtin operator (IR op ``tfl_`` + its name in lower case); its inputs are the
operator's tensors in order, constants included, and its attrs TFLite Micro's prepared parameters
(frontend/tflite_types.py states the contract). Shapes are TFLite's own, batch dimension included.
Each rule recomputes the output shape from the input shapes and the attrs, so that check_shapes catches
a node whose attrs and tensors disagree.
"""

from __future__ import annotations

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


# Rules that compare sizes only: the output tensor's own shape is kept when its element count fits
# (RESHAPE, and the reductions whose keep_dims only changes the rank).
SIZE_ONLY = frozenset({"tfl_reshape", "tfl_mean", "tfl_sum", "tfl_fully_connected", "tfl_batch_matmul",
                       "tfl_hydra_attention"})

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
