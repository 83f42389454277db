"""OpDef, the registry dict and the helpers every op file shares (the stages read them through hydra_edge.ops)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import HydraEdgeError
from ..ir.graph import Graph, Node

Shape = tuple[int, ...]
I64 = np.int64
INT32_MAX = 2**31 - 1


class QuantizationError(HydraEdgeError, ValueError):
    """A model whose constants do not fit the integer contract."""


@dataclass(frozen=True)
class OpDef:
    """Everything the toolchain knows about one native op; a stage reads the fields it needs.

    `graphs` says where the op appears: "both" (float and quantised graphs), "float" (quantisation
    replaces it, e.g. gelu becomes lut) or "int" (made after quantisation, e.g. token_loop, or by it, lut).
    """

    name: str
    shape: Callable[[Node, list[Shape]], Shape]  # output shape from the input shapes; IRError when they do not fit
    macs: Callable[[Graph, Node], int]  # multiply-accumulates (elementwise ops: one per element)
    graphs: str = "both"
    float_ref: Callable[..., np.ndarray] | None = None  # (node, *inputs) -> float64 output
    int_ref: Callable[..., np.ndarray] | None = None  # (node, *inputs, rounding) -> int8 output (docs/numerics.md)
    quantize: Callable[[Any, Node], None] | None = None  # (quantizer, float node): adds the int8 node(s)
    # the C kernel: runtime_c/src/<c_source>, `<c_function>(&<param_struct>, ...)`
    c_source: str | None = None
    c_function: str | None = None
    param_struct: str | None = None
    c_depends: tuple[str, ...] = ()  # the ops whose kernels this one calls (their sources come with it)
    # (graph) -> macros for the build's CPPFLAGS that leave out kernel code this graph cannot reach (flash only:
    # a build without them runs the same bits)
    c_defines: Callable[[Graph], list[str]] | None = None
    fields: Callable[[Any, Node], list] | None = None  # (emitter, node) -> the param struct's [(field, C value)]
    emit: Callable[[Any, Node], Any] | None = None  # (emitter, node) -> codegen's Call
    scratch: Callable[[Graph, Node], int] | None = None  # scratch bytes: the C *_get_buffer_size; None: none
    in_place: tuple[int, ...] = ()  # inputs whose bytes the output may take (the kernel accepts output == input)
    row_local: bool = False  # each token's output row depends only on that token's input row
    # Token loops (passes/stream.py, ops/token_loop.py). row_inputs: the inputs the op reads row by row
    # ([T, ...], row t for output row t); its other activation inputs it reads whole, so they must be complete
    # before a loop that runs it starts. An op with row_inputs can run inside a token loop: the emitter gives
    # it params with `rows_field` set to the group's rows (times the row's elements when
    # rows_field_elements; in flash, for G rows and for a shorter last group), row pointers for its row inputs and outputs, whole ones for the rest.
    # reduces: its output is not token rows but a reduction over all of them, complete after the loop
    # (mean_pool, hydra_kv_state); its emit gives the code before and after the loop too.
    row_inputs: tuple[int, ...] = ()
    rows_field: str | None = None
    rows_field_elements: bool = False
    reduces: bool = False
    loop_state: Callable[[Graph, Node], int] | None = None  # bytes it keeps across a loop (em.loop_state)
    # (check, rows): the kernel in two halves, so that a loop checks the params once, not once per group
    loop_functions: tuple[str, str] | None = None

    @property
    def in_float(self) -> bool:
        return self.graphs in ("both", "float")

    @property
    def in_int(self) -> bool:
        return self.graphs in ("both", "int")


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    REGISTRY[op.name] = op
    return op


def op_def(name: str) -> OpDef | None:
    """The OpDef of a native op, or None (a tfl_* op, or an unknown one)."""
    return REGISTRY.get(name)


ROUNDING_MODES = ("double", "single")


def node_rounding(node: Node, default: str) -> str:
    """A node's requantisation rounding: its "rounding" attr, else `default` (the graph's meta "rounding").

    The reference interpreter and the emitter (the C params' single_rounding) both read it here, so the two
    agree node by node; a graph may mix modes (a legalised LiteRT FULLY_CONNECTED rounds once, the rest twice).
    """
    rounding = node.attrs.get("rounding", default)
    if rounding not in ROUNDING_MODES:
        raise HydraEdgeError(f"node {node.name} ({node.op}): rounding {rounding!r} is not one of {ROUNDING_MODES}")
    return str(rounding)


def strip_leading_ones(shape: Shape) -> Shape:
    """The shape without its leading 1s: shapes that differ only there hold the same bytes in the same order
    (a legalised TFLite node keeps TFLite's batch dimension of 1)."""
    shape = tuple(int(s) for s in shape)
    lead = next((i for i, s in enumerate(shape) if s != 1), len(shape))
    return shape[lead:]


def numel(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def elementwise_macs(graph: Graph, node: Node) -> int:
    return graph.tensor(node.outputs[0]).numel


def same_as_first(node: Node, shapes: list[Shape]) -> Shape:
    return shapes[0]


def clamp_s8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -128, 127).astype(np.int8)


def multiplier(real: float, what: str) -> tuple[int, int]:
    from ..numerics.fixedpoint import quantize_multiplier

    try:
        return quantize_multiplier(real)
    except ValueError as exc:
        raise QuantizationError(f"{what}: {exc}") from None


def unary_call(em: Any, node: Node, op: OpDef) -> Any:
    """The common lowering `<c_function>(&params, x, y)`; in a token loop with loop_functions, the check once
    before the loop and the rows function per group."""
    ident, decl = em.params(node, op.param_struct, op.fields(em, node))
    args = f"{em.act(node, 0)}, {em.act(node, 0, 'output')}"
    if em.rows is None or op.loop_functions is None:
        return em.call(node, decl, f"{op.c_function}(&{ident}, {args})")
    check, rows = op.loop_functions
    before = em.checked(f"{check}(&{em.static(ident)})")
    return em.call(node, decl, f"{rows}(&{ident}, {args})", before=before)


def scratch_guard(get_buffer_size: str, params: str, available: int) -> str:
    """C that refuses to run a kernel when the plan gave it less scratch than its *_get_buffer_size asks."""
    return (
        f"    if ({get_buffer_size}(&{params}) > {available}) {{\n"
        f"        return (int)HYDRA_ERR_ARG; /* the plan gave this node less scratch than the kernel needs */\n"
        f"    }}\n"
    )


# -- quantisation helpers the op files share (quant/quantize.py re-exports quantize_array) ---------------


def qparams_for_range(lo: float, hi: float):
    """An activation's per-tensor scale and zero point for the calibrated range [lo, hi] (0 always inside)."""
    from ..ir.graph import QuantParams
    from ..numerics.fixedpoint import round_half_away

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise QuantizationError("calibration produced a non-finite activation range (NaN or inf in the float model)")
    if hi - lo <= 0:
        lo, hi = 0.0, 1e-6
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round_half_away(-128.0 - lo / scale), -128, 127))
    return QuantParams.per_tensor(scale, zero_point)


