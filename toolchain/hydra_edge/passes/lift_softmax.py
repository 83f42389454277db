"""Lift softmax attention out of its aten spellings into one softmax_attention node.

Multi-head softmax attention over projections q, k, v ([T, D] each, H heads of
dh = D / H features):

    out[t, h*dh + i] = sum_s softmax_s(scale * q_h[t] . k_h[s]) * v[s, h*dh + i]

is written in many ways; after canonicalize every spelling has the same core:

    P = softmax(S * c, dim=-1)     S = matmul|bmm(Q, K^T)        (the manual form)
    O = matmul|bmm(P, V)
  or
    O = scaled_dot_product_attention(Q, K, V[, scale])           (no mask, no dropout, not causal)

where P may be wrapped by torch's "safe softmax" decomposition
(where(all -inf, 0, _softmax(S))), S, P may pass through reshapes, and the
scalar c is any product of mul/div by constants (attrs `other` or a one-element
constant) on S or on the Q and K operands. softmax is `softmax`, `_softmax` or
`_safe_softmax`. ONNX graphs come in with the same names (MatMul -> matmul,
Transpose -> permute, Reshape -> reshape, Softmax -> softmax, Mul/Div -> mul/div),
so they lift the same way.

Q, K^T (or K for SDPA), V and the head split/merge are recognised by what they
do, not by how they are spelt: each operand is traced back through layout ops
(view, reshape, _unsafe_view, flatten, unflatten, (un)squeeze, transpose,
permute, t, select, slice, unbind/split/chunk results) to the tensor that made
it (a projection), and the chain is replayed on an array of element indices.
The operand must then read element [t, off + h*dh + i] of that source for head
h, token t, feature i (off = 0, or D and 2D for the q/k/v thirds of a packed
in_proj: such a projection, linear/addmm/mm with constant weights, is split
into three linears). Likewise O is followed forward through layout ops to the
last tensor that holds [t, h*dh + i] in row-major [T, D] order; its readers
then read the softmax_attention output.

The node gets attrs heads (H) and scale (c, or 1/sqrt(dh) for SDPA without an
explicit scale). Everything the lifted node no longer needs is pruned. A
pattern that does not match exactly is left alone, and lowering then names the
op it cannot lower. Pure: graph in, graph out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Node, Tensor
from .canonicalize import consumers, producers

SOFTMAX_OPS = {"softmax", "_softmax", "_safe_softmax"}
MATMUL_OPS = {"matmul", "bmm", "mm"}
SDPA_OPS = {"scaled_dot_product_attention"}
RESHAPE_OPS = {"view", "reshape", "_unsafe_view", "view_copy", "flatten", "unflatten", "unsqueeze", "squeeze"}
LAYOUT_OPS = RESHAPE_OPS | {"transpose", "permute", "t", "select", "slice", "unbind", "split", "split_with_sizes",
                            "chunk"}
SCALAR_OPS = {"mul", "div"}


@dataclass
class _Source:
    """Where an operand's elements come from: tensor `name` ([T, N] in row-major order), features off..off+D."""

    name: str
    off: int


