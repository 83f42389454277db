"""Fold what an ONNX graph computes from constants and static shapes, then fix every shape.

Exporters spell a reshape to [B, D, H*W] as Shape -> Gather/Slice -> Concat
(-> Cast, ConstantOfShape, Equal, Where for an Expand) chains, so that the
graph runs at any batch. hydra-edge compiles batch-1 inference with static
shapes, so such chains are values known at compile time:

1. the graph input's batch (a symbolic or fixed dim 0) becomes 1;
2. ONNX shape inference (strict, with data propagation) gives the shape of
   every value it can;
3. each node whose inputs are all constants (or, for Shape, whose input has
   a static shape) is evaluated here in numpy and becomes a constant;
4. 2-3 repeat until nothing more folds (each round can make new shapes
   static); the graph that is left computes on activations only, and every
   value in it has a static shape, or the file is refused.

Folded results are bounded in size (a damaged file can ask for huge
ConstantOfShape/Expand outputs): larger ones are refused, not allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import FrontendError

MAX_FOLDED_ELEMENTS = 1 << 22  # far above any shape chain or small-model weight; bounds a damaged file
MAX_ROUNDS = 8


@dataclass
class OnnxNode:
    """One ONNX node with its index in the file (for messages) and its decoded attributes."""

    index: int
    proto: onnx.NodeProto
    attrs: dict = field(default_factory=dict)

    @property
    def op(self) -> str:
        return self.proto.op_type

    @property
    def inputs(self) -> list[str]:
        return list(self.proto.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.proto.output)

    def where(self) -> str:
        return f"#{self.index} {self.proto.op_type} ({self.proto.name or 'unnamed'})"


@dataclass
class StaticGraph:
    """The graph after folding: constants, the nodes left, and a static shape and dtype for every value."""

    nodes: list[OnnxNode]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]


def decode_attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", "replace") for v in value]
        out[a.name] = value
    return out


def constant_value(node: OnnxNode) -> np.ndarray:
    """The value of a Constant node (any of its attribute spellings)."""
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype)
    raise FrontendError(f"node {node.where()}: a Constant without a tensor, float or int value is not supported")


def _check_size(node: OnnxNode, shape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_FOLDED_ELEMENTS:
        raise FrontendError(
            f"node {node.where()} would make a constant of shape {list(shape)}; the file is damaged "
            "or the model is far larger than a microcontroller model"
        )
    return shape


def _axes(node: OnnxNode, args: list, rank: int, input_index: int = 1) -> list[int] | None:
    raw = args[input_index] if len(args) > input_index and args[input_index] is not None else node.attrs.get("axes")
    if raw is None:
        return None
    return [int(a) % rank if rank else int(a) for a in np.asarray(raw).reshape(-1)]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by zero")
        q = np.abs(a) // np.abs(b)  # ONNX integer Div truncates toward zero
        return (np.sign(a) * np.sign(b) * q).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype)


def _slice(node: OnnxNode, args: list) -> np.ndarray:
    x = args[0]
    if len(args) > 1:
        starts, ends = np.asarray(args[1]).reshape(-1), np.asarray(args[2]).reshape(-1)
        axes = np.asarray(args[3]).reshape(-1) if len(args) > 3 and args[3] is not None else np.arange(len(starts))
        steps = np.asarray(args[4]).reshape(-1) if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
    else:  # opset < 10: attributes
        starts, ends = np.asarray(node.attrs["starts"]), np.asarray(node.attrs["ends"])
        axes = np.asarray(node.attrs.get("axes", list(range(len(starts)))))
        steps = np.ones(len(starts), np.int64)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if int(st) == 0:
            raise ValueError("Slice step 0")
        index[int(a) % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _reshape(node: OnnxNode, args: list) -> np.ndarray:
    x, shape = args[0], [int(d) for d in np.asarray(args[1]).reshape(-1)]
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _unsqueeze(node: OnnxNode, args: list) -> np.ndarray:
    x = args[0]
    raw = args[1] if len(args) > 1 and args[1] is not None else node.attrs.get("axes", [])
    raw = [int(a) for a in np.asarray(raw).reshape(-1)]
    rank = x.ndim + len(raw)
    return x.reshape(unsqueezed_shape(x.shape, [a % rank for a in raw]))


def unsqueezed_shape(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    out = list(shape)
    for a in sorted(axes):
        out.insert(a, 1)
    return tuple(out)


def _squeeze(node: OnnxNode, args: list) -> np.ndarray:
    x = args[0]
    axes = _axes(node, args, x.ndim)
    return np.squeeze(x, axis=tuple(axes)) if axes is not None else np.squeeze(x)


def _constant_of_shape(node: OnnxNode, args: list) -> np.ndarray:
    shape = _check_size(node, args[0])
    value = node.attrs.get("value", np.zeros(1, np.float32))
    return np.full(shape, np.asarray(value).reshape(-1)[0], dtype=np.asarray(value).dtype)


def _expand(node: OnnxNode, args: list) -> np.ndarray:
    x, shape = args[0], [int(d) for d in np.asarray(args[1]).reshape(-1)]
    out = np.broadcast_shapes(x.shape, tuple(shape))
    _check_size(node, out)
    return np.broadcast_to(x, out).copy()


def _cast(node: OnnxNode, args: list) -> np.ndarray:
    return args[0].astype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))


def _transpose(node: OnnxNode, args: list) -> np.ndarray:
    perm = node.attrs.get("perm")
    return np.transpose(args[0], perm if perm is not None else None)


def _flatten(node: OnnxNode, args: list) -> np.ndarray:
    x = args[0]
    axis = int(node.attrs.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _mod(node: OnnxNode, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Mod: the sign of the divisor (Python's %), or of the dividend with fmod=1 (C's fmod)."""
    if np.any(b == 0):
        raise ValueError("Mod by zero")
    fn = np.fmod if int(node.attrs.get("fmod", 0)) else np.mod
    return np.asarray(fn(a, b)).astype(a.dtype)


