"""Does a model fit its board? The compile-time check, before any C is written.

The estimate, from the quantised graph and its memory plan:

    RAM   = arena (activations and kernel scratch, from the plan)
          + the harness's input and output buffers
          + the board's stack reserve (board.toml stack_bytes)
          + ram_reserve_bytes (harness state, libc)
    flash = weights + per-channel parameters (multipliers, shifts), an array
            with the same values as another counted once (model.c defines it once)
          + code_reserve_bytes (kernels, harness, startup, libc)

against board.toml's ram_bytes and flash_bytes. A board without them (host,
jetson-*) has no budget. A model over the RAM budget is refused with the
bytes over, the op at the arena's peak (name, kind, bytes live there) and a
suggestion, most useful first: the streaming schedule when the greedy one was
used, fewer tokens per step when a token loop is at the peak, fewer
tokens (a larger patch or a smaller image), a smaller embedding dim. The linker has the last word (the emulation and
device images are linked with the board's real region sizes); this check
exists so that a model that cannot fit fails at compile time, saying by how
many bytes and what takes the room.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..codegen.report import node_flash_bytes
from ..ir.graph import Graph
from ..ops.token_loop import flat_nodes
from ..memory.planner import MemoryPlan, MemoryPlanError, live_bytes_per_node
from ..boards import Board


class BudgetError(MemoryPlanError):
    """The model does not fit the board's RAM or flash."""


@dataclass
class Estimate:
    ram_bytes: int
    flash_bytes: int
    ram_parts: list[tuple[str, int]] = field(default_factory=list)  # (what, bytes), largest first
    flash_parts: list[tuple[str, int]] = field(default_factory=list)
    ram_details: dict[str, str] = field(default_factory=dict)  # what -> a breakdown
    peak_node: str = ""  # the node at the arena's fullest step
    peak_op: str = ""
    peak_live_bytes: int = 0
    suggestions: list[str] = field(default_factory=list)  # how to need less RAM, most useful first

    def as_dict(self, board: Board) -> dict:
        return {
            "board": board.name,
            "ram_estimate_bytes": self.ram_bytes,
            "ram_budget_bytes": board.ram_bytes,
            "flash_estimate_bytes": self.flash_bytes,
            "flash_budget_bytes": board.flash_bytes,
        }


def estimate(graph: Graph, plan: MemoryPlan, board: Board) -> Estimate:
    raw = board.raw
    # RAM: the arena, broken down by the buffers live at its fullest step.
    live = live_bytes_per_node(plan, len(graph.nodes))
    step = int(np.argmax(live)) if live else 0
    roots = {b.name: root for root, members in plan.groups().items() for b in members}
    live_groups: dict[str, tuple[int, str]] = {}  # an in-place input and its output are one buffer: name the output
    for b in plan.buffers:
        if b.first <= step <= b.last and b.size >= live_groups.get(roots[b.name], (0, ""))[0]:
            live_groups[roots[b.name]] = (b.size, b.name)
    at_peak = sorted(live_groups.values(), reverse=True)
    node = graph.nodes[step].name if graph.nodes else "?"
    op = graph.nodes[step].op if graph.nodes else "?"
    arena_detail = ", ".join(f"{name} {size:,}" for size, name in at_peak[:3])
    x, y = graph.tensor(graph.inputs[0]), graph.tensor(graph.outputs[0])
    ram_parts = [
        ("arena", plan.arena_bytes),
        ("stack reserve", int(board.stack_bytes or 0)),
        ("harness input/output buffers", x.nbytes + y.nbytes),
        ("harness state", int(raw.get("ram_reserve_bytes", 0))),
    ]
    # Flash: constants grouped by the first node that reads them (its weights, bias, table and attrs arrays);
    # identical arrays are one array in model.c, counted once (with the first node that has them).
    per_layer: dict[str, int] = {}
    seen: set = set()
    for n in graph.nodes:
        size = sum(node_flash_bytes(graph, n, seen))
        if size:
            per_layer[n.name] = per_layer.get(n.name, 0) + size
    flash_parts = [(f"weights of {k}", v) for k, v in per_layer.items()]
    flash_parts.append(("code (kernels, harness, libc; estimate)", int(raw.get("code_reserve_bytes", 0))))
    ram_parts = sorted((p for p in ram_parts if p[1]), key=lambda p: -p[1])
    flash_parts.sort(key=lambda p: -p[1])
    details = {"arena": f"peak at node {node} ({op}): {arena_detail}"}
    return Estimate(sum(b for _, b in ram_parts), sum(b for _, b in flash_parts), ram_parts, flash_parts, details,
                    node, op, live[step] if live else 0, ram_suggestions(graph, plan, step))