def lift_softmax(graph: Graph) -> Graph:
    """Linear in the graph: one _Matcher (producer and reader maps) for the whole pass, updated as nodes are
    lifted, and new nodes placed in one pass at the end (a list insert per lift would be quadratic)."""
    g = graph.copy()
    made = 0
    wanted: dict[str, str] = {}  # lifted node's output -> its module name, taken by a node the prune may drop
    splits: dict[tuple[str, int, int], str] = {}  # (packed source, offset, width) -> its split linear's output
    after: dict[int, list[Node]] = {}  # id(node) -> the new nodes that go right after it, in order
    names = {n.name for n in g.nodes}
    matcher: _Matcher | None = None
    for node in list(g.nodes):
        if node.op not in SDPA_OPS and node.op not in MATMUL_OPS:
            continue
        if matcher is None:
            matcher = _Matcher(g)
        match = matcher.match(node)
        if match is None:
            continue
        (q, k, v), heads, scale, out_tensor, dim = match
        inputs = [_materialise(g, src, dim, splits, role, matcher, after) for src, role in zip((q, k, v), "qkv")]
        if any(i is None for i in inputs):
            continue
        tokens = g.tensor(inputs[0]).numel // dim
        out_name = g.unique_name("softmax_attention")
        g.add_tensor(Tensor(out_name, (1, tokens, dim), "float32"))
        # Named after the attention module (blocks.0.attn): from the source, else from q's projection.
        module = node.source.split(":", 1)[0] if ": " in node.source else ""
        if not module:
            q_proj = matcher.prod.get(inputs[0])
            module = q_proj.name.rsplit(".", 1)[0] if q_proj is not None and "." in q_proj.name else ""
        node_name = module if module and module not in names else out_name
        lifted = Node(node_name, "softmax_attention", list(inputs), [out_name],
                      {"heads": int(heads), "scale": float(scale)}, node.source)
        if module and node_name != module:
            wanted[out_name] = module
        after.setdefault(id(node), []).append(lifted)
        matcher.replace_uses(out_tensor, out_name)
        matcher.added(lifted)
        names.add(node_name)
        made += 1
    if not made:
        return g
    g.nodes = _placed(g.nodes, after)
    g = g.prune()
    taken = {n.name for n in g.nodes}
    for n in g.nodes:  # names freed by the prune (a packed in_proj named after the module)
        name = wanted.get(n.outputs[0])
        if name is not None and name not in taken:
            taken.discard(n.name)
            n.name = name
            taken.add(name)
    return g


def _placed(nodes: list[Node], after: dict[int, list[Node]]) -> list[Node]:
    """`nodes` with each one's new nodes right after it (and theirs after them), in one pass."""
    out: list[Node] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(after.get(id(node), ())))
    return out


# -- layout replay ------------------------------------------------------------------------


def _out_index(name: str) -> int:
    """The result index of a multi-result node's output tensor "<node>__<i>"."""
    head, sep, tail = name.rpartition("__")
    return int(tail) if sep and tail.isdigit() else 0


def _dim(attrs: dict, key: str, rank: int, default: int = 0) -> int:
    d = attrs.get(key, default)
    return int(d) % rank if rank else 0


def replay(g: Graph, node: Node, arr: np.ndarray, out: str) -> np.ndarray | None:
    """What layout op `node` makes of `arr` (its first input's elements) as its output `out`; None if unknown.

    The input is first reshaped to the shape the graph records for it: canonicalize may have dropped a
    transpose of size-1 dims, which keeps the element order but not the shape.
    """
    src = g.tensor(node.inputs[0])
    want = g.tensor(out).shape
    if arr.size != src.numel:
        return None
    x = arr.reshape(src.shape)
    a, op, rank = node.attrs, node.op, x.ndim
    try:
        if op in RESHAPE_OPS:
            y = x.reshape(want)
        elif op == "transpose":
            y = np.swapaxes(x, _dim(a, "dim0", rank), _dim(a, "dim1", rank))
        elif op == "permute":
            y = np.transpose(x, [int(d) % rank for d in a.get("dims", [])])
        elif op == "t":
            y = x.T
        elif op == "select":
            y = np.take(x, int(a.get("index", 0)), axis=_dim(a, "dim", rank))
        elif op == "slice":
            d = _dim(a, "dim", rank)
            sl = [slice(None)] * rank
            sl[d] = slice(a.get("start"), a.get("end"), a.get("step") or 1)
            y = x[tuple(sl)]
        elif op == "unbind":
            y = np.take(x, _out_index(out), axis=_dim(a, "dim", rank))
        elif op in ("split", "split_with_sizes", "chunk"):
            d = _dim(a, "dim", rank)
            n = x.shape[d]
            if op == "chunk":
                size = -(-n // int(a["chunks"]))
                sizes = [min(size, n - s) for s in range(0, n, size)]
            elif op == "split" and isinstance(a.get("split_size"), int):
                size = int(a["split_size"])
                sizes = [min(size, n - s) for s in range(0, n, size)]
            else:
                sizes = [int(s) for s in a.get("split_sizes", a.get("split_size", []))]
            i = _out_index(out)
            start = sum(sizes[:i])
            y = np.take(x, range(start, start + sizes[i]), axis=d)
        else:
            return None
    except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError):  # numpy's AxisError is both of the first two
        return None
    return y if tuple(y.shape) == tuple(want) else None


