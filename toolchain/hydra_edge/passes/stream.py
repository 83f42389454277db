"""The streaming schedule's graph pass: fuse each Hydra encoder block into one `hydra_block` node.

On the quantised IR, an encoder block is the chain

    LN1 = layernorm(x)
    q, k, v = linear(LN1), linear(LN1), linear(LN1)
    a  = hydra_attention(q, k, v)
    x1 = add(x, linear proj(a))                 (either operand order)
    y  = add(x1, linear fc2(lut(linear fc1(layernorm LN2(x1)))))

in which no intermediate tensor is read outside the chain or is a graph
output, and x itself is read only by LN1 and the first add (the C kernel
overwrites x in place, so nothing else may need it afterwards). `fuse_blocks`
replaces every such chain by one `hydra_block` node (see ir/ops.py): inputs
[x, the 17 constants in BLOCK_CONSTANTS order], output y, attrs `body` (the
twelve nodes as plain dicts, adds normalised so that a = residual, b =
branch), `tokens_per_step` and `residual_operands`. The add arithmetic of
docs/numerics.md is symmetric in (a, za, ma, sa) and (b, zb, mb, sb), so the
normalisation changes no bit. The pass is pure: a new graph comes out.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.ops import BLOCK_CONSTANTS, BLOCK_ROLES, node_to_dict

_ADD_SWAP = (("za", "zb"), ("ma", "mb"), ("sa", "sb"))


class _Index:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.consumers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for name in dict.fromkeys(node.inputs):
                self.consumers.setdefault(name, []).append(node)
        self.outputs = set(graph.outputs)

    def only_consumer(self, tensor: str, op: str) -> Node | None:
        """The single node that reads `tensor`, when it has op `op` and `tensor` is not a graph output."""
        cons = self.consumers.get(tensor, [])
        if len(cons) != 1 or cons[0].op != op or tensor in self.outputs:
            return None
        return cons[0]

    def is_const(self, name: str) -> bool:
        t = self.graph.tensors.get(name)
        return t is not None and t.is_constant

    def consts_ok(self, node: Node, n_inputs: int) -> bool:
        return len(node.inputs) == n_inputs and len(node.outputs) == 1 and all(self.is_const(n) for n in node.inputs[1:])


def _match(ix: _Index, ln1: Node) -> dict[str, Node] | None:
    """The block starting at layernorm `ln1`, by role, or None."""
    g = ix.graph
    if ln1.op != "layernorm" or not ix.consts_ok(ln1, 3):
        return None
    x = ln1.inputs[0]
    if ix.is_const(x) or x in ix.outputs or len(g.tensor(x).shape) != 2:
        return None
    h = ln1.outputs[0]
    if h in ix.outputs:
        return None
    lins = ix.consumers.get(h, [])
    if len(lins) != 3 or any(n.op != "linear" or not ix.consts_ok(n, 3) or n.inputs[0] != h for n in lins):
        return None
    attn = ix.only_consumer(lins[0].outputs[0], "hydra_attention")
    if attn is None or len(attn.inputs) != 3 or len(attn.outputs) != 1:
        return None
    by_out = {n.outputs[0]: n for n in lins}
    if set(attn.inputs) != set(by_out):
        return None
    q, k, v = (by_out[name] for name in attn.inputs)
    if any(ix.only_consumer(n.outputs[0], "hydra_attention") is not attn for n in (q, k, v)):
        return None
    proj = ix.only_consumer(attn.outputs[0], "linear")
    if proj is None or proj.inputs[0] != attn.outputs[0] or not ix.consts_ok(proj, 3):
        return None
    add1 = ix.only_consumer(proj.outputs[0], "add")
    if add1 is None or len(add1.outputs) != 1 or sorted(add1.inputs) != sorted([x, proj.outputs[0]]):
        return None
    if {n.name for n in ix.consumers.get(x, [])} != {ln1.name, add1.name}:
        return None  # x is read elsewhere: the block may not overwrite it
    x1 = add1.outputs[0]
    cons = ix.consumers.get(x1, [])
    if x1 in ix.outputs or len(cons) != 2:
        return None
    ln2 = next((n for n in cons if n.op == "layernorm" and n.inputs[0] == x1), None)
    add2 = next((n for n in cons if n.op == "add" and n is not ln2), None)
    if ln2 is None or add2 is None or not ix.consts_ok(ln2, 3):
        return None
    fc1 = ix.only_consumer(ln2.outputs[0], "linear")
    if fc1 is None or fc1.inputs[0] != ln2.outputs[0] or not ix.consts_ok(fc1, 3):
        return None
    act = ix.only_consumer(fc1.outputs[0], "lut")
    if act is None or act.inputs[0] != fc1.outputs[0] or not ix.consts_ok(act, 2):
        return None
    fc2 = ix.only_consumer(act.outputs[0], "linear")
    if fc2 is None or fc2.inputs[0] != act.outputs[0] or not ix.consts_ok(fc2, 3):
        return None
    if ix.only_consumer(fc2.outputs[0], "add") is not add2 or len(add2.outputs) != 1:
        return None
    if sorted(add2.inputs) != sorted([x1, fc2.outputs[0]]):
        return None
    if g.tensor(add2.outputs[0]).shape != g.tensor(x).shape or g.tensor(x1).shape != g.tensor(x).shape:
        return None
    nodes = (ln1, q, k, v, attn, proj, add1, ln2, fc1, act, fc2, add2)
    return dict(zip(BLOCK_ROLES, nodes))


def find_blocks(graph: Graph) -> list[dict[str, Node]]:
    """Every fusable encoder block of `graph`, in graph order, as {role: node}."""
    ix = _Index(graph)
    blocks, taken = [], set()
    for node in graph.nodes:
        if node.op != "layernorm" or node.name in taken:
            continue
        block = _match(ix, node)
        if block is not None and not taken & {n.name for n in block.values()}:
            blocks.append(block)
            taken |= {n.name for n in block.values()}
    return blocks


def _normalised_add(add: Node, residual: str) -> tuple[dict, int]:
    """The add as a dict with input a = `residual`; the index the residual had in the graph."""
    d = node_to_dict(add)
    index = add.inputs.index(residual)
    if index == 1:
        d["inputs"] = [add.inputs[1], add.inputs[0]]
        attrs = dict(d["attrs"])
        for ka, kb in _ADD_SWAP:
            if ka in attrs and kb in attrs:
                attrs[ka], attrs[kb] = attrs[kb], attrs[ka]
        d["attrs"] = attrs
    return d, index


def _block_name(graph: Graph, block: dict[str, Node], index: int, used: set[str]) -> str:
    parts = [n.name.split(".") for role, n in block.items() if role not in ("residual1", "residual2", "act")]
    prefix: list[str] = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    base = ".".join(prefix) or f"hydra_block_{index}"
    name, i = base, 1
    while name in used:
        name, i = f"{base}_{i}", i + 1
    return name


def fuse_blocks(graph: Graph, tokens_per_step: int = 1) -> Graph:
    """Replace each Hydra encoder block of the quantised `graph` by one hydra_block node (pure).

    `tokens_per_step` (>= 1; capped at the token count) is how many tokens the C kernel takes per step.
    """
    if isinstance(tokens_per_step, bool) or int(tokens_per_step) != tokens_per_step or tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be a positive integer, got {tokens_per_step!r}")
    g = graph.copy()
    blocks = find_blocks(g)
    if not blocks:
        return g
    used = {n.name for n in g.nodes}
    replace: dict[str, Node] = {}  # name of a block's last node -> the fused node
    drop: set[str] = set()
    for i, block in enumerate(blocks):
        x = block["norm1"].inputs[0]
        tokens = g.tensor(x).shape[0]
        body = [node_to_dict(block[role]) for role in BLOCK_ROLES]
        res1, i1 = _normalised_add(block["residual1"], x)
        res2, i2 = _normalised_add(block["residual2"], block["residual1"].outputs[0])
        body[BLOCK_ROLES.index("residual1")] = res1
        body[BLOCK_ROLES.index("residual2")] = res2
        consts = [block[role].inputs[k] for role, k in BLOCK_CONSTANTS]
        name = _block_name(g, block, i, used - {n.name for n in block.values()})
        used.add(name)
        sources = [n.source for n in block.values() if n.source]
        fused = Node(
            name,
            "hydra_block",
            [x, *consts],
            [block["residual2"].outputs[0]],
            {"body": body, "tokens_per_step": min(int(tokens_per_step), int(tokens)), "residual_operands": [i1, i2]},
            sources[0] if sources else "",
        )
        replace[block["residual2"].name] = fused
        drop |= {n.name for n in block.values()}
    nodes = []
    for node in g.nodes:
        if node.name in replace:
            nodes.append(replace[node.name])
        elif node.name not in drop:
            nodes.append(node)
    g.nodes = nodes
    g.validate()
    return g
