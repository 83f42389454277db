"""The quantisation pass: float IR + calibrated ranges -> int8 IR.

Every constant the kernels need is computed here, once, in float64, following
docs/numerics.md; the reference interpreter and the C runtime then do integer
arithmetic only. The pass is pure: a new graph comes out.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, QuantParams, Tensor
from ..ops import op_def
from ..ops.base import QuantizationError, qparams_for_range, quantize_array  # noqa: F401  (quantize_array: this stage's API)
from .calibrate import Range


def activation_qparams(r: Range) -> QuantParams:
    return qparams_for_range(r.lo, r.hi)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (scale * (q.astype(np.float64) - zero_point)).astype(np.float32)


class _Quantizer:
    """What an op's OpDef.quantize(q, node) sees: src, out, qp, scale, zp, share_quant, const, emit."""

    def __init__(self, graph: Graph, ranges: dict[str, Range], rounding: str) -> None:
        self.src = graph
        self.qp = {name: activation_qparams(r) for name, r in ranges.items()}
        self.out = Graph(inputs=list(graph.inputs), outputs=list(graph.outputs), meta={**graph.meta, "rounding": rounding})
        for t in graph.activations():
            self.out.add_tensor(Tensor(t.name, t.shape, "int8", self.qp[t.name]))

    def scale(self, name: str) -> float:
        return self.qp[name].scalar_scale

    def zp(self, name: str) -> int:
        return self.qp[name].scalar_zero_point

    def share_quant(self, name: str, like: str) -> None:
        """Tensor `name` holds values of `like` unchanged (a copy): it takes like's scale and zero point.
        Called by the producer's quantize, before any reader of `name` is quantised."""
        self.qp[name] = self.qp[like]
        self.out.tensor(name).quant = self.qp[like]

    def const(self, node: Node, role: str, data: np.ndarray) -> str:
        name = self.out.unique_name(f"{node.name}.{role}")
        self.out.add_constant(name, data)
        return name

    def emit(self, node: Node, inputs: list[str], op: str | None = None, **attrs) -> None:
        self.out.add_node(Node(node.name, op or node.op, inputs, list(node.outputs), attrs, node.source))


def quantize_graph(graph: Graph, ranges: dict[str, Range], rounding: str = "double") -> Graph:
    """Return the int8 graph; `ranges` come from calibrate()."""
    if rounding not in ("double", "single"):
        raise QuantizationError(f"rounding must be 'double' or 'single', not {rounding!r}")
    q = _Quantizer(graph, ranges, rounding)
    for node in graph.nodes:
        d = op_def(node.op)
        if d is None or d.quantize is None:
            raise KeyError(node.op)
        d.quantize(q, node)
    q.out.validate()
    return q.out
