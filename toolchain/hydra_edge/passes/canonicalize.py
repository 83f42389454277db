"""Canonicalise an aten-level graph: fewer spellings of the same computation.

1. fold getitem: a read of one result of a multi-result node becomes that result;
2. drop no-ops: clone, contiguous, alias, detach, lift_fresh_copy, dropout in
   eval mode, same-dtype casts, views/reshapes/permutes that leave the shape
   (and element order) unchanged, expand/expand_as whose shape is unchanged
   or whose broadcast the consumer does anyway (F.normalize's expand before
   its div), _assert_* and other effect-only checks;
3. fold constants: t/transpose/permute/view/reshape/expand/casts (and
   add/sub/mul/div, comparisons, where, logical ops) of constants become
   constants (a transposed weight), as do arange/zeros/ones/full, which have no
   inputs (Hugging Face builds its all-true attention mask from them);
4. drop masks that mask nothing: an attention's constant mask that lets every
   key through (boolean all true, additive all zero) and an add of zeros;
5. drop whatever no output depends on.

strip_batch_dim removes the leading batch dimension of 1 from every
activation: lowering calls it last, once every op is a lowered one.

Pure functions: graph in, graph out.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.graph import Graph, Node
from .errors import LoweringError

MAX_FOLDED_ELEMENTS = 1 << 24  # a folded constant larger than this is no microcontroller model's

ALIAS_OPS = {
    "clone", "contiguous", "alias", "alias_copy", "detach", "detach_", "detach_copy",
    "lift_fresh", "lift_fresh_copy", "identity",
}
DROPOUT_OPS = {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"}
CAST_OPS = {"_to_copy", "to", "type_as"}
RESHAPE_OPS = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "unsqueeze", "squeeze", "view_copy"}
BROADCAST_OPS = {"add", "sub", "mul", "div"}
TRANSPOSE_OPS = {"t", "transpose", "permute"}


# -- small graph-editing helpers (used by the other passes too) --------------


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Make every reader of tensor `old` (and the graph outputs) read `new`, in place."""
    for node in graph.nodes:
        if old in node.inputs:
            node.inputs = [new if name == old else name for name in node.inputs]
    graph.outputs = [new if name == old else name for name in graph.outputs]


def producers(graph: Graph) -> dict[str, Node]:
    return {out: node for node in graph.nodes for out in node.outputs}


def consumers(graph: Graph) -> dict[str, list[Node]]:
    users: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            users.setdefault(name, []).append(node)
    return users


# -- the pass ----------------------------------------------------------------


def canonicalize(graph: Graph) -> Graph:
    g = graph.copy()
    _fold_getitem(g)
    _drop_noops(g)
    _fold_constants(g)
    if _drop_empty_masks(g):
        _drop_noops(g)
    return g.prune()


def _fold_getitem(g: Graph) -> None:
    kept = []
    for node in g.nodes:
        if node.op == "getitem" and len(node.inputs) == 1:
            replace_uses(g, node.outputs[0], node.inputs[0])
            g.tensors.pop(node.outputs[0], None)
        else:
            kept.append(node)
    g.nodes = kept


def _identity_perm(shape: tuple[int, ...], perm: list[int]) -> bool:
    """True if permuting `shape` by `perm` keeps the order of the dims larger than 1."""
    order = [d % len(shape) for d in perm if shape[d % len(shape)] != 1] if shape else []
    return order == sorted(order)


def _keeps_order(g: Graph, node: Node) -> bool:
    """Does a t/transpose/permute node keep the elements in memory order (it only moves size-1 dims)?"""
    shape = g.tensor(node.inputs[0]).shape
    n = len(shape)
    if node.op == "permute":
        perm = [int(d) for d in node.attrs.get("dims", [])]
    elif node.op == "transpose":
        d0, d1 = int(node.attrs["dim0"]) % n, int(node.attrs["dim1"]) % n
        perm = list(range(n))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    else:  # t
        perm = list(range(n))[::-1]
    return _identity_perm(shape, perm)


