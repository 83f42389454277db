"""The one error type of the passes: a model the compiler cannot lower."""

from __future__ import annotations

from ..errors import HydraEdgeError

SUPPORTED_OPS = ("conv2d (patch embedding; any kernel, stride, padding, groups 1 or depthwise), batch_norm (eval), "
                 "relu/relu6/hardtanh/clamp, sigmoid, tanh, silu, hardswish, max_pool2d, avg_pool2d, "
                 "adaptive_avg_pool2d (1x1), linear, layer_norm, gelu, add, mean, Hydra attention")


class LoweringError(HydraEdgeError):
    """A one-line, user-facing message naming the op, the node and its source line."""


def qualified(op: str) -> str:
    """The aten-style name of an aten-level op: "softmax" -> "aten.softmax"."""
    return op if "." in op else f"aten.{op}"


def unsupported(node, hint: str = "") -> LoweringError:
    """The error for an op that hydra-edge does not lower."""
    hint = f" ({hint})" if hint else ""
    return LoweringError(
        f"unsupported op '{qualified(node.op)}' at node {node.source or node.name}{hint}; "
        f"hydra-edge lowers: {SUPPORTED_OPS}"
    )
