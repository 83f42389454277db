"""ONNX nodes -> aten-level nodes: the names and attrs frontend/aten.py gives the same torch code.

| ONNX                               | aten-level node                                             |
|------------------------------------|-------------------------------------------------------------|
| MatMul                             | matmul                                                      |
| Gemm (constant B)                  | linear (weight [N, K]; alpha, beta and transB folded in)    |
| Add, Sub, Mul, Div                 | add/sub (alpha 1), mul, div; a one-element constant operand |
|                                    | that does not broadcast goes to attrs["other"], as torch    |
|                                    | writes x * 0.5                                              |
| Pow, Sqrt, Erf                     | pow (attrs exponent), sqrt, erf                             |
| ReduceL2                           | linalg_vector_norm (ord 2, dim, keepdim, dtype None)        |
| ReduceSum, ReduceMean              | sum, mean (dim, keepdim, dtype None)                        |
| LayerNormalization                 | layer_norm (normalized_shape, eps)                          |
| Gelu                               | gelu (approximate)                                          |
| Softmax                            | softmax (dim, dtype None)                                   |
| Transpose                          | permute (dims)                                              |
| Reshape, Flatten, (Un)Squeeze      | reshape (shape: the static output shape)                    |
| Conv (2-d)                         | conv2d (stride, padding [top, left, bottom, right] when     |
|                                    | asymmetric, dilation, groups)                               |
| BatchNormalization (inference)     | _native_batch_norm_legit_no_training (eps)                  |
| Relu, Sigmoid, Tanh, HardSwish,    | relu, sigmoid, tanh, hardswish, hardsigmoid                 |
| HardSigmoid (alpha 1/6, beta 1/2)  |                                                             |
| MaxPool, AveragePool (2-d)         | max_pool2d, avg_pool2d (kernel_size, stride, padding,       |
|                                    | ceil_mode; count_include_pad)                               |
| GlobalAveragePool                  | adaptive_avg_pool2d (output_size [1, 1])                    |
| Clip                               | clamp_min / clamp_max / clamp (min, max)                    |
| Expand                             | expand (size, implicit False)                               |
| Concat, Slice, Gather, Cast        | cat (dim), slice (dim, start, end, step), select/index_select, |
| on activations                     | _to_copy (dtype); lowering decides whether it takes them    |
| Split                              | one slice (dim, start, end, step 1) per output              |
| IsNaN, Where on activations        | isnan, where (condition, self, other): the dynamo exporter's |
|                                    | guard around softmax, which passes/lift_softmax.py drops    |
| Identity, Dropout (inference)      | nothing: the output is the input                            |

Constant, Shape, Size, ConstantOfShape, Equal, Where and every node whose
inputs are constants are folded before (frontend/onnx_fold.py). An optional
tensor operand that is absent is recorded as attrs[name] = None, as aten.py
does (conv2d and layer_norm bias).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import onnx

from ..ir.graph import Graph, Node, Tensor
from .errors import FrontendError
from .onnx_fold import FOLDABLE, OnnxNode, StaticGraph

# Ops named after their module (blocks.0.attn.q), as aten.py does for one-call modules.
_NAMED_BY_MODULE = {"linear", "conv2d", "layer_norm"}
_SCOPES = re.compile(r"'([^']*)'")
_ACTIVATION_OPS = {
    "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "ReduceL2", "ReduceSum", "ReduceMean",
    "LayerNormalization", "Gelu", "Softmax", "Transpose", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Conv",
    "Identity", "Dropout", "Clip", "Expand", "Concat", "Slice", "Gather", "Cast", "Split", "IsNaN", "Where",
    "BatchNormalization", "Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "MaxPool", "AveragePool",
    "GlobalAveragePool",
}
SUPPORTED_OPS = frozenset(_ACTIVATION_OPS | FOLDABLE)


def ident(text: str) -> str:
    """A readable IR name for an ONNX name: '/blocks.0/attn/q/MatMul_output_0' -> 'blocks.0.attn.q.MatMul_output_0'."""
    text = re.sub(r"[^0-9A-Za-z_.]+", "_", text.replace("/", ".")).strip("_.")
    return re.sub(r"\.{2,}", ".", text)[:120] or "t"


def decimal_float(value: Any) -> float:
    """A float32 attribute as the decimal it was written as (1e-05, not 9.999999747378752e-06): same float32."""
    return float(str(np.float32(value)))


def scope(node: OnnxNode) -> tuple[str, str]:
    """(module path, leaf name) of a node: from the dynamo exporter's name_scopes, or a legacy '/a/b/Op' name."""
    for prop in node.proto.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = _SCOPES.findall(prop.value[:4000])
            if len(scopes) >= 2:
                return scopes[-2], scopes[-1]
    name = node.proto.name
    if name.startswith("/"):
        parts = [p for p in name.split("/") if p]
        return ".".join(parts[:-1]), (parts[-1] if parts else "")
    return "", name


