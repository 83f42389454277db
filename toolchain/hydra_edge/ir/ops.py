"""The operators of the lowered IR and their operands; the structure of a fused hydra_block.

Each op's rules (shape, references, quantisation, kernel) live in its own file, hydra_edge/ops/<op>.py.

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


from .graph import IRError, Node


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
