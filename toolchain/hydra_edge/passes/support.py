"""Every op no pass can handle, in one error, before any pass runs.

check_supported(graph) walks an aten-level graph (a frontend's output) and
collects each node that depends on the model's input and whose op

- canonicalize does not drop (a no-op spelling, an effect-only check),
- no lifting pass may consume (Hydra attention, softmax attention), and
- lowering has no handler for,

and raises ONE LoweringError listing them grouped by op, each as "#index where at
file:line" (errors.unsupported_summary, the format every frontend uses), index
being the node's position in the graph. The known ops are the sets each
pass module exports beside its code, so a pass that learns an op needs no
edit here. Nodes computed from constants alone (a transposed weight, a mask
made by ones().tril()) are compile-time values: canonicalize folds them, or
the pass of the op that reads them says what it cannot take. This is a check
by op name: a known op used in a way its pass does not cover (a conv with
padding, attention with a mask) is still refused by that pass, with the
details.
"""

from __future__ import annotations

from ..errors import UnsupportedNode, display_path, unsupported_summary
from ..ir.graph import Graph, Node
from .canonicalize import CHECK_PREFIXES, NOOP_OPS
from .errors import SUPPORTED_OPS, LoweringError, qualified
from .lift_hydra import HYDRA_OPS
from .lift_softmax import LAYOUT_OPS, MATMUL_OPS, SCALAR_OPS, SDPA_OPS, SOFTMAX_OPS
from .lower import LOWERED_OPS

# What lift_softmax may consume: its own sets, plus torch's "safe softmax" wrapper, where(row all -inf,
# 0, softmax) with its mask computed by eq/logical_not/any (core-aten decompositions), or where(isnan(softmax),
# 0, softmax) (the dynamo ONNX exporter's): the lift drops it.
SAFE_SOFTMAX_OPS = {"where", "full_like", "zeros_like", "eq", "logical_not", "any", "all", "isinf", "isneginf", "isnan"}
SOFTMAX_LIFT_OPS = SOFTMAX_OPS | MATMUL_OPS | SDPA_OPS | LAYOUT_OPS | SCALAR_OPS | SAFE_SOFTMAX_OPS

KNOWN_OPS = NOOP_OPS | HYDRA_OPS | SOFTMAX_LIFT_OPS | LOWERED_OPS


def unsupported_nodes(graph: Graph) -> list[tuple[int, Node]]:
    """(index, node) of every node whose op no pass handles, in graph order."""
    constant = {t.name for t in graph.constants()}  # tensors that do not depend on the input
    found = []
    for i, node in enumerate(graph.nodes):
        if all(name in constant for name in node.inputs):
            constant.update(node.outputs)  # a compile-time value: its reader's pass judges it
            continue
        if node.op in KNOWN_OPS or node.op.startswith(CHECK_PREFIXES):
            continue
        found.append((i, node))
    return found


def check_supported(graph: Graph) -> None:
    """Raise one LoweringError listing every unsupported node of `graph`; return if there is none."""
    found = unsupported_nodes(graph)
    if not found:
        return
    items = [UnsupportedNode(qualified(node.op), i, *_where_and_line(node)) for i, node in found]
    source = graph.meta.get("source_file")
    prefix = f"{display_path(str(source))}: " if source else ""
    raise LoweringError(f"{prefix}{unsupported_summary(items)}; hydra-edge lowers: {SUPPORTED_OPS}")


def _where_and_line(node: Node) -> tuple[str, str]:
    """A frontend's Node.source "module: name (file.py:12)" split into ("module: name", "file.py:12")."""
    text = node.source or node.name
    if text.endswith(")") and " (" in text:
        where, _, line = text[:-1].rpartition(" (")
        return where, line
    return text, ""
