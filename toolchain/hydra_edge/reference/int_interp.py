"""The reference interpreter of the int8 IR: docs/numerics.md, executable.

Each kernel mirrors its section of the spec line by line, in int64 numpy
arithmetic, so that a reader can check one against the other. The C runtime
must produce the same bits; `hydra-edge validate` compares them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.graph import Graph
from ..ops import node_rounding, op_def
from ..ops.token_loop import run_body


def _int_ref(op: str) -> Callable[..., np.ndarray]:
    d = op_def(op)
    if d is None or d.int_ref is None:
        raise KeyError(op)
    return d.int_ref


def tfl_kernels() -> dict[str, Callable[..., np.ndarray]]:
    """The reference kernels of imported TFLite ops: the linear family, the elementwise one, tfl_hydra_attention,
    tfl_softmax_attention."""
    from .tfl_elementwise import KERNELS as elementwise
    from .tfl_linear import KERNELS as linear
    from .tfl_hydra import KERNELS as hydra  # tfl_hydra_attention (passes/lift_tfl_hydra.py)
    from .tfl_softmax_attention import KERNELS as softmax  # tfl_softmax_attention (passes/lift_tfl_softmax.py)

    return {**linear, **elementwise, **hydra, **softmax}


def run_int(graph: Graph, x: np.ndarray, keep_all: bool = False) -> list[np.ndarray] | dict[str, np.ndarray]:
    """Run one int8 input (no batch dimension). keep_all returns every tensor by name.

    Each node, native or tfl_*, rounds as its "rounding" attr says, the graph's meta "rounding" by default
    (ops.node_rounding, as the emitter's single_rounding fields)."""
    rounding = graph.meta.get("rounding", "double")
    values: dict[str, np.ndarray] = {n: t.data for n, t in graph.tensors.items() if t.is_constant}
    values[graph.inputs[0]] = np.asarray(x, np.int8).reshape(graph.tensor(graph.inputs[0]).shape)
    for node in graph.nodes:
        def tfl(node):  # an imported .tflite op: reference/tfl_*.py, shaped as its output tensor
            inputs = [values.get(n) if n else None for n in node.inputs]
            out = tfl_kernels()[node.op](node.attrs, inputs, node_rounding(node, rounding))
            return np.asarray(out).reshape(graph.tensor(node.outputs[0]).shape)

        if node.op == "token_loop":  # the body's intermediates land in `values` too (keep_all shows them)
            run_body(node, values, rounding, tfl)
            continue
        if node.op.startswith("tfl_"):
            values[node.outputs[0]] = tfl(node)
            continue
        out = _int_ref(node.op)(node, *(values[n] for n in node.inputs), node_rounding(node, rounding))
        # the output tensor's own shape: a legalised TFLite node's differs from its rule's by leading 1s
        values[node.outputs[0]] = np.asarray(out).reshape(graph.tensor(node.outputs[0]).shape)
    if keep_all:
        return values
    return [values[n] for n in graph.outputs]
