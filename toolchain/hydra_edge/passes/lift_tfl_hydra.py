"""Lift Hydra attention out of an int8 TFLite graph's tfl_* ops into one tfl_hydra_attention node.

An int8 ViT converted to TFLite writes the Hydra core with plain operators. For q, k, v of [T, D]:

    phi(x) = MUL(x, RSQRT([ADD(] SUM(MUL(x, x), axis=features) [, eps)]))    the rsqrt spelling
           | L2_NORMALIZATION(x)                                              the L2 spelling
    kv     = SUM(MUL(phi(k), v), axis=tokens)                                 [D]
    out    = MUL(phi(q), kv)                                                  [T, D]

with RESHAPEs allowed between any two links and either operand order in every MUL and in the
eps ADD. TFLM (and the unfused plan) holds phi(q), phi(k) and phi(k) * v as [T, D] tensors. Every
link of phi works within one token's row, and TFLM's int8 SUM over tokens adds the raw int8 values in
int32 and requantises once at the end (QuantizedMeanOrSum: (sum - zp * T), then
MultiplyByQuantizedMultiplier). So the same bits come from two passes over the tokens with O(D) state:
pass 1 adds MUL(phi(k_t), v_t) into an int32 accumulator row by row, then requantises kv; pass 2 writes
MUL(phi(q_t), kv) row by row. Both spellings lift: nothing needs a whole [T, D] tensor.

The node: inputs [q, k, v], the final MUL's output, attrs

    tokens, depth                T, D
    phi_q, phi_k                 {kind: 0 (rsqrt) | 1 (l2),
                                  square, sum, [eps, eps_value], rsqrt, scale   (kind 0; has_eps 0/1)
                                  l2                                             (kind 1)}
    kv_mul, kv_sum, out_mul      the attrs of those nodes

Each nested dict is the replaced node's own attrs, made per row: broadcast shapes of one token's row
([1, D], the per-token scalar [1]), the phi SUM over one row, RSQRT and L2_NORMALIZATION of one row;
kv_sum keeps its attrs over [T, D]. A MUL or ADD whose operands come in the other order has its
input1_* / input2_* attrs swapped (the kernels are symmetric: the same integers either way), so that
input1 is always the row operand (x, phi(k), phi(q)) and input2 the other (r, v, kv, eps).

Every condition the row-by-row evaluation relies on is checked, else the pattern is left unfused:
shapes (batch 1, the [T, D] layout of every operand as its attrs state it, each reduction over
exactly the tokens or exactly the features, the per-token scalar broadcast along the features only),
a constant one-element int8 eps, T > 1 and D > 1, that no removed tensor is read by a node that
stays or is a graph output, and that every replaced node rounds alike (ops.node_rounding: the lifted node
keeps that rounding, and its C params give it to each nested op). Pure: graph in, graph out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Node
from ..ops import node_rounding

OP = "tfl_hydra_attention"
PHI_RSQRT, PHI_L2 = 0, 1
_ONES = (1, 1, 1, 1, 1, 1)


def _row(d: int) -> tuple[int, ...]:
    return (1, 1, 1, 1, 1, d)


def _mat(t: int, d: int) -> tuple[int, ...]:
    return (1, 1, 1, 1, t, d)


@dataclass
class _Uses:
    """Who reads each tensor, and the graph's edges: the facts every match checks."""

    graph: Graph
    readers: dict[str, list[Node]] = field(default_factory=dict)
    producer: dict[str, Node] = field(default_factory=dict)

    @staticmethod
    def of(graph: Graph) -> _Uses:
        u = _Uses(graph)
        for node in graph.nodes:
            for name in dict.fromkeys(node.inputs):
                u.readers.setdefault(name, []).append(node)
            for name in node.outputs:
                u.producer[name] = node
        return u

    def made_by(self, name: str, op: str) -> Node | None:
        node = self.producer.get(name)
        return node if node is not None and node.op == op else None

    def back(self, name: str, nodes: list[Node]) -> str:
        """Step back over RESHAPEs (appended to `nodes`) to the tensor they reshape."""
        while (r := self.made_by(name, "tfl_reshape")) is not None and len(self.readers.get(name, [])) == 1:
            nodes.append(r)
            name = r.inputs[0]
        return name


def _swapped(attrs: dict) -> dict:
    """A binary op's attrs with its operands exchanged (input1_* <-> input2_*)."""
    out = {}
    for key, value in attrs.items():
        if key.startswith("input1_"):
            out["input2_" + key[7:]] = value
        elif key.startswith("input2_"):
            out["input1_" + key[7:]] = value
        else:
            out[key] = value
    return out


