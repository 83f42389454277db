"""Build a one-operator .tflite in memory and run it on the two TFLite oracles.

A helper for the tests, not a test module. It writes the flatbuffer with the
object API of the maintained schema (``ai_edge_litert.schema_py_generated``):
a version-3 model, buffer 0 empty, one subgraph holding one builtin operator
whose activation inputs are the subgraph inputs (in operator order) and whose
constant inputs live in their own buffers. Any builtin operator and any
number of inputs work; the options are given as a dict of snake_case names
(``{"fused_activation_function": "RELU6"}``, ``{"beta": 1.0}``), string
values naming enum members (ActivationFunctionType, Padding, ...).

    model = single_op_model("ADD", [TensorSpec((1, 4), scale=0.1, zero_point=3), ...],
                            [TensorSpec((1, 4), scale=0.2, zero_point=-1)],
                            {"fused_activation_function": "NONE"})
    y = run_tflm(model, [x1, x2])[0]          # TFLite Micro's interpreter
    y_ref = run_litert(model, [x1, x2])[0]    # LiteRT, BUILTIN_REF kernels

``run_tflm`` silences the allocation report TFLM prints on file descriptor 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

_TYPES = {
    "float32": fb.TensorType.FLOAT32,
    "int8": fb.TensorType.INT8,
    "int16": fb.TensorType.INT16,
    "int32": fb.TensorType.INT32,
    "int64": fb.TensorType.INT64,
    "uint8": fb.TensorType.UINT8,
    "bool": fb.TensorType.BOOL,
}

# Builtin operators whose options table is not named <CamelCase op>Options.
_OPTIONS_NAME = {
    "L2_NORMALIZATION": "L2NormOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "BATCH_MATMUL": "BatchMatMulOptions",
}

# snake_case option -> the schema enum class its string values name.
_ENUMS = {
    "fused_activation_function": fb.ActivationFunctionType,
    "padding": fb.Padding,
    "weights_format": fb.FullyConnectedOptionsWeightsFormat,
}


@dataclass
class TensorSpec:
    """One tensor of the model: shape, type, quantisation, and data if constant.

    ``scale``/``zero_point``: a number (per tensor), a sequence (per channel
    along ``quantized_dimension``) or None (not quantised).
    """

    shape: tuple[int, ...]
    scale: float | list[float] | None = None
    zero_point: int | list[int] | None = None
    dtype: str = "int8"
    data: np.ndarray | None = None
    quantized_dimension: int = 0
    name: str = ""


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _options_object(op: str, options: dict | None) -> tuple[int, object | None]:
    """(BuiltinOptions type, the options object) for ``op``; (NONE, None) if it has none."""
    name = _OPTIONS_NAME.get(op) or "".join(p.capitalize() for p in op.split("_")).replace("2d", "2D") + "Options"
    type_code = getattr(fb.BuiltinOptions, name, None)
    if type_code is None:
        if options:
            raise ValueError(f"{op}: no options table {name} in the schema for {sorted(options)}")
        return fb.BuiltinOptions.NONE, None
    obj = getattr(fb, name + "T")()
    for key, value in (options or {}).items():
        attr = _camel(key)
        if not hasattr(obj, attr):
            raise ValueError(f"{op}: {name} has no field {key!r}")
        if isinstance(value, str) and key in _ENUMS:
            value = getattr(_ENUMS[key], value)
        setattr(obj, attr, value)
    return type_code, obj


def _quantization(spec: TensorSpec) -> fb.QuantizationParametersT | None:
    if spec.scale is None:
        return None
    q = fb.QuantizationParametersT()
    q.scale = [float(s) for s in np.atleast_1d(np.asarray(spec.scale, dtype=np.float32))]
    zp = spec.zero_point if spec.zero_point is not None else 0
    q.zeroPoint = [int(z) for z in np.atleast_1d(np.asarray(zp, dtype=np.int64))]
    if len(q.zeroPoint) == 1 and len(q.scale) > 1:
        q.zeroPoint = q.zeroPoint * len(q.scale)
    q.quantizedDimension = spec.quantized_dimension
    return q


def single_op_model(
    op: str,
    inputs: list[TensorSpec | None],
    outputs: list[TensorSpec],
    options: dict | None = None,
    version: int = 1,
) -> bytes:
    """The serialised .tflite of one builtin ``op`` (name as in BuiltinOperator, e.g. "ADD").

    ``None`` in ``inputs`` is an omitted optional input (index -1). Inputs
    with ``data`` are constants; the others are the model's inputs, in order.
    """
    code = getattr(fb.BuiltinOperator, op, None)
    if code is None:
        raise ValueError(f"unknown builtin operator {op!r}")
    model = fb.ModelT()
    model.version = 3
    model.description = f"hydra-edge single-op test: {op}"
    model.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel
    opcode = fb.OperatorCodeT()
    opcode.builtinCode = code
    opcode.deprecatedBuiltinCode = min(code, 127)  # the int8 field saturates at PLACEHOLDER_FOR_GREATER_OP_CODES
    opcode.version = version
    model.operatorCodes = [opcode]

    sg = fb.SubGraphT()
    sg.tensors = []
    sg.inputs, sg.outputs = [], []

    def add_tensor(spec: TensorSpec, default_name: str) -> int:
        t = fb.TensorT()
        t.shape = [int(d) for d in spec.shape]
        t.type = _TYPES[spec.dtype]
        t.name = spec.name or default_name
        t.quantization = _quantization(spec)
        if spec.data is not None:
            arr = np.ascontiguousarray(np.asarray(spec.data, dtype=np.dtype(spec.dtype)).reshape(spec.shape))
            buf = fb.BufferT()
            buf.data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        else:
            t.buffer = 0
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    op_inputs = []
    for i, spec in enumerate(inputs):
        if spec is None:
            op_inputs.append(-1)
            continue
        idx = add_tensor(spec, f"input{i}")
        op_inputs.append(idx)
        if spec.data is None:
            sg.inputs.append(idx)
    op_outputs = [add_tensor(spec, f"output{i}") for i, spec in enumerate(outputs)]
    sg.outputs = list(op_outputs)

    operator = fb.OperatorT()
    operator.opcodeIndex = 0
    operator.inputs = op_inputs
    operator.outputs = op_outputs
    operator.builtinOptionsType, operator.builtinOptions = _options_object(op, options)
    sg.operators = [operator]
    sg.name = "main"
    model.subgraphs = [sg]

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@contextlib.contextmanager
def _quiet_fd2():
    """Send file descriptor 2 to /dev/null (TFLM's C++ side prints its allocations there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run_tflm(
    model: bytes, inputs: list[np.ndarray], n_outputs: int = 1, arena_size: int | None = None
) -> list[np.ndarray]:
    """Run ``model`` on TFLite Micro's Python interpreter; its first ``n_outputs`` outputs.

    An error in TFLM's Prepare or Eval raises ``RuntimeError`` (its message went to fd 2).
    """
    from tflite_micro.python.tflite_micro import runtime

    arena = arena_size if arena_size is not None else max(64 * 1024, 16 * len(model))
    with _quiet_fd2():
        interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
        for i, x in enumerate(inputs):
            interp.set_input(np.ascontiguousarray(x), i)
        interp.invoke()
        outs = [np.array(interp.get_output(i)) for i in range(n_outputs)]
    return outs


def run_litert(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` on ai-edge-litert's interpreter with its reference (BUILTIN_REF) kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], np.ascontiguousarray(x))
    interp.invoke()
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]
