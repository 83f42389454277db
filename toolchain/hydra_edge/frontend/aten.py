"""Convert a torch.export ExportedProgram into an aten-level Graph.

The result is a faithful, unlowered copy of the program:

- one Node per aten call; its op is the aten op name without namespace and
  overload ("conv2d", "linear", "linalg_vector_norm"), other namespaces keep
  theirs ("quantized_decomposed.quantize_per_tensor"), operator.getitem is
  "getitem";
- tensor arguments become node inputs in schema order; every other argument
  (ints, floats, lists, strings, dtypes) goes into attrs under its schema
  name, defaults filled in; an optional tensor argument passed as None is
  recorded as attrs[name] = None, so that a pass can tell which operand is
  missing;
- parameters, buffers and lifted constants become float32 constant tensors
  (integer ones int32);
- shapes come from node.meta["val"] and keep the batch dimension; a dynamic
  batch is fixed to 1 (the compiler lowers batch-1 inference); symbolic
  scalars (sym_size and friends) are evaluated and folded into attrs;
- a node with several tensor results writes "<name>__<i>"; getitem reads it;
- Node.source is the fx node name and the user's line, "div (model.py:46)".
"""

from __future__ import annotations

import operator
import os
import re
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from ..ir.graph import Graph, IRError, Node, Tensor
from .errors import FrontendError, first_line, source_location

# ops whose module path names them well (one aten call per nn.Module)
_NAMED_BY_MODULE = {"linear", "conv2d", "convolution", "layer_norm", "native_layer_norm"}

_INT_DTYPES = {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool}
_FLOAT_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.float64}


def exported_program_to_graph(program: ExportedProgram, source_file: str, frontend: str) -> Graph:
    """Convert `program` (one float32 input, batch 1 or a dynamic batch; lowering wants [1, C, H, W])."""
    name = os.path.basename(str(source_file))
    try:
        program = program.run_decompositions({})
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
        raise FrontendError(
            f"{name}: torch could not normalise the exported program ({first_line(exc)}); "
            f"re-export it with torch {torch.__version__}"
        ) from None
    return _Converter(program, name).convert(meta={"source_file": str(source_file), "frontend": frontend})


# -- helpers ----------------------------------------------------------------


