"""The int8 .tflite frontend: a flatbuffer already quantised for TFLite Micro -> a graph of tfl_* ops.

The file keeps its own quantisation: nothing is calibrated or requantised. Each builtin operator becomes
one IR node ``tfl_<op name in lower case>`` whose attrs are what TFLite Micro's Prepare() would compute
(multipliers, shifts, offsets, activation bounds), made once here by the op's prepare function
(frontend/tflite_prepare_*.py, the contract in frontend/tflite_types.py). The reference interpreter and
the C kernels then follow TFLM's reference kernels to the bit.

Steps of ``load_tflite``:

1. Read the flatbuffer with the maintained schema (ai_edge_litert.schema_py_generated), checking every
   index, vector length, buffer range, shape and dtype as it goes, so that a malformed or truncated file
   gives a FrontendError naming the file and the problem (never another exception or a hang).
2. Edges: a QUANTIZE from the float model input and a DEQUANTIZE to the float model output are dropped;
   the compiled model's input and output are their int8 tensors, with the file's scale and zero point.
3. Before building anything, check every other operator (op in the PREPARE tables, int8 activations,
   fused activation NONE/RELU/RELU6/RELU_N1_TO_1, the op's own prepare) and raise ONE error listing
   every unsupported one as "#index OP_NAME (output tensor name): why".
4. Build the Graph: tensors with TFLite's own shapes (batch dimension included), int8 activations with
   QuantParams, constants with their data; a missing optional bias becomes an int32 zero constant (the
   same sum as no bias), so that no node input is ever "".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedNode, unsupported_summary
from ..ir.graph import Graph, Node, QuantParams, Tensor
from .errors import FrontendError
from .tflite_types import TflTensorInfo

MAX_FILE_BYTES = 1 << 30  # far beyond any model an MCU runs; a guard against reading a device or a huge file
FUSED_ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")
# TensorType -> numpy dtype name (the types a supported model can hold at all)
_DTYPES = {"FLOAT32": "float32", "INT32": "int32", "INT8": "int8", "INT64": "int64", "INT16": "int16",
           "BOOL": "bool", "UINT8": "uint8"}
IR_CONST_DTYPES = ("int8", "int32", "int64", "float32")
BIAS_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")  # input 2, optional: a missing one is zeros


class TfliteFormatError(FrontendError):
    """A .tflite file that is malformed: truncated, an index or a range out of bounds."""


class UnsupportedTfliteError(FrontendError):
    """A well-formed .tflite with operators hydra-edge cannot compile (all of them listed)."""


Prepare = Callable[[list, list, dict], dict]


def prepare_table() -> dict[str, Prepare]:
    """Every op's prepare function: the linear family and the elementwise family."""
    from .tflite_prepare_elementwise import PREPARE as elementwise
    from .tflite_prepare_linear import PREPARE as linear

    return {**linear, **elementwise}


# ---------------------------------------------------------------- reading the flatbuffer


@dataclass
class _Op:
    index: int
    name: str  # builtin operator name, or "CUSTOM(code)"
    inputs: list[int]  # tensor indices, -1 for a missing optional input
    outputs: list[int]
    options: dict[str, Any]


@dataclass
class _Model:
    tensors: list[TflTensorInfo]
    ops: list[_Op]
    inputs: list[int]
    outputs: list[int]


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()  # dilationWFactor -> dilation_w_factor


class _Reader:
    """Bounded access to one flatbuffer: every vector length is checked against the file size."""

    def __init__(self, path: Path, buf: bytes) -> None:
        self.path, self.buf = path, buf

    def fail(self, what: str) -> TfliteFormatError:
        return TfliteFormatError(f"{self.path}: malformed .tflite ({what}); re-export the model")

    def length(self, n: int, what: str, elem_bytes: int = 4) -> int:
        if not isinstance(n, int) or n < 0 or n * elem_bytes > len(self.buf):
            raise self.fail(f"{what} claims {n} entries, more than the file can hold")
        return n

    def numpy(self, get: Callable[[], Any], n: int, dtype: str, what: str) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype)
        arr = get()
        if not isinstance(arr, np.ndarray) or arr.size != n:
            raise self.fail(f"{what} is unreadable")
        return np.array(arr, dtype=dtype)  # a copy: never a view into the file buffer


