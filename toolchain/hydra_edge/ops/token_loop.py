"""token_loop (quantised graphs only, made by passes/stream.py): a region of ops run token group by token group.

Its body is a list of ordinary nodes (attr `body`, each a plain dict) that read their row inputs row by row
(OpDef.row_inputs): the C code runs them on G = tokens_per_step tokens at a time, in a loop in model.c, with
the tensors that never leave the region held as [G, width] rows in the loop's scratch. The node's inputs are
the tensors the body reads from outside (activations and constants), its outputs the tensors it leaves
behind, whole (token rows, or a reduction's result). The reference runs the body node by node over whole
tensors; since every body op computes each row from the same rows (or a reduction sums the same
integers), the loop gives exactly the bits of the unfused ops. The emitter writes the loop
(codegen/emit_c.py) and memory/loop_plan.py lays out its scratch.

attrs: body, tokens (T), tokens_per_step (G, 1 <= G <= T), shapes (each body node's output tensor's
shape, with tfl nodes: TFLite's own, which their rules give only by size; absent without tfl nodes), in_place ([output index, input index] pairs:
an output that may take an input's bytes, because the body reads each row of that input before it writes
the same row of the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..ir.tfl_ops import TFL_IN_PLACE, TFL_ROW_OPS, tfl_rows, token_rows
from .base import OpDef, Shape, node_rounding, op_def, register, strip_leading_ones


@dataclass(frozen=True)
class RowFacts:
    """What a token loop needs of a body op, native (its OpDef) or tfl (ir/tfl_ops.tfl_rows)."""

    row_inputs: tuple[int, ...]
    reduces: bool
    in_place: tuple[int, ...]
    tokens: int | None  # a tfl op's T; None: the row inputs' (a native op's)
    fields: tuple[tuple[str, int], ...] = ()  # a tfl op's per-group params fields (TflRows.fields)


def row_facts(node: Node, ins: list[Shape | None], out: Shape) -> RowFacts | None:
    """How `node` (input shapes `ins`, output shape `out`) runs in a token loop; None when it cannot."""
    if node.op in TFL_ROW_OPS:
        r = tfl_rows(node, ins, out)
        return None if r is None else RowFacts(r.row_inputs, r.reduces, TFL_IN_PLACE.get(node.op, ()), r.tokens,
                                               r.fields)
    d = op_def(node.op)
    if d is None or not d.row_inputs:
        return None
    return RowFacts(d.row_inputs, d.reduces, d.in_place, None)


def graph_row_facts(graph: Graph, node: Node) -> RowFacts | None:
    ins = [graph.tensor(n).shape if n else None for n in node.inputs]
    return row_facts(node, ins, graph.tensor(node.outputs[0]).shape) if len(node.outputs) == 1 else None


def body_nodes(node: Node) -> list[Node]:
    """The body as Nodes; IRError when it is malformed."""
    from ..ir.ops import node_from_dict

    body = node.attrs.get("body")
    if not isinstance(body, (list, tuple)) or not body:
        raise IRError(f"{node.name}: token_loop needs a non-empty body")
    try:
        nodes = [node_from_dict(d) for d in body]
    except (KeyError, TypeError) as exc:
        raise IRError(f"{node.name}: token_loop body node is malformed ({exc})") from None
    for sub in nodes:
        d = op_def(sub.op)
        if sub.op not in TFL_ROW_OPS and (d is None or not d.row_inputs):
            raise IRError(f"{node.name}: body node {sub.name} ({sub.op}) cannot run in a token loop")
    return nodes


def flat_nodes(graph: Graph) -> list[Node]:
    """Every node the graph runs, in order: its own, and a token loop's body in the loop's place."""
    return [sub for node in graph.nodes for sub in (body_nodes(node) if node.op == "token_loop" else [node])]


def shape(node: Node, shapes: list[Shape]) -> Shape:
    body = body_nodes(node)
    tokens, tps = node.attrs.get("tokens"), node.attrs.get("tokens_per_step")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise IRError(f"{node.name}: token_loop tokens must be a positive int, got {tokens!r}")
    if not isinstance(tps, int) or isinstance(tps, bool) or not 1 <= tps <= tokens:
        raise IRError(f"{node.name}: tokens_per_step must be an int in [1, {tokens}], got {tps!r}")
    known = dict(zip(node.inputs, shapes))
    for sub in body:
        ins = [known.get(n) for n in sub.inputs]
        if any(s is None for s in ins):
            missing = [n for n, s in zip(sub.inputs, ins) if s is None]
            raise IRError(f"{node.name}: body node {sub.name} reads {missing}, which neither the loop's inputs "
                          "nor an earlier body node give")
        out = tuple(_body_shape(node, sub, ins))
        facts = row_facts(sub, ins, out)
        if facts is None:
            raise IRError(f"{node.name}: body node {sub.name} ({sub.op}) cannot run on a group of rows")
        for k in facts.row_inputs:
            if k < len(ins) and (token_rows(ins[k]) != tokens or (facts.tokens is None and
                                                                 len(strip_leading_ones(ins[k])) != 2)):
                raise IRError(f"{node.name}: body node {sub.name} row input {sub.inputs[k]!r} is {ins[k]}, "
                              f"not [{tokens}, width]")
        known[sub.outputs[0]] = out
    for out in node.outputs:
        if out not in known or out in node.inputs:
            raise IRError(f"{node.name}: token_loop output {out!r} is not written by its body")
    return known[node.outputs[0]]


def _body_shape(node: Node, sub: Node, ins: list) -> Shape:
    """A body node's output shape: its rule's, or its tensor's own (attr shapes, made by passes/stream.py for a
    body with tfl ops, whose tensors keep TFLite's shapes) when that agrees with the rule as check_shapes
    checks it (by size for RESHAPE, MEAN, ...; up to leading 1s for a native op)."""
    shape = node.attrs.get("shapes", {}).get(sub.outputs[0])
    if sub.op not in TFL_ROW_OPS:
        expected = op_def(sub.op).shape(sub, ins)
        same = shape is not None and strip_leading_ones(tuple(shape)) == strip_leading_ones(tuple(expected))
    else:
        from ..ir.tfl_ops import TFL_SHAPE_RULES, check_tfl_shape

        expected = TFL_SHAPE_RULES[sub.op](sub, ins)
        same = shape is not None and check_tfl_shape(sub, expected, tuple(shape))
        if not same:
            raise IRError(f"{node.name}: body node {sub.name} output shape {shape}, expected {tuple(expected)}")
    return tuple(int(v) for v in shape) if same else tuple(expected)


def run_body(node: Node, values: dict[str, np.ndarray], rounding: str,
             run: Callable[[Node], np.ndarray] | None = None) -> None:
    """The body nodes in order, each by its own integer reference over whole tensors (values gets them all);
    `run(sub)` computes a node the registry does not know (the interpreter's tfl kernels)."""
    for sub in body_nodes(node):
        d = op_def(sub.op)
        if d is None and run is not None:
            values[sub.outputs[0]] = run(sub)
            continue
        values[sub.outputs[0]] = d.int_ref(sub, *(values[n] for n in sub.inputs), node_rounding(sub, rounding))


def macs(graph: Graph, node: Node) -> int:
    # a tfl op: one per output element (codegen/report.py counts them as the tfl ops' own rules)
    return sum(op_def(sub.op).macs(graph, sub) if op_def(sub.op) else graph.tensor(sub.outputs[0]).numel
               for sub in body_nodes(node))


OP = register(OpDef(
    "token_loop", shape, macs, graphs="int", emit=lambda em, node: em.token_loop(node), in_place=(),
))
