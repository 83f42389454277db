"""Fold decomposed LayerNorm and erf-GELU (as ONNX exporters write them) back into layer_norm and gelu.

On the aten-level graph, after conversion; a pure pass (graph in, graph out):

    gelu:        x * 0.5 * (1 + erf(x / sqrt(2)))   (or x * (1/sqrt 2) inside erf), the three
                 factors x, 0.5 and (1 + erf(..)) multiplied in any order and grouping
                 -> gelu(x, approximate="none")
    layer_norm:  d = x - mean(x, -1, keepdim); var = mean(d ** 2 or d * d, -1, keepdim)
                 y = d / sqrt(var + eps) [* gamma] [+ beta]
                 -> layer_norm(x, gamma, beta, normalized_shape=[D], eps)

A match must own its intermediates (each has one reader, the next step), so
that nothing else reads a value the fused node no longer computes. Whatever
does not match is left as it is, for lowering to name.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Graph, Node

_SQRT2 = math.sqrt(2.0)


def fuse_decompositions(graph: Graph) -> Graph:
    g = graph.copy()
    changed = _fuse_gelu(g) + _fuse_layer_norm(g)
    return g.prune() if changed else g


# -- helpers ---------------------------------------------------------------------------------------


class _Index:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.prod = {o: n for n in g.nodes for o in n.outputs}
        self.users: dict[str, list[Node]] = {}
        for n in g.nodes:
            for i in n.inputs:
                self.users.setdefault(i, []).append(n)

    def sole_user(self, tensor: str) -> Node | None:
        users = self.users.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.g.outputs else None

    def scalar(self, node: Node) -> tuple[str, float] | None:
        """(activation, scalar) of a binary node whose other operand is one number."""
        if len(node.inputs) == 1 and isinstance(node.attrs.get("other"), (int, float)):
            return node.inputs[0], float(node.attrs["other"])
        if len(node.inputs) == 2:
            for act, c in (node.inputs, node.inputs[::-1]):
                t = self.g.tensor(c)
                if t.is_constant and t.data.size == 1 and not self.g.tensor(act).is_constant:
                    if node.op in ("sub", "div") and c == node.inputs[0]:
                        return None  # c - x and c / x are not x - c and x / c
                    return act, float(t.data.reshape(-1)[0])
        return None

    def constant(self, name: str) -> np.ndarray | None:
        t = self.g.tensor(name)
        return t.data if t.is_constant else None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _replace(g: Graph, old: Node, new: Node) -> None:
    g.nodes[g.nodes.index(old)] = new


# -- gelu -----------------------------------------------------------------------------------------------


def _fuse_gelu(g: Graph) -> int:
    made = 0
    for erf in [n for n in g.nodes if n.op == "erf"]:
        ix = _Index(g)
        if erf not in g.nodes or len(erf.inputs) != 1:
            continue
        pre = ix.prod.get(erf.inputs[0])
        if pre is None or pre.op not in ("div", "mul") or ix.sole_user(pre.outputs[0]) is not erf:
            continue
        sc = ix.scalar(pre)
        if sc is None or not _close(sc[1], _SQRT2 if pre.op == "div" else 1.0 / _SQRT2):
            continue
        x = sc[0]
        one = ix.sole_user(erf.outputs[0])
        if one is None or one.op != "add" or one.attrs.get("alpha", 1) != 1:
            continue
        sc = ix.scalar(one)
        if sc is None or sc[0] != erf.outputs[0] or not _close(sc[1], 1.0):
            continue
        final = _gelu_product(ix, one.outputs[0], x)
        if final is None:
            continue
        # named after the pattern's first node (the exporter's name for the whole gelu)
        _replace(g, final, Node(pre.name, "gelu", [x], list(final.outputs), {"approximate": "none"}, pre.source))
        made += 1
    return made


def _gelu_product(ix: _Index, a: str, x: str) -> Node | None:
    """The last mul of x * a * 0.5 (any order and grouping) starting from a's reader, or None."""
    node = ix.sole_user(a)
    for _ in range(2):
        if node is None or node.op != "mul":
            return None
        tensors, scale = _factors(ix, node, root=True)
        if scale is not None and sorted(tensors) == sorted([x, a]) and _close(scale, 0.5):
            return node
        node = ix.sole_user(node.outputs[0])
    return None


def _factors(ix: _Index, node: Node, root: bool = False) -> tuple[list[str], float | None]:
    """The tensors and the product of scalars that a tree of single-reader muls multiplies."""
    tensors: list[str] = []
    scale = 1.0
    if len(node.inputs) == 1:
        other = node.attrs.get("other")
        if not isinstance(other, (int, float)):
            return [], None
        scale *= float(other)
    for name in node.inputs:
        t = ix.g.tensor(name)
        if t.is_constant:
            if t.data.size != 1:
                return [], None
            scale *= float(t.data.reshape(-1)[0])
            continue
        inner = ix.prod.get(name)
        if inner is not None and inner.op == "mul" and ix.sole_user(name) is node:
            sub, s = _factors(ix, inner)
            if s is None:
                return [], None
            tensors += sub
            scale *= s
        else:
            tensors.append(name)
    return tensors, scale