def _alias_target(g: Graph, node: Node, users: dict[str, list[Node]]) -> str | None:
    """The tensor that `node`'s output equals, if `node` is a no-op; else None."""
    if not node.inputs or not node.outputs:
        return None
    src, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = g.tensor(src).shape, g.tensor(out).shape
    op = node.op
    if op in ALIAS_OPS:
        return src
    if op in DROPOUT_OPS or op == "native_dropout":
        if node.attrs.get("train") and float(node.attrs.get("p", 0.0)) > 0.0:
            raise LoweringError(
                f"'{op}' at node {node.source or node.name} is in training mode; "
                "call model.eval() before torch.export.export"
            )
        if op == "native_dropout" and any(users.get(o) for o in node.outputs[1:]):
            return None
        return src
    if op in CAST_OPS:
        return src if g.tensor(src).dtype == g.tensor(out).dtype and in_shape == out_shape else None
    if op in RESHAPE_OPS:
        return src if in_shape == out_shape else None
    if op in TRANSPOSE_OPS:
        return src if in_shape == out_shape and _keeps_order(g, node) else None
    if op in ("expand", "expand_as"):
        if in_shape == out_shape:
            return src
        readers = users.get(out, [])
        if readers and all(_broadcast_ok(g, r, out, src) for r in readers):
            return src
    return None


def _broadcast_ok(g: Graph, reader: Node, expanded: str, src: str) -> bool:
    """Would `reader` give the same shape reading `src` where it reads `expanded`?"""
    if reader.op not in BROADCAST_OPS or len(reader.inputs) != 2:
        return False
    shapes = [g.tensor(src if name == expanded else name).shape for name in reader.inputs]
    try:
        return tuple(np.broadcast_shapes(*shapes)) == g.tensor(reader.outputs[0]).shape
    except ValueError:
        return False


def _drop_noops(g: Graph) -> None:
    users = consumers(g)
    kept = []
    for node in g.nodes:
        if node.op.startswith(CHECK_PREFIXES):
            if not any(users.get(o) for o in node.outputs):
                continue
        target = _alias_target(g, node, users)
        if target is None:
            if node.op in TRANSPOSE_OPS and _keeps_order(g, node):
                # the same elements in the same order, another shape (size-1 dims moved): a reshape
                node = Node(node.name, "reshape", node.inputs[:1], node.outputs,
                            {"shape": list(g.tensor(node.outputs[0]).shape)}, node.source)
            kept.append(node)
            continue
        replace_uses(g, node.outputs[0], target)
        for reader in users.get(node.outputs[0], []):
            users.setdefault(target, []).append(reader)
    g.nodes = kept


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def fold(node: Node, args: list[np.ndarray]) -> np.ndarray:
        if len(args) == 2:
            a, b = args
        else:
            a, b = args[0], np.asarray(node.attrs.get("other"), np.float64)
        alpha = node.attrs.get("alpha", 1)
        return fn(a, b * alpha if alpha != 1 else b)

    return fold


def _where(node: Node, args: list[np.ndarray]) -> np.ndarray:
    """aten.where(condition, self, other), either value possibly a scalar attr."""
    cond, rest = args[0], list(args[1:])
    a = node.attrs["self"] if "self" in node.attrs else rest.pop(0)
    b = node.attrs["other"] if "other" in node.attrs else rest.pop(0)
    return np.where(cond.astype(bool), a, b)


def _arange(node: Node, args: list[np.ndarray]) -> np.ndarray:
    a = node.attrs
    return np.arange(a.get("start", 0), a["end"], a.get("step", 1))


_CREATION = {
    "arange": _arange,
    "zeros": lambda n, a: np.zeros(n.attrs.get("size", [])),
    "ones": lambda n, a: np.ones(n.attrs.get("size", [])),
    "full": lambda n, a: np.full(n.attrs.get("size", []), n.attrs.get("fill_value", 0)),
    "scalar_tensor": lambda n, a: np.asarray(n.attrs.get("s", 0)),
}

_FOLDERS: dict[str, Callable[[Node, list[np.ndarray]], np.ndarray]] = {
    **_CREATION,
    "ge": _binary(np.greater_equal),
    "gt": _binary(np.greater),
    "le": _binary(np.less_equal),
    "lt": _binary(np.less),
    "eq": _binary(np.equal),
    "ne": _binary(np.not_equal),
    "where": _where,
    "logical_not": lambda n, a: np.logical_not(a[0]),
    "bitwise_not": lambda n, a: np.logical_not(a[0]) if a[0].dtype == bool else np.invert(a[0]),
    "logical_and": lambda n, a: np.logical_and(a[0], a[1]),
    "logical_or": lambda n, a: np.logical_or(a[0], a[1]),
    "t": lambda n, a: a[0].T,
    "transpose": lambda n, a: np.swapaxes(a[0], n.attrs["dim0"], n.attrs["dim1"]),
    "permute": lambda n, a: np.transpose(a[0], n.attrs["dims"]),
    "expand": lambda n, a: a[0],  # broadcast to the output shape below
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "div": _binary(np.divide),
    "neg": lambda n, a: -a[0],
}
for _op in RESHAPE_OPS | ALIAS_OPS | CAST_OPS:
    _FOLDERS.setdefault(_op, lambda n, a: a[0])