def ram_suggestions(graph: Graph, plan: MemoryPlan, step: int) -> list[str]:
    """What would shrink the arena, most useful first, for the node at `step` (the peak)."""
    out = []
    schedule = graph.meta.get("schedule", "stream" if plan.in_place else "greedy")
    if schedule == "greedy" and graph.meta.get("frontend") != "tflite":
        out.append("the streaming schedule (--schedule stream: the row-local ops token by token, in place)")
    node = graph.nodes[step] if 0 <= step < len(graph.nodes) else None
    if node is not None and node.op == "token_loop" and int(node.attrs.get("tokens_per_step", 1)) > 1:
        g = int(node.attrs["tokens_per_step"])
        out.append(f"fewer tokens per step (now {g}: each token loop holds {g} rows of its tensors; "
                   "--tokens-per-step 1 holds one)")
    rows = _token_tensor(graph)
    if rows is not None:
        tokens, dim = rows.shape
        out.append(f"fewer tokens (now {tokens}: a larger patch size or a smaller input image)")
        out.append(f"a smaller embedding dim (now {dim}: the token buffer is tokens x dim bytes)")
    else:
        out.append("fewer tokens or a smaller embedding dim")
    return out


def _token_tensor(graph: Graph):
    """The token buffer [T, D] of a ViT (a layernorm's input, in a token loop or not), or None."""
    for node in flat_nodes(graph):
        if node.op == "layernorm" and len(graph.tensor(node.inputs[0]).shape) == 2:
            return graph.tensor(node.inputs[0])
    return None


def check_fits(graph: Graph, plan: MemoryPlan, board: Board, top: int = 4) -> Estimate:
    """Raise BudgetError when the model cannot fit the board; returns the estimate otherwise."""
    est = estimate(graph, plan, board)
    problems = []
    for what, need, budget, parts in (("RAM", est.ram_bytes, board.ram_bytes, est.ram_parts),
                                      ("flash", est.flash_bytes, board.flash_bytes, est.flash_parts)):
        if budget is not None and need > budget:
            largest = "; ".join(
                f"{label} {b:,} B" + (f" ({est.ram_details[label]})" if what == "RAM" and label in est.ram_details else "")
                for label, b in parts[:top]
            )
            problem = f"{what} needs {need:,} B of {budget:,} B, {need - budget:,} bytes over (largest: {largest})"
            if what == "RAM" and est.peak_node:
                problem += (f"; the peak is at op {est.peak_node} ({est.peak_op}), {est.peak_live_bytes:,} B live; "
                            f"suggestion: {'; or '.join(est.suggestions)}")
            problems.append(problem)
    if problems:
        raise BudgetError(f"the model does not fit board {board.name}: " + "; ".join(problems))
    return est


def check_input_fits(graph: Graph, board: Board) -> None:
    """Right after loading, before anything large is made: refuse a model whose input alone exceeds the RAM.

    The compiled input is int8 (one byte an element, whatever the loaded graph's dtype), and it is held
    twice: in the harness's input buffer and, copied, in the arena. Both are part of check_fits's
    estimate, so this is a lower bound of it: nothing that passes check_fits is refused here.
    """
    if board.ram_bytes is None or len(graph.inputs) != 1:
        return
    x = graph.tensor(graph.inputs[0])
    need = 2 * int(x.numel)
    if need > board.ram_bytes:
        raise BudgetError(
            f"the model does not fit board {board.name}: its input alone needs {need:,} B of RAM "
            f"(int8 {list(x.shape)}, in the harness's input buffer and again in the arena) of "
            f"{board.ram_bytes:,} B, {need - int(board.ram_bytes):,} bytes over; suggestion: a smaller input "
            f"(a smaller image or fewer tokens), or a board with more RAM"
        )
