"""Static arena planning: TFLite Micro's greedy memory planner, plus in-place reuse.

Every activation tensor (and every per-node scratch buffer) gets a fixed byte
offset in one arena. Constants live in flash and are not planned.

The algorithm (steps 1-5 as TFLM's greedy_memory_planner; 2a with in_place):

1. Number the nodes 0..n-1 in graph order; each is one step.
2. Lifetimes: a tensor lives from the step of the node that writes it to the
   step of the last node that reads it. Graph inputs live from step 0, graph
   outputs to step n-1. A tensor nobody reads lives during its writer's step
   only. A node's scratch buffer lives during that node's step only.
2a. In place (plan_memory(..., in_place=True)): walking the nodes in order,
   a node whose op may write over one of its inputs (IN_PLACE_OPS: add, lut,
   layernorm; a token loop's own `in_place` pairs) gives its output that
   input's bytes when the input is an activation of the same size, is not a
   graph output, and this node is its last reader (its lifetime ends at this
   step). The output becomes an alias of the input (Buffer.alias_of); a chain
   of such handovers is one buffer (a group) living from its first member's
   first step to its last member's last step, sized by its largest member.
3. Sort the buffers (groups) by size, largest first (ties: earlier first
   step, then name, so that the plan is deterministic).
4. Place each buffer in turn at the lowest offset, a multiple of 16 bytes,
   where it overlaps no already-placed buffer whose lifetime intersects its
   own: walk those buffers in offset order and take the first gap wide
   enough, or the end of the last one. Every member of a group gets the
   group's offset.
5. The arena is the highest end offset, rounded up to 16 bytes.
5a. Steps 3-5 again with the buffers sorted by size times lifetime (steps
   live), largest first; that placement is kept when its arena is strictly
   smaller (a small buffer living long, placed after a large short-lived one,
   can otherwise sit above the bytes the rest needs).
6. With in_place, the graph is planned again without the handovers of
   step 2a and the smaller arena is kept, the
   in-place one on a tie (a handover stretches one buffer over two lifetimes,
   which can pack worse); MemoryPlan.in_place says which one it is.

Two buffers share bytes only when their lifetimes are disjoint, or when one
is an in-place alias of the other: then they meet at exactly one step, the
in-place op's, where the input dies as the output is written. Without
in_place a node's inputs, outputs and scratch are all live at its step, so
kernels always get disjoint buffers (TFLM's baseline). `check_no_overlap`
verifies a plan (aliases count as one buffer); `format_plan` prints it (a
table and a timeline, one row per step).

The peak (the largest sum of live bytes at any step, a group counted once) is
a lower bound for any arena under these lifetimes; the greedy arena is
usually equal or close to it. `lower_bound` is a bound for every schedule of
the same ops: for each op, the bytes it needs itself (its activation inputs
and outputs, an input merged with the output when the op may run in place on
it, its scratch) plus every tensor that must be live across it in any
topological order (written by an ancestor or a graph input, and read by a
descendant or a graph output); the largest such sum over the ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HydraEdgeError
from ..ir.graph import Graph, IRError, Node
from ..ir.tfl_ops import TFL_IN_PLACE
from ..ops import REGISTRY

ALIGNMENT = 16
SCRATCH_SUFFIX = "#scratch"

# op -> the input positions whose bytes its output may take (the kernel accepts output == that input):
# the native ops' OpDef.in_place (hydra_edge/ops), then the imported .tflite ones.
IN_PLACE_OPS: dict[str, tuple[int, ...]] = {
    **{name: d.in_place for name, d in REGISTRY.items() if d.in_place},
    **TFL_IN_PLACE,  # an imported RESHAPE: the same bytes; tfl_hydra_attention reads q_t before out_t, k, v first
}


class MemoryPlanError(HydraEdgeError, ValueError):
    """A plan that breaks a rule: overlapping live buffers, a bad offset."""


@dataclass
class Buffer:
    name: str  # a tensor name, or "<node>#scratch" for a node's scratch
    size: int  # bytes
    first: int  # first step (node index) at which it is live
    last: int  # last step at which it is live (inclusive)
    offset: int = -1  # byte offset in the arena; -1 until placed
    alias_of: str | None = None  # in place: the buffer whose bytes this one takes over (at step `first`)

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_bytes: int
    alignment: int = field(default=ALIGNMENT)
    in_place: bool = False  # whether optional in-place reuse (step 2a) is in this plan
    other_arena_bytes: int | None = None  # plan_memory(in_place=True): the arena of the alternative not kept
    _by_name: dict[str, Buffer] = field(default_factory=dict, init=False, repr=False, compare=False)

    def buffer(self, name: str) -> Buffer:
        if len(self._by_name) != len(self.buffers):  # built on first use: a look-up per op stays cheap
            self._by_name = {b.name: b for b in self.buffers}
        if name not in self._by_name:
            raise KeyError(f"no buffer {name!r} in the memory plan")
        return self._by_name[name]

    def root(self, name: str) -> str:
        """The first buffer of `name`'s in-place chain (itself when it aliases nothing)."""
        return _roots(self.buffers)[name]

    def groups(self) -> dict[str, list[Buffer]]:
        """Buffers sharing bytes by in-place aliasing, by their chain's first buffer (a lone buffer is its own group)."""
        return _groups(self.buffers)

    def offset(self, name: str) -> int:
        return self.buffer(name).offset

    @property
    def n_steps(self) -> int:
        return max((b.last for b in self.buffers), default=-1) + 1

    @property
    def peak_bytes(self) -> int:
        return peak_bytes(self)


