"""The operators of the lowered IR, their operands and shape rules.

The same op names are used before quantisation (float32 tensors, float
constants) and after it (int8 activations, integer constants and attrs as in
docs/numerics.md). The table below is the contract between the passes, the
quantiser, the reference interpreter and the code generator.

| op              | inputs (float)                 | inputs (quantised)                     | quantised attrs                                   |
|-----------------|--------------------------------|----------------------------------------|---------------------------------------------------|
| patch_embed     | x[C,H,W], w[D,C,p,p], b[D]     | x, w int8, b int32 (zp folded)         | patch, multiplier[D], shift[D] (np.int32), out_zp |
| linear          | x[T,K] or x[K], w[N,K], b[N]   | x, w int8, b int32 (zp folded)         | multiplier[N], shift[N] (np.int32), out_zp        |
| layernorm       | x[T,D], gamma[D], beta[D]      | x, gamma_q int32, beta_q int64         | in_zp, eps_q, out_shift, out_zp                   |
| gelu            | x                              | (becomes lut)                          |                                                   |
| lut             | -                              | x, table int8[256]                     |                                                   |
| hydra_attention | q[T,D], k[T,D], v[T,D]         | q, k, v                                | zq, zk, zv, kv_shift, multiplier, shift, out_zp, max_tokens |
| softmax_attention | q[T,D], k[T,D], v[T,D]       | q, k, v, exp_table int32[N]            | heads, zq, zk, zv, exp_multiplier, exp_shift, multiplier, shift, out_zp, max_tokens |
| add             | a, b (same shape)              | a, b                                   | left_shift, za, ma, sa, zb, mb, sb, my, sy, out_zp |
| mean_pool       | x[T,D]                         | x                                      | in_zp, multiplier, shift, out_zp                  |
| hydra_block     | -                              | x[T,D], the body's 17 constants        | body, tokens_per_step, residual_operands          |

Float attrs: patch_embed `patch`; layernorm `eps`; gelu `approximate`
("none" or "tanh"); softmax_attention `heads` (int, D % heads == 0) and
`scale` (float, the factor of q.k before the softmax).

softmax_attention is multi-head softmax attention after the q/k/v
projections and before the output projection: head h reads features
[h*D/heads, (h+1)*D/heads) of q, k and v, and writes the same features of the
output (heads concatenated in torch's order). Its quantised form keeps
`heads` and adds the exp table as a fourth (constant) input.

`hydra_block` exists only in quantised graphs, made by passes/stream.py
(`fuse_blocks`): one whole encoder block

    x1 = add(x, proj(hydra_attention(q(LN1(x)), k(LN1(x)), v(LN1(x)))))
    y  = add(x1, fc2(lut(fc1(LN2(x1)))))

run by the C runtime in two passes over the tokens, in place on x. Its inputs
are x, then the body's constants in BLOCK_CONSTANTS order; attr `body` holds
the twelve original nodes as plain dicts (name, op, inputs, outputs, attrs,
source) in BLOCK_ROLES order, each add normalised so that input a is the
residual stream (`residual_operands` says which input it was in the graph).
The reference interpreter runs the body node by node, so a fused block has
exactly the bits of its unfused ops. The body's intermediate tensors stay in
the graph's tensor table (shapes and quantisation) but no top-level node
reads or writes them.
"""

from __future__ import annotations

from typing import Callable

from .graph import Graph, IRError, Node
from .tfl_ops import TFL_SHAPE_RULES, check_tfl_shape

Shape = tuple[int, ...]


def _patch_embed(node: Node, shapes: list[Shape]) -> Shape:
    (c, h, w), ws = shapes[0], shapes[1]
    p = int(node.attrs["patch"])
    if len(ws) != 4 or ws[1] != c or ws[2] != p or ws[3] != p:
        raise IRError(f"{node.name}: patch_embed weight {ws} does not match input channels {c} and patch {p}")
    if h % p or w % p:
        raise IRError(f"{node.name}: input {h}x{w} is not a multiple of the patch size {p}")
    return ((h // p) * (w // p), ws[0])


def _linear(node: Node, shapes: list[Shape]) -> Shape:
    x, w = shapes[0], shapes[1]
    if len(w) != 2 or x[-1] != w[1]:
        raise IRError(f"{node.name}: linear input {x} does not match weight {w}")
    return (*x[:-1], w[0])


def _same_as_first(node: Node, shapes: list[Shape]) -> Shape:
    return shapes[0]


def _hydra(node: Node, shapes: list[Shape]) -> Shape:
    if not (shapes[0] == shapes[1] == shapes[2]) or len(shapes[0]) != 2:
        raise IRError(f"{node.name}: hydra_attention needs q, k, v of one [T, D] shape, got {shapes}")
    return shapes[0]


def _softmax_attention(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes) not in (3, 4) or not (shapes[0] == shapes[1] == shapes[2]) or len(shapes[0]) != 2:
        raise IRError(f"{node.name}: softmax_attention needs q, k, v of one [T, D] shape (and an exp table), "
                      f"got {shapes}")
    heads = node.attrs.get("heads")
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or shapes[0][1] % heads:
        raise IRError(f"{node.name}: softmax_attention heads = {heads!r} must be a positive int dividing D = {shapes[0][1]}")
    if len(shapes) == 4 and len(shapes[3]) != 1:
        raise IRError(f"{node.name}: softmax_attention exp table must be 1-d, got {shapes[3]}")
    return shapes[0]


def _add(node: Node, shapes: list[Shape]) -> Shape:
    if shapes[0] != shapes[1]:
        raise IRError(f"{node.name}: add operands differ in shape: {shapes[0]} and {shapes[1]}")
    return shapes[0]


# The members of a hydra_block's body, in order (the fields of hydra_block_params in hydra_rt.h).
BLOCK_ROLES = ("norm1", "q", "k", "v", "attn", "proj", "residual1", "norm2", "fc1", "act", "fc2", "residual2")
BLOCK_OPS = ("layernorm", "linear", "linear", "linear", "hydra_attention", "linear", "add",
             "layernorm", "linear", "lut", "linear", "add")
# A hydra_block's inputs after x: (role, input index of that body node) in order.
BLOCK_CONSTANTS = (
    ("norm1", 1), ("norm1", 2), ("q", 1), ("q", 2), ("k", 1), ("k", 2), ("v", 1), ("v", 2), ("proj", 1), ("proj", 2),
    ("norm2", 1), ("norm2", 2), ("fc1", 1), ("fc1", 2), ("act", 1), ("fc2", 1), ("fc2", 2),
)


def node_to_dict(node: Node) -> dict:
    return {"name": node.name, "op": node.op, "inputs": list(node.inputs), "outputs": list(node.outputs),
            "attrs": dict(node.attrs), "source": node.source}


def node_from_dict(d: dict) -> Node:
    return Node(d["name"], d["op"], list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})), d.get("source", ""))