def _scalar(g: Graph, node: Node) -> tuple[float, str] | None:
    """(c, x) when `node` is x * c or x / c for a constant scalar c (attrs `other` or a one-element constant)."""
    if node.op not in SCALAR_OPS or node.attrs.get("rounding_mode") is not None:
        return None
    if len(node.inputs) == 1:
        other = node.attrs.get("other")
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return None
        c, x = float(other), node.inputs[0]
    elif len(node.inputs) == 2:
        a, b = (g.tensor(n) for n in node.inputs)
        # mul is commutative; x / c only with the constant second (c / x is no scale)
        order = [(b, a)] if node.op == "div" else [(b, a), (a, b)]
        found = next(((c_t, x_t) for c_t, x_t in order if c_t.is_constant and c_t.data.size == 1
                      and not x_t.is_constant), None)
        if found is None:
            return None
        c, x = float(np.asarray(found[0].data).reshape(())), found[1].name
    else:
        return None
    if g.tensor(x).shape != g.tensor(node.outputs[0]).shape:
        return None  # a broadcasting product is not a scale
    if node.op == "div":
        return (1.0 / c, x) if c != 0 else None
    return c, x


class _Matcher:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.prod = producers(g)
        self.users = consumers(g)
        self.outputs = set(g.outputs)

    # -- keeping the maps right as the pass edits the graph ---------------------------------
    def added(self, node: Node) -> None:
        """A node the pass made (it goes into g.nodes later)."""
        for out in node.outputs:
            self.prod[out] = node
        for name in node.inputs:
            self.users.setdefault(name, []).append(node)

    def replace_uses(self, old: str, new: str) -> None:
        """canonicalize.replace_uses through the reader map: only the readers of `old` are touched."""
        readers = self.users.pop(old, [])
        for node in {id(r): r for r in readers}.values():  # a node that reads `old` twice is listed twice
            node.inputs = [new if name == old else name for name in node.inputs]
        self.users.setdefault(new, []).extend(readers)
        if old in self.outputs:
            self.g.outputs = [new if name == old else name for name in self.g.outputs]
            self.outputs = set(self.g.outputs)

    # -- tracing back: operand -> (source, index array, scalar factor) --------------------
    def trace_back(self, name: str) -> tuple[str, np.ndarray, float] | None:
        chain: list[tuple[Node, str]] = []
        factor = 1.0
        while True:
            node = self.prod.get(name)
            if node is None or not node.inputs:
                break
            if node.op in LAYOUT_OPS and len(node.inputs) == 1:
                chain.append((node, name))
                name = node.inputs[0]
            elif (scaled := _scalar(self.g, node)) is not None:
                factor *= scaled[0]
                name = scaled[1]  # elementwise: the layout is unchanged
            else:
                break
        src = self.g.tensor(name)
        if src.is_constant or not src.shape:
            return None
        arr = np.arange(src.numel, dtype=np.int64).reshape(src.shape)
        for node, out in reversed(chain):
            arr = replay(self.g, node, arr, out)
            if arr is None:
                return None
        return name, arr, factor

    def operand(self, name: str, transposed: bool) -> tuple[_Source, int, int, int, float] | None:
        """An attention operand [.., T, dh] (or [.., dh, T] when `transposed`): (source, H, T, dh, factor)."""
        shape = self.g.tensor(name).shape
        if len(shape) < 2:
            return None
        traced = self.trace_back(name)
        if traced is None:
            return None
        src, arr, factor = traced
        if transposed:
            dh, t = shape[-2], shape[-1]
        else:
            t, dh = shape[-2], shape[-1]
        heads = arr.size // max(t * dh, 1)
        if heads * t * dh != arr.size or heads < 1:
            return None
        a = arr.reshape(heads, dh, t).transpose(0, 2, 1) if transposed else arr.reshape(heads, t, dh)
        n = self.g.tensor(src).shape[-1]
        if self.g.tensor(src).numel != t * n:
            return None
        off = int(a.flat[0])
        if off < 0 or off + heads * dh > n:
            return None
        want = (np.arange(t)[None, :, None] * n + off + np.arange(heads)[:, None, None] * dh
                + np.arange(dh)[None, None, :])
        if not np.array_equal(a, want):
            return None
        return _Source(src, off), heads, t, dh, factor

    # -- the attention core ------------------------------------------------------------------
    def match(self, node: Node) -> tuple[tuple[_Source, _Source, _Source], int, float, str, int] | None:
        """((q, k, v) sources, heads, scale, the tensor holding the [T, D] output, D) if `node` ends attention."""
        if node.op in SDPA_OPS:
            core = self.sdpa(node)
        elif node.op in MATMUL_OPS:
            core = self.manual(node)
        else:
            return None
        if core is None:
            return None
        (q, k, v), heads, t, dh, scale = core
        end = self.follow_output(node.outputs[0], heads, t, dh)
        if end is None:
            return None
        return (q, k, v), heads, scale, end, heads * dh

    def sdpa(self, node: Node) -> tuple | None:
        a = node.attrs
        if len(node.inputs) != 3 or a.get("attn_mask") is not None or a.get("is_causal"):
            return None
        if float(a.get("dropout_p") or 0.0) != 0.0:
            return None
        ops = [self.operand(node.inputs[0], False), self.operand(node.inputs[1], False),
               self.operand(node.inputs[2], False)]
        if any(o is None for o in ops):
            return None
        (q, hq, tq, dq, fq), (k, hk, tk, dk, fk), (v, hv, tv, dv, fv) = ops
        if not (hq == hk == hv and tq == tk == tv and dq == dk == dv) or fv != 1.0:
            return None
        scale = a.get("scale")
        scale = 1.0 / math.sqrt(dq) if scale is None else float(scale)
        return (q, k, v), hq, tq, dq, scale * fq * fk

    def manual(self, node: Node) -> tuple | None:
        """`node` = matmul(P, V) with P = softmax(c * matmul(Q, K^T))."""
        if len(node.inputs) != 2:
            return None
        p_name, v_name = node.inputs
        soft = self.back_through_reshapes(p_name, allow_where=True)
        if soft is None or soft.op not in SOFTMAX_OPS or len(soft.inputs) != 1:
            return None
        scores_in = self.g.tensor(soft.inputs[0]).shape
        if not scores_in or _dim(soft.attrs, "dim", len(scores_in), -1) != len(scores_in) - 1:
            return None
        if soft.attrs.get("dtype") not in (None, "float32"):
            return None
        factor = [1.0]
        mm = self.back_through_reshapes(soft.inputs[0], factor=factor)
        if mm is None or mm.op not in MATMUL_OPS or len(mm.inputs) != 2:
            return None
        ops = [self.operand(mm.inputs[0], False), self.operand(mm.inputs[1], True), self.operand(v_name, False)]
        if any(o is None for o in ops):
            return None
        (q, hq, tq, dq, fq), (k, hk, tk, dk, fk), (v, hv, tv, dv, fv) = ops
        if not (hq == hk == hv and tq == tk == tv and dq == dk == dv) or fv != 1.0:
            return None
        if tuple(self.g.tensor(mm.outputs[0]).shape[-2:]) != (tq, tk) or scores_in[-1] != tk:
            return None
        return (q, k, v), hq, tq, dq, factor[0] * fq * fk

    def back_through_reshapes(self, name: str, allow_where: bool = False, factor: list[float] | None = None) -> Node | None:
        """The first producer of `name` that is not a reshape (or a safe-softmax `where`, or a scalar factor)."""
        while True:
            node = self.prod.get(name)
            if node is None:
                return None
            if node.op in RESHAPE_OPS and len(node.inputs) == 1:
                name = node.inputs[0]
            elif allow_where and node.op == "where" and len(node.inputs) == 3 and self.zeros(node.inputs[1]):
                name = node.inputs[2]
            elif factor is not None and (scaled := _scalar(self.g, node)) is not None:
                factor[0] *= scaled[0]
                name = scaled[1]
            else:
                return node

    def zeros(self, name: str) -> bool:
        t = self.g.tensor(name)
        if t.is_constant:
            return bool(np.all(t.data == 0))
        node = self.prod.get(name)
        return node is not None and node.op in ("full_like", "zeros_like") and float(node.attrs.get("fill_value", 0)) == 0

    # -- the output: forward through layout ops to [T, D] ---------------------------------------
    def follow_output(self, name: str, heads: int, t: int, dh: int) -> str | None:
        """The last tensor of `name`'s single-reader layout chain that holds the output in [T, D] order."""
        d = heads * dh
        arr = (np.arange(t)[None, :, None] * d + np.arange(heads)[:, None, None] * dh + np.arange(dh)[None, None, :])
        if arr.size != self.g.tensor(name).numel:
            return None
        arr = arr.reshape(self.g.tensor(name).shape)
        best = name if np.array_equal(arr.reshape(-1), np.arange(arr.size)) else None
        while name not in self.outputs:
            readers = self.users.get(name, [])
            if len(readers) != 1 or readers[0].op not in LAYOUT_OPS or len(readers[0].outputs) != 1:
                break
            node = readers[0]
            arr = replay(self.g, node, arr, node.outputs[0])
            if arr is None:
                break
            name = node.outputs[0]
            if np.array_equal(arr.reshape(-1), np.arange(arr.size)):
                best = name
        return best