def _roots(buffers: list[Buffer]) -> dict[str, str]:
    by_name = {b.name: b for b in buffers}
    roots: dict[str, str] = {}
    for b in buffers:
        name, seen = b.name, {b.name}
        while (alias := by_name[name].alias_of) is not None:
            if alias not in by_name:
                raise MemoryPlanError(f"buffer {name!r} is an alias of {alias!r}, which is not in the plan")
            if alias in seen:
                raise MemoryPlanError(f"buffers {sorted(seen)} alias each other in a cycle")
            seen.add(alias)
            name = alias
        roots[b.name] = name
    return roots


def _groups(buffers: list[Buffer]) -> dict[str, list[Buffer]]:
    roots = _roots(buffers)
    out: dict[str, list[Buffer]] = {}
    for b in buffers:
        out.setdefault(roots[b.name], []).append(b)
    return out


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


def in_place_slots(node) -> list[tuple[int, tuple[int, ...]]]:
    """(output index, the input indices whose bytes that output may take) for `node`: IN_PLACE_OPS for a
    one-output op, a token loop's own `in_place` pairs (passes/stream.py decides them per loop)."""
    if node.op == "token_loop":
        return [(int(o), (int(i),)) for o, i in node.attrs.get("in_place", [])]
    slots = IN_PLACE_OPS.get(node.op, ())
    return [(0, slots)] if slots and len(node.outputs) == 1 else []


def in_place_aliases(nodes: list[Node], buffers: list[Buffer], keep: frozenset[str] = frozenset()) -> dict[str, str]:
    """Step 2a over `nodes` (the steps, in order): {output tensor: the input whose bytes it takes}. `keep`: tensors
    whose bytes must outlive their last reader (the graph's outputs)."""
    by_name = {b.name: b for b in buffers}
    aliases: dict[str, str] = {}
    for i, node in enumerate(nodes):
        for out_index, slots in in_place_slots(node):
            out = by_name.get(node.outputs[out_index]) if out_index < len(node.outputs) else None
            if out is None:
                continue  # not a buffer here (a token loop's reduction, kept by its caller)
            chosen = None
            for k in slots:
                if k >= len(node.inputs) or node.inputs[k] not in by_name:
                    continue  # a constant
                src = by_name[node.inputs[k]]
                if (src.name not in keep and src.last == i and src.size == out.size
                        and src.name not in aliases.values()):
                    chosen = src.name
                    break
            if chosen is not None:
                aliases[out.name] = chosen
    return aliases


def place(buffers: list[Buffer], alignment: int = ALIGNMENT, in_place: bool = False) -> MemoryPlan:
    """Greedy placement (steps 3-5): largest first, lowest aligned offset that fits; a group is placed as one."""
    groups = _groups(buffers)
    if all(len(members) == 1 for members in groups.values()):
        units = list(buffers)
    else:
        units = [
            Buffer(root, max(b.size for b in members), min(b.first for b in members), max(b.last for b in members))
            for root, members in groups.items()
        ]
    _place_units(units, alignment, _ORDERS[0])
    arena = _align(max((u.end for u in units), default=0), alignment)
    for order in _ORDERS[1:]:  # step 5a: another order, kept only when strictly smaller
        trial = [Buffer(u.name, u.size, u.first, u.last) for u in units]
        _place_units(trial, alignment, order)
        if _align(max((u.end for u in trial), default=0), alignment) < arena:
            for u, t in zip(units, trial):
                u.offset = t.offset
            arena = _align(max((u.end for u in units), default=0), alignment)
    if units is not buffers:
        offset = {u.name: u.offset for u in units}
        roots = _roots(buffers)
        for b in buffers:
            b.offset = offset[roots[b.name]]
    arena = _align(max((b.end for b in buffers), default=0), alignment)
    return MemoryPlan(list(buffers), arena, alignment, in_place)


