"""What a compiled model costs: RAM (arena, peak live bytes, lower bound), flash, MACs per op.

`build_report` gives a JSON-able dict (`hydra-edge report --json`);
`format_report` prints it as plain-text tables; `plot_memory` draws the
memory timeline (live bytes per op, the arena and the lower bound) as a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node
from ..optimize import OPTIMIZE_REASON_META, for_size
from ..ops.token_loop import body_nodes
from ..ops import op_def
from ..memory.planner import (
    SCRATCH_SUFFIX,
    MemoryPlan,
    live_bytes_per_node,
    lower_bound_per_node,
    peak_bytes,
    scratch_name,
)

MEMORY_PLOT = "memory.png"


def node_macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of one node (elementwise ops: one per element): the native ops' OpDef.macs."""
    if node.op == "token_loop":  # its body's (tfl ops' by the rules below)
        return sum(node_macs(graph, sub) for sub in body_nodes(node))
    d = op_def(node.op)
    if d is not None:
        return d.macs(graph, node)
    shapes = [graph.tensor(n).shape for n in node.inputs]
    out = graph.tensor(node.outputs[0])
    # int8 .tflite ops: output elements times the products that make each one
    if node.op == "tfl_fully_connected":
        return out.numel * shapes[1][-1]  # filter [N, K]
    if node.op == "tfl_conv_2d":
        _, kh, kw, cin = shapes[1]  # filter [O, H, W, I]
        return out.numel * kh * kw * cin
    if node.op == "tfl_depthwise_conv_2d":
        return out.numel * shapes[1][1] * shapes[1][2]  # filter [1, H, W, O]
    if node.op == "tfl_batch_matmul":
        return out.numel * int(node.attrs["depth"])
    if node.op == "tfl_hydra_attention":
        return 3 * out.numel
    if node.op == "tfl_softmax_attention":  # each output row: T scores of dh products, dh sums of T products
        return 2 * out.numel * int(node.attrs["tokens"])
    if node.op == "tfl_hydra_kv_state":  # its halves (passes/stream.py): k, v rows; q rows
        return 2 * graph.tensor(node.inputs[0]).numel
    return out.numel  # other elementwise tfl ops


def attr_bytes(node: Node) -> int:
    """Bytes of the per-channel integer arrays a node's attrs put in flash (multiplier, shift), a loop's body too."""
    if node.op == "token_loop":
        return sum(attr_bytes(sub) for sub in body_nodes(node))
    return sum(4 * np.asarray(v).size for v in node.attrs.values() if isinstance(v, np.ndarray) and v.ndim > 0)


_attr_bytes = attr_bytes


def attr_arrays(node: Node) -> list[np.ndarray]:
    """The per-channel integer arrays of a node's attrs (model.c's int32_t arrays), a loop's body too."""
    if node.op == "token_loop":
        return [a for sub in body_nodes(node) for a in attr_arrays(sub)]
    return [np.asarray(v) for v in node.attrs.values() if isinstance(v, np.ndarray) and v.ndim > 0]


def node_flash_bytes(graph: Graph, node: Node, seen: set) -> tuple[int, int]:
    """(weights, params): the flash bytes of `node`'s constant inputs and attr arrays not already in `seen`.

    model.c defines identical arrays (the same C type and values) once (emit_c.shared_key), so an array whose
    key is in `seen` costs nothing; `seen` collects the keys counted here.
    """
    from .emit_c import shared_key

    weights = params = 0
    for name in dict.fromkeys(node.inputs):
        t = graph.tensor(name)
        if t.is_constant and (key := shared_key(t.data)) not in seen:
            seen.add(key)
            weights += int(np.asarray(t.data).nbytes)
    for a in attr_arrays(node):
        if (key := shared_key(a, "int32_t")) not in seen:
            seen.add(key)
            params += 4 * a.size
    return weights, params


def flash_bytes(graph: Graph) -> tuple[int, int]:
    """(weights, params) of the whole graph, identical arrays counted once (as model.c defines them)."""
    seen: set = set()
    per_node = [node_flash_bytes(graph, node, seen) for node in graph.nodes]
    return sum(w for w, _ in per_node), sum(a for _, a in per_node)


def constant_bytes(graph: Graph) -> int:
    """The model's constants in flash: weights and params (the report's flash total; optimize.py's auto reads it)."""
    return sum(flash_bytes(graph))


def plan_scratch(plan: MemoryPlan) -> dict[str, int]:
    """Scratch bytes per node, as planned."""
    return {b.name[: -len(SCRATCH_SUFFIX)]: b.size for b in plan.buffers if b.name.endswith(SCRATCH_SUFFIX)}