# -- sources -> [T, D] tensors ---------------------------------------------------------------


def _materialise(g: Graph, src: _Source, dim: int, splits: dict, role: str, matcher: "_Matcher",
                 after: dict[int, list[Node]]) -> str | None:
    """The tensor holding `src`'s D features: the source itself, or a new linear cut out of a packed projection.

    A new linear goes into `after` under its projection (placed after it, and after any split made from it
    before, so that q, k, v stay in order) and into the matcher's maps.
    """
    t = g.tensor(src.name)
    n = t.shape[-1]
    if src.off == 0 and n == dim:
        return src.name
    key = (src.name, src.off, dim)
    if key in splits:
        return splits[key]
    proj = matcher.prod.get(src.name)
    weights = _projection(g, proj) if proj is not None else None
    if weights is None:
        return None
    x, w, b = weights
    name = g.unique_name(f"{proj.name}.{role}")
    w_name = g.unique_name(f"{name}_weight")
    g.add_constant(w_name, np.ascontiguousarray(w[src.off:src.off + dim]).astype(np.float32))
    inputs = [x, w_name]
    if b is not None:
        b_name = g.unique_name(f"{name}_bias")
        g.add_constant(b_name, np.ascontiguousarray(b[src.off:src.off + dim]).astype(np.float32))
        inputs.append(b_name)
    x_shape = g.tensor(x).shape
    g.add_tensor(Tensor(name, (*x_shape[:-1], dim), "float32"))
    attrs = {} if b is not None else {"bias": None}
    linear = Node(name, "linear", inputs, [name], attrs, proj.source)
    after.setdefault(id(proj), []).append(linear)
    matcher.added(linear)
    splits[key] = name
    return name


