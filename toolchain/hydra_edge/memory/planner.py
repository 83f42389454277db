"""Static arena planning: TFLite Micro's greedy memory planner.

Every activation tensor (and every per-node scratch buffer) gets a fixed byte
offset in one arena. Constants live in flash and are not planned.

The algorithm (as TFLM's greedy_memory_planner):

1. Number the nodes 0..n-1 in graph order; each is one step.
2. Lifetimes: a tensor lives from the step of the node that writes it to the
   step of the last node that reads it. Graph inputs live from step 0, graph
   outputs to step n-1. A tensor nobody reads lives during its writer's step
   only. A node's scratch buffer lives during that node's step only.
3. Sort the buffers by size, largest first (ties: earlier first step, then
   name, so that the plan is deterministic).
4. Place each buffer in turn at the lowest offset, a multiple of 16 bytes,
   where it overlaps no already-placed buffer whose lifetime intersects its
   own: walk those buffers in offset order and take the first gap wide
   enough, or the end of the last one.
5. The arena is the highest end offset, rounded up to 16 bytes.

Two buffers share bytes only when their lifetimes are disjoint; a node's
inputs, outputs and scratch are all live at its step, so kernels always get
disjoint buffers (no in-place reuse here). `check_no_overlap` verifies a plan;
`format_plan` prints it (a table and a timeline, one row per step).
The peak (the largest sum of live bytes at any step) is a lower bound for any
arena under these lifetimes; the greedy arena is usually equal or close to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HydraEdgeError
from ..ir.graph import Graph, IRError

ALIGNMENT = 16
SCRATCH_SUFFIX = "#scratch"


class MemoryPlanError(HydraEdgeError, ValueError):
    """A plan that breaks a rule: overlapping live buffers, a bad offset."""


@dataclass
class Buffer:
    name: str  # a tensor name, or "<node>#scratch" for a node's scratch
    size: int  # bytes
    first: int  # first step (node index) at which it is live
    last: int  # last step at which it is live (inclusive)
    offset: int = -1  # byte offset in the arena; -1 until placed

    @property
    def end(self) -> int:
        return self.offset + self.size

    def lives_with(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_bytes: int
    alignment: int = field(default=ALIGNMENT)

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(f"no buffer {name!r} in the memory plan")

    def offset(self, name: str) -> int:
        return self.buffer(name).offset

    @property
    def n_steps(self) -> int:
        return max((b.last for b in self.buffers), default=-1) + 1

    @property
    def peak_bytes(self) -> int:
        return peak_bytes(self)


def scratch_name(node_name: str) -> str:
    return node_name + SCRATCH_SUFFIX


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def lifetimes(graph: Graph, scratch: dict[str, int] | None = None) -> list[Buffer]:
    """The unplaced buffers of `graph` (steps 1-2 of the algorithm)."""
    scratch = dict(scratch or {})
    n = len(graph.nodes)
    last_step = max(n - 1, 0)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for name in graph.inputs:
        if graph.tensor(name).is_constant:
            continue
        first[name] = 0
        last[name] = 0
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if graph.tensor(name).is_constant:
                continue
            if name not in first:
                raise IRError(f"node {node.name} ({node.op}) reads {name!r} before any node writes it")
            last[name] = max(last[name], i)
        for name in node.outputs:
            if name in first:
                raise IRError(f"tensor {name!r} is written twice (node {node.name})")
            first[name] = i
            last[name] = i
    for name in graph.outputs:
        if name not in first:
            raise IRError(f"graph output {name!r} is never written")
        last[name] = last_step
    buffers = [Buffer(name, graph.tensor(name).nbytes, first[name], last[name]) for name in first]
    steps = {node.name: i for i, node in enumerate(graph.nodes)}
    for node_name, size in scratch.items():
        if node_name not in steps:
            raise IRError(f"scratch given for unknown node {node_name!r}")
        if int(size) <= 0:
            continue
        bname = scratch_name(node_name)
        if bname in first:
            raise IRError(f"scratch buffer name {bname!r} clashes with a tensor")
        buffers.append(Buffer(bname, int(size), steps[node_name], steps[node_name]))
    return buffers


def place(buffers: list[Buffer], alignment: int = ALIGNMENT) -> MemoryPlan:
    """Greedy placement (steps 3-5): largest first, lowest aligned offset that fits."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.name))
    placed: list[Buffer] = []
    for buf in order:
        offset = 0
        for other in sorted((p for p in placed if p.lives_with(buf)), key=lambda p: (p.offset, p.end)):
            if offset + buf.size <= other.offset:
                break  # the gap before `other` is wide enough
            offset = max(offset, _align(other.end, alignment))
        buf.offset = offset
        placed.append(buf)
    arena = _align(max((b.end for b in buffers), default=0), alignment)
    return MemoryPlan(list(buffers), arena, alignment)