def _module_path(node: torch.fx.Node) -> str:
    """The innermost nn.Module the node was traced in ("" for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def op_name(target: Any) -> str:
    """The IR op name of an fx call_function target."""
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        ns, opname = target.namespace, target._opname
        return opname if ns == "aten" else f"{ns}.{opname}"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    return f"python.{getattr(target, '__name__', str(target))}"


def _ir_dtype(dtype: torch.dtype) -> str:
    if dtype in _FLOAT_DTYPES:
        return "float32"
    if dtype in _INT_DTYPES:
        return "int32"
    raise IRError(f"unsupported tensor dtype {dtype}")


def _const_data(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in _FLOAT_DTYPES:
        return t.to(torch.float32).numpy().copy()
    if t.dtype in _INT_DTYPES:
        a = t.to(torch.int64).numpy()
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise IRError("integer constant does not fit int32")
        return a.astype(np.int32)
    raise IRError(f"unsupported constant dtype {t.dtype}")


class _Converter:
    def __init__(self, program: ExportedProgram, name: str) -> None:
        self.ep = program
        self.name = name
        self.graph = Graph()
        self.subs: dict[Any, int] = {}  # sympy symbol -> value (the batch symbol -> 1)
        self.scalars: dict[str, Any] = {}  # fx node name -> concrete non-tensor value
        self.multi: dict[str, list[str | None]] = {}  # fx node name -> its output tensor names
        self.node_names: set[str] = set()  # IR node names given so far

    # -- symbolic values ------------------------------------------------
    def concrete(self, v: Any, what: str) -> Any:
        if isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            expr = v.node.expr
            val = expr.subs(self.subs) if self.subs else expr
            if not getattr(val, "is_number", False) and val not in (True, False):
                raise FrontendError(
                    f"{self.name}: {what} has a dynamic size ({expr}); hydra-edge needs fixed shapes "
                    "apart from the batch: export without dynamic_shapes for C, H and W"
                )
            if isinstance(v, torch.SymInt):
                return int(val)
            if isinstance(v, torch.SymFloat):
                return float(val)
            return bool(val)
        return v

    def shape(self, val: Any, what: str) -> tuple[int, ...]:
        return tuple(int(self.concrete(d, what)) for d in val.shape)

    # -- attribute values -----------------------------------------------
    def plain(self, v: Any, what: str) -> Any:
        if isinstance(v, torch.fx.Node):
            if v.name in self.scalars:
                return self.scalars[v.name]
            raise FrontendError(f"{self.name}: node {what} takes {v.name} in an unsupported position")
        if isinstance(v, (list, tuple)):
            return [self.plain(x, what) for x in v]
        if isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return self.concrete(v, what)
        if isinstance(v, torch.dtype):
            return str(v).removeprefix("torch.")
        if isinstance(v, (torch.device, torch.layout, torch.memory_format)):
            return str(v)
        if isinstance(v, torch.Tensor):  # a tensor literal in an argument (rare): keep it as numpy
            return _const_data(v)
        return v

    # -- the conversion ---------------------------------------------------
    def convert(self, meta: dict) -> Graph:
        g = self.graph
        g.meta.update(meta)
        self._signature()
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                continue  # handled by _signature
            if node.op == "output":
                continue
            if node.op == "get_attr":
                self._get_attr(node)
            elif node.op == "call_function":
                self._call(node)
            else:
                raise FrontendError(f"{self.name}: unexpected fx node kind {node.op!r} ({node.name})")
        for spec in self.ep.graph_signature.output_specs:
            if spec.kind == OutputKind.USER_OUTPUT:
                arg = spec.arg
                out = getattr(arg, "name", None)
                if out is None or out not in g.tensors:
                    raise FrontendError(f"{self.name}: output {arg} is not a tensor; hydra-edge needs tensor outputs")
                g.outputs.append(out)
            elif spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION):
                raise FrontendError(
                    f"{self.name}: the program writes to {spec.target or spec.arg.name} (a model in training "
                    "mode?): call model.eval() before torch.export.export"
                )
        if not g.outputs:
            raise FrontendError(f"{self.name}: the program has no tensor output")
        try:
            g.validate()
        except IRError as exc:
            raise FrontendError(f"{self.name}: could not convert the program ({exc})") from None
        return g

    def _signature(self) -> None:
        g, ep = self.graph, self.ep
        placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        user_inputs = []
        for spec in ep.graph_signature.input_specs:
            pname = spec.arg.name
            node = placeholders.get(pname)
            if spec.kind == InputKind.USER_INPUT:
                user_inputs.append((pname, node))
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                if node is None or not node.users:
                    continue
                source = ep.state_dict if spec.target in ep.state_dict else ep.constants
                tensor = source.get(spec.target)
                if not isinstance(tensor, torch.Tensor):
                    raise FrontendError(f"{self.name}: constant {spec.target} is not a tensor")
                try:
                    g.add_constant(pname, _const_data(tensor))
                except IRError as exc:
                    raise FrontendError(f"{self.name}: constant {spec.target}: {exc}") from None
            else:
                raise FrontendError(
                    f"{self.name}: the program has a {spec.kind.name.lower()} input ({pname}); hydra-edge "
                    "reads plain tensor models: export a module whose forward takes one image tensor"
                )
        tensor_inputs = [(n, node) for n, node in user_inputs if isinstance(node.meta.get("val"), torch.Tensor)]
        if len(user_inputs) != 1 or len(tensor_inputs) != 1:
            raise FrontendError(
                f"{self.name}: the model takes {len(user_inputs)} inputs; hydra-edge needs exactly one, "
                "a float32 image tensor [1, C, H, W]"
            )
        pname, node = tensor_inputs[0]
        val = node.meta["val"]
        # The rank ([1, C, H, W]) is lowering's to check: it reports an unsupported op first.
        if val.dim() < 1 or val.dtype != torch.float32:
            raise FrontendError(
                f"{self.name}: input {pname} is {str(val.dtype).removeprefix('torch.')} of rank {val.dim()}; "
                "hydra-edge needs a float32 image tensor [1, C, H, W]: export with such an example input"
            )
        batch = val.shape[0]
        if isinstance(batch, torch.SymInt):
            expr = batch.node.expr
            if getattr(expr, "is_Symbol", False):
                self.subs[expr] = 1
        elif int(batch) != 1:
            raise FrontendError(
                f"{self.name}: input {pname} has batch {int(batch)}; hydra-edge compiles batch-1 inference: "
                "export with an example of batch 1 (or a dynamic batch)"
            )
        shape = self.shape(val, f"input {pname}")
        g.add_tensor(Tensor(pname, shape, "float32"))
        g.inputs.append(pname)

    def _get_attr(self, node: torch.fx.Node) -> None:
        obj = getattr(self.ep.graph_module, str(node.target), None)
        if isinstance(obj, torch.Tensor):
            self.graph.add_constant(node.name, _const_data(obj))
        else:
            self.scalars[node.name] = f"<{type(obj).__name__} {node.target}>"

    def _source(self, node: torch.fx.Node) -> str:
        loc = source_location(node.meta.get("stack_trace"))
        module = _module_path(node)
        where = f"{module}: {node.name}" if module else node.name
        return f"{where} ({loc})" if loc else where

    def _node_name(self, node: torch.fx.Node, op: str) -> str:
        """The module path (blocks.0.attn.q) for one-call modules, else the fx name."""
        module = _module_path(node)
        if op in _NAMED_BY_MODULE and module and module not in self.node_names:
            name = module
        else:
            name = node.name
        self.node_names.add(name)
        return name

    def _call(self, node: torch.fx.Node) -> None:
        g = self.graph
        val = node.meta.get("val")
        op = op_name(node.target)

        # Non-tensor results (sym_size, operator.mul on sizes): evaluate and fold.
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool)):
            self.scalars[node.name] = self.concrete(val, f"node {node.name}")
            return

        if node.target is operator.getitem:
            src, idx = node.args
            names = self.multi.get(src.name)
            if names is None or names[idx] is None:
                if src.name in self.scalars:
                    self.scalars[node.name] = self.scalars[src.name]
                    return
                raise FrontendError(f"{self.name}: getitem {node.name} reads a non-tensor result of {src.name}")
            self._add_output(node.name, val)
            g.add_node(Node(node.name, "getitem", [names[idx]], [node.name], {"index": idx}, self._source(node)))
            return

        inputs, attrs = self._operands(node)
        if isinstance(val, torch.Tensor):
            outputs = [node.name]
            self._add_output(node.name, val)
        elif isinstance(val, (tuple, list)):
            names: list[str | None] = []
            for i, v in enumerate(val):
                if isinstance(v, torch.Tensor):
                    names.append(f"{node.name}__{i}")
                    self._add_output(names[-1], v)
                else:
                    names.append(None)
            self.multi[node.name] = names
            outputs = [n for n in names if n is not None]
        elif val is None:
            outputs = []  # asserts and other effects-only calls
        else:
            raise FrontendError(f"{self.name}: node {node.name} ({op}) returns {type(val).__name__}")
        g.add_node(Node(self._node_name(node, op), op, inputs, outputs, attrs, self._source(node)))

    def _add_output(self, name: str, val: torch.Tensor) -> None:
        try:
            dtype = _ir_dtype(val.dtype)
        except IRError as exc:
            raise FrontendError(f"{self.name}: node {name}: {exc}") from None
        self.graph.add_tensor(Tensor(name, self.shape(val, f"node {name}"), dtype))

    def _operands(self, node: torch.fx.Node) -> tuple[list[str], dict[str, Any]]:
        """Tensor args in schema order -> inputs; everything else -> attrs by name."""
        inputs: list[str] = []
        attrs: dict[str, Any] = {}

        def is_tensor(a: Any) -> bool:
            return isinstance(a, torch.fx.Node) and a.name in self.graph.tensors

        def take(name: str, value: Any) -> None:
            if is_tensor(value):
                inputs.append(value.name)
            elif isinstance(value, (list, tuple)) and any(is_tensor(a) for a in value):
                for a in value:
                    if is_tensor(a):
                        inputs.append(a.name)
                attrs[name] = f"<{len(value)} tensors>"
            else:
                attrs[name] = self.plain(value, node.name)

        schema = getattr(node.target, "_schema", None)
        if schema is None:
            for i, a in enumerate(node.args):
                take(f"arg{i}", a)
            for k, a in node.kwargs.items():
                take(k, a)
            return inputs, attrs
        for i, arg in enumerate(schema.arguments):
            if i < len(node.args) and not arg.kwarg_only:
                take(arg.name, node.args[i])
            elif arg.name in node.kwargs:
                take(arg.name, node.kwargs[arg.name])
            elif arg.has_default_value():
                attrs[arg.name] = self.plain(arg.default_value, node.name)
        return inputs, attrs
