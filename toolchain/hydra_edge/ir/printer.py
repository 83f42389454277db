"""A readable printout of a Graph, for `hydra-edge inspect` and for debugging.

    graph model.pt2 (frontend pt2)
    inputs:  x float32[3, 32, 32]
    outputs: linear_6 float32[10]
       #  op               output                           inputs  attrs  # source
       0  patch_embed      conv2d float32[64, 64]           x, p_patch_embed_weight<float32[64, 3, 4, 4]>, ...  patch=4  # conv2d (model.py:107)
    ...
    27 nodes, 21,386 parameters in 23 constants (83.5 KiB); ops: linear 7, add 3, ...

Works on every stage: the aten graph of a frontend, the lowered float IR and
the quantised IR (int8 tensors show their scale and zero point).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .graph import Graph, Tensor

_MAX_LIST = 8


def _shape(t: Tensor) -> str:
    return f"{t.dtype}[{', '.join(str(d) for d in t.shape)}]"


def _quant(t: Tensor) -> str:
    q = t.quant
    if q is None:
        return ""
    if q.axis is None and np.ndim(q.scale) == 0:
        return f" (s={float(q.scale):.6g}, zp={int(q.zero_point)})"
    return f" (per-channel axis {q.axis}, {np.size(q.scale)} scales)"


def _value(v: Any) -> str:
    if isinstance(v, np.ndarray):
        if v.size <= 4:
            return np.array2string(v.ravel() if v.ndim > 1 else v, separator=",", precision=6).replace(" ", "")
        return f"{v.dtype}[{', '.join(str(d) for d in v.shape)}]"
    if isinstance(v, dict):
        if "op" in v and "name" in v:  # a node as a plain dict (a token loop's body)
            return f"{v['name']}:{v['op']}"
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        if len(v) and all(isinstance(x, dict) and "op" in x for x in v):  # a body: every node, no truncation
            return f"[{', '.join(_value(x) for x in v)}]"
        items = [_value(x) for x in v[:_MAX_LIST]]
        more = f", ...{len(v) - _MAX_LIST} more" if len(v) > _MAX_LIST else ""
        return f"[{', '.join(items)}{more}]"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, np.generic):
        return _value(v.item())
    return repr(v) if isinstance(v, str) else str(v)


def _operand(graph: Graph, name: str) -> str:
    t = graph.tensors.get(name)
    if t is None:
        return f"{name}<?>"
    if t.is_constant:
        return f"{name}<{_shape(t)}{_quant(t)}>"
    return name


def format_graph(graph: Graph) -> str:
    """One header, one line per node, one summary line."""
    lines: list[str] = []
    source = graph.meta.get("source_file")
    frontend = graph.meta.get("frontend")
    head = "graph"
    if source:
        head += f" {source}"
    if frontend:
        head += f" (frontend {frontend})"
    lines.append(head)

    def described(names: list[str]) -> str:
        parts = []
        for n in names:
            t = graph.tensors.get(n)
            parts.append(f"{n} {_shape(t)}{_quant(t)}" if t is not None else f"{n} <?>")
        return ", ".join(parts) or "-"

    lines.append(f"inputs:  {described(graph.inputs)}")
    lines.append(f"outputs: {described(graph.outputs)}")

    outs = []
    for node in graph.nodes:
        parts = []
        for n in node.outputs:
            t = graph.tensors.get(n)
            parts.append(f"{n} {_shape(t)}{_quant(t)}" if t is not None else n)
        outs.append(", ".join(parts) or "-")
    op_w = max([len(n.op) for n in graph.nodes] + [2])
    out_w = min(max([len(o) for o in outs] + [6]), 48)
    idx_w = len(str(max(len(graph.nodes) - 1, 0)))
    lines.append(f"{'#':>{idx_w + 2}}  {'op':<{op_w}}  {'output':<{out_w}}  inputs  attrs  # source")
    for i, (node, out) in enumerate(zip(graph.nodes, outs)):
        inputs = ", ".join(_operand(graph, n) for n in node.inputs) or "-"
        line = f"{i:>{idx_w + 2}}  {node.op:<{op_w}}  {out:<{out_w}}  {inputs}"
        attrs = "  ".join(f"{k}={_value(v)}" for k, v in node.attrs.items())
        if attrs:
            line += f"  {attrs}"
        if node.source and node.source != node.name:
            line += f"  # {node.source}"
        lines.append(line)

    constants = list(graph.constants())
    params = sum(t.numel for t in constants)
    nbytes = sum(t.nbytes for t in constants)
    counts = Counter(n.op for n in graph.nodes)
    ops = ", ".join(f"{op} {c}" for op, c in counts.most_common())
    lines.append(
        f"{len(graph.nodes)} nodes, {params:,} parameters in {len(constants)} constants "
        f"({nbytes / 1024:.1f} KiB); ops: {ops or '-'}"
    )
    return "\n".join(lines)