def build_report(graph: Graph, plan: MemoryPlan) -> dict[str, Any]:
    n = len(graph.nodes)
    live = live_bytes_per_node(plan, n)
    allowed = plan.in_place or plan.other_arena_bytes is not None  # in place allowed, even if not kept
    bound = lower_bound_per_node(graph, plan_scratch(plan), in_place=allowed)
    roots = {b.name: root for root, members in plan.groups().items() for b in members}
    buffers = {b.name: b for b in plan.buffers}
    ops = []
    largest_op = 0
    for i, node in enumerate(graph.nodes):
        out = graph.tensor(node.outputs[0])
        groups: dict[str, int] = {}  # an input and the output written over it count once
        for name in dict.fromkeys([*node.inputs, *node.outputs, scratch_name(node.name)]):
            b = buffers.get(name)
            if b is not None and b.first <= i <= b.last:
                groups[roots[b.name]] = max(groups.get(roots[b.name], 0), b.size)
        touched = sum(groups.values())
        largest_op = max(largest_op, touched)
        ops.append(
            {
                "name": node.name,
                "kind": node.op,
                "macs": node_macs(graph, node),
                "live_bytes": live[i] if i < len(live) else 0,
                "op_bytes": touched,
                "lower_bound_bytes": bound[i],
                "output": out.name,
                "output_shape": list(out.shape),
                "output_bytes": out.nbytes,
                "source": node.source,
            }
        )
    weights, attrs = flash_bytes(graph)
    return {
        "model": {
            "inputs": [{"name": n_, "shape": list(graph.tensor(n_).shape)} for n_ in graph.inputs],
            "outputs": [{"name": n_, "shape": list(graph.tensor(n_).shape)} for n_ in graph.outputs],
            "nodes": n,
            "rounding": graph.meta.get("rounding", "double"),
        },
        "ram": {
            "schedule": graph.meta.get("schedule", "stream" if plan.in_place else "greedy"),
            "tokens_per_step": int(graph.meta.get("tokens_per_step", 1)),
            "schedule_detail": schedule_detail(graph, plan),
            "in_place": plan.in_place,
            "arena_bytes": plan.arena_bytes,
            "peak_bytes": peak_bytes(plan),
            # the largest set of bytes live at once under any schedule of these ops (memory/planner.py)
            "lower_bound_bytes": max(bound, default=0),
            # the most bytes one node touches (inputs, output merged when in place, scratch)
            "largest_op_bytes": largest_op,
        },
        "flash": {"weights_bytes": weights, "params_bytes": attrs, "total_bytes": weights + attrs},
        "code": {"optimize": "size" if for_size(graph) else "speed",
                 "reason": str(graph.meta.get(OPTIMIZE_REASON_META, ""))},
        "macs": sum(op["macs"] for op in ops),
        "ops": ops,
    }


def text_table(headers: list[str], rows: list[list[Any]], right: set[int]) -> list[str]:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells)]


def schedule_detail(graph: Graph, plan: MemoryPlan) -> str:
    """What the schedule did to this graph, in words: which ops run fused or streamed, and in place or not."""
    loops = [node for node in graph.nodes if node.op == "token_loop"]
    if graph.meta.get("frontend") == "tflite" and not loops:
        parts = ["the .tflite's own ops in its order"]
        cores = sum(node.op == "tfl_hydra_attention" for node in graph.nodes)
        if cores:
            parts.append(f"{cores} Hydra core{'s' if cores != 1 else ''} as one streaming tfl_hydra_attention each")
    elif any(node.op == "token_loop" for node in graph.nodes):
        loops = [node for node in graph.nodes if node.op == "token_loop"]
        ops = sum(len(node.attrs["body"]) for node in loops)
        parts = [f"{ops} ops in {len(loops)} token loop{'s' if len(loops) != 1 else ''}, run token group by token group",
                 f"{len(graph.nodes) - len(loops)} op{'s' if len(graph.nodes) - len(loops) != 1 else ''} on whole tensors"]
    else:
        parts = ["every op unfused"]
    parts.append("in place where a kernel allows" if plan.in_place else "no in-place reuse")
    return "; ".join(parts)


def _code_line(code: dict[str, str]) -> str:
    reason = f" ({code['reason']})" if code.get("reason") else ""
    return f"code   built for {code['optimize']}{reason}"


def format_report(report: dict[str, Any]) -> str:
    ram, flash = report["ram"], report["flash"]
    schedule = f"   schedule {ram['schedule']}" if "schedule" in ram else ""
    if ram.get("schedule") == "stream":
        tps = ram.get('tokens_per_step', 1)
        schedule += f" ({tps} token{'s' if tps != 1 else ''} per step)"
    bound = f"   lower bound {ram['lower_bound_bytes']:,} B" if "lower_bound_bytes" in ram else ""
    lines = [
        f"RAM    arena {ram['arena_bytes']:,} B   peak live {ram['peak_bytes']:,} B{bound}   "
        f"largest op {ram['largest_op_bytes']:,} B{schedule}",
        *([f"       {ram['schedule_detail']}"] if ram.get("schedule_detail") else []),
        f"flash  weights {flash['weights_bytes']:,} B   params {flash['params_bytes']:,} B   "
        f"total {flash['total_bytes']:,} B",
        *([_code_line(report["code"])] if "code" in report else []),
        f"MACs   {report['macs']:,}",
        "",
    ]
    rows = [
        [op["name"], op["kind"], f"{op['macs']:,}", f"{op['live_bytes']:,}", "x".join(map(str, op["output_shape"]))]
        for op in report["ops"]
    ]
    lines += text_table(["op", "kind", "MACs", "live bytes", "output"], rows, right={2, 3})
    if "budget" in report:
        b = report["budget"]
        lines += ["", f"budget {b['board']} (compile-time estimate): RAM {_of(b['ram_estimate_bytes'], b['ram_budget_bytes'])}"
                      f"   flash {_of(b['flash_estimate_bytes'], b['flash_budget_bytes'])}"]
    if "measured" in report:
        lines += ["", format_measured(report)]
    return "\n".join(lines)


