"""The operators of the lowered IR and their operands; nodes as plain dicts (a token loop's body).

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
| hydra_kv_state  | -                              | k, v (made by passes/stream.py)        | hydra_attention's, and tokens                     |
| hydra_apply     | -                              | q, kv int32 [D]                        | hydra_attention's                                 |
| token_loop      | -                              | what its body reads from outside       | body, tokens, tokens_per_step, in_place           |

Float attrs: patch_embed `patch`; layernorm `eps`; gelu `approximate`
("none" or "tanh"); softmax_attention `heads` (int, D % heads == 0) and
`scale` (float, the factor of q.k before the softmax).

softmax_attention is multi-head softmax attention after the q/k/v
projections and before the output projection: head h reads features
[h*D/heads, (h+1)*D/heads) of q, k and v, and writes the same features of the
output (heads concatenated in torch's order). Its quantised form keeps
`heads` and adds the exp table as a fourth (constant) input.

`hydra_kv_state`, `hydra_apply` and `token_loop` exist only in quantised
graphs, made by the streaming schedule (passes/stream.py): hydra_attention
split into its state (a reduction over the tokens) and its row-local rest, and
a region of ops run token group by token group (ops/token_loop.py). A loop's
body nodes are plain dicts (name, op, inputs, outputs, attrs, source); the
tensors that live only inside it stay in the graph's tensor table (shapes and
quantisation) but no top-level node reads or writes them.
"""

from __future__ import annotations


from .graph import Node


def node_to_dict(node: Node) -> dict:
    return {"name": node.name, "op": node.op, "inputs": list(node.inputs), "outputs": list(node.outputs),
            "attrs": dict(node.attrs), "source": node.source}


def node_from_dict(d: dict) -> Node:
    return Node(d["name"], d["op"], list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})), d.get("source", ""))
