"""Lift Hydra attention out of its aten spelling into one hydra_attention node.

Hydra attention (Bolya et al. 2022) with x: [B, T, D] tensors q, k, v:

    out = phi(q) * sum_T(phi(k) * v, keepdim)        phi = L2 normalisation over D

torch.export spells phi in one of two ways (after canonicalize):

    x / x.norm(dim=-1, keepdim=True)   div(x, linalg_vector_norm(x, 2, [-1], True))
    F.normalize(x, dim=-1)             div(x, [expand(] clamp_min(linalg_vector_norm(x, 2.0, [-1], True), eps) [)])

and the rest as

    kv  = sum(mul(phi(k), v), dim=[-2] or [1], keepdim=True)
    out = mul(phi(q), kv)

Either operand order of each mul is accepted, the feature dim may be written
-1 or D's index and the token dim -2 or 1. The matched mul becomes
hydra_attention(q, k, v); the now unused phi/sum/mul nodes are pruned.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node, Tensor
from .canonicalize import consumers, producers

# The aten ops a Hydra attention is spelt with (passes/support.py: ops this pass may consume).
HYDRA_OPS = frozenset({"linalg_vector_norm", "norm", "clamp_min", "clamp", "expand", "expand_as", "div", "mul", "sum"})


def lift_hydra(graph: Graph) -> Graph:
    """Linear in the graph: the producer and reader maps are made once and kept right as nodes are lifted."""
    g = graph.copy()
    made = 0
    prod = producers(g)
    users = consumers(g)
    names = {n.name for n in g.nodes}
    for idx, node in enumerate(list(g.nodes)):  # a lift replaces a node in place: positions hold
        match = _match(g, node, prod)
        if match is None:
            continue
        q, k, v = match
        out_name = g.unique_name("hydra_attention")
        g.add_tensor(Tensor(out_name, g.tensor(node.outputs[0]).shape, g.tensor(node.outputs[0]).dtype))
        # Named after the attention module (blocks.0.attn) when the source says which.
        module = node.source.split(":", 1)[0] if ": " in node.source else ""
        node_name = module if module and module not in names else out_name
        lifted = Node(node_name, "hydra_attention", [q, k, v], [out_name], {}, node.source)
        g.nodes[idx] = lifted
        names.add(node_name)
        for name in node.outputs:
            prod.pop(name, None)
        prod[out_name] = lifted
        for name in lifted.inputs:
            users.setdefault(name, []).append(lifted)
        _replace_uses(g, users, node.outputs[0], out_name)
        made += 1
    return g.prune() if made else g


def _replace_uses(g: Graph, users: dict[str, list[Node]], old: str, new: str) -> None:
    """canonicalize.replace_uses through the reader map: only the readers of `old` are touched."""
    readers = users.pop(old, [])
    for node in {id(r): r for r in readers}.values():  # a node that reads `old` twice is listed twice
        node.inputs = [new if name == old else name for name in node.inputs]
    users.setdefault(new, []).extend(readers)
    if old in g.outputs:
        g.outputs = [new if name == old else name for name in g.outputs]


def _dims(attr, rank: int) -> list[int] | None:
    if attr is None:
        return None
    dims = [attr] if isinstance(attr, int) else list(attr)
    return [int(d) % rank for d in dims] if rank else None


def match_phi(g: Graph, name: str, prod: dict[str, Node] | None = None) -> str | None:
    """If tensor `name` is phi(x) (L2 normalisation over the last dim), return x."""
    prod = producers(g) if prod is None else prod
    div = prod.get(name)
    if div is None or div.op != "div" or len(div.inputs) != 2:
        return None
    x, denom = div.inputs
    rank = len(g.tensor(x).shape)
    node = prod.get(denom)
    if node is not None and node.op in ("expand", "expand_as"):
        node = prod.get(node.inputs[0])
    if node is not None and node.op in ("clamp_min", "clamp") and len(node.inputs) == 1:
        if node.op == "clamp" and node.attrs.get("max") is not None:
            return None
        node = prod.get(node.inputs[0])
    if node is None or node.inputs[:1] != [x]:
        return None
    if node.op == "linalg_vector_norm":
        ord_ = node.attrs.get("ord", 2)
    elif node.op == "norm":  # aten.norm.ScalarOpt_dim, if a program was exported without decompositions
        ord_ = node.attrs.get("p", 2)
    else:
        return None
    if ord_ is None:
        ord_ = 2
    if float(ord_) != 2.0 or not node.attrs.get("keepdim") or node.attrs.get("dtype") is not None:
        return None
    if _dims(node.attrs.get("dim"), rank) != [rank - 1]:
        return None
    return x


def _match(g: Graph, node: Node, prod: dict[str, Node] | None = None) -> tuple[str, str, str] | None:
    """(q, k, v) if `node` is the final mul of a Hydra attention; else None."""
    if node.op != "mul" or len(node.inputs) != 2:
        return None
    prod = producers(g) if prod is None else prod
    out_shape = g.tensor(node.outputs[0]).shape
    if len(out_shape) != 3:
        return None
    for phi_q, kv in (node.inputs, node.inputs[::-1]):
        q = match_phi(g, phi_q, prod)
        summ = prod.get(kv)
        if q is None or summ is None or summ.op != "sum" or len(summ.inputs) != 1:
            continue
        if _dims(summ.attrs.get("dim"), 3) != [1] or not summ.attrs.get("keepdim") or summ.attrs.get("dtype"):
            continue
        kv_mul = prod.get(summ.inputs[0])
        if kv_mul is None or kv_mul.op != "mul" or len(kv_mul.inputs) != 2:
            continue
        for phi_k, v in (kv_mul.inputs, kv_mul.inputs[::-1]):
            k = match_phi(g, phi_k, prod)
            if k is None:
                continue
            shapes = {g.tensor(t).shape for t in (q, k, v, phi_q, phi_k)}
            if shapes == {out_shape}:
                return q, k, v
    return None