def _of(used: int, budget: int | None) -> str:
    if budget is None:
        return f"{used:,} B"
    return f"{used:,} B of {budget:,} B ({100.0 * used / budget:.1f}%)"


def format_measured(report: dict[str, Any]) -> str:
    """The "measured" section of report.json: flash and RAM from the linked ELF(s), the painted stack."""
    m = report["measured"]
    budget = m.get("budget", {})
    if m.get("board_kind") == "qemu-user":  # a static Linux executable: libc included, no budget
        lines = [f"measured on board {report.get('board', '?')} (from the linked ELF: a static executable, "
                 "libc included; 'flash' = file-backed text + rodata + data)"]
    else:
        lines = [f"measured on board {report.get('board', '?')} (from the linked ELF; "
                 "stack painted and read back under QEMU)"]
    for key, label in (("image", "emulation image" if m.get("board_kind") == "qemu-system" else "image"),
                       ("device", "device image")):
        e = m.get(key)
        if not e:
            continue
        arena = f" (arena {e['arena_bytes']:,})" if e.get("arena_bytes") is not None else ""
        lines.append(f"  {label} {e['elf']}: flash {_of(e['flash_bytes'], budget.get('flash_bytes'))}   "
                     f"RAM {_of(e['ram_bytes'], budget.get('ram_bytes'))}")
        lines.append(f"    flash = text {e['text_bytes']:,} + rodata {e['rodata_bytes']:,} + data {e['data_bytes']:,};"
                     f"  RAM = data {e['data_bytes']:,} + bss {e['bss_bytes']:,}{arena} + stack {e['stack_bytes']:,}")
    if m.get("stack_used_bytes") is not None:
        line = f"  stack high-water mark {m['stack_used_bytes']:,} B of {m['stack_reserved_bytes']:,} B reserved"
        e = m.get("image")
        if e:
            in_use = e["data_bytes"] + e["bss_bytes"] + m["stack_used_bytes"]
            line += f"; RAM in use (data + bss + stack high-water) {in_use:,} B"
        lines.append(line)
    return "\n".join(lines)


PLOT_EACH_OP = 120  # the most ops drawn as one bar and one label each


def plot_memory(report: dict[str, Any], path: str | Path) -> Path:
    """The memory timeline as a PNG: live bytes at each op (bars), the arena and the lower bound (lines)."""
    from matplotlib.figure import (
        Figure,  # the object API: no pyplot, no global backend state
    )

    ops, ram = report["ops"], report["ram"]
    live = [op["live_bytes"] for op in ops]
    x = list(range(len(ops)))
    many = len(ops) > PLOT_EACH_OP  # past that, bars and a label per op would take minutes and be unreadable
    fig = Figure(figsize=(min(max(6.0, 0.28 * len(ops) + 2.5), 0.28 * PLOT_EACH_OP + 2.5), 4.2), dpi=110)
    ax = fig.add_subplot()
    if many:
        ax.fill_between(x, live, step="mid", color="#4c72b0", label="live bytes")
    else:
        ax.bar(x, live, width=0.8, color="#4c72b0", label="live bytes")
    ax.axhline(ram["arena_bytes"], color="#c44e52", linewidth=1.5, label=f"arena {ram['arena_bytes']:,} B")
    if "lower_bound_bytes" in ram:
        ax.axhline(ram["lower_bound_bytes"], color="#55a868", linestyle="--", linewidth=1.5,
                   label=f"lower bound {ram['lower_bound_bytes']:,} B")
    shown = x[:: -(-len(ops) // PLOT_EACH_OP)] if many else x  # every k-th op named when there are many
    ax.set_xticks(shown)
    ax.set_xticklabels([ops[i]["name"] for i in shown], rotation=90, fontsize=7)
    ax.set_ylabel("bytes")
    ax.set_ylim(0, max([ram["arena_bytes"], *live, 1]) * 1.12)
    title = f"memory timeline: schedule {ram.get('schedule', '?')}"
    if ram.get("schedule") == "stream":
        tps = ram.get("tokens_per_step", 1)
        title += f", {tps} token{'s' if tps != 1 else ''} per step"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