def _read_model(path: Path, buf: bytes) -> _Model:
    schema = _schema()
    r = _Reader(path, buf)
    if len(buf) < 8:
        raise r.fail(f"only {len(buf)} bytes")
    if buf[4:8] != b"TFL3":
        raise FrontendError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); expected an int8 .tflite")
    model = schema.Model.GetRootAs(buf, 0)
    n_sub = r.length(model.SubgraphsLength(), "subgraphs")
    if n_sub != 1:
        raise FrontendError(f"{path}: the model has {n_sub} subgraphs; hydra-edge compiles single-subgraph models")
    sub = model.Subgraphs(0)
    if sub is None:
        raise r.fail("subgraph 0 is missing")
    n_buffers = r.length(model.BuffersLength(), "buffers")
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)

    n_tensors = r.length(sub.TensorsLength(), "tensors")
    tensors = [_read_tensor(r, model, sub.Tensors(i), i, n_buffers, type_names) for i in range(n_tensors)]

    def indices(n: int, get: Callable[[], Any], what: str, allow_missing: bool) -> list[int]:
        arr = r.numpy(get, r.length(n, what), "int64", what).tolist()
        for t in arr:
            if not (0 <= t < n_tensors or (allow_missing and t == -1)):
                raise r.fail(f"{what} names tensor {t}, but the subgraph has {n_tensors}")
        return arr

    inputs = indices(sub.InputsLength(), sub.InputsAsNumpy, "subgraph inputs", False)
    outputs = indices(sub.OutputsLength(), sub.OutputsAsNumpy, "subgraph outputs", False)

    n_codes = r.length(model.OperatorCodesLength(), "operator codes")
    codes = []
    for i in range(n_codes):
        oc = model.OperatorCodes(i)
        if oc is None:
            raise r.fail(f"operator code {i} is missing")
        code = max(int(oc.DeprecatedBuiltinCode()), int(oc.BuiltinCode()))
        if code == schema.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            codes.append(f"CUSTOM({custom.decode(errors='replace') if custom else '?'})")
        else:
            codes.append(op_names.get(code, f"BUILTIN_{code}"))

    ops = []
    for i in range(r.length(sub.OperatorsLength(), "operators")):
        op = sub.Operators(i)
        if op is None:
            raise r.fail(f"operator {i} is missing")
        idx = op.OpcodeIndex()
        if not 0 <= idx < n_codes:
            raise r.fail(f"operator {i} uses opcode {idx}, but the model has {n_codes}")
        op_in = indices(op.InputsLength(), op.InputsAsNumpy, f"operator {i} inputs", True)
        op_out = indices(op.OutputsLength(), op.OutputsAsNumpy, f"operator {i} outputs", False)
        if not op_out:
            raise r.fail(f"operator {i} has no output")
        ops.append(_Op(i, codes[idx], op_in, op_out, _read_options(r, schema, op, i)))
    return _Model(tensors, ops, inputs, outputs)


MAX_NAME_CHARS = 1024  # TFLite's own names ("model/blocks.0/attn/...;StatefulPartitionedCall...") are far shorter


def _clean_name(name: str) -> str:
    """A tensor name as it may reach C comments, JSON and .npz keys: no NUL or control characters (each
    becomes "_"; so do undecodable bytes), at most MAX_NAME_CHARS characters."""
    name = "".join(ch if ch.isprintable() and ch != "\ufffd" else "_" for ch in name[:MAX_NAME_CHARS])
    return name or "_"


