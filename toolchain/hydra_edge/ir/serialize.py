"""Save and load a Graph: `graph.json` (structure) + `constants.npz` (data).

`graph.json` holds the tensors (without data), the nodes, the graph inputs,
outputs and meta. Attribute and meta values are encoded losslessly:

- JSON's own types (str, int, bool, None, lists, dicts with str keys) as is,
  finite Python floats as JSON numbers (repr round-trips a float64 exactly),
  non-finite ones as `{"__float__": "<float.hex>"}`;
- a numpy array as `{"__ndarray__": {"dtype", "shape", "data"}}`, where `data`
  is the flat list of values (floats as `float.hex` strings, so NaN, inf and
  -0.0 survive);
- a numpy scalar as `{"__npscalar__": {"dtype", "value"}}`, encoded the same way;
- a tuple as `{"__tuple__": [...]}`; a dict with a non-str key, or with a key
  that looks like one of these markers, as `{"__dict__": [[key, value], ...]}`.

`constants.npz` holds each constant tensor's array under the tensor's name
(allow_pickle is off on both sides). Loading gives a graph equal to the one
saved, dtypes and Python types included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..build_manifest import COMPILE_AGAIN
from ..errors import HydraEdgeError
from .graph import Graph, Node, QuantParams, Tensor

FORMAT = "hydra-edge-graph"
VERSION = 1
GRAPH_FILE = "graph.json"
CONSTANTS_FILE = "constants.npz"

_MARKERS = ("__float__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__")


class SerializeError(HydraEdgeError, ValueError):
    """A graph that cannot be saved, or a folder that holds no saved graph."""


# -- values -------------------------------------------------------------------


def _float_hex(value: float) -> str:
    """float.hex, keeping the sign of a NaN (float.hex writes every NaN as 'nan')."""
    text = value.hex()
    return "-nan" if text == "nan" and math.copysign(1.0, value) < 0 else text


def _encode_number(value: Any, kind: str) -> Any:
    """One array element as JSON: floats as hex strings, the rest as Python values."""
    if kind == "f":
        return _float_hex(float(value))
    if kind == "c":
        return [_float_hex(float(value.real)), _float_hex(float(value.imag))]
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    if kind == "U":
        return str(value)
    raise SerializeError(f"numpy dtype kind {kind!r} cannot be saved")


def _decode_number(value: Any, kind: str) -> Any:
    if kind == "f":
        return float.fromhex(value)
    if kind == "c":
        return complex(float.fromhex(value[0]), float.fromhex(value[1]))
    return value


def encode_value(value: Any, where: str = "value") -> Any:
    """A JSON-able form of `value` that `decode_value` turns back into an equal object."""
    if isinstance(value, np.ndarray):
        dtype = value.dtype
        if dtype.hasobject or dtype.fields is not None:
            raise SerializeError(f"{where}: numpy arrays of dtype {dtype} cannot be saved")
        if dtype.kind == "f" and dtype.itemsize > 8:
            raise SerializeError(f"{where}: {dtype} arrays cannot be saved losslessly")
        flat = [_encode_number(v, dtype.kind) for v in value.reshape(-1).tolist()]
        return {"__ndarray__": {"dtype": dtype.str, "shape": list(value.shape), "data": flat}}
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        dtype = value.dtype
        if dtype.hasobject:
            raise SerializeError(f"{where}: numpy scalar of dtype {dtype} cannot be saved")
        return {"__npscalar__": {"dtype": dtype.str, "value": _encode_number(value, dtype.kind)}}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": _float_hex(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in value):
            return {k: encode_value(v, f"{where}[{k!r}]") for k, v in value.items()}
        return {"__dict__": [[encode_value(k, where), encode_value(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise SerializeError(f"{where}: values of type {type(value).__name__} cannot be saved")


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, body), = value.items()
        if key == "__float__":
            return float.fromhex(body)
        if key == "__tuple__":
            return tuple(decode_value(v) for v in body)
        if key == "__dict__":
            return {_hashable(decode_value(k)): decode_value(v) for k, v in body}
        if key == "__ndarray__":
            dtype = np.dtype(body["dtype"])
            data = [_decode_number(v, dtype.kind) for v in body["data"]]
            return np.array(data, dtype=dtype).reshape(body["shape"])
        if key == "__npscalar__":
            dtype = np.dtype(body["dtype"])
            return dtype.type(_decode_number(body["value"], dtype.kind))
    return {k: decode_value(v) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


# -- graphs -------------------------------------------------------------------


def _encode_quant(q: QuantParams | None, where: str) -> Any:
    if q is None:
        return None
    return {
        "scale": encode_value(q.scale, f"{where}.scale"),
        "zero_point": encode_value(q.zero_point, f"{where}.zero_point"),
        "axis": encode_value(q.axis, f"{where}.axis"),
    }


def _decode_quant(d: Any) -> QuantParams | None:
    if d is None:
        return None
    return QuantParams(decode_value(d["scale"]), decode_value(d["zero_point"]), decode_value(d["axis"]))


def save_graph(graph: Graph, folder: str | Path) -> Path:
    """Write `graph.json` and `constants.npz` into `folder` (created if needed)."""
    folder = Path(folder)
    tensors = []
    arrays: dict[str, np.ndarray] = {}
    for name, t in graph.tensors.items():
        if name != t.name:
            raise SerializeError(f"tensor stored under {name!r} is named {t.name!r}")
        tensors.append(
            {
                "name": t.name,
                "shape": [int(s) for s in t.shape],
                "dtype": t.dtype,
                "quant": _encode_quant(t.quant, f"tensor {name!r} quant"),
                "constant": t.is_constant,
            }
        )
        if t.is_constant:
            data = np.asarray(t.data)
            if data.dtype.hasobject:
                raise SerializeError(f"constant {name!r} has an object dtype")
            arrays[name] = data
    nodes = [
        {
            "name": n.name,
            "op": n.op,
            "inputs": list(n.inputs),
            "outputs": list(n.outputs),
            "attrs": encode_value(dict(n.attrs), f"node {n.name!r} attrs"),
            "source": n.source,
        }
        for n in graph.nodes
    ]
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "meta": encode_value(dict(graph.meta), "graph meta"),
        "tensors": tensors,
        "nodes": nodes,
    }
    text = json.dumps(doc, indent=1, allow_nan=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GRAPH_FILE).write_text(text + "\n")
    with open(folder / CONSTANTS_FILE, "wb") as f:
        np.savez(f, **arrays)
    return folder


def load_graph(folder: str | Path) -> Graph:
    """Read a graph written by `save_graph`; a clear SerializeError if `folder` holds none."""
    folder = Path(folder)
    gpath, cpath = folder / GRAPH_FILE, folder / CONSTANTS_FILE
    missing = [p.name for p in (gpath, cpath) if not p.is_file()]
    if missing:
        raise SerializeError(
            f"{folder} is not a hydra-edge build: missing {' and '.join(missing)} "
            f"(expected {GRAPH_FILE} and {CONSTANTS_FILE} written by save_graph / hydra-edge compile)"
        )
    try:
        doc = json.loads(gpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SerializeError(f"{gpath} is damaged (not valid JSON: {e}); {COMPILE_AGAIN}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SerializeError(f"{folder} is not a hydra-edge build: {gpath.name} has no \"format\": \"{FORMAT}\"")
    if doc.get("version") != VERSION:
        raise SerializeError(
            f"{folder}: {gpath.name} has format version {doc.get('version')!r}; this hydra-edge reads version {VERSION}"
        )
    with open(cpath, "rb") as f:
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # a first member, or the end record of no members
            raise SerializeError(f"{cpath} is damaged (not a .npz archive); {COMPILE_AGAIN}")
    try:
        with np.load(cpath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise SerializeError(f"{cpath} is damaged ({type(e).__name__}: {e}); {COMPILE_AGAIN}") from None
    try:
        g = _graph_from_doc(doc, arrays, cpath.name)
    except _Mismatch as e:
        raise SerializeError(f"{folder}: {gpath.name} and {cpath.name} do not match ({e}); {COMPILE_AGAIN}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        if isinstance(e, KeyError):
            why = f"no {e} entry"
        elif isinstance(e, (_Damaged, HydraEdgeError)):  # an IRError from Graph.validate says what it is
            why = str(e)
        else:
            why = f"{type(e).__name__}: {e}"
        raise SerializeError(f"{gpath} is damaged ({why}); {COMPILE_AGAIN}") from None
    return g


class _Mismatch(ValueError):
    """graph.json names a constant that constants.npz lacks, or holds with another shape."""


class _Damaged(ValueError):
    """A part of graph.json that cannot be read, with where it is."""


def _at(where: str, e: Exception) -> Exception:
    """`e` as a message that starts with `where` (a tensor or node of graph.json)."""
    if isinstance(e, KeyError):
        detail = f"no {e} entry"
    elif isinstance(e, ValueError) and not isinstance(e, (_Damaged, _Mismatch)) and type(e) is not ValueError:
        detail = f"{type(e).__name__}: {e}"
    else:
        detail = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
    return (_Mismatch if isinstance(e, _Mismatch) else _Damaged)(f"{where}: {detail}")


def _graph_from_doc(doc: dict, arrays: dict[str, np.ndarray], constants_file: str) -> Graph:
    """The Graph that graph.json's `doc` and the constants' `arrays` describe, checked (ValueError if not)."""
    g = Graph(inputs=list(doc["inputs"]), outputs=list(doc["outputs"]), meta=decode_value(doc["meta"]))
    if not all(isinstance(n, str) for n in [*g.inputs, *g.outputs]) or not isinstance(g.meta, dict):
        raise _Damaged("inputs, outputs or meta of the wrong type")
    if not g.inputs or not g.outputs:
        raise _Damaged("no graph inputs or no graph outputs")
    for i, td in enumerate(doc["tensors"]):
        try:
            t = _tensor_from_doc(td, arrays, constants_file)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise _at(f"tensor {td.get('name', i) if isinstance(td, dict) else i!r}", e) from None
        g.tensors[t.name] = t  # assigned directly, not through add_tensor: what was saved is loaded as is
    for i, nd in enumerate(doc["nodes"]):
        try:
            g.nodes.append(_node_from_doc(nd))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise _at(f"node {nd.get('name', i) if isinstance(nd, dict) else i!r}", e) from None
    g.validate()  # an IRError (a ValueError) for a node that reads or writes a tensor that is not there
    return g


def _tensor_from_doc(td: dict, arrays: dict[str, np.ndarray], constants_file: str) -> Tensor:
    name, shape, dtype = td["name"], tuple(int(s) for s in td["shape"]), td["dtype"]
    if not isinstance(name, str) or not isinstance(dtype, str) or any(s < 0 for s in shape):
        raise ValueError("name, shape or dtype of the wrong type")
    np.dtype(dtype)  # a TypeError for a name numpy does not know
    data = None
    if td["constant"]:
        if name not in arrays:
            raise _Mismatch(f"missing from {constants_file}")
        data = arrays[name]
        if data.size != int(np.prod(shape)):  # a .tflite scalar is declared () and stored (1,): same values
            raise _Mismatch(f"{constants_file} holds it with shape {data.shape}, not {shape}")
    return Tensor(name, shape, dtype, _decode_quant(td["quant"]), data)


def _node_from_doc(nd: dict) -> Node:
    for key in ("name", "op", "source"):
        if not isinstance(nd[key], str):
            raise ValueError(f"{key} {nd[key]!r} is not a string")
    node = Node(nd["name"], nd["op"], list(nd["inputs"]), list(nd["outputs"]), decode_value(nd["attrs"]), nd["source"])
    if not isinstance(node.attrs, dict) or not all(isinstance(n, str) for n in [*node.inputs, *node.outputs]):
        raise ValueError("attrs, inputs or outputs of the wrong type")
    return node