def plan_memory(graph: Graph, scratch: dict[str, int] | None = None, alignment: int = ALIGNMENT) -> MemoryPlan:
    """Plan the arena of `graph`; `scratch` maps a node name to its scratch bytes."""
    return place(lifetimes(graph, scratch), alignment)


def live_bytes_per_node(plan: MemoryPlan, n_nodes: int | None = None) -> list[int]:
    """Bytes live at each step 0..n_nodes-1 (the sum of the sizes of the buffers live then)."""
    n = plan.n_steps if n_nodes is None else n_nodes
    live = [0] * n
    for b in plan.buffers:
        for step in range(max(b.first, 0), min(b.last, n - 1) + 1):
            live[step] += b.size
    return live


def peak_bytes(plan: MemoryPlan) -> int:
    return max(live_bytes_per_node(plan), default=0)


def check_no_overlap(plan: MemoryPlan) -> None:
    """Raise MemoryPlanError if two buffers live at one step share a byte, or one lies outside the arena."""
    for b in plan.buffers:
        if b.offset < 0:
            raise MemoryPlanError(f"buffer {b.name!r} is not placed")
        if b.offset % plan.alignment:
            raise MemoryPlanError(f"buffer {b.name!r} at offset {b.offset} is not aligned to {plan.alignment} bytes")
        if b.end > plan.arena_bytes:
            raise MemoryPlanError(f"buffer {b.name!r} ends at {b.end}, past the arena of {plan.arena_bytes} bytes")
        if b.first > b.last:
            raise MemoryPlanError(f"buffer {b.name!r} has an empty lifetime [{b.first}, {b.last}]")
    bufs = sorted(plan.buffers, key=lambda b: (b.offset, b.end))
    for i, a in enumerate(bufs):
        for b in bufs[i + 1 :]:
            if b.offset >= a.end:
                break  # sorted by offset: nothing further can intersect `a`
            if a.size and b.size and a.lives_with(b):
                raise MemoryPlanError(
                    f"buffers {a.name!r} [{a.offset}, {a.end}) steps {a.first}..{a.last} and "
                    f"{b.name!r} [{b.offset}, {b.end}) steps {b.first}..{b.last} overlap while both are live"
                )


_GLYPHS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_plan(plan: MemoryPlan, width: int = 64) -> str:
    """The plan as text: one table row per buffer, then a timeline (one row per step, the arena across)."""
    bufs = sorted(plan.buffers, key=lambda b: (b.first, b.offset, b.name))
    glyph = {b.name: _GLYPHS[i % len(_GLYPHS)] for i, b in enumerate(bufs)}
    name_w = max([len(b.name) for b in bufs] + [6])
    lines = [
        f"memory plan: {len(bufs)} buffers, arena {plan.arena_bytes} bytes, peak live {peak_bytes(plan)} bytes",
        f"  {'id':>2}  {'buffer':<{name_w}}  {'bytes':>9}  {'offset':>9}  {'end':>9}  {'steps':>9}",
    ]
    for b in bufs:
        lines.append(
            f"  {glyph[b.name]:>2}  {b.name:<{name_w}}  {b.size:>9}  {b.offset:>9}  {b.end:>9}  {f'{b.first}..{b.last}':>9}"
        )
    arena = max(plan.arena_bytes, 1)
    per_col = max(1, -(-arena // width))
    cols = -(-arena // per_col)
    live = live_bytes_per_node(plan)
    lines.append(f"timeline: one row per step, one column per {per_col} bytes ('.' free)")
    for step in range(plan.n_steps):
        row = ["."] * cols
        for b in bufs:
            if b.first <= step <= b.last and b.size:
                for c in range(b.offset // per_col, min(cols, -(-b.end // per_col))):
                    row[c] = glyph[b.name] if row[c] == "." else row[c]
        lines.append(f"  {step:>4} |{''.join(row)}| {live[step]:>9}")
    return "\n".join(lines)