def _read_tensor(r: _Reader, model: Any, t: Any, index: int, n_buffers: int, type_names: dict[int, str]) -> TflTensorInfo:
    if t is None:
        raise r.fail(f"tensor {index} is missing")
    raw_name = t.Name()
    name = _clean_name(raw_name.decode("utf-8", errors="replace")) if raw_name else f"tensor_{index}"
    what = f"tensor {index} ({name!r})"
    type_name = type_names.get(t.Type(), f"type {t.Type()}")
    dtype = _DTYPES.get(type_name, type_name.lower())
    shape_arr = r.numpy(t.ShapeAsNumpy, r.length(t.ShapeLength(), f"{what} shape"), "int64", f"{what} shape")
    if len(shape_arr) > 8 or (shape_arr < 1).any() or np.prod(shape_arr, dtype=np.float64) > len(r.buf) + (1 << 24):
        raise r.fail(f"{what} has shape {shape_arr.tolist()}; hydra-edge needs static dimensions >= 1")
    shape = tuple(int(s) for s in shape_arr)

    scale, zero_point, qdim = np.zeros(0), np.zeros(0, np.int64), 0
    q = t.Quantization()
    if q is not None:
        n_s = r.length(q.ScaleLength(), f"{what} scales")
        n_z = r.length(q.ZeroPointLength(), f"{what} zero points", 8)
        scale = r.numpy(q.ScaleAsNumpy, n_s, "float64", f"{what} scales")
        zero_point = r.numpy(q.ZeroPointAsNumpy, n_z, "int64", f"{what} zero points")
        qdim = int(q.QuantizedDimension())
        if n_s != n_z or (n_s > 1 and not (0 <= qdim < len(shape) and shape[qdim] == n_s)):
            raise r.fail(f"{what} has {n_s} scales and {n_z} zero points for shape {list(shape)}, axis {qdim}")
        if not np.all(np.isfinite(scale)) or (scale < 0).any():
            raise r.fail(f"{what} has a scale that is not a finite number >= 0")

    data = None
    b = t.Buffer()
    if not 0 <= b < n_buffers:
        raise r.fail(f"{what} uses buffer {b}, but the model has {n_buffers}")
    if b > 0:
        raw = _buffer_bytes(r, model, b, what)
        if raw is not None:
            if dtype not in ("float32", "int8", "int16", "int32", "int64", "bool", "uint8"):
                raise r.fail(f"{what} holds constant data of type {type_name}")
            itemsize = np.dtype(dtype).itemsize
            count = int(np.prod(shape, dtype=np.int64))
            if len(raw) != count * itemsize:
                raise r.fail(f"{what}: buffer {b} has {len(raw)} bytes, shape {list(shape)} of {dtype} needs "
                             f"{count * itemsize}")
            data = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    return TflTensorInfo(name, shape, dtype, scale, zero_point, qdim, data)


def _buffer_bytes(r: _Reader, model: Any, b: int, what: str) -> bytes | None:
    buffer = model.Buffers(b)
    if buffer is None:
        raise r.fail(f"buffer {b} of {what} is missing")
    offset, size = int(buffer.Offset()), int(buffer.Size())
    if offset > 1:  # stored after the flatbuffer (large models)
        if offset + size > len(r.buf):
            raise r.fail(f"buffer {b} of {what} spans bytes {offset}..{offset + size}, past the end of the file")
        return bytes(r.buf[offset:offset + size])
    n = r.length(buffer.DataLength(), f"buffer {b}", 1)
    if n == 0:
        return None
    return r.numpy(buffer.DataAsNumpy, n, "uint8", f"buffer {b}").tobytes()


def _read_options(r: _Reader, schema: Any, op: Any, index: int) -> dict[str, Any]:
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if kind == 0 or table is None:
        return {}
    obj = schema.BuiltinOptionsCreator(kind, table)
    if obj is None:
        raise r.fail(f"operator {index} has options of unknown type {kind}")
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if isinstance(value, np.ndarray):
            if value.size > len(r.buf):
                raise r.fail(f"operator {index} option {key} is too long")
            value = [int(v) for v in value.reshape(-1)]
        elif isinstance(value, list):
            value = [int(v) for v in value[: len(r.buf)]]
        out[_snake(key)] = value
    act = out.get("fused_activation_function")
    if act is not None:
        out["fused_activation_function"] = _enum_names(schema.ActivationFunctionType).get(act, f"TYPE_{act}")
    if "padding" in out:
        out["padding"] = _enum_names(schema.Padding).get(out["padding"], f"PADDING_{out['padding']}")
    return out


# ---------------------------------------------------------------- edges and checks


@dataclass
class _Plan:
    """What the checks decided: which ops to drop at the edges and the graph's int8 input/output tensors."""

    dropped: set[int]
    graph_inputs: list[int]
    graph_outputs: list[int]