def _range(node: OnnxNode, args: list) -> np.ndarray:
    start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in args[:3])
    if delta == 0:
        raise ValueError("Range delta 0")
    count = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    _check_size(node, (count,))  # before the array is made
    return (start + delta * np.arange(count)).astype(np.asarray(args[0]).dtype)


def _typed(fn: Callable) -> Callable:
    """An elementwise op whose result keeps its first input's dtype (ONNX's type constraint T)."""

    def run(node: OnnxNode, args: list) -> np.ndarray:
        return np.asarray(fn(*args)).astype(args[0].dtype)

    return run


_EVAL: dict[str, Callable[[OnnxNode, list], np.ndarray]] = {
    "Identity": lambda n, a: a[0],
    "Dropout": lambda n, a: a[0],
    "Cast": _cast,
    "Gather": lambda n, a: np.take(a[0], a[1].astype(np.int64), axis=int(n.attrs.get("axis", 0))),
    "Concat": lambda n, a: np.concatenate([x.reshape(-1) if x.ndim == 0 else x for x in a], axis=int(n.attrs["axis"])),
    "Slice": _slice,
    "ConstantOfShape": _constant_of_shape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Expand": _expand,
    "Add": _typed(np.add),
    "Sub": _typed(np.subtract),
    "Mul": _typed(np.multiply),
    "Div": lambda n, a: _int_div(a[0], a[1]),
    "Equal": lambda n, a: np.equal(a[0], a[1]),
    "Where": lambda n, a: np.where(a[0], a[1], a[2]),
    "Sqrt": _typed(np.sqrt),
    "Pow": _typed(np.power),
    "Neg": _typed(np.negative),
    "Abs": _typed(np.abs),
    "Mod": lambda n, a: _mod(n, a[0], a[1]),
    "Min": lambda n, a: _typed(np.minimum)(n, a) if len(a) == 2 else np.minimum.reduce(a),
    "Max": lambda n, a: _typed(np.maximum)(n, a) if len(a) == 2 else np.maximum.reduce(a),
    "Range": _range,
    "IsNaN": lambda n, a: np.isnan(a[0]),
    "IsInf": lambda n, a: np.isinf(a[0]),
    "Not": lambda n, a: np.logical_not(a[0]),
    "And": lambda n, a: np.logical_and(a[0], a[1]),
    "Or": lambda n, a: np.logical_or(a[0], a[1]),
    "Less": lambda n, a: np.less(a[0], a[1]),
    "LessOrEqual": lambda n, a: np.less_equal(a[0], a[1]),
    "Greater": lambda n, a: np.greater(a[0], a[1]),
    "GreaterOrEqual": lambda n, a: np.greater_equal(a[0], a[1]),
}
FOLDABLE = set(_EVAL) | {"Shape", "Size", "Constant"}


