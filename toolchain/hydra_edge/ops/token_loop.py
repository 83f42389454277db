"""token_loop (quantised graphs only, made by passes/stream.py): a region of ops run token group by token group.

Its body is a list of ordinary nodes (attr `body`, each a plain dict) that read their row inputs row by row
(OpDef.row_inputs): the C code runs them on G = tokens_per_step tokens at a time, in a loop in model.c, with
the tensors that never leave the region held as [G, width] rows in the loop's scratch. The node's inputs are
the tensors the body reads from outside (activations and constants), its outputs the tensors it leaves
behind, whole (token rows, or a reduction's result). The reference runs the body node by node over whole
tensors; since every body op computes each row from the same rows (or a reduction sums the same
integers), the loop gives exactly the bits of the unfused ops. The emitter writes the loop
(codegen/emit_c.py) and memory/loop_plan.py lays out its scratch.

attrs: body, tokens (T), tokens_per_step (G, 1 <= G <= T), in_place ([output index, input index] pairs:
an output that may take an input's bytes, because the body reads each row of that input before it writes
the same row of the output).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, IRError, Node
from .base import OpDef, Shape, node_rounding, op_def, register


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
        if d is None or not d.row_inputs:
            raise IRError(f"{node.name}: body node {sub.name} ({sub.op}) cannot run in a token loop")
    return nodes


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
        for k in op_def(sub.op).row_inputs:
            if k < len(ins) and (len(ins[k]) != 2 or ins[k][0] != tokens):
                raise IRError(f"{node.name}: body node {sub.name} row input {sub.inputs[k]!r} is {ins[k]}, "
                              f"not [{tokens}, width]")
        known[sub.outputs[0]] = tuple(op_def(sub.op).shape(sub, ins))
    for out in node.outputs:
        if out not in known or out in node.inputs:
            raise IRError(f"{node.name}: token_loop output {out!r} is not written by its body")
    return known[node.outputs[0]]


def run_body(node: Node, values: dict[str, np.ndarray], rounding: str) -> None:
    """The body nodes in order, each by its own integer reference, over whole tensors (values gets them all)."""
    for sub in body_nodes(node):
        values[sub.outputs[0]] = op_def(sub.op).int_ref(sub, *(values[n] for n in sub.inputs),
                                                        node_rounding(sub, rounding))


def macs(graph: Graph, node: Node) -> int:
    return sum(op_def(sub.op).macs(graph, sub) for sub in body_nodes(node))


OP = register(OpDef(
    "token_loop", shape, macs, graphs="int", emit=lambda em, node: em.token_loop(node), in_place=(),
))