def _binary(node: Node, first: int, shape1: tuple, shape2: tuple, out: tuple) -> dict | None:
    """The attrs of MUL/ADD `node` with input `first` as input1, if its shapes are (shape1, shape2) -> out."""
    a = dict(node.attrs) if first == 0 else _swapped(node.attrs)
    if (tuple(a["input1_shape"]), tuple(a["input2_shape"]), tuple(a["output_shape"])) != (shape1, shape2, out):
        return None
    return a


def _reduces(node: Node, t: int, d: int, over: str) -> bool:
    """A SUM of [T, D] over exactly the tokens ("tokens") or exactly the features ("features")."""
    a = node.attrs
    red = (1, 1, 1, 1, t, 1) if over == "tokens" else _row(d)
    return tuple(a["input_shape"]) == _mat(t, d) and tuple(a["reduce_shape"]) == red and \
        a["num_elements"] == (t if over == "tokens" else d)


@dataclass
class _Phi:
    x: str
    attrs: dict
    nodes: list[Node]


def _per_row_binary(a: dict, shape1: tuple, shape2: tuple) -> dict:
    return {**a, "input1_shape": shape1, "input2_shape": shape2, "output_shape": shape1}


def _match_phi(u: _Uses, name: str, t: int, d: int) -> _Phi | None:
    nodes: list[Node] = []
    src = u.back(name, nodes)
    l2 = u.made_by(src, "tfl_l2_normalization")
    if l2 is not None:
        if l2.attrs["outer_size"] != t or l2.attrs["depth"] != d:
            return None
        attrs = {"kind": PHI_L2, "l2": {**l2.attrs, "outer_size": 1}}
        return _Phi(l2.inputs[0], attrs, [*nodes, l2])
    scale = u.made_by(src, "tfl_mul")
    if scale is None:
        return None
    for first in (0, 1):
        found = _match_rsqrt_phi(u, scale, first, t, d)
        if found is not None:
            found.nodes[:0] = nodes
            return found
    return None


def _match_rsqrt_phi(u: _Uses, scale: Node, first: int, t: int, d: int) -> _Phi | None:
    """scale = MUL(x, r) with x = scale.inputs[first], r = RSQRT([ADD(] SUM(MUL(x, x)) [, eps)])."""
    x, r_name = scale.inputs[first], scale.inputs[1 - first]
    scale_attrs = _binary(scale, first, _mat(t, d), (1, 1, 1, 1, t, 1), _mat(t, d))
    if scale_attrs is None:
        return None
    nodes = [scale]
    rsqrt = u.made_by(u.back(r_name, nodes), "tfl_rsqrt")
    if rsqrt is None or rsqrt.attrs["size"] != t:
        return None
    nodes.append(rsqrt)
    s_name = u.back(rsqrt.inputs[0], nodes)
    attrs: dict = {"kind": PHI_RSQRT, "has_eps": 0}
    add = u.made_by(s_name, "tfl_add")
    if add is not None:
        eps = _match_eps(u, add, t)
        if eps is None:
            return None
        attrs.update(eps[0])
        nodes.append(add)
        s_name = u.back(eps[1], nodes)
    total = u.made_by(s_name, "tfl_sum")
    if total is None or not _reduces(total, t, d, "features"):
        return None
    nodes.append(total)
    square = u.made_by(u.back(total.inputs[0], nodes), "tfl_mul")
    if square is None or square.inputs != [x, x] or _binary(square, 0, _mat(t, d), _mat(t, d), _mat(t, d)) is None:
        return None
    nodes.append(square)
    attrs.update(
        square=_per_row_binary(dict(square.attrs), _row(d), _row(d)),
        sum={**total.attrs, "input_shape": _row(d), "reduce_shape": _row(d)},
        rsqrt={**rsqrt.attrs, "size": 1},
        scale=_per_row_binary(scale_attrs, _row(d), _ONES),
    )
    return _Phi(x, attrs, nodes)


def _match_eps(u: _Uses, add: Node, t: int) -> tuple[dict, str] | None:
    """ADD(s, eps) with eps a one-element int8 constant: (its attrs, per token; the s tensor)."""
    for first in (0, 1):
        s, eps = add.inputs[first], add.inputs[1 - first]
        c = u.graph.tensor(eps)
        if not c.is_constant or c.numel != 1 or str(c.data.dtype) != "int8" or u.graph.tensor(s).numel != t:
            continue
        a = dict(add.attrs) if first == 0 else _swapped(add.attrs)
        shape = tuple(a["input1_shape"])
        if tuple(a["input2_shape"]) != _ONES or tuple(a["output_shape"]) != shape or \
                int(np.prod(shape)) != t:
            continue
        row = _per_row_binary(a, _ONES, _ONES)
        return {"has_eps": 1, "eps": row, "eps_value": int(c.data.reshape(-1)[0])}, s
    return None