def block_body(node: Node) -> dict[str, Node]:
    """A hydra_block's body nodes by role (BLOCK_ROLES order); IRError if the body is malformed."""
    body = node.attrs.get("body")
    if not isinstance(body, (list, tuple)) or len(body) != len(BLOCK_ROLES):
        raise IRError(f"{node.name}: hydra_block needs a body of {len(BLOCK_ROLES)} nodes ({', '.join(BLOCK_ROLES)})")
    nodes = {role: node_from_dict(d) for role, d in zip(BLOCK_ROLES, body)}
    for (role, n), op in zip(nodes.items(), BLOCK_OPS):
        if n.op != op:
            raise IRError(f"{node.name}: body node {role} ({n.name}) is {n.op!r}, expected {op!r}")
    return nodes


def _hydra_block(node: Node, shapes: list[Shape]) -> Shape:
    x = shapes[0]
    if len(x) != 2:
        raise IRError(f"{node.name}: hydra_block needs x[T, D], got {x}")
    if len(shapes) != 1 + len(BLOCK_CONSTANTS):
        raise IRError(f"{node.name}: hydra_block takes x and {len(BLOCK_CONSTANTS)} constants, got {len(shapes)} inputs")
    body = block_body(node)
    const = {(role, i): s for (role, i), s in zip(BLOCK_CONSTANTS, shapes[1:])}
    d = x[1]
    hidden = const[("fc1", 1)][0]
    expect = {("q", 1): (d, d), ("k", 1): (d, d), ("v", 1): (d, d), ("proj", 1): (d, d),
              ("fc1", 1): (hidden, d), ("fc2", 1): (d, hidden), ("act", 1): (256,)}
    for key, shape in expect.items():
        if tuple(const[key]) != shape:
            raise IRError(f"{node.name}: hydra_block {key[0]} constant has shape {const[key]}, expected {shape}")
    for (role, i), name in zip(BLOCK_CONSTANTS, node.inputs[1:]):
        if body[role].inputs[i] != name:
            raise IRError(f"{node.name}: input {name!r} is not the {role} constant #{i} of the body "
                          f"({body[role].inputs[i]!r})")
    tps = node.attrs.get("tokens_per_step")
    if not isinstance(tps, int) or isinstance(tps, bool) or not 1 <= tps <= x[0]:
        raise IRError(f"{node.name}: tokens_per_step must be an int in [1, {x[0]}], got {tps!r}")
    return x


def _mean_pool(node: Node, shapes: list[Shape]) -> Shape:
    if len(shapes[0]) != 2:
        raise IRError(f"{node.name}: mean_pool needs [T, D], got {shapes[0]}")
    return (shapes[0][1],)


SHAPE_RULES: dict[str, Callable[[Node, list[Shape]], Shape]] = {
    "patch_embed": _patch_embed,
    "linear": _linear,
    "layernorm": _same_as_first,
    "gelu": _same_as_first,
    "lut": _same_as_first,
    "hydra_attention": _hydra,
    "softmax_attention": _softmax_attention,
    "add": _add,
    "mean_pool": _mean_pool,
    "hydra_block": _hydra_block,
}

LOWERED_OPS = tuple(SHAPE_RULES)
SHAPE_RULES.update(TFL_SHAPE_RULES)  # the ops of an imported int8 .tflite (ir/tfl_ops.py)


def check_shapes(graph: Graph) -> None:
    """Recompute every output shape from the inputs; raise IRError on a mismatch."""
    for node in graph.nodes:
        rule = SHAPE_RULES.get(node.op)
        if rule is None:
            raise IRError(f"node {node.name}: op {node.op!r} is not a lowered op ({', '.join(LOWERED_OPS)})")
        expected = rule(node, [graph.tensor(n).shape for n in node.inputs])
        actual = graph.tensor(node.outputs[0]).shape
        same = check_tfl_shape(node, expected, actual) if node.op in TFL_SHAPE_RULES else tuple(expected) == tuple(actual)
        if not same:
            raise IRError(f"node {node.name} ({node.op}): output shape {actual}, expected {tuple(expected)}")