# Step 3's order (TFLM's: largest first), then step 5a's (largest size x lifetime first: a small buffer that lives
# long is placed before a large one that lives a step, which would otherwise push it up the arena).
_ORDERS = (
    lambda b: (-b.size, b.first, b.name),
    lambda b: (-b.size * (b.last - b.first + 1), -b.size, b.first, b.name),
)


def _place_units(buffers: list[Buffer], alignment: int, key) -> None:
    order = sorted(buffers, key=key)
    placed_at: dict[int, list[Buffer]] = {}  # step -> the placed buffers live at it
    for buf in order:
        steps = range(buf.first, buf.last + 1)
        rivals = {id(p): p for step in steps for p in placed_at.get(step, ())}  # placed ones that live with it
        offset = 0
        for other in sorted(rivals.values(), key=lambda p: (p.offset, p.end)):
            if offset + buf.size <= other.offset:
                break  # the gap before `other` is wide enough
            offset = max(offset, _align(other.end, alignment))
        buf.offset = offset
        for step in steps:
            placed_at.setdefault(step, []).append(buf)


def plan_memory(
    graph: Graph, scratch: dict[str, int] | None = None, alignment: int = ALIGNMENT, in_place: bool = False
) -> MemoryPlan:
    """Plan the arena of `graph`; `scratch` maps a node name to its scratch bytes.

    in_place: step 2a for every op of IN_PLACE_OPS (off: TFLM's baseline).
    In place is not always smaller: an output that takes its input's bytes stretches that one buffer over both
    lifetimes, and the greedy placement can then pack worse. So with in_place the graph is also planned without
    it and the smaller arena is kept, the in-place one on a
    tie; the plan's in_place says which was kept, other_arena_bytes the arena of the one not kept.
    """
    buffers = lifetimes(graph, scratch)
    aliases = in_place_aliases(graph.nodes, buffers, frozenset(graph.outputs)) if in_place else {}
    for b in buffers:
        b.alias_of = aliases.get(b.name)
    plan = place(buffers, alignment, in_place)
    if not aliases:  # no reuse asked for or found: the two plans are one
        return plan
    without = place(lifetimes(graph, scratch), alignment, in_place=False)
    if without.arena_bytes < plan.arena_bytes:
        without.other_arena_bytes = plan.arena_bytes
        return without
    plan.other_arena_bytes = without.arena_bytes
    return plan


def live_bytes_per_node(plan: MemoryPlan, n_nodes: int | None = None) -> list[int]:
    """Bytes live at each step 0..n_nodes-1: the sum over the groups live then of each one's largest live member."""
    n = plan.n_steps if n_nodes is None else n_nodes
    live = [0] * n
    for members in plan.groups().values():
        at: dict[int, int] = {}
        for b in members:
            for step in range(max(b.first, 0), min(b.last, n - 1) + 1):
                at[step] = max(at.get(step, 0), b.size)
        for step, size in at.items():
            live[step] += size
    return live


