"""Float interpreter of the lowered IR, in numpy (float64).

It gives the float semantics that quantisation approximates, and it is how
calibration observes the range of every tensor (`observe`), so that ranges
are collected on exactly the tensors the integer graph will have.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.graph import Graph
from ..ops import op_def

Observer = Callable[[str, np.ndarray], None]


def _float_ref(op: str) -> Callable[..., np.ndarray]:
    d = op_def(op)
    if d is None or d.float_ref is None:
        raise KeyError(op)
    return d.float_ref


def run_float(graph: Graph, x: np.ndarray, observe: Observer | None = None) -> list[np.ndarray]:
    """Run one input (no batch dimension); `observe(name, value)` sees every activation."""
    values: dict[str, np.ndarray] = {n: t.data.astype(np.float64) for n, t in graph.tensors.items() if t.is_constant}
    values[graph.inputs[0]] = np.asarray(x, np.float64).reshape(graph.tensor(graph.inputs[0]).shape)
    if observe:
        observe(graph.inputs[0], values[graph.inputs[0]])
    for node in graph.nodes:
        out = _float_ref(node.op)(node, *(values[n] for n in node.inputs))
        values[node.outputs[0]] = out
        if observe:
            observe(node.outputs[0], out)
    return [values[n] for n in graph.outputs]