# -- layer_norm --------------------------------------------------------------------------------------------


def _last_dim_mean(ix: _Index, node: Node | None) -> str | None:
    """x if `node` is mean(x, dim=[-1], keepdim=True); else None."""
    if node is None or node.op != "mean" or len(node.inputs) != 1 or not node.attrs.get("keepdim"):
        return None
    rank = len(ix.g.tensor(node.inputs[0]).shape)
    dims = node.attrs.get("dim")
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if rank == 0 or [int(d) % rank for d in dims] != [rank - 1] or node.attrs.get("dtype") is not None:
        return None
    return node.inputs[0]


def _fuse_layer_norm(g: Graph) -> int:
    made = 0
    for sqrt in [n for n in g.nodes if n.op == "sqrt"]:
        ix = _Index(g)
        if sqrt not in g.nodes:
            continue
        m = _match_layer_norm(ix, sqrt)
        if m is None:
            continue
        last, first, x, gamma, beta, eps = m
        d = g.tensor(x).shape[-1]
        attrs = {"normalized_shape": [d], "eps": eps, "cudnn_enable": False}
        inputs = [x]
        for key, value in (("weight", gamma), ("bias", beta)):
            if value is None:
                attrs[key] = None
                continue
            if g.tensor(value).shape != (d,):  # a [1, 1, D] constant: layer_norm takes [D]
                flat = g.unique_name(f"{value}_flat")
                g.add_constant(flat, g.tensor(value).data.reshape(d))
                value = flat
            inputs.append(value)
        _replace(g, last, Node(first.name, "layer_norm", inputs, list(last.outputs), attrs, first.source))
        made += 1
    return made


def _match_layer_norm(ix: _Index, sqrt: Node):
    g = ix.g
    add_eps = ix.prod.get(sqrt.inputs[0]) if len(sqrt.inputs) == 1 else None
    if add_eps is None or add_eps.op != "add" or ix.sole_user(add_eps.outputs[0]) is not sqrt:
        return None
    sc = ix.scalar(add_eps)
    if sc is None or sc[1] < 0:
        return None
    var, eps = sc
    sq = _last_dim_mean(ix, ix.prod.get(var))
    if sq is None:
        return None
    square = ix.prod.get(sq)
    if square is None:
        return None
    if square.op == "pow" and len(square.inputs) == 1 and float(square.attrs.get("exponent", 0)) == 2.0:
        diff = square.inputs[0]
    elif square.op == "mul" and len(square.inputs) == 2 and square.inputs[0] == square.inputs[1]:
        diff = square.inputs[0]
    else:
        return None
    sub = ix.prod.get(diff)
    if sub is None or sub.op != "sub" or len(sub.inputs) != 2 or sub.attrs.get("alpha", 1) != 1:
        return None
    x, mean = sub.inputs
    if _last_dim_mean(ix, ix.prod.get(mean)) != x or g.tensor(x).is_constant:
        return None
    # d feeds the square and the division, nothing else
    div = next((n for n in ix.users.get(diff, []) if n.op == "div" and n.inputs == [diff, sqrt.outputs[0]]), None)
    if div is None or {id(n) for n in ix.users.get(diff, [])} != {id(square), id(div)} or diff in g.outputs:
        return None
    if ix.sole_user(sqrt.outputs[0]) is not div or ix.sole_user(mean) is not sub:
        return None
    d = g.tensor(x).shape[-1]
    last, gamma, beta = div, None, None
    nxt = ix.sole_user(div.outputs[0])
    if nxt is not None and nxt.op == "mul" and len(nxt.inputs) == 2:
        other = nxt.inputs[1] if nxt.inputs[0] == div.outputs[0] else nxt.inputs[0]
        if _affine(ix, other, d):
            last, gamma = nxt, other
            nxt = ix.sole_user(nxt.outputs[0])
    if nxt is not None and nxt.op == "add" and len(nxt.inputs) == 2 and nxt.attrs.get("alpha", 1) == 1:
        other = nxt.inputs[1] if nxt.inputs[0] == last.outputs[0] else nxt.inputs[0]
        if _affine(ix, other, d):
            last, beta = nxt, other
    if g.tensor(last.outputs[0]).shape != g.tensor(x).shape:
        return None
    return last, ix.prod[mean], x, gamma, beta, float(eps)


def _affine(ix: _Index, name: str, d: int) -> bool:
    """A constant of D values along the last axis (gamma or beta)."""
    data = ix.constant(name)
    return data is not None and data.size == d and data.shape[-1:] == (d,)
