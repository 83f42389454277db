"""hydra_block (quantised graphs only, made by passes/stream.py): one whole encoder block in place on x[T, D],
run by the C runtime in two passes over the tokens; its body (ir/ops.py: BLOCK_ROLES) runs op by op in the
reference, so a fused block has exactly the bits of its unfused ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node
from ..ir.ops import BLOCK_CONSTANTS, block_body
from .base import OpDef, Shape, node_rounding, op_def, register


def shape(node: Node, shapes: list[Shape]) -> Shape:
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
    for key, s in expect.items():
        if tuple(const[key]) != s:
            raise IRError(f"{node.name}: hydra_block {key[0]} constant has shape {const[key]}, expected {s}")
    for (role, i), name in zip(BLOCK_CONSTANTS, node.inputs[1:]):
        if body[role].inputs[i] != name:
            raise IRError(f"{node.name}: input {name!r} is not the {role} constant #{i} of the body "
                          f"({body[role].inputs[i]!r})")
    tps = node.attrs.get("tokens_per_step")
    if not isinstance(tps, int) or isinstance(tps, bool) or not 1 <= tps <= x[0]:
        raise IRError(f"{node.name}: tokens_per_step must be an int in [1, {x[0]}], got {tps!r}")
    return x


def run_body(node: Node, values: dict[str, np.ndarray], rounding: str) -> np.ndarray:
    """The body nodes in order, each by its own integer reference (values gets every intermediate)."""
    out = values[node.inputs[0]]
    for sub in block_body(node).values():
        args = (values[n] for n in sub.inputs)
        out = values[sub.outputs[0]] = op_def(sub.op).int_ref(sub, *args, node_rounding(sub, rounding))
    return out


def int_ref(node: Node, *args: np.ndarray | str) -> np.ndarray:
    *arrays, rounding = args
    return run_body(node, dict(zip(node.inputs, arrays)), str(rounding))


def scratch_size(tokens: int, dim: int, hidden: int, tokens_per_step: int) -> int:
    """hydra_block_s8_get_buffer_size for valid shapes: 5 D + G D + G max(2 D, hidden), G = min(tokens_per_step, T).

    The int32 attention state [D] and one phi row [D]; a [G, D] rows buffer; a [G, max(2 D, hidden)] one
    (k and v in pass 1, the hidden activations in pass 2). runtime_c/src/hydra_block.c documents the layout.
    """
    g = min(tokens_per_step, tokens)
    return 5 * dim + g * dim + g * max(2 * dim, hidden)


def scratch(graph: Graph, node: Node) -> int:
    tokens, dim = graph.tensor(node.inputs[0]).shape
    hidden = graph.tensor(block_body(node)["fc1"].inputs[1]).shape[0]
    return scratch_size(tokens, dim, hidden, int(node.attrs["tokens_per_step"]))


def emit(em: Any, node: Node) -> Any:
    x = em.tensor(node, 0)
    y = em.tensor(node, 0, "output")
    if len(x.shape) != 2:
        raise em.error(f"node {node.name} (hydra_block): input {x.name!r} is {list(x.shape)}, expected [T, D]")
    try:
        body = block_body(node)
    except IRError as exc:
        raise em.error(str(exc)) from None
    tokens, dim = x.shape
    hidden = em.tensor(body["fc1"], 1).shape[0]
    for role in ("residual1", "residual2"):  # a = the residual stream, as hydra_block_s8 reads it
        a = body[role].inputs[0]
        want = x.name if role == "residual1" else body["residual1"].outputs[0]
        if a != want:
            raise em.error(f"node {node.name} (hydra_block): {role} input a is {a!r}, not the residual {want!r}")
    fields: list[tuple[str, Any]] = [
        ("tokens", str(tokens)),
        ("dim", str(dim)),
        ("hidden", str(hidden)),
        ("tokens_per_step", em.scalar(node, "tokens_per_step", lo=1, hi=tokens)),
    ]
    for role, sub in body.items():
        fields.append((role, op_def(sub.op).fields(em, sub)))
    ident, decl = em.params(node, OP.param_struct, fields)
    if em.offset(x.name) != em.offset(y.name):
        raise em.error(
            f"node {node.name} (hydra_block) runs in place, but the plan puts {x.name!r} at {em.offset(x.name)} "
            f"and {y.name!r} at {em.offset(y.name)}"
        )
    soff, ssize = em.scratch(node)
    check = (
        f"    {{\n"
        f"        const int32_t need = hydra_block_s8_get_buffer_size(&{ident});\n"
        f"        if (need == 0 || need > {ssize}) {{\n"
        f"            return (int)HYDRA_ERR_ARG; /* invalid params, or less scratch planned than the kernel needs */\n"
        f"        }}\n"
        f"    }}\n"
    )
    call = f"{OP.c_function}(&{ident}, {em.act(node, 0)}, (void *)(hydra_arena + {soff}))"
    return em.call(node, decl, call, check)


def macs(graph: Graph, node: Node) -> int:
    return sum(op_def(sub.op).macs(graph, sub) for sub in block_body(node).values())


OP = register(OpDef(
    "hydra_block", shape, macs, graphs="int", int_ref=int_ref,
    c_source="hydra_block.c", c_function="hydra_block_s8", param_struct="hydra_block_params",
    c_depends=("layernorm", "linear", "hydra_attention", "add", "lut"), emit=emit, scratch=scratch,
    in_place=(0,), always_in_place=True,
))
