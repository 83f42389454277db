"""Split a fused projection (one Linear for q, k and v) into one Linear per part.

The Hydra paper's listing, timm, torchvision and most ViT code compute q, k and v with one
Linear(D, 3D) and cut its output. The cuts people write, as the exporters record them:

1. slices of the last dim: `qkv.chunk(3, -1)`, `torch.split(qkv, D, -1)` (aten split /
   split_with_sizes, ONNX Split or Slice): each part is the Linear with those weight rows;
2. timm's `qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)` (also with select,
   or ONNX Split + Squeeze on the leading axis; nn.MultiheadAttention's unflatten/unsqueeze/
   transpose/squeeze/select): the reshape cuts the features into P equal parts (axis P of the
   reshape); reshapes that add or drop 1s and one permute move that axis; part i is Linear_i, put
   through the same steps with that axis left out.

A bias, given to the Linear or added after a MatMul (ONNX), is cut the same way. Each part keeps the
name of the tensor the cut produced, so the attention that reads it is untouched, and afterwards it
is written as the separate q, k, v projections passes/lift_hydra.py and passes/lift_softmax.py find.
The float result is the same: each output element is the same dot product. Pure: graph in, graph out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Node, Tensor
from .canonicalize import RESHAPE_OPS, canonicalize, consumers

_PART_NAMES = ("q", "k", "v")


@dataclass
class _Projection:
    """y = x @ weight.T (+ bias): a Linear, or a MatMul with a constant weight (+ an add of a constant bias)."""

    nodes: list[Node]  # the nodes it replaces (the product, and the bias add when separate)
    x: str
    weight: np.ndarray  # [N, K]
    weight_name: str
    bias: np.ndarray | None  # [N]
    output: str


@dataclass
class _Part:
    """Features [lo, hi) of the projection, made into tensor `target` by the view/permute `chain`."""

    target: str
    lo: int
    hi: int
    chain: list[tuple[str, dict]] = field(default_factory=list)


def split_projections(graph: Graph) -> Graph:
    g = graph.copy()
    changed = False
    for node in list(g.nodes):
        proj = _projection(g, node) if any(n is node for n in g.nodes) else None
        found = _parts(g, proj.output) if proj is not None else None
        if found is not None:
            _rewrite(g, proj, *found)
            changed = True
    return canonicalize(g) if changed else g  # drops the chains' no-op views and permutes


def _const(g: Graph, name: str) -> np.ndarray | None:
    t = g.tensors.get(name)
    return None if t is None or not t.is_constant else np.asarray(t.data)


def _only_user(g: Graph, users: dict[str, list[Node]], name: str) -> Node | None:
    readers = users.get(name, [])
    return readers[0] if len(readers) == 1 and name not in g.outputs else None


def _projection(g: Graph, node: Node) -> _Projection | None:
    if node.op == "linear" and len(node.inputs) in (2, 3):
        w = _const(g, node.inputs[1])
        b = _const(g, node.inputs[2]) if len(node.inputs) == 3 else None
        if w is None or w.ndim != 2 or (len(node.inputs) == 3 and (b is None or b.size != w.shape[0])):
            return None
        weight, bias, weight_name = w, None if b is None else b.reshape(-1), node.inputs[1]
    elif node.op in ("matmul", "mm") and len(node.inputs) == 2:
        wt = _const(g, node.inputs[1])
        if wt is None or wt.ndim != 2:
            return None
        weight, bias, weight_name = wt.T, None, node.inputs[1].removesuffix("_t")
    else:
        return None
    x = node.inputs[0]
    if _const(g, x) is not None or len(g.tensor(x).shape) < 2:
        return None
    nodes, out = [node], node.outputs[0]
    add = _only_user(g, consumers(g), out)
    if bias is None and add is not None and add.op == "add" and add.attrs.get("alpha", 1) == 1 and len(add.inputs) == 2:
        other = next(i for i in add.inputs if i != out) if add.inputs.count(out) == 1 else None
        b = _const(g, other) if other else None
        n = weight.shape[0]
        if b is not None and b.size == n and b.shape[-1] == n and g.tensor(add.outputs[0]).shape == g.tensor(out).shape:
            bias, out = b.reshape(-1).astype(np.float32), add.outputs[0]
            nodes.append(add)
    return _Projection(nodes, x, weight, weight_name, bias, out)


def _slice_range(node: Node, rank: int, dim: int, size: int) -> tuple[int, int] | None:
    """[lo, hi) of `node` when it is a step-1 slice of `dim` (of a rank-`rank` tensor of `size` there)."""
    if node.op != "slice" or len(node.inputs) != 1 or int(node.attrs.get("dim", 0)) % rank != dim:
        return None
    if int(node.attrs.get("step", 1) or 1) != 1:
        return None
    start, end = node.attrs.get("start"), node.attrs.get("end")
    lo, hi, _ = slice(None if start is None else int(start), None if end is None else int(end)).indices(size)
    return (lo, hi) if hi > lo else None


def _split_sizes(node: Node, size: int) -> list[int] | None:
    if node.op == "split_with_sizes":
        return [int(s) for s in node.attrs.get("split_sizes", [])]
    step = int(node.attrs.get("split_size", 0))
    if step <= 0:
        return None
    return [min(step, size - i) for i in range(0, size, step)]


def _parts(g: Graph, y: str) -> tuple[list[Node], list[_Part]] | None:
    """(the nodes that cut y, the parts) when every reader of y is a cut that `_rewrite` can replace."""
    users = consumers(g)
    shape = g.tensor(y).shape
    rank, n = len(shape), shape[-1]
    readers = users.get(y, [])
    if not readers or y in g.outputs:
        return None
    parts: list[_Part] = []
    last = rank - 1
    if all(r.op in ("slice", "split", "split_with_sizes") for r in readers):  # 1: cuts of the features
        for r in readers:
            if r.op == "slice":
                span = _slice_range(r, rank, last, n)
                if span is None:
                    return None
                parts.append(_Part(r.outputs[0], *span))
                continue
            if int(r.attrs.get("dim", 0)) % rank != last:
                return None
            sizes = _split_sizes(r, n)
            if not sizes or sum(sizes) != n or len(sizes) != len(r.outputs):
                return None
            lo = 0
            for out, size in zip(r.outputs, sizes):
                parts.append(_Part(out, lo, lo + size))
                lo += size
        return (readers, parts) if len(parts) > 1 else None
    # 2: a reshape that cuts the features into P equal parts, maybe a permute, then a read of each part
    view = _only_user(g, users, y)
    if view is None or view.op not in RESHAPE_OPS:
        return None
    cut = g.tensor(view.outputs[0]).shape
    axis = last
    if len(cut) <= rank or cut[:axis] != shape[:axis] or int(np.prod(cut[axis:])) != n or cut[axis] < 2:
        return None
    pieces, width = cut[axis], n // cut[axis]
    # Follow the parts' axis through what only moves it: reshapes that add or drop 1s (nn.MultiheadAttention's
    # unsqueeze/squeeze) and one permute; each step is replayed on a part with that axis left out.
    removed, held = [view], view.outputs[0]
    chain: list[tuple[str, dict]] = [("view", {"size": _without(cut, axis)})]
    permuted = False
    while (step := _only_user(g, users, held)) is not None:
        src, out = g.tensor(held).shape, g.tensor(step.outputs[0]).shape
        if step.op in RESHAPE_OPS and _ones_dropped(src) == _ones_dropped(out):
            k = sum(1 for d in src[:axis] if d != 1)  # the parts' axis is the k-th dim larger than 1
            axis = [i for i, d in enumerate(out) if d != 1][k]
            chain.append(("view", {"size": _without(out, axis)}))
        elif step.op == "permute" and not permuted:
            perm = [int(d) % len(src) for d in step.attrs.get("dims", [])]
            chain.append(("permute", {"dims": [d - (d > axis) for d in perm if d != axis]}))
            axis, permuted = perm.index(axis), True
        else:
            break
        removed.append(step)
        held = step.outputs[0]
    where, rank_held = axis, len(g.tensor(held).shape)
    readers = users.get(held, [])
    if not readers or held in g.outputs:
        return None
    for r in readers:
        if r.op == "unbind" and int(r.attrs.get("dim", 0)) % rank_held == where:
            picks = list(enumerate(r.outputs))
        elif r.op == "select" and int(r.attrs.get("dim", 0)) % rank_held == where:
            picks = [(int(r.attrs["index"]) % pieces, r.outputs[0])]
        else:
            span = _slice_range(r, rank_held, where, pieces)
            if span is None or span[1] - span[0] != 1:
                return None
            kept = list(g.tensor(r.outputs[0]).shape)  # the slice keeps a 1 where the parts were
            picks = [(span[0], r.outputs[0])]
            chain_i = [*chain, ("view", {"size": kept})]
            parts += [_Part(out, i * width, (i + 1) * width, chain_i) for i, out in picks]
            continue
        parts += [_Part(out, i * width, (i + 1) * width, list(chain)) for i, out in picks]
    return (removed + readers, parts) if len(parts) > 1 else None


def _without(shape: tuple[int, ...], axis: int) -> list[int]:
    return [int(d) for i, d in enumerate(shape) if i != axis]


def _ones_dropped(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _rewrite(g: Graph, proj: _Projection, cuts: list[Node], parts: list[_Part]) -> None:
    """Replace the projection and its cuts by a Linear (and its view/permute chain) per part, in place."""
    at = g.nodes.index(proj.nodes[0])
    gone = {id(n) for n in proj.nodes + cuts}
    base = proj.nodes[0]
    lead = g.tensor(proj.output).shape[:-1]
    new: list[Node] = []
    for i, part in enumerate(parts):
        label = _PART_NAMES[i] if len(parts) == 3 else f"part{i}"
        w = g.add_constant(g.unique_name(f"{proj.weight_name}.{label}"), proj.weight[part.lo:part.hi].astype(np.float32))
        inputs = [proj.x, w.name]
        attrs: dict = {}
        if proj.bias is not None:
            b = g.add_constant(g.unique_name(f"{proj.weight_name}.{label}_bias"), proj.bias[part.lo:part.hi].astype(np.float32))
            inputs.append(b.name)
        else:
            attrs["bias"] = None
        steps = [("linear", attrs), *part.chain]
        current = inputs
        for j, (op, step_attrs) in enumerate(steps):
            final = j == len(steps) - 1
            if final:
                out = part.target
            else:
                out = g.unique_name(f"{base.outputs[0]}.{label}" if op == "linear" else f"{part.target}.{op}")
                shape = (*lead, part.hi - part.lo) if op == "linear" else _chain_shape(g, current[0], op, step_attrs)
                g.add_tensor(Tensor(out, tuple(shape), "float32"))
            name = f"{base.name}.{label}" if op == "linear" else f"{base.name}.{label}.{op}"
            new.append(Node(name, op, current, [out], dict(step_attrs), base.source))
            current = [out]
    g.nodes[at:at] = new
    g.nodes = [n for n in g.nodes if id(n) not in gone]


def _chain_shape(g: Graph, src: str, op: str, attrs: dict) -> tuple[int, ...]:
    shape = g.tensor(src).shape
    if op == "view":
        return tuple(int(s) for s in attrs["size"])
    return tuple(shape[d] for d in attrs["dims"])
