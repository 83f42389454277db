"""Tabulate an int8 TFLite graph's unary ops: LOGISTIC, TANH, RSQRT and int8 -> int8 QUANTIZE become lut.

Each output element of these ops is a function of its own int8 input alone (per-tensor parameters), so TFLM's
kernel run on the 256 possible inputs (reference/tfl_elementwise.py, which equals it bit for bit) is the whole op:
y = table[x + 128], a few instructions per element instead of gemmlowp's fixed-point logistic (about 200). The
table is computed in the node's rounding (ops.node_rounding). RSQRT is tabulated only when no int8 input lies
below its zero point (-128): TFLM fails the op on such an input, which a table cannot say. The lut node keeps the
tfl node's name, tensors and source, and names the op it replaced (attr imported_op, as passes/legalise_tfl.py's
nodes do), for the benchmark's per-operator table.

Here rather than in passes/: it runs the reference kernels (a later stage than the passes), as the quantiser
tabulates GELU. Pure: graph in, graph out (a copy).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops import node_rounding
from ..passes.legalise_tfl import IMPORTED_OP
from ..reference.tfl_elementwise import KERNELS as TFL_ELEMENTWISE

TABULATED = ("tfl_logistic", "tfl_tanh", "tfl_rsqrt", "tfl_quantize")


def _table_node(g: Graph, node: Node) -> Node | None:
    x, y = g.tensor(node.inputs[0]), g.tensor(node.outputs[0])
    if x.dtype != "int8" or y.dtype != "int8" or x.is_constant:
        return None
    if node.op == "tfl_rsqrt" and int(node.attrs["input_zero_point"]) != -128:
        return None
    every_input = np.arange(-128, 128, dtype=np.int8)
    rounding = node_rounding(node, g.meta.get("rounding", "double"))
    table = TFL_ELEMENTWISE[node.op](node.attrs, [every_input], rounding)
    name = g.unique_name(f"{node.name}_table")
    g.add_constant(name, np.asarray(table, np.int8).reshape(256))
    return Node(node.name, "lut", [node.inputs[0], name], list(node.outputs), {IMPORTED_OP: node.op}, node.source)


def tabulate_tfl(graph: Graph) -> Graph:
    """The graph with every tabulable unary tfl node replaced by a lut on its 256-entry table."""
    g = graph.copy()
    g.nodes = [(_table_node(g, n) if n.op in TABULATED else None) or n for n in g.nodes]
    used = {n for node in g.nodes for n in node.inputs} | set(g.inputs) | set(g.outputs)
    g.tensors = {k: t for k, t in g.tensors.items() if k in used or not t.is_constant}
    g.validate()
    return g
