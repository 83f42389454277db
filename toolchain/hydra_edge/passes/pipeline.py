"""The pass pipeline from an aten-level graph (a frontend's output) to the lowered IR."""

from __future__ import annotations

from ..ir.graph import Graph
from .canonicalize import canonicalize
from .lift_hydra import lift_hydra
from .lower import lower

PASSES = (canonicalize, lift_hydra, lower)


def lower_to_ir(graph: Graph) -> Graph:
    """canonicalize -> lift_hydra -> lower: a float graph of ir/ops.py ops, batch-free."""
    for p in PASSES:
        graph = p(graph)
    return graph
