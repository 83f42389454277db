"""The scratch of a token loop (ops/token_loop.py): its rows buffers and its ops' own scratch, packed.

A token loop runs its body once per group of G tokens. A tensor that lives only inside the loop takes
[G, width] bytes, from the body step that writes it to the last one that reads it; a body op's scratch
lives during its step; a reduction's running sums (OpDef.loop_state) live through the whole body. These
buffers are packed by the same greedy placement as the arena (planner.place, with in place for the body
ops that allow it), and the loop's scratch is that packing's size. Every group reuses the same bytes: a
group's rows are dead once the group's last step has run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph, Node
from ..ir.tfl_ops import TFL_ROW_OPS, token_rows
from ..ops import op_def
from ..ops.token_loop import body_nodes
from ..reference import tfl_softmax_attention
from .planner import ALIGNMENT, Buffer, MemoryPlan, in_place_aliases, place, scratch_name

STATE_SUFFIX = "#state"


@dataclass(frozen=True)
class LoopLayout:
    plan: MemoryPlan  # one step per body op; buffers: in-loop tensors' rows, "<op>#scratch", "<op>#state"

    @property
    def bytes(self) -> int:
        return self.plan.arena_bytes

    @property
    def offsets(self) -> dict[str, int]:
        return {b.name: b.offset for b in self.plan.buffers}

    @property
    def sizes(self) -> dict[str, int]:
        return {b.name: b.size for b in self.plan.buffers}

    def rows(self, tensor: str) -> int | None:
        """The offset of an in-loop tensor's rows, or None when it is not one (it lives in the arena)."""
        return self.offsets.get(tensor)


def row_bytes(graph: Graph, tensor: str) -> int:
    t = graph.tensor(tensor)
    return t.nbytes // token_rows(t.shape)


def _loop_bytes(graph: Graph, sub: Node) -> tuple[int, int]:
    """(scratch, loop state) bytes of a body op: OpDef.scratch and loop_state; of a tfl op, tfl_hydra_kv_state's
    acc and row as its state (tfl_hydra_attention.c's kv_begin / kv_rows / kv_end), apply's row as scratch,
    tfl_softmax_attention's scores and probabilities as scratch (reference/tfl_softmax_attention.py; the other tfl
    row ops need none: reference/tfl_linear.py, tfl_elementwise.py)."""
    if sub.op == "tfl_softmax_attention":  # one head's scores and probabilities (tfl_softmax_attention.c)
        return tfl_softmax_attention.scratch_bytes(sub.attrs), 0
    if sub.op in TFL_ROW_OPS:
        depth = int(sub.attrs.get("depth", 0))
        return {"tfl_hydra_kv_state": (0, 5 * depth), "tfl_hydra_apply": (depth, 0)}.get(sub.op, (0, 0))
    d = op_def(sub.op)
    scratch = d.scratch(graph, sub) if d.scratch is not None else 0
    return scratch, d.loop_state(graph, sub) if d.loop_state is not None else 0


def plan_token_loop(graph: Graph, node: Node) -> LoopLayout:
    body = body_nodes(node)
    group = int(node.attrs["tokens_per_step"])
    kept = set(node.outputs)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for j, sub in enumerate(body):
        for name in sub.inputs:
            if name in first:
                last[name] = j
        for name in sub.outputs:
            if name not in kept:
                first[name] = last[name] = j
    buffers = [Buffer(name, group * row_bytes(graph, name), first[name], last[name]) for name in first]
    for j, sub in enumerate(body):
        scratch, state = _loop_bytes(graph, sub)
        if scratch > 0:
            buffers.append(Buffer(scratch_name(sub.name), scratch, j, j))
        if state > 0:
            buffers.append(Buffer(sub.name + STATE_SUFFIX, state, 0, len(body) - 1))
    aliases = in_place_aliases(body, buffers)  # the loop's kept outputs are not among its buffers
    for b in buffers:
        b.alias_of = aliases.get(b.name)
    return LoopLayout(place(buffers, ALIGNMENT, in_place=True))