def _projection(g: Graph, node: Node) -> tuple[str, np.ndarray, np.ndarray | None] | None:
    """(x, W [N, K], b [N] or None) of a linear / addmm / mm / matmul with constant weights; else None."""

    def const(name: str) -> np.ndarray | None:
        t = g.tensor(name)
        return np.asarray(t.data, np.float64) if t.is_constant else None

    if node.op == "linear" and len(node.inputs) in (2, 3):
        w = const(node.inputs[1])
        b = const(node.inputs[2]) if len(node.inputs) == 3 else None
        if w is None or w.ndim != 2 or (len(node.inputs) == 3 and (b is None or b.size != w.shape[0])):
            return None
        return node.inputs[0], w, None if b is None else b.reshape(-1)
    if node.op == "addmm" and len(node.inputs) == 3:
        if node.attrs.get("beta", 1) != 1 or node.attrs.get("alpha", 1) != 1:
            return None
        b, wt = const(node.inputs[0]), const(node.inputs[2])
        if b is None or wt is None or wt.ndim != 2 or b.size != wt.shape[1]:
            return None
        return node.inputs[1], wt.T, b.reshape(-1)
    if node.op in ("mm", "matmul") and len(node.inputs) == 2:
        wt = const(node.inputs[1])
        if wt is None or wt.ndim != 2 or g.tensor(node.inputs[0]).is_constant:
            return None
        return node.inputs[0], wt.T, None
    return None