def _match(u: _Uses, final: Node) -> tuple[Node, set[str]] | None:
    """The tfl_hydra_attention node replacing the Hydra core that ends at MUL `final` and the names of the
    nodes it replaces besides `final`, or None."""
    for first in (0, 1):
        kv_nodes: list[Node] = []
        kv_sum = u.made_by(u.back(final.inputs[1 - first], kv_nodes), "tfl_sum")
        if kv_sum is None:
            continue
        shape = tuple(kv_sum.attrs["input_shape"])
        t, d = shape[4], shape[5]
        if t < 2 or d < 2 or not _reduces(kv_sum, t, d, "tokens"):
            continue
        out_attrs = _binary(final, first, _mat(t, d), _row(d), _mat(t, d))
        kv_mul = u.made_by(u.back(kv_sum.inputs[0], kv_nodes), "tfl_mul")
        if out_attrs is None or kv_mul is None:
            continue
        phi_q = _match_phi(u, final.inputs[first], t, d)
        if phi_q is None:
            continue
        for kfirst in (0, 1):
            kv_attrs = _binary(kv_mul, kfirst, _mat(t, d), _mat(t, d), _mat(t, d))
            phi_k = _match_phi(u, kv_mul.inputs[kfirst], t, d) if kv_attrs is not None else None
            if phi_k is None:
                continue
            v = kv_mul.inputs[1 - kfirst]
            removed = {n.name: n for n in [*phi_q.nodes, *phi_k.nodes, kv_mul, kv_sum, *kv_nodes]}
            if not _closed(u, removed, final, (phi_q.x, phi_k.x, v), t * d):
                continue
            rounding = _one_rounding(u.graph, [*removed.values(), final])
            if rounding is None:
                continue
            attrs = _without_rounding({
                "tokens": t,
                "depth": d,
                "phi_q": phi_q.attrs,
                "phi_k": phi_k.attrs,
                "kv_mul": _per_row_binary(kv_attrs, _row(d), _row(d)),
                "kv_sum": dict(kv_sum.attrs),
                "out_mul": _per_row_binary(out_attrs, _row(d), _row(d)),
            })
            if rounding:  # the replaced nodes' own rounding attr (else the graph's, as theirs)
                attrs["rounding"] = rounding
            node = Node(f"{final.name}_hydra", OP, [phi_q.x, phi_k.x, v], list(final.outputs), attrs,
                        final.source or final.name)
            return node, set(removed)
    return None


def _one_rounding(g: Graph, nodes: list[Node]) -> str | None:
    """The replaced nodes' one rounding: "" when none has a "rounding" attr (they round as the graph), the attr
    when they all round alike, None when they differ (one kernel call rounds one way: not lifted)."""
    default = g.meta.get("rounding", "double")
    if len({node_rounding(n, default) for n in nodes}) > 1:
        return None
    return node_rounding(nodes[0], default) if any("rounding" in n.attrs for n in nodes) else ""


def _without_rounding(attrs: dict) -> dict:
    """The nested params without the replaced nodes' "rounding" attrs (the lifted node holds its rounding)."""
    return {k: _without_rounding(v) if isinstance(v, dict) else v for k, v in attrs.items() if k != "rounding"}


def _closed(u: _Uses, removed: dict[str, Node], final: Node, operands: tuple[str, ...], size: int) -> bool:
    """Whether the removed nodes' outputs are read only inside the pattern, and q, k, v are [T, D] int8."""
    g = u.graph
    inside = set(removed) | {final.name}
    for node in removed.values():
        for out in node.outputs:
            if out in g.outputs or out in operands or any(r.name not in inside for r in u.readers.get(out, [])):
                return False
    return all(g.tensor(x).numel == size and g.tensor(x).dtype == "int8" for x in operands)


def lift_tfl_hydra(graph: Graph) -> Graph:
    """Every Hydra core of an int8 TFLite graph as one tfl_hydra_attention node (unmatched ones unchanged)."""
    g = graph.copy()
    while True:
        u = _Uses.of(g)
        found = next((m for m in (_match(u, f) for f in g.nodes if f.op == "tfl_mul") if m is not None), None)
        if found is None:
            return g
        node, removed = found
        final = node.outputs[0]
        dropped = {o for n in g.nodes if n.name in removed for o in n.outputs}
        consts = {i for n in g.nodes if n.name in removed for i in n.inputs if i and g.tensors[i].is_constant}
        g.nodes = [node if final in n.outputs else n for n in g.nodes if n.name not in removed]
        still_read = {i for n in g.nodes for i in n.inputs}
        for name in dropped | {c for c in consts if c not in still_read and c not in g.outputs}:
            del g.tensors[name]
