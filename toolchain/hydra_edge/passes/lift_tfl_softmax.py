"""Lift softmax attention out of an int8 TFLite graph's tfl_* ops into one tfl_softmax_attention node.

An int8 ViT converted to TFLite writes multi-head softmax attention with plain operators. For q, k, v of
[T, D] (D = H heads x dh):

    q_h = TRANSPOSE(RESHAPE(q, [T, H, dh]))                  [H, T, dh]   (and k^T [H, dh, T], v_h [H, T, dh])
    s   = BATCH_MATMUL(q_h, k_h^T)                           [H, T, T]    (TFLM's requantisation)
    s   = MUL(s, scale)                                      a one-element int8 constant; optional
    p   = SOFTMAX(s)                                         over the keys (the last axis)
    o   = BATCH_MATMUL(p, v_h)                               [H, T, dh]
    out = RESHAPE(TRANSPOSE(o), [T, D])

with any RESHAPEs and TRANSPOSEs between the projections and the BATCH_MATMULs and after the last one, and
RESHAPEs around MUL and SOFTMAX. TFLM holds q_h, k_h^T, v_h, s and p whole. Every output row of the chain
depends on one query row and on all of k and v: the scores of query row t and head h are
BATCH_MATMUL(q[t, h], k[:, h]^T) ([1, T]), MUL and SOFTMAX act on that row alone, and out[t, h] is
BATCH_MATMUL(p_row, v[:, h]). So the same bits come from query rows streamed against k and v kept whole,
each step by the replaced op's own kernel on one row, and the transposes become index arithmetic.

Which element each transposing chain reads is not pattern-matched op by op: the pass follows the flat
index of every element through the RESHAPEs (the same index) and TRANSPOSEs (their input strides), then
through the BATCH_MATMUL's strides, and requires exactly the head split above: BATCH_MATMUL 1 reads
q[t * D + h dh + j] as lhs[h, t, j] and k[s * D + h dh + j] as rhs[h, j, s]; BATCH_MATMUL 2 reads the
softmax output in its own order and v[s * D + h dh + j] as rhs[h, s, j]; its output [h, t, j] lands at
out[t * D + h dh + j]. Any perm, adj_x / adj_y or reshape order that gives those maps lifts; any other
does not.

The node: inputs [q, k, v] (the tensors the chains start from: [T, D] row tensors, TFLite's leading 1s
allowed), the chain's last output, attrs

    tokens, heads, head_dim, query_rows   T, H, dh; query_rows = T (a token loop sets a group's)
    has_scale, scale_value                the MUL by a constant, when there is one
    qk, scale, softmax, pv                the replaced nodes' attrs, made per query row and head

qk: lhs the dh values of q[t, h] (depth stride 1), rhs k[:, h] (depth stride 1, col stride D), 1 x T;
scale: [1, T] x [1] (input1 the scores: the operands are swapped if the graph had them the other way,
the kernel is symmetric); softmax: outer_size 1, depth T; pv: lhs the T probabilities, rhs v[:, h]
(depth stride D, col stride 1), 1 x dh, written to out[t, h].

Checked, else left unfused: batch 1 (H = the product of the batch shape), rows = cols = T >= 2 in the
first product, T keys and dh columns in the second, the index maps above, SOFTMAX over exactly T at a
time, a one-element int8 constant scale with the scores' shape as the MUL's output, int8 q, k, v and
output, and that no removed tensor is read by a node that stays or is a graph output. Pure.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.tfl_ops import token_rows
from .lift_tfl_hydra import _swapped, _Uses

OP = "tfl_softmax_attention"
SOFTMAX_MAX_DEPTH = 4095  # tfl_softmax.c: depth < 4096
_ONES = (1, 1, 1, 1, 1, 1)
_LAYOUT = ("tfl_reshape", "tfl_transpose")


def _transpose_map(a: dict) -> np.ndarray:
    """For each output element of a TRANSPOSE (flat), the flat index of the input element it copies."""
    idx = np.zeros(tuple(a["output_shape"]), np.int64)
    for d, (size, stride) in enumerate(zip(a["output_shape"], a["input_strides"])):
        shape = [1] * len(a["output_shape"])
        shape[d] = size
        idx = idx + (np.arange(size, dtype=np.int64) * stride).reshape(shape)
    return idx.reshape(-1)


def _step(node: Node, idx: np.ndarray) -> np.ndarray | None:
    """Index map through one layout op, backwards: idx[e] is an element of the op's output, the result the same
    element of its input (None when the map does not fit)."""
    if node.op == "tfl_reshape":
        return idx
    tmap = _transpose_map(node.attrs)
    if idx.size and (idx.max() >= tmap.size):
        return None
    return tmap[idx]


def _back(u: _Uses, name: str, idx: np.ndarray) -> list[tuple[str, np.ndarray, list[Node]]]:
    """Walk back from tensor `name` (whose flat elements `idx` are read) over RESHAPE / TRANSPOSE nodes, each
    stepped-over tensor read by that chain alone: [(tensor, the same elements' indices in it, nodes stepped over)],
    nearest first."""
    out = [(name, idx, [])]
    nodes: list[Node] = []
    while True:
        p = u.producer.get(name)
        if p is None or p.op not in _LAYOUT or len(u.readers.get(name, [])) != 1 or name in u.graph.outputs:
            return out
        idx = _step(p, idx)
        if idx is None:
            return out
        nodes = [*nodes, p]
        name = p.inputs[0]
        out.append((name, idx, nodes))


def _forward(u: _Uses, name: str) -> list[tuple[str, np.ndarray, list[Node]]]:
    """Walk forward from tensor `name` over RESHAPE / TRANSPOSE readers (each the tensor's only reader):
    [(tensor, for each of its flat elements the flat index in `name`, nodes stepped over)], nearest first."""
    idx = np.arange(u.graph.tensor(name).numel, dtype=np.int64)
    out = [(name, idx, [])]
    nodes: list[Node] = []
    while True:
        readers = u.readers.get(name, [])
        if len(readers) != 1 or readers[0].op not in _LAYOUT or name in u.graph.outputs:
            return out
        r = readers[0]
        if r.inputs[0] != name or any(i == name for i in r.inputs[1:]):
            return out
        if r.op == "tfl_transpose":
            tmap = _transpose_map(r.attrs)
            if tmap.size != idx.size:
                return out
            idx = idx[tmap]
        nodes = [*nodes, r]
        name = r.outputs[0]
        out.append((name, idx, nodes))


def _operand_map(a: dict, side: str, inner: tuple[int, int]) -> np.ndarray | None:
    """The flat index a BATCH_MATMUL reads for each element [b, i, j] of its lhs ([B, rows, depth]) or rhs
    ([B, depth, cols]), batches in the output's order."""
    b0, b1, b2 = (int(v) for v in a["batch_shape"])
    strides = [int(v) for v in a[f"{side}_batch_strides"]]
    if side == "lhs":
        s1, s2 = int(a["lhs_row_stride"]), int(a["lhs_depth_stride"])
    else:
        s1, s2 = int(a["rhs_depth_stride"]), int(a["rhs_col_stride"])
    if min(strides + [s1, s2]) < 0:
        return None
    base = (np.arange(b0)[:, None, None] * strides[0] + np.arange(b1)[None, :, None] * strides[1] +
            np.arange(b2)[None, None, :] * strides[2]).reshape(-1)
    n1, n2 = inner
    return (base[:, None, None] + np.arange(n1)[None, :, None] * s1 + np.arange(n2)[None, None, :] * s2).astype(np.int64)


def _head_split(heads: int, n: int, dh: int, transposed: bool) -> np.ndarray:
    """Flat indices into a [n, heads * dh] row tensor: [h, s, j] -> s * D + h dh + j ([h, j, s] when transposed)."""
    h, s, j = np.arange(heads)[:, None, None], np.arange(n)[None, :, None], np.arange(dh)[None, None, :]
    m = s * heads * dh + h * dh + j
    return m.transpose(0, 2, 1) if transposed else m


def _source(u: _Uses, name: str, read: np.ndarray, want: np.ndarray, t: int, size: int):
    """The farthest tensor back from BATCH_MATMUL operand `name` that the operand reads as `want`: (tensor, nodes)."""
    if read.max() >= u.graph.tensor(name).numel:
        return None
    for src, idx, nodes in reversed(_back(u, name, read.reshape(-1))):
        tensor = u.graph.tensor(src)
        if tensor.is_constant or tensor.dtype != "int8" or tensor.numel != size or token_rows(tensor.shape) != t:
            continue
        if np.array_equal(idx, want.reshape(-1)):
            return src, nodes
    return None


def _row(n: int) -> tuple[int, ...]:
    return (1, 1, 1, 1, 1, n)


def _bmm_row(a: dict, cols: int, depth: int, lhs_row: int, rhs_depth: int, rhs_col: int) -> dict:
    return {**a, "batch_shape": (1, 1, 1), "lhs_batch_strides": (0, 0, 0), "rhs_batch_strides": (0, 0, 0),
            "rows": 1, "cols": cols, "depth": depth, "lhs_row_stride": lhs_row, "lhs_depth_stride": 1,
            "rhs_depth_stride": rhs_depth, "rhs_col_stride": rhs_col}


def _scores(u: _Uses, p_name: str, heads: int, t: int):
    """From BATCH_MATMUL 2's lhs back to BATCH_MATMUL 1: RESHAPEs, SOFTMAX, RESHAPEs, [MUL by a constant,
    RESHAPEs]. (qk node, scale attrs and value or None, softmax node, nodes)."""
    nodes: list[Node] = []
    size = heads * t * t

    def back(name: str) -> str:
        while (r := u.producer.get(name)) is not None and r.op == "tfl_reshape" and \
                len(u.readers.get(name, [])) == 1 and name not in u.graph.outputs:
            nodes.append(r)
            name = r.inputs[0]
        return name

    def only_here(name: str) -> bool:
        return len(u.readers.get(name, [])) == 1 and name not in u.graph.outputs

    sm = u.producer.get(back(p_name))
    if sm is None or sm.op != "tfl_softmax" or sm.attrs["depth"] != t or sm.attrs["outer_size"] * t != size:
        return None
    nodes.append(sm)
    s_name = back(sm.inputs[0])
    node = u.producer.get(s_name)
    scale = None
    if node is not None and node.op == "tfl_mul":
        for first in (0, 1):
            x, c = node.inputs[first], node.inputs[1 - first]
            ct = u.graph.tensor(c)
            if x == c or not ct.is_constant or ct.numel != 1 or str(ct.data.dtype) != "int8":
                continue
            a = dict(node.attrs) if first == 0 else _swapped(node.attrs)
            shape = tuple(a["input1_shape"])
            if tuple(a["input2_shape"]) != _ONES or tuple(a["output_shape"]) != shape or \
                    int(np.prod(shape)) != size or u.graph.tensor(x).numel != size:
                continue
            scale = ({**a, "input1_shape": _row(t), "input2_shape": _ONES, "output_shape": _row(t)},
                     int(ct.data.reshape(-1)[0]))
            nodes.append(node)
            s_name = back(x)
            break
        if scale is None:
            return None
    qk = u.producer.get(s_name)
    if qk is None or qk.op != "tfl_batch_matmul" or not only_here(s_name):
        return None
    return qk, scale, sm, nodes  # (_match checks that nothing else reads what they write)


def _match(u: _Uses, pv: Node) -> tuple[Node, set[str], Node] | None:
    """The tfl_softmax_attention node replacing the attention core whose second BATCH_MATMUL is `pv`, the names of
    the nodes it replaces, and the replaced node that writes its output; or None."""
    a2 = pv.attrs
    heads = int(np.prod(a2["batch_shape"]))
    t, dh = int(a2["rows"]), int(a2["cols"])
    if t < 2 or dh < 1 or heads < 1 or int(a2["depth"]) != t or t > SOFTMAX_MAX_DEPTH or len(pv.inputs) != 2:
        return None
    d = heads * dh
    found = _scores(u, pv.inputs[0], heads, t)
    if found is None:
        return None
    qk, scale, sm, score_nodes = found
    a1 = qk.attrs
    if int(np.prod(a1["batch_shape"])) != heads or (int(a1["rows"]), int(a1["cols"]), int(a1["depth"])) != (t, t, dh) \
            or len(qk.inputs) != 2:
        return None
    # BATCH_MATMUL 2 reads the probabilities in their own order ([h, i, s] at (h T + i) T + s)
    p_read = _operand_map(a2, "lhs", (t, t))
    if p_read is None or not np.array_equal(p_read.reshape(-1), np.arange(heads * t * t)):
        return None
    maps = [_operand_map(a1, "lhs", (t, dh)), _operand_map(a1, "rhs", (dh, t)), _operand_map(a2, "rhs", (t, dh))]
    if any(m is None for m in maps):
        return None
    wants = [_head_split(heads, t, dh, False), _head_split(heads, t, dh, True), _head_split(heads, t, dh, False)]
    sources = [_source(u, name, m, w, t, t * d) for name, m, w in zip((qk.inputs[0], qk.inputs[1], pv.inputs[1]),
                                                                        maps, wants)]
    if any(s is None for s in sources):
        return None
    # the output [h, i, j] at (h T + i) dh + j lands at out[i D + h dh + j]
    want_out = _head_split(heads, t, dh, False)  # [h, i, j] -> i D + h dh + j
    inverse = np.empty(heads * t * dh, np.int64)
    inverse[want_out.reshape(-1)] = np.arange(heads * t * dh)
    end = None
    for name, idx, nodes in reversed(_forward(u, pv.outputs[0])):
        tensor = u.graph.tensor(name)
        if tensor.dtype == "int8" and tensor.numel == t * d and token_rows(tensor.shape) == t and \
                np.array_equal(idx, inverse):
            end = (name, nodes)
            break
    if end is None:
        return None
    removed = {n.name: n for n in [pv, qk, *score_nodes, *end[1], *(n for s in sources for n in s[1])]}
    out = end[0]
    inside = set(removed)
    for node in removed.values():
        for o in node.outputs:
            if o == out:
                continue
            if o in u.graph.outputs or any(r.name not in inside for r in u.readers.get(o, [])):
                return None
    q, k, v = (s[0] for s in sources)
    if out in (q, k, v) or q in (k, v):  # the output may take q's bytes (TFL_IN_PLACE): q is not k or v
        return None
    attrs = {
        "tokens": t, "heads": heads, "head_dim": dh, "query_rows": t,
        "has_scale": int(scale is not None), "scale_value": scale[1] if scale else 0,
        "qk": _bmm_row(dict(a1), t, dh, dh, 1, d),
        **({"scale": scale[0]} if scale else {}),
        "softmax": {**sm.attrs, "outer_size": 1},
        "pv": _bmm_row(dict(a2), dh, t, t, d, 1),
    }
    writer = u.producer[out]
    node = Node(f"{pv.name}_softmax_attention", OP, [q, k, v], [out], attrs, pv.source or pv.name)
    return node, set(removed), writer


def lift_tfl_softmax(graph: Graph) -> Graph:
    """Every softmax attention core of an int8 TFLite graph as one tfl_softmax_attention node (unmatched ones
    unchanged); see the module docstring."""
    g = graph.copy()
    while True:
        u = _Uses.of(g)
        found = next((m for m in (_match(u, n) for n in g.nodes if n.op == "tfl_batch_matmul") if m is not None),
                     None)
        if found is None:
            return g
        node, removed, writer = found
        dropped = {o for n in g.nodes if n.name in removed for o in n.outputs} - set(node.outputs)
        consts = {i for n in g.nodes if n.name in removed for i in n.inputs if i and g.tensors[i].is_constant}
        g.nodes = [node if n.name == writer.name else n for n in g.nodes if n.name not in removed or n.name == writer.name]
        still_read = {i for n in g.nodes for i in n.inputs}
        for name in dropped | {c for c in consts if c not in still_read and c not in g.outputs}:
            del g.tensors[name]