# For passes/support.py: ops this pass may drop as no-ops (some only when they leave the shape as is:
# lowering reports the others), and effect-only checks by prefix.
NOOP_OPS = frozenset(
    ALIAS_OPS | DROPOUT_OPS | CAST_OPS | RESHAPE_OPS | TRANSPOSE_OPS | {"native_dropout", "expand", "expand_as", "getitem"}
)
CHECK_PREFIXES = ("_assert", "sym_constrain_range")


def _fold_constants(g: Graph) -> None:
    kept = []
    for node in g.nodes:
        fold = _FOLDERS.get(node.op)
        if (
            fold is None
            or (not node.inputs and node.op not in _CREATION)
            or len(node.outputs) != 1
            or not all(g.tensor(name).is_constant for name in node.inputs)
        ):
            kept.append(node)
            continue
        out = g.tensor(node.outputs[0])
        if out.numel > MAX_FOLDED_ELEMENTS:  # sizes come from the model file: checked before memory is taken
            raise LoweringError(f"node {node.source or node.name} ({node.op}) makes a constant of shape "
                                f"{list(out.shape)}; the file is damaged or the model is far larger than an MCU model")
        value = np.asarray(fold(node, [g.tensor(name).data for name in node.inputs]))
        if value.size == int(np.prod(out.shape)) and value.shape != out.shape and node.op not in ("expand",):
            value = value.reshape(out.shape)
        value = np.broadcast_to(value, out.shape)
        out.data = np.ascontiguousarray(value.astype(out.dtype))
        if node.op in TRANSPOSE_OPS and len(node.inputs) == 1:
            # Name a transposed weight after its parameter: "p_fc_weight_t", not "permute_3".
            new = g.unique_name(f"{node.inputs[0]}_t")
            g.tensors[new] = g.tensors.pop(out.name)
            replace_uses(g, out.name, new)
            out.name = new
    g.nodes = kept


SDPA = "scaled_dot_product_attention"


def _masks_nothing(t) -> bool:
    """A constant attention mask that lets every key through: all true (boolean, recorded as integers), or
    all zero (added to the scores)."""
    if not t.is_constant:
        return False
    data = np.asarray(t.data)
    return bool(np.all(data != 0)) if data.dtype.kind in "biu" else bool(np.all(data == 0))


def _drop_empty_masks(g: Graph) -> bool:
    """SDPA's attn_mask and adds of zeros that change nothing become absent / aliases; True if any did."""
    changed = False
    for node in g.nodes:
        if node.op == SDPA and len(node.inputs) == 4 and _masks_nothing(g.tensor(node.inputs[3])):
            node.inputs = node.inputs[:3]
            node.attrs["attn_mask"] = None
            changed = True
        elif node.op == "add" and len(node.inputs) == 2 and node.attrs.get("alpha", 1) == 1:
            zeros = [i for i in node.inputs if g.tensor(i).is_constant and g.tensor(i).dtype == "float32"
                     and _masks_nothing(g.tensor(i))]
            x = [i for i in node.inputs if i not in zeros]
            if zeros and len(x) == 1 and g.tensor(x[0]).shape == g.tensor(node.outputs[0]).shape:
                node.op, node.inputs, node.attrs = "alias", x, {}  # x + 0 is x; _drop_noops removes it
                changed = True
    return changed


# -- batch dimension -----------------------------------------------------------


def strip_batch_dim(graph: Graph) -> Graph:
    """Drop the leading batch dimension (of size 1) from every activation.

    Constants are left as they are: lowering makes them batch-free already.
    """
    g = graph.copy()
    for tensor in g.activations():
        if not tensor.shape or tensor.shape[0] != 1:
            raise LoweringError(
                f"tensor {tensor.name} has shape {list(tensor.shape)}: hydra-edge lowers batch-1 inference "
                "and expects a leading batch dimension of 1"
            )
        tensor.shape = tuple(tensor.shape[1:])
    return g