def _edges(path: Path, m: _Model) -> _Plan:
    consumers: dict[int, list[_Op]] = {}
    producer: dict[int, _Op] = {}
    for op in m.ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
        for t in op.outputs:
            producer[t] = op
    dropped: set[int] = set()
    g_in, g_out = [], []
    for t in m.inputs:
        info = m.tensors[t]
        users = consumers.get(t, [])
        if info.dtype == "float32" and len(users) == 1 and users[0].name == "QUANTIZE" \
                and m.tensors[users[0].outputs[0]].dtype == "int8":
            dropped.add(users[0].index)
            g_in.append(users[0].outputs[0])
        else:
            g_in.append(t)
    for t in m.outputs:
        op = producer.get(t)
        if m.tensors[t].dtype == "float32" and op is not None and op.name == "DEQUANTIZE" \
                and m.tensors[op.inputs[0]].dtype == "int8" and len(consumers.get(t, [])) == 0:
            dropped.add(op.index)
            g_out.append(op.inputs[0])
        else:
            g_out.append(t)
    for t in g_in + g_out:
        info = m.tensors[t]
        if info.dtype != "int8" or len(info.scale) != 1:
            raise UnsupportedTfliteError(
                f"{path}: model {'input' if t in g_in else 'output'} {info.name!r} is {info.dtype} "
                f"{'per-tensor ' if len(info.scale) == 1 else 'unquantised '}: hydra-edge compiles fully int8 "
                "models (float only at the edges, through one QUANTIZE / DEQUANTIZE); quantise it with "
                "ai-edge-quantizer (docs/frontends.md)")
    return _Plan(dropped, g_in, g_out)


def _op_problem(op: _Op, m: _Model, table: dict[str, Prepare]) -> tuple[str | None, dict | None]:
    """(why the op is unsupported or None, its prepared attrs)."""
    if op.name not in table:
        return "no int8 kernel for this operator", None
    act = op.options.get("fused_activation_function", "NONE")
    if act not in FUSED_ACTIVATIONS:
        return f"fused activation {act} (supported: {', '.join(FUSED_ACTIVATIONS)})", None
    for t in op.inputs + op.outputs:
        if t == -1:
            continue
        info = m.tensors[t]
        if info.is_constant:
            if info.dtype not in IR_CONST_DTYPES:
                return f"constant {info.name!r} is {info.dtype}", None
        elif info.dtype != "int8":
            return f"tensor {info.name!r} is {info.dtype}; only int8 activations are supported", None
    ins = [None if t == -1 else m.tensors[t] for t in op.inputs]
    outs = [m.tensors[t] for t in op.outputs]
    try:
        attrs = table[op.name](ins, outs, dict(op.options))
    except Exception as exc:  # noqa: BLE001 - any failure of prepare is a reason to list, not a crash
        msg = str(exc) or type(exc).__name__
        return msg if isinstance(exc, (FrontendError, ValueError, NotImplementedError)) else f"{type(exc).__name__}: {msg}", None
    if not isinstance(attrs, dict):
        return "prepare returned no attrs", None
    return None, attrs


# ---------------------------------------------------------------- the graph


def _quant(info: TflTensorInfo) -> QuantParams | None:
    if len(info.scale) == 0:
        return None
    if len(info.scale) == 1:
        return QuantParams.per_tensor(float(info.scale[0]), int(info.zero_point[0]))
    return QuantParams(info.scale.astype(np.float64), info.zero_point.astype(np.int32), info.quantized_dimension)