def quantize_array(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float -> int8 with an activation's scale and zero point (docs/numerics.md, Quantisation)."""
    from ..numerics.fixedpoint import round_half_away

    # x / scale beyond +-2^16 saturates either way: clipped first so that a value far outside the
    # calibrated range (percentile calibration, an outlier) saturates instead of overflowing int64
    v = np.clip(np.asarray(x, np.float64) / scale, -65536.0, 65536.0)
    return np.clip(round_half_away(v) + zero_point, -128, 127).astype(np.int8)


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per output channel (axis 0) in [-127, 127]."""
    from ..numerics.fixedpoint import round_half_away

    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    q = np.clip(round_half_away(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale


# -- a fused activation clamp (ReLU, ReLU6, hardtanh after a conv2d / linear / add) ------------------


def float_clamp(node: Node, y: np.ndarray) -> np.ndarray:
    """The float graph's fused clamp: attrs clamp_min / clamp_max (either may be absent: unbounded)."""
    lo, hi = node.attrs.get("clamp_min"), node.attrs.get("clamp_max")
    if lo is not None:
        y = np.maximum(y, float(lo))
    if hi is not None:
        y = np.minimum(y, float(hi))
    return y


def clamp_attrs(q: Any, node: Node) -> dict[str, int]:
    """The int8 activation clamp [act_min, act_max] of a fused float clamp, in the output's scale and zero point
    (TFLite's CalculateActivationRangeQuantized: zp + round(bound / scale), inside int8); {} without one."""
    from ..numerics.fixedpoint import round_half_away

    lo, hi = node.attrs.get("clamp_min"), node.attrs.get("clamp_max")
    if lo is None and hi is None:
        return {}
    y = node.outputs[0]
    s, z = q.scale(y), q.zp(y)
    act_min = -128 if lo is None else int(np.clip(z + round_half_away(float(lo) / s), -128, 127))
    act_max = 127 if hi is None else int(np.clip(z + round_half_away(float(hi) / s), -128, 127))
    if act_min > act_max:
        raise QuantizationError(f"node {node.name} ({node.op}): clamp [{lo}, {hi}] is empty in int8")
    return {"act_min": act_min, "act_max": act_max}