def convert_graph(model: onnx.ModelProto, static: StaticGraph, name: str, opset: int) -> Graph:
    return _Converter(model, static, name, opset).convert()


class _Converter:
    def __init__(self, model: onnx.ModelProto, static: StaticGraph, name: str, opset: int) -> None:
        self.model = model
        self.s = static
        self.name = name
        self.opset = opset
        self.g = Graph()
        self.names: dict[str, str] = {}  # ONNX value -> IR tensor
        self.alias: dict[str, str] = {}  # ONNX value -> the ONNX value it equals (Identity, Dropout)
        self.node_names: set[str] = set()
        self.preferred: dict[str, str] = {}  # ONNX constant -> a better IR name ("blocks.0.attn.q.weight")
        self.node: OnnxNode | None = None
        # every ONNX value some node reads or the graph outputs: an op's optional outputs must not be in it
        self.read = {i for n in static.nodes for i in n.inputs} | {o.name for o in model.graph.output}

    # -- driving -------------------------------------------------------------------------------
    def convert(self) -> Graph:
        self._input()
        self._name_weights()
        for node in self.s.nodes:
            self.node = node
            handler: Callable[[OnnxNode], None] | None = getattr(self, f"_op_{node.op}", None)
            if handler is None:  # a foldable op left over: it computes on activations
                raise self.error(
                    "computes on activations; hydra-edge folds it only when its inputs are constants or static shapes"
                )
            try:
                handler(node)
            except FrontendError:
                raise
            except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError, OverflowError) as exc:
                raise self.error(f"cannot be converted ({type(exc).__name__}: {str(exc)[:200]})") from None
        self.node = None
        for out in self.model.graph.output:
            src = self.resolve(out.name)
            if src in self.s.constants or src not in self.names:
                raise FrontendError(
                    f"{self.name}: output {out.name!r} does not depend on the input; hydra-edge needs outputs "
                    "computed from the image"
                )
            self.g.outputs.append(self.names[src])
        if not self.g.outputs:
            raise FrontendError(f"{self.name}: the model has no output")
        return self.g

    def error(self, what: str) -> FrontendError:
        where = f"node {self.node.where()}" if self.node is not None else "the graph"
        return FrontendError(f"{self.name}: {where} {what}")

    def _input(self) -> None:
        x = next(i for i in self.model.graph.input if i.name not in self.s.constants)
        shape = tuple(int(d.dim_value) for d in x.type.tensor_type.shape.dim)
        ir = self.fresh(ident(x.name))
        self.g.add_tensor(Tensor(ir, shape, "float32"))
        self.g.inputs.append(ir)
        self.names[x.name] = ir

    def _name_weights(self) -> None:
        """A weight the exporter named 'onnx::MatMul_129' or 'val_7' is named after its module instead.

        MatMul's B is the transposed weight [K, N]: "<module>.weight_t", which lowering turns back into
        "<module>.weight" [N, K].
        """
        for node in self.s.nodes:
            if node.op in ("MatMul", "Gemm", "Conv") and len(node.inputs) > 1 and node.inputs[1] in self.s.constants:
                module = scope(node)[0]
                w = node.inputs[1]
                if module and "." not in w and w not in self.preferred:
                    self.preferred[w] = f"{module}.weight" + ("_t" if node.op == "MatMul" else "")

    # -- values --------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        return self.g.unique_name(base)

    def resolve(self, onnx_name: str) -> str:
        seen = 0
        while onnx_name in self.alias and seen < 10_000:
            onnx_name, seen = self.alias[onnx_name], seen + 1
        return onnx_name

    def const(self, onnx_name: str) -> np.ndarray | None:
        if not onnx_name:
            return None
        return self.s.constants.get(self.resolve(onnx_name))

    def need_const(self, onnx_name: str, what: str) -> np.ndarray:
        value = self.const(onnx_name)
        if value is None:
            raise self.error(f"has a {what} computed at run time; hydra-edge needs it constant (static shapes)")
        return value

    def shape(self, onnx_name: str) -> tuple[int, ...]:
        src = self.resolve(onnx_name)
        if src in self.s.constants:
            return tuple(self.s.constants[src].shape)
        if src in self.names:
            return self.g.tensor(self.names[src]).shape
        if src in self.s.shapes:
            return self.s.shapes[src]
        raise self.error(f"reads {onnx_name!r}, whose shape is not static; hydra-edge needs static shapes")

    def value(self, onnx_name: str) -> str:
        """The IR tensor of an ONNX value: an activation converted before, or a constant added now."""
        src = self.resolve(onnx_name)
        if src in self.names:
            return self.names[src]
        if src in self.s.constants:
            data = np.asarray(self.s.constants[src])
            if data.dtype.kind == "f":
                data = data.astype(np.float32)
            elif data.dtype.kind in "iub":
                wide = data.astype(np.int64)
                if wide.size and (wide.min() < np.iinfo(np.int32).min or wide.max() > np.iinfo(np.int32).max):
                    raise self.error(f"reads integer constant {onnx_name!r}, which does not fit int32")
                data = wide.astype(np.int32)
            else:
                raise self.error(f"reads constant {onnx_name!r} of unsupported dtype {data.dtype}")
            ir = self.fresh(self.preferred.get(src, ident(src)))
            self.g.add_constant(ir, data)
            self.names[src] = ir
            return ir
        raise self.error(f"reads {onnx_name!r}, which no converted node writes")

    def new_const(self, base: str, data: np.ndarray) -> str:
        ir = self.fresh(ident(base))
        self.g.add_constant(ir, np.ascontiguousarray(data, np.float32))
        return ir

    def is_const(self, onnx_name: str) -> bool:
        return self.const(onnx_name) is not None

    # -- nodes ---------------------------------------------------------------------------------
    def node_name(self, node: OnnxNode, op: str) -> str:
        module, leaf = scope(node)
        if op in _NAMED_BY_MODULE and module and ident(module) not in self.node_names:
            base = ident(module)
        else:
            base = ident(f"{module}.{leaf}" if module and leaf else (leaf or f"{node.op}_{node.index}"))
        name, i = base, 1
        while name in self.node_names:
            name, i = f"{base}_{i}", i + 1
        self.node_names.add(name)
        return name

    def source(self, node: OnnxNode) -> str:
        module = scope(node)[0]
        text = f"onnx #{node.index} {node.op} {node.proto.name or 'unnamed'}"
        return f"{module}: {text}" if module else f"onnx: {text[5:]}"

    def out_tensor(self, onnx_name: str, shape: tuple[int, ...] | None = None) -> str:
        """Declare the IR tensor for ONNX output `onnx_name` (static shape from inference unless given)."""
        if shape is None:
            if onnx_name not in self.s.shapes:
                raise self.error(f"writes {onnx_name!r}, whose shape ONNX shape inference could not fix")
            shape = self.s.shapes[onnx_name]
        kind = self.s.dtypes.get(onnx_name, np.dtype(np.float32)).kind
        if kind not in "fiub":
            raise self.error(f"writes {onnx_name!r} of unsupported dtype {self.s.dtypes[onnx_name]}")
        ir = self.fresh(ident(onnx_name))
        self.g.add_tensor(Tensor(ir, tuple(shape), "float32" if kind == "f" else "int32"))
        self.names[onnx_name] = ir
        return ir

    def emit(self, node: OnnxNode, op: str, inputs: list[str], attrs: dict[str, Any],
             out: str | None = None, shape: tuple[int, ...] | None = None, by_module: bool = False) -> str:
        """Add one aten-level node for `node`; `inputs` are ONNX names; `out` an ONNX name (default: its first output)."""
        ir_inputs = [self.value(i) for i in inputs]
        if out is None:
            out = node.outputs[0]
        ir_out = self.out_tensor(out, shape)
        name = self.node_name(node, "linear" if by_module else op)
        self.g.add_node(Node(name, op, ir_inputs, [ir_out], attrs, self.source(node)))
        return out

    def temp(self, node: OnnxNode, suffix: str) -> str:
        """An ONNX-side name for an intermediate of a node converted into several aten nodes."""
        base, i = f"{node.outputs[0]}__{suffix}", 1
        name = base
        while name in self.s.shapes or name in self.s.constants or name in self.names:
            name, i = f"{base}{i}", i + 1
        return name

    def ints(self, value: Any) -> list[int]:
        return [int(v) for v in np.asarray(value).reshape(-1)]

    # -- elementwise -----------------------------------------------------------------------------
    def _binary(self, node: OnnxNode, op: str) -> None:
        a, b = node.inputs[:2]
        out_shape = self.s.shapes.get(node.outputs[0])
        ca, cb = self.const(a), self.const(b)
        attrs: dict[str, Any] = {"alpha": 1} if op in ("add", "sub") else {}
        if cb is not None and cb.size == 1 and self.shape(a) == out_shape and cb.dtype.kind == "f":
            self.emit(node, op, [a], {"other": float(cb.reshape(-1)[0]), **attrs})
        elif ca is not None and ca.size == 1 and op in ("add", "mul") and self.shape(b) == out_shape and ca.dtype.kind == "f":
            self.emit(node, op, [b], {"other": float(ca.reshape(-1)[0]), **attrs})
        else:
            self.emit(node, op, [a, b], attrs)

    def _op_Add(self, node: OnnxNode) -> None:
        self._binary(node, "add")

    def _op_Sub(self, node: OnnxNode) -> None:
        self._binary(node, "sub")

    def _op_Mul(self, node: OnnxNode) -> None:
        self._binary(node, "mul")

    def _op_Div(self, node: OnnxNode) -> None:
        self._binary(node, "div")

    def _op_Pow(self, node: OnnxNode) -> None:
        x, e = node.inputs[:2]
        ce = self.const(e)
        if ce is not None and ce.size == 1:
            self.emit(node, "pow", [x], {"exponent": float(ce.reshape(-1)[0])})
        else:
            self.emit(node, "pow", [x, e], {})

    def _op_Sqrt(self, node: OnnxNode) -> None:
        self.emit(node, "sqrt", [node.inputs[0]], {})

    def _op_Erf(self, node: OnnxNode) -> None:
        self.emit(node, "erf", [node.inputs[0]], {})

    def _op_Gelu(self, node: OnnxNode) -> None:
        self.emit(node, "gelu", [node.inputs[0]], {"approximate": str(node.attrs.get("approximate", "none"))})

    def _op_Clip(self, node: OnnxNode) -> None:
        ins = node.inputs
        if self.opset < 11:
            lo, hi = node.attrs.get("min"), node.attrs.get("max")
        else:
            lo = float(self.need_const(ins[1], "min").reshape(-1)[0]) if len(ins) > 1 and ins[1] else None
            hi = float(self.need_const(ins[2], "max").reshape(-1)[0]) if len(ins) > 2 and ins[2] else None
        if lo is not None and hi is None:
            self.emit(node, "clamp_min", [ins[0]], {"min": float(lo)})
        elif hi is not None and lo is None:
            self.emit(node, "clamp_max", [ins[0]], {"max": float(hi)})
        else:
            self.emit(node, "clamp", [ins[0]], {"min": lo if lo is None else float(lo), "max": hi if hi is None else float(hi)})

    # -- matrix products and convolution -------------------------------------------------------------
    def _op_MatMul(self, node: OnnxNode) -> None:
        # x @ W with a constant W is a Linear's product: named after its module, like linear
        self.emit(node, "matmul", node.inputs[:2], {}, by_module=self.is_const(node.inputs[1]))

    def _op_Gemm(self, node: OnnxNode) -> None:
        ins = node.inputs
        a_name = ins[0]
        b = self.const(ins[1])
        if b is None or b.ndim != 2:
            raise self.error("has a non-constant or non-2-d B; hydra-edge converts Gemm with a constant weight")
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        w = b if node.attrs.get("transB", 0) else b.T
        if alpha != 1.0:
            w = w * alpha
        n = w.shape[0]
        if node.attrs.get("transA", 0):
            m, k = self.shape(a_name)
            t = self.temp(node, "a_t")
            self.emit(node, "permute", [a_name], {"dims": [1, 0]}, out=t, shape=(k, m))
            a_name = t
        module = scope(node)[0]
        base = f"{module}.weight" if module else f"{ins[1]}_t"
        weight = self.new_const(base, w) if (w is not b) else self.value(ins[1])
        c = self.const(ins[2]) if len(ins) > 2 and ins[2] else None
        if len(ins) > 2 and ins[2] and c is None:
            raise self.error("has a non-constant C; hydra-edge converts Gemm with a constant bias")
        out_shape = self.s.shapes.get(node.outputs[0])
        if c is not None and (c.size == n or c.size == 1):
            bias = np.broadcast_to(np.asarray(c, np.float32).reshape(-1), (n,)) * beta
            ir_in = [self.value(a_name), weight, self.new_const(f"{module}.bias" if module else f"{ins[2]}_b", bias)]
            attrs: dict[str, Any] = {}
        else:
            ir_in, attrs = [self.value(a_name), weight], {"bias": None}
        target = node.outputs[0] if c is None or c.size in (n, 1) else self.temp(node, "mm")
        out = self.out_tensor(target, out_shape)
        self.g.add_node(Node(self.node_name(node, "linear"), "linear", ir_in, [out], attrs, self.source(node)))
        if target != node.outputs[0]:  # a full [M, N] C: an add after the product
            cc = self.new_const(f"{ins[2]}_scaled", np.asarray(c, np.float32) * beta)
            res = self.out_tensor(node.outputs[0])
            self.g.add_node(Node(self.node_name(node, "add"), "add", [out, cc], [res], {"alpha": 1}, self.source(node)))

    def _op_Conv(self, node: OnnxNode) -> None:
        ins = node.inputs
        x_shape = self.shape(ins[0])
        w = self.const(ins[1])
        if w is None or w.ndim != 4 or len(x_shape) != 4:
            raise self.error("is not a 2-d convolution with a constant weight; hydra-edge converts Conv2d only")
        k = [int(v) for v in node.attrs.get("kernel_shape", w.shape[2:])]
        strides = self.ints(node.attrs.get("strides", [1, 1]))
        dilations = self.ints(node.attrs.get("dilations", [1, 1]))
        pads = self.ints(node.attrs.get("pads", [0, 0, 0, 0]))
        auto = str(node.attrs.get("auto_pad", "NOTSET"))
        if auto == "VALID":
            pads = [0, 0, 0, 0]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for i in range(2):
                size = x_shape[2 + i]
                out = -(-size // strides[i])
                total = max((out - 1) * strides[i] + (k[i] - 1) * dilations[i] + 1 - size, 0)
                small = total // 2
                pads[i], pads[i + 2] = (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
        if len(pads) != 4:
            raise self.error(f"has padding {pads}; hydra-edge converts 2-d padding [top, left, bottom, right]")
        padding = [pads[0], pads[1]] if pads[0] == pads[2] and pads[1] == pads[3] else pads
        attrs: dict[str, Any] = {
            "stride": strides, "padding": padding, "dilation": dilations,
            "groups": int(node.attrs.get("group", 1)),
        }
        inputs = [ins[0], ins[1]]
        if len(ins) > 2 and ins[2]:
            inputs.append(ins[2])
        else:
            attrs = {"bias": None, **attrs}
        self.emit(node, "conv2d", inputs, attrs)

    # -- CNN layers -------------------------------------------------------------------------------
    def _op_BatchNormalization(self, node: OnnxNode) -> None:
        if int(node.attrs.get("training_mode", 0)) or any(o and o in self.read for o in node.outputs[1:]):
            raise self.error("is in training mode (batch statistics); export the model after model.eval()")
        ins = node.inputs
        for i in ins[1:5]:
            self.need_const(i, "BatchNormalization parameter")
        self.emit(node, "_native_batch_norm_legit_no_training", ins[:5],
                  {"momentum": 0.1, "eps": decimal_float(node.attrs.get("epsilon", 1e-5))})

    def _op_Relu(self, node: OnnxNode) -> None:
        self.emit(node, "relu", [node.inputs[0]], {})

    def _op_Sigmoid(self, node: OnnxNode) -> None:
        self.emit(node, "sigmoid", [node.inputs[0]], {})

    def _op_Tanh(self, node: OnnxNode) -> None:
        self.emit(node, "tanh", [node.inputs[0]], {})

    def _op_HardSwish(self, node: OnnxNode) -> None:
        self.emit(node, "hardswish", [node.inputs[0]], {})

    def _op_HardSigmoid(self, node: OnnxNode) -> None:
        alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            raise self.error(f"has alpha {alpha}, beta {beta}; hydra-edge converts torch's hardsigmoid "
                             "(alpha 1/6, beta 1/2)")
        self.emit(node, "hardsigmoid", [node.inputs[0]], {})

    def _pool(self, node: OnnxNode, op: str) -> None:
        if any(o and o in self.read for o in node.outputs[1:]):
            raise self.error("uses the Indices output; hydra-edge converts MaxPool's Y only")
        if str(node.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            raise self.error("has auto_pad SAME; re-export with explicit pads")
        kernel = self.ints(node.attrs["kernel_shape"])
        pads = self.ints(node.attrs.get("pads", [0, 0, 0, 0]))
        attrs: dict[str, Any] = {
            "kernel_size": kernel, "stride": self.ints(node.attrs.get("strides", [1] * len(kernel))),
            "padding": [pads[0], pads[1]] if pads[0] == pads[2] and pads[1] == pads[3] else pads,
            "ceil_mode": bool(node.attrs.get("ceil_mode", 0)),
        }
        if op == "max_pool2d":
            attrs["dilation"] = self.ints(node.attrs.get("dilations", [1] * len(kernel)))
        else:
            attrs["count_include_pad"] = bool(node.attrs.get("count_include_pad", 0))
        self.emit(node, op, [node.inputs[0]], attrs)

    def _op_MaxPool(self, node: OnnxNode) -> None:
        self._pool(node, "max_pool2d")

    def _op_AveragePool(self, node: OnnxNode) -> None:
        self._pool(node, "avg_pool2d")

    def _op_GlobalAveragePool(self, node: OnnxNode) -> None:
        self.emit(node, "adaptive_avg_pool2d", [node.inputs[0]], {"output_size": [1, 1]})

    # -- reductions and normalisation ----------------------------------------------------------------
    def _reduce(self, node: OnnxNode, op: str, extra: dict[str, Any]) -> None:
        ins = node.inputs
        raw = None
        if len(ins) > 1 and ins[1]:
            raw = self.need_const(ins[1], "axes input")
        elif "axes" in node.attrs:
            raw = node.attrs["axes"]
        axes = self.ints(raw) if raw is not None else []
        if not axes and node.attrs.get("noop_with_empty_axes", 0):
            self.alias[node.outputs[0]] = ins[0]
            return
        keepdim = bool(node.attrs.get("keepdims", 1))
        self.emit(node, op, [ins[0]], {**extra, "dim": axes or None, "keepdim": keepdim, "dtype": None})

    def _op_ReduceL2(self, node: OnnxNode) -> None:
        self._reduce(node, "linalg_vector_norm", {"ord": 2.0})

    def _op_ReduceSum(self, node: OnnxNode) -> None:
        self._reduce(node, "sum", {})

    def _op_ReduceMean(self, node: OnnxNode) -> None:
        self._reduce(node, "mean", {})

    def _op_LayerNormalization(self, node: OnnxNode) -> None:
        ins = node.inputs
        x_shape = self.shape(ins[0])
        axis = int(node.attrs.get("axis", -1)) % max(len(x_shape), 1)
        if any(o and o in self.read for o in node.outputs[1:]):
            raise self.error("uses the Mean or InvStdDev output; hydra-edge converts LayerNormalization's Y only")
        attrs: dict[str, Any] = {"normalized_shape": list(x_shape[axis:]),
                                 "eps": decimal_float(node.attrs.get("epsilon", 1e-5)), "cudnn_enable": False}
        inputs = [ins[0], ins[1]]
        if len(ins) > 2 and ins[2]:
            inputs.append(ins[2])
        else:
            attrs["bias"] = None
        self.emit(node, "layer_norm", inputs, attrs)

    def _op_Softmax(self, node: OnnxNode) -> None:
        rank = len(self.shape(node.inputs[0]))
        axis = int(node.attrs.get("axis", -1 if self.opset >= 13 else 1))
        if self.opset < 13 and rank and axis % rank != rank - 1:
            raise self.error(
                f"(opset {self.opset}) flattens its input to 2-d at axis {axis}; hydra-edge converts Softmax over "
                "the last axis for opsets before 13: re-export with opset 13 or later"
            )
        self.emit(node, "softmax", [node.inputs[0]], {"dim": axis, "dtype": None})

    # -- layout ----------------------------------------------------------------------------------
    def _op_Transpose(self, node: OnnxNode) -> None:
        rank = len(self.shape(node.inputs[0]))
        perm = node.attrs.get("perm")
        dims = self.ints(perm) if perm is not None else list(range(rank))[::-1]
        self.emit(node, "permute", [node.inputs[0]], {"dims": dims})

    def _reshape(self, node: OnnxNode) -> None:
        out = node.outputs[0]
        if out not in self.s.shapes:
            raise self.error("has an output shape that ONNX shape inference could not fix; hydra-edge needs static shapes")
        self.emit(node, "reshape", [node.inputs[0]], {"shape": list(self.s.shapes[out])})

    _op_Reshape = _reshape
    _op_Flatten = _reshape
    _op_Unsqueeze = _reshape
    _op_Squeeze = _reshape

    def _op_Expand(self, node: OnnxNode) -> None:
        out = node.outputs[0]
        self.emit(node, "expand", [node.inputs[0]], {"size": list(self.shape_of_output(out)), "implicit": False})

    def shape_of_output(self, out: str) -> tuple[int, ...]:
        if out not in self.s.shapes:
            raise self.error("has an output shape that ONNX shape inference could not fix; hydra-edge needs static shapes")
        return self.s.shapes[out]

    def _op_Identity(self, node: OnnxNode) -> None:
        self.alias[node.outputs[0]] = node.inputs[0]

    def _op_Dropout(self, node: OnnxNode) -> None:
        ins = node.inputs
        if len(ins) > 2 and ins[2]:
            mode = self.const(ins[2])
            if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                raise self.error("is in training mode; export the model after model.eval()")
        if len(node.outputs) > 1 and node.outputs[1]:
            if node.outputs[1] in self.read:
                raise self.error("uses the dropout mask; hydra-edge converts inference graphs only")
        self.alias[node.outputs[0]] = ins[0]

    def _op_Cast(self, node: OnnxNode) -> None:
        to = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
        src_kind = self.s.dtypes.get(self.resolve(node.inputs[0]), np.dtype(np.float32)).kind
        if np.dtype(to).kind == src_kind == "f":
            self.alias[node.outputs[0]] = node.inputs[0]
            return
        self.emit(node, "_to_copy", [node.inputs[0]], {"dtype": str(np.dtype(to))})

    def _op_IsNaN(self, node: OnnxNode) -> None:
        self.emit(node, "isnan", [node.inputs[0]], {})

    def _op_Where(self, node: OnnxNode) -> None:
        self.emit(node, "where", list(node.inputs[:3]), {})

    def _op_Concat(self, node: OnnxNode) -> None:
        self.emit(node, "cat", [i for i in node.inputs if i], {"dim": int(node.attrs["axis"])})

    def _op_Gather(self, node: OnnxNode) -> None:
        idx = self.const(node.inputs[1])
        axis = int(node.attrs.get("axis", 0))
        if idx is not None and idx.ndim == 0:
            self.emit(node, "select", [node.inputs[0]], {"dim": axis, "index": int(idx)})
        else:
            self.emit(node, "index_select", [node.inputs[0], node.inputs[1]], {"dim": axis})

    def _op_Split(self, node: OnnxNode) -> None:
        """One slice per output, as torch's split/chunk/unbind read back (a fused qkv's three parts)."""
        ins = node.inputs
        shape = self.shape(ins[0])
        axis = int(node.attrs.get("axis", 0)) % max(len(shape), 1)
        if len(ins) > 1 and ins[1]:
            sizes = self.ints(self.need_const(ins[1], "split input"))
        elif "split" in node.attrs:
            sizes = self.ints(node.attrs["split"])
        else:  # equal parts (opset 18's num_outputs: the last part may be smaller)
            parts = len(node.outputs)
            step = -(-shape[axis] // parts)
            sizes = [min(step, shape[axis] - i * step) for i in range(parts)]
        if len(sizes) != len(node.outputs) or sum(sizes) != shape[axis] or min(sizes) < 0:
            raise self.error(f"splits axis {axis} of size {shape[axis]} into {sizes} for {len(node.outputs)} outputs")
        start = 0
        for out, size in zip(node.outputs, sizes):
            if out:
                self.emit(node, "slice", [ins[0]], {"dim": axis, "start": start, "end": start + size, "step": 1},
                          out=out)
            start += size

    def _op_Slice(self, node: OnnxNode) -> None:
        ins = node.inputs
        if len(ins) > 1:
            starts = self.ints(self.need_const(ins[1], "starts input"))
            ends = self.ints(self.need_const(ins[2], "ends input"))
            axes = self.ints(self.need_const(ins[3], "axes input")) if len(ins) > 3 and ins[3] else list(range(len(starts)))
            steps = self.ints(self.need_const(ins[4], "steps input")) if len(ins) > 4 and ins[4] else [1] * len(starts)
        else:
            starts, ends = self.ints(node.attrs["starts"]), self.ints(node.attrs["ends"])
            axes = self.ints(node.attrs.get("axes", list(range(len(starts)))))
            steps = [1] * len(starts)
        shape = list(self.shape(ins[0]))
        current = ins[0]
        for j, (s, e, a, st) in enumerate(zip(starts, ends, axes, steps)):
            a %= len(shape)
            shape[a] = len(range(*slice(s, e, st).indices(shape[a])))
            last = j == len(starts) - 1
            target = node.outputs[0] if last else self.temp(node, f"slice{j}")
            self.emit(node, "slice", [current], {"dim": a, "start": s, "end": e, "step": st},
                      out=target, shape=None if last else tuple(shape))
            current = target
