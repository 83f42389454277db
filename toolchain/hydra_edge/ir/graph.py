"""The graph IR: the only thing that crosses stage boundaries.

A Graph holds named tensors and a topologically ordered list of nodes. Shapes
carry no batch dimension: the compiler lowers batch-1 inference. Constant
tensors carry their data; activations carry none. After quantisation every
int8 tensor carries its QuantParams and each node's attrs hold the integer
constants its kernel needs (see docs/numerics.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..errors import HydraEdgeError

DTYPES = ("float32", "int8", "int32", "int64")


class IRError(HydraEdgeError, ValueError):
    """A graph that breaks an IR rule (unknown tensor, bad shape, cycle)."""


@dataclass
class QuantParams:
    """real = scale * (q - zero_point); per tensor when axis is None."""

    scale: np.ndarray  # float64, shape () or (channels,)
    zero_point: np.ndarray  # int32, same shape as scale
    axis: int | None = None

    @staticmethod
    def per_tensor(scale: float, zero_point: int) -> "QuantParams":
        return QuantParams(np.asarray(scale, np.float64), np.asarray(zero_point, np.int32))

    @property
    def scalar_scale(self) -> float:
        return float(self.scale)

    @property
    def scalar_zero_point(self) -> int:
        return int(self.zero_point)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    quant: QuantParams | None = None
    data: np.ndarray | None = None  # set for constants only

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it came from: a torch node name and stack frame, for errors


@dataclass
class Graph:
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- construction -------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise IRError(f"tensor {tensor.name!r} is defined twice")
        if tensor.dtype not in DTYPES:
            raise IRError(f"tensor {tensor.name!r} has unsupported dtype {tensor.dtype!r}")
        self.tensors[tensor.name] = tensor
        return tensor

    def add_constant(self, name: str, data: np.ndarray, quant: QuantParams | None = None) -> Tensor:
        data = np.ascontiguousarray(data)
        return self.add_tensor(Tensor(name, tuple(data.shape), str(data.dtype), quant, data))

    def add_node(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def unique_name(self, base: str) -> str:
        name, i = base, 1
        while name in self.tensors:
            name, i = f"{base}_{i}", i + 1
        return name

    def copy(self) -> "Graph":
        """A deep copy, so that passes can be pure (graph in, graph out)."""
        return copy.deepcopy(self)

    # -- queries ------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise IRError(f"unknown tensor {name!r}") from None

    def producer(self, tensor_name: str) -> Node | None:
        for node in self.nodes:
            if tensor_name in node.outputs:
                return node
        return None

    def consumers(self, tensor_name: str) -> list[Node]:
        return [n for n in self.nodes if tensor_name in n.inputs]

    def activations(self) -> Iterator[Tensor]:
        return (t for t in self.tensors.values() if not t.is_constant)

    def constants(self) -> Iterator[Tensor]:
        return (t for t in self.tensors.values() if t.is_constant)

    # -- checking -----------------------------------------------------
    def validate(self) -> None:
        """Every tensor defined once, nodes in topological order, no dangling names."""
        defined = set(self.inputs) | {t.name for t in self.constants()}
        for name in self.inputs:
            self.tensor(name)
        for node in self.nodes:
            for name in node.inputs:
                if name not in self.tensors:
                    raise IRError(f"node {node.name} ({node.op}) reads unknown tensor {name!r}")
                if name not in defined:
                    raise IRError(f"node {node.name} ({node.op}) reads {name!r} before it is written")
            for name in node.outputs:
                self.tensor(name)
                if name in defined:
                    raise IRError(f"tensor {name!r} is written twice (node {node.name})")
                defined.add(name)
        for name in self.outputs:
            if name not in defined:
                raise IRError(f"graph output {name!r} is never written")

    def prune(self) -> "Graph":
        """Drop nodes and tensors that no output depends on."""
        g = self.copy()
        needed = set(g.outputs)
        kept: list[Node] = []
        for node in reversed(g.nodes):
            if any(o in needed for o in node.outputs):
                kept.append(node)
                needed.update(node.inputs)
        g.nodes = kept[::-1]
        live = needed | set(g.inputs) | {o for n in g.nodes for o in n.outputs}
        g.tensors = {k: v for k, v in g.tensors.items() if k in live}
        return g