def lower_bound_per_node(graph: Graph, scratch: dict[str, int] | None = None, in_place: bool = True) -> list[int]:
    """For each node: the bytes live at it under every schedule of the ops (see the module docstring).

    The node's activation inputs and outputs (an input merged with the output when the op may run in place on
    it: in IN_PLACE_OPS and allowed by `in_place`, of the same size, not a graph output and
    read by no descendant), its scratch, and every other tensor written by an ancestor (or a graph input) and
    read by a descendant (or a graph output).
    """
    scratch = dict(scratch or {})
    nodes = graph.nodes
    index = {name: i for i, node in enumerate(nodes) for name in node.outputs}
    outputs = set(graph.outputs)
    acts = [name for name in dict.fromkeys([*graph.inputs, *index]) if not graph.tensor(name).is_constant]
    readers: dict[str, list[int]] = {name: [] for name in acts}
    for i, node in enumerate(nodes):
        for name in dict.fromkeys(node.inputs):
            if name in readers:
                readers[name].append(i)
    anc = [0] * len(nodes)  # bit j set: node j precedes node i in every schedule
    for i, node in enumerate(nodes):
        for name in node.inputs:
            if name in index:
                anc[i] |= anc[index[name]] | (1 << index[name])
    desc = [0] * len(nodes)  # bit j set: node j follows node i in every schedule
    for i in reversed(range(len(nodes))):  # topological order: every reader of node i's outputs is done
        for name in nodes[i].inputs:
            if name in index:
                desc[index[name]] |= desc[i] | (1 << i)
    everything = (1 << len(nodes)) - 1
    size = {name: graph.tensor(name).nbytes for name in acts}
    bound = [0] * len(nodes)
    # A tensor that is not a node's own input or output counts at that node when it is written before it
    # (its producer is an ancestor, or it is a graph input) and read after it (a reader is a descendant, or
    # it is a graph output): one bit mask per tensor, so the work follows the tensors' lifetimes, not N * T.
    for name in acts:
        written = desc[index[name]] if name in index else everything
        read = everything if name in outputs else 0
        own = 0
        for r in readers[name]:
            read |= anc[r]
            own |= 1 << r
        live = written & read & ~own
        while live:
            low = live & -live
            bound[low.bit_length() - 1] += size[name]
            live ^= low
    for i, node in enumerate(nodes):
        own = [n for n in dict.fromkeys([*node.inputs, *node.outputs]) if n in size]
        total = sum(size[n] for n in own) + max(int(scratch.get(node.name, 0)), 0)
        merged: set[str] = set()
        for out_index, slots in in_place_slots(node) if in_place else []:
            out = node.outputs[out_index] if out_index < len(node.outputs) else None
            for k in slots if out in size else ():
                name = node.inputs[k] if k < len(node.inputs) else None
                if (name in size and name != out and name not in outputs and name not in merged
                        and size[name] == size[out] and not any(desc[i] >> r & 1 for r in readers[name])):
                    total -= size[name]
                    merged.add(name)
                    break
        bound[i] += total
    return bound


def lower_bound(graph: Graph, scratch: dict[str, int] | None = None, in_place: bool = True) -> int:
    """The largest set of bytes that must be live at once under any schedule of `graph`'s ops."""
    return max(lower_bound_per_node(graph, scratch, in_place), default=0)


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
    by_name = {b.name: b for b in plan.buffers}
    _roots(plan.buffers)  # every alias names a buffer of the plan, no cycles
    taken: dict[str, str] = {}
    for b in plan.buffers:
        if b.alias_of is None:
            continue
        if b.alias_of in taken:
            raise MemoryPlanError(f"buffers {taken[b.alias_of]!r} and {b.name!r} both take the bytes of {b.alias_of!r}")
        taken[b.alias_of] = b.name
        src = by_name[b.alias_of]
        if b.offset != src.offset or b.size > src.size:
            raise MemoryPlanError(
                f"buffer {b.name!r} [{b.offset}, {b.end}) is in place of {src.name!r} [{src.offset}, {src.end}) "
                "but does not start at its offset within its bytes"
            )
        if src.last != b.first:
            raise MemoryPlanError(
                f"buffer {b.name!r} takes the bytes of {src.name!r} at step {b.first}, "
                f"but {src.name!r} lives steps {src.first}..{src.last}: in place needs its last step to be {b.first}"
            )
    # Step by step, the buffers live there by offset, each against those below it that reach into it:
    # the work follows the lifetimes (linear for a chain of ops), not every pair of buffers.
    live_at: dict[int, list[Buffer]] = {}
    for b in plan.buffers:
        if b.size:
            for step in range(b.first, b.last + 1):
                live_at.setdefault(step, []).append(b)
    for step in sorted(live_at):
        below: list[Buffer] = []
        for b in sorted(live_at[step], key=lambda x: (x.offset, x.end)):
            below = [a for a in below if a.end > b.offset]
            for a in below:
                if (a.alias_of == b.name or b.alias_of == a.name) and min(a.last, b.last) <= max(a.first, b.first):
                    continue  # an in-place handover: the input dies at the step its alias is written
                raise MemoryPlanError(
                    f"buffers {a.name!r} [{a.offset}, {a.end}) steps {a.first}..{a.last} and "
                    f"{b.name!r} [{b.offset}, {b.end}) steps {b.first}..{b.last} overlap while both are live"
                )
            below.append(b)


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
            + (f"  in place of {b.alias_of}" if b.alias_of else "")
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
