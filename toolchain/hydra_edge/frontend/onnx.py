"""Read an ONNX model (.onnx) into the same aten-level Graph that frontend/aten.py makes from torch.export.

So canonicalize -> lift_hydra -> lower and everything after run unchanged on
ONNX files. The stages, in order, each refusing a bad file with one
FrontendError that names the file (and the node) and says what to do:

1. read: the file must exist, be a non-empty protobuf ModelProto (a zip, a
   .tflite or a damaged file is named as such); tensors stored as external
   data are read only from files beside the model;
2. op check, before any other work: every node whose domain or op_type is
   not converted is listed in ONE error, "#index op_type (node name)";
3. onnx.checker, then static shapes (frontend/onnx_fold.py): the input's
   batch becomes 1, Shape/Gather/Concat/... chains fold to constants, strict
   shape inference gives every value a static shape;
4. convert node by node (frontend/onnx_ops.py) into aten op names and attrs;
5. fold decomposed LayerNorm and erf-GELU back into layer_norm and gelu
   (frontend/onnx_fuse.py).

Initializers become float32 constants (integer ones int32). Node.source is
"<module>: onnx #index op_type name" (the module path from the exporter's
node name or metadata, when it has one; "onnx: ..." otherwise), so that a
lowering error points at the node in Netron and a lifted node is named after
its module, as for .pt2 files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper

from ..ir.graph import Graph, IRError
from ..errors import UnsupportedNode, unsupported_summary
from .errors import FrontendError, first_line, source_location
from .onnx_fold import OnnxNode, decode_attrs, fold_static
from .onnx_fuse import fuse_decompositions
from .onnx_ops import SUPPORTED_OPS, convert_graph

EXPORT_HINT = (
    "export it with torch.onnx.export(model.eval(), (example,), 'model.onnx', dynamo=True, "
    "external_data=False) and an example of shape [1, C, H, W]"
)
_DEFAULT_DOMAINS = ("", "ai.onnx")


def load_onnx(path: str | os.PathLike) -> Graph:
    """Load an ONNX model and convert it to an aten-level Graph (see the module docstring)."""
    path = Path(path)
    name = str(path)
    model = read_model(path)
    check_ops(model, name)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker raises ValidationError and C++ errors of other kinds
        raise FrontendError(f"{name}: not a valid ONNX model ({first_line(exc)}); {EXPORT_HINT}") from None
    nodes = [OnnxNode(i, n, _attrs(n, i, name)) for i, n in enumerate(model.graph.node)]
    initializers = _initializers(model, name)
    _fix_batch(model, initializers, name)
    static = fold_static(model, nodes, initializers, name)
    try:
        graph = convert_graph(model, static, name, _opset(model))
        graph = fuse_decompositions(graph)
        graph.validate()
    except IRError as exc:
        raise FrontendError(f"{name}: could not convert the graph ({exc})") from None
    graph.meta.update({"source_file": name, "frontend": "onnx"})
    return graph


# -- 1. reading ----------------------------------------------------------------------------------


def read_model(path: Path) -> onnx.ModelProto:
    """The ModelProto of `path`, with external data (beside the file only) loaded."""
    name = str(path)
    if not path.exists():
        raise FrontendError(f"{name}: no such file; give the path of an .onnx model")
    if path.is_dir():
        raise FrontendError(f"{name} is a directory; give the path of an .onnx model file")
    data = path.read_bytes()
    if not data:
        raise FrontendError(f"{name} is empty; {EXPORT_HINT}")
    if data[:2] == b"PK":
        raise FrontendError(
            f"{name} is a zip archive (a .pt2 or TorchScript file?), not an ONNX model; "
            f"give it its own suffix, or {EXPORT_HINT}"
        )
    if data[4:8] == b"TFL3":
        raise FrontendError(f"{name} is a TFLite flatbuffer, not an ONNX model; give it the suffix .tflite")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError, TypeError) as exc:
        raise FrontendError(
            f"{name} is not an ONNX model (its protobuf does not parse: {first_line(exc)}); "
            f"the file may be damaged or truncated: {EXPORT_HINT}"
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise FrontendError(f"{name} holds no ONNX graph (damaged, or not an ONNX file); {EXPORT_HINT}")
    _check_text(model, name)
    _load_external_data(model, path)
    return model


def _check_text(model: onnx.ModelProto, name: str) -> None:
    """Every name the converter reads is text: protobuf hands a string field that is not UTF-8 over as bytes."""
    g = model.graph
    texts: list = [o.domain for o in model.opset_import]
    for n in g.node:
        texts += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
        texts += [v for p in n.metadata_props for v in (p.key, p.value)]
    for values in (g.input, g.output, g.value_info, g.initializer):
        texts += [v.name for v in values]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise FrontendError(
            f"{name} is damaged: it has a name that is not UTF-8 text ({bytes(bad)[:40]!r}); "
            "copy it again or re-export it"
        )


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    tensors = [t for t in model.graph.initializer if external_data_helper.uses_external_data(t)]
    tensors += [
        a.t for n in model.graph.node for a in n.attribute
        if a.HasField("t") and external_data_helper.uses_external_data(a.t)
    ]
    if not tensors:
        return
    name, folder = str(path), path.resolve().parent
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or target.parent != folder or not target.is_file():
            raise FrontendError(
                f"{name}: tensor {t.name!r} keeps its data in external file {location!r}, which is not a file "
                "beside the model; put the data file next to the .onnx, or re-export with external_data=False"
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds on bad offsets and lengths
        raise FrontendError(f"{name}: could not read its external data ({first_line(exc)}); "
                            "re-export with external_data=False") from None


# -- 2. the op check -------------------------------------------------------------------------------


_STACK_TRACE = "pkg.torch.onnx.stack_trace"  # the dynamo exporter's record of the torch line behind a node


def check_ops(model: onnx.ModelProto, name: str) -> None:
    """Raise one FrontendError listing every node hydra-edge does not convert, before any other work."""
    bad = []
    for i, node in enumerate(model.graph.node):
        if node.domain not in _DEFAULT_DOMAINS:
            kind = f"{node.domain}.{node.op_type}"
        elif node.op_type not in SUPPORTED_OPS:
            kind = node.op_type
        else:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        bad.append(UnsupportedNode(kind, i, node.name or "unnamed", source_location(meta.get(_STACK_TRACE))))
    if bad:
        raise FrontendError(
            f"{name}: {unsupported_summary(bad, noun='ONNX op')}; "
            f"hydra-edge converts {', '.join(sorted(SUPPORTED_OPS))}"
        )


# -- 3. constants, the input, opsets ----------------------------------------------------------------


def _attrs(node: onnx.NodeProto, index: int, name: str) -> dict:
    try:
        return decode_attrs(node)
    except Exception as exc:  # noqa: BLE001 - a damaged attribute
        raise FrontendError(f"{name}: node #{index} {node.op_type} has an unreadable attribute ({first_line(exc)})") from None


def _initializers(model: onnx.ModelProto, name: str) -> dict[str, np.ndarray]:
    out = {}
    for t in model.graph.initializer:
        try:
            out[t.name] = numpy_helper.to_array(t)
        except Exception as exc:  # noqa: BLE001 - damaged raw data
            raise FrontendError(f"{name}: initializer {t.name!r} is damaged ({first_line(exc)})") from None
    return out


def _fix_batch(model: onnx.ModelProto, initializers: dict, name: str) -> None:
    """Exactly one float32 input [1, ...] with static dims; a symbolic batch becomes 1 (in place)."""
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise FrontendError(
            f"{name}: the model takes {len(inputs)} inputs; hydra-edge needs exactly one, a float32 image [1, C, H, W]"
        )
    x = inputs[0]
    t = x.type.tensor_type
    if not x.type.HasField("tensor_type") or t.elem_type != onnx.TensorProto.FLOAT or not t.HasField("shape"):
        what = onnx.TensorProto.DataType.Name(t.elem_type) if t.elem_type in onnx.TensorProto.DataType.values() else "?"
        raise FrontendError(
            f"{name}: input {x.name!r} is not a float32 tensor of known rank ({what}); "
            f"hydra-edge needs a float32 image [1, C, H, W]: {EXPORT_HINT}"
        )
    dims = t.shape.dim
    if not dims:
        raise FrontendError(f"{name}: input {x.name!r} is a scalar; hydra-edge needs a float32 image [1, C, H, W]")
    first = dims[0]
    if first.HasField("dim_value") and first.dim_value not in (0, 1):
        raise FrontendError(
            f"{name}: input {x.name!r} has batch {first.dim_value}; hydra-edge compiles batch-1 inference: "
            "export with an example of batch 1 (or a dynamic batch)"
        )
    first.Clear()
    first.dim_value = 1
    for i, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise FrontendError(
                f"{name}: input {x.name!r} has a dynamic size in dimension {i} ({d.dim_param or '?'}); "
                "hydra-edge needs fixed shapes apart from the batch: export without dynamic axes for C, H and W"
            )


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in _DEFAULT_DOMAINS:
            return int(o.version)
    return 1