def _static(value_info: onnx.ValueInfoProto) -> tuple[tuple[int, ...] | None, int]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None, t.elem_type
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None, t.elem_type
        dims.append(int(d.dim_value))
    return tuple(dims), t.elem_type


def _infer(model: onnx.ModelProto, name: str) -> dict[str, tuple[tuple[int, ...] | None, int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - the C++ inference raises several kinds on bad graphs
        text = str(exc).strip().splitlines()
        why = text[-1] if text else type(exc).__name__
        raise FrontendError(f"{name}: ONNX shape inference failed ({why[:300]}); the file is damaged or not a valid model") from None
    g = inferred.graph
    return {vi.name: _static(vi) for vi in list(g.input) + list(g.value_info) + list(g.output)}


def _rebuild(model: onnx.ModelProto, nodes: list[OnnxNode], constants: dict[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(n.proto for n in nodes)
    del m.graph.initializer[:]
    del m.graph.value_info[:]
    used = {i for n in nodes for i in n.inputs} | {o.name for o in m.graph.output}
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items() if k in used)
    inputs = [i for i in m.graph.input if i.name not in constants]
    del m.graph.input[:]
    m.graph.input.extend(inputs)
    return m


def fold_static(model: onnx.ModelProto, nodes: list[OnnxNode], constants: dict[str, np.ndarray], name: str) -> StaticGraph:
    """Fold constants and shape chains (see the module docstring); `constants` are the initializers."""
    constants = dict(constants)
    kept = []
    for node in nodes:
        if node.op == "Constant":
            constants[node.outputs[0]] = constant_value(node)
        else:
            kept.append(node)
    nodes = kept
    info: dict = {}
    for _ in range(MAX_ROUNDS):
        info = _infer(_rebuild(model, nodes, constants), name)
        kept, changed = [], False
        for node in nodes:
            value = _fold_one(node, constants, info)
            if value is None:
                kept.append(node)
                continue
            for out, v in zip(node.outputs, value):
                if out:
                    constants[out] = v
            changed = True
        nodes = kept
        if not changed:
            break
    shapes, dtypes = {}, {}
    for key, (shape, elem) in info.items():
        if shape is not None:
            shapes[key] = shape
        if elem:
            try:
                dtypes[key] = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
            except (KeyError, TypeError, ValueError):
                pass
    return StaticGraph(nodes, constants, shapes, dtypes)


def _fold_one(node: OnnxNode, constants: dict[str, np.ndarray], info: dict) -> list[np.ndarray] | None:
    op = node.op
    ins = node.inputs
    if op in ("Shape", "Size"):
        if not ins or ins[0] in constants:
            shape = constants[ins[0]].shape if ins and ins[0] in constants else None
        else:
            shape = info.get(ins[0], (None, 0))[0]
        if shape is None:
            return None
        if op == "Size":
            return [np.asarray(int(np.prod(shape, dtype=np.int64)), np.int64)]
        rank = len(shape)
        start = int(node.attrs.get("start", 0))
        end = int(node.attrs.get("end", rank))
        return [np.asarray(shape[slice(start, end)], np.int64)]
    fn = _EVAL.get(op)
    if fn is None or not ins or not all((i in constants) or i == "" for i in ins):
        return None
    if op == "Dropout" and len(ins) > 2 and ins[2] and bool(np.asarray(constants[ins[2]]).reshape(-1)[0]):
        return None  # training mode: left for the converter to refuse
    args = [constants[i] if i else None for i in ins]
    while args and args[-1] is None:
        args.pop()
    try:
        value = np.asarray(fn(node, args))
    except FrontendError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError, OverflowError, MemoryError) as exc:
        raise FrontendError(f"node {node.where()}: cannot evaluate it on its constant inputs ({exc})") from None
    _check_size(node, value.shape)
    results = [value]
    if op == "Dropout" and len(node.outputs) > 1:
        results.append(np.ones(value.shape, bool))
    return results