def load_tflite(path: str | Path) -> Graph:
    """Read an int8 .tflite into a graph of tfl_* ops (metadata frontend "tflite"); FrontendError otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FrontendError(f"{path}: {size} bytes is too large for a .tflite hydra-edge can compile")
        buf = path.read_bytes()
    except OSError as exc:
        raise FrontendError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return tflite_from_bytes(buf, path)


def tflite_from_bytes(buf: bytes, path: str | Path = "<bytes>") -> Graph:
    path = Path(path)
    try:
        m = _read_model(path, bytes(buf))
    except FrontendError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure of a corrupt flatbuffer
        raise TfliteFormatError(f"{path}: malformed .tflite ({type(exc).__name__}: {exc}); re-export the model") from None
    try:
        return _convert(path, m)
    except FrontendError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file can break any IR rule (an op reading a tensor
        # before it is written, a tensor written twice): it is the file's fault, said as such
        raise TfliteFormatError(f"{path}: malformed .tflite ({type(exc).__name__}: {exc}); re-export the model") from None


def _convert(path: Path, m: _Model) -> Graph:
    plan = _edges(path, m)
    table = prepare_table()
    problems, prepared = [], {}
    for op in m.ops:
        if op.index in plan.dropped:
            continue
        why, attrs = _op_problem(op, m, table)
        if why is not None:
            problems.append(UnsupportedNode(op.name, op.index, m.tensors[op.outputs[0]].name, why=why))
        else:
            prepared[op.index] = attrs
    if problems:
        raise UnsupportedTfliteError(
            f"{path}: {unsupported_summary(problems)}; hydra-edge's TFLite frontend covers TFLite Micro's int8 "
            "kernels listed in docs/frontends.md")
    return _build_graph(path, m, plan, prepared)


def _build_graph(path: Path, m: _Model, plan: _Plan, prepared: dict[int, dict]) -> Graph:
    g = Graph(meta={"frontend": "tflite", "source_file": str(path), "rounding": "double"})
    names: dict[int, str] = {}

    def ir_name(t: int) -> str:
        if t not in names:
            info = m.tensors[t]
            base = re.sub(r"\s+", "_", info.name) or f"tensor_{t}"
            name = g.unique_name(base)
            data = None if info.data is None else np.ascontiguousarray(info.data)
            g.add_tensor(Tensor(name, info.shape, info.dtype, _quant(info), data))
            names[t] = name
        return names[t]

    g.inputs = [ir_name(t) for t in plan.graph_inputs]
    for op in m.ops:
        if op.index in plan.dropped:
            continue
        inputs = []
        for pos, t in enumerate(op.inputs):
            if t == -1:
                inputs.append(_zero_bias(g, m, op, pos) if op.name in BIAS_OPS and pos == 2 else "")
            else:
                inputs.append(ir_name(t))
        if op.name == "RESHAPE" and len(inputs) == 1:  # the shape given as an option: make it the input
            shape = np.asarray(m.tensors[op.outputs[0]].shape, np.int32)
            inputs.append(g.add_constant(g.unique_name(f"op{op.index}_shape"), shape).name)
        outputs = [ir_name(t) for t in op.outputs]
        g.add_node(Node(f"op{op.index}_{op.name.lower()}", "tfl_" + op.name.lower(), inputs, outputs,
                        prepared[op.index], source=f"{path.name} operator #{op.index} {op.name}"))
    g.outputs = [ir_name(t) for t in plan.graph_outputs]
    g.validate()
    return g


def litert_rounding(graph: Graph) -> Graph:
    """The graph as LiteRT's reference kernels (BUILTIN_REF) compute it: FULLY_CONNECTED rounds once
    (single rounding: the node's "rounding" attr, ops.node_rounding), every other op as TFLM (double, the
    graph's). A copy; meta "fc_rounding" records it."""
    g = graph.copy()
    for node in g.nodes:
        if node.op == "tfl_fully_connected":
            node.attrs["rounding"] = "single"
    g.meta["fc_rounding"] = "single"
    return g


def _zero_bias(g: Graph, m: _Model, op: _Op, pos: int) -> str:
    """A missing optional input: only a bias (FULLY_CONNECTED, CONV_2D, ...) may be missing; zeros add nothing."""
    out = m.tensors[op.outputs[0]]
    channels = out.shape[-1] if out.shape else 1
    filt = m.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    weights = filt.data.size if filt is not None and filt.data is not None else 0
    if channels > max(weights, 1):  # every channel has a weight in the file: no zeros sized by a claimed shape
        raise FrontendError(f"{g.meta.get('source_file', 'model')}: #{op.index} {op.name} ({out.name}): "
                            f"{channels} output channels but {weights} constant weights; the file is damaged")
    name = g.unique_name(f"op{op.index}_zero_bias")
    g.add_constant(name, np.zeros(channels, np.int32))
    return name
