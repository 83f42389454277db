"""The pass pipeline from an aten-level graph (a frontend's output) to the lowered IR."""

from __future__ import annotations

from ..ir.graph import Graph
from .canonicalize import canonicalize
from .lift_hydra import lift_hydra
from .lift_softmax import lift_softmax
from .lower import lower
from .split_projections import split_projections
from .support import check_supported

PASSES = (canonicalize, split_projections, lift_hydra, lift_softmax, lower)


def lower_to_ir(graph: Graph) -> Graph:
    """canonicalize -> split_projections -> lift_hydra -> lift_softmax -> lower: a float graph of ir/ops.py ops, batch-free."""
    check_supported(graph)  # every unsupported op in one error, before any work
    for p in PASSES:
        graph = p(graph)
    return graph
