"""C for the tfl_* nodes of an imported int8 .tflite: one generic emitter driven by the contract.

frontend/tflite_types.py fixes everything a call needs, so no op has code of its own here:

- the params struct ``hydra_tfl_<op>_params`` gets one designated initialiser per attr: a Python int as
  an int32_t, an integer numpy array as a pointer to an emitted ``static const int32_t`` array, a tuple as
  an inline ``{a, b, ...}`` array, a dict as a nested struct (tfl_hydra_attention's per-op params);
- the call ``hydra_tfl_<op>_s8(&params, <one pointer per node input, in order>, <output>[, scratch])``:
  an activation is its arena offset, a constant its emitted array (int8, int32 or int64), "" is NULL;
- rounding: the params of every op whose kernel requantises (ROUNDED_OPS) get ``single_rounding`` from the
  node's rounding (ops.node_rounding: its "rounding" attr, else the graph's), as a native op's params do; so do
  the nested params of tfl_hydra_attention's ops (each nested struct that holds no struct); the "rounding" attr
  itself has no C field;
- scratch: when the op's reference module says ``scratch_bytes(attrs) > 0``, the planner's scratch buffer
  is passed, after a check against ``hydra_tfl_<op>_get_buffer_size``.

Sources: runtime_c/src/tfl_<op>.c per op used (and the tfl kernels it calls: TFL_CALLS), and
tfl_fixedpoint.c (the elementwise family's shared gemmlowp helpers) whenever any tfl op is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, Node
from ..memory.planner import scratch_name
from ..ops import node_rounding
from ..ops.token_loop import flat_nodes
from ..optimize import for_size
from ..reference import tfl_elementwise, tfl_hydra, tfl_linear, tfl_softmax_attention
from .c_syntax import Call, CodegenError, c_int, status_checked

# emit_c's model writer (emit_c._ModelC: graph, plan, params, act, offset, const_array, attr_array), which
# passes itself in; emit_c imports this module, so the type is not imported back.
_ModelC = Any

TFL_PREFIX = "tfl_"
TFL_HEADER = "hydra_tfl.h"
TFL_SHARED_SOURCES = ("tfl_fixedpoint.c",)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# kernels that call other tfl kernels (on one row at a time): their sources come along
TFL_CALLS = {op: ("tfl_mul", "tfl_sum", "tfl_add", "tfl_rsqrt", "tfl_l2_normalization")
             for op in ("tfl_hydra_attention", "tfl_hydra_kv_state", "tfl_hydra_apply")}
TFL_CALLS["tfl_softmax_attention"] = ("tfl_batch_matmul", "tfl_mul", "tfl_softmax")  # per query row and head
# the halves passes/stream.py splits tfl_hydra_attention into: their functions are in its source
TFL_SOURCE = {"tfl_hydra_kv_state": "tfl_hydra_attention", "tfl_hydra_apply": "tfl_hydra_attention"}
# the ops whose params struct has a single_rounding field: their kernels requantise (hydra_tfl_requantize)
ROUNDED_OPS = frozenset({
    "tfl_fully_connected", "tfl_conv_2d", "tfl_depthwise_conv_2d", "tfl_batch_matmul", "tfl_mean", "tfl_sum",
    "tfl_add", "tfl_sub", "tfl_squared_difference", "tfl_mul", "tfl_rsqrt", "tfl_logistic", "tfl_tanh",
    "tfl_softmax", "tfl_l2_normalization", "tfl_quantize",
})
ROUNDING_ATTR = "rounding"  # the node's rounding (ops.node_rounding), written as the params' single_rounding


def is_tfl(op: str) -> bool:
    return op.startswith(TFL_PREFIX)


def graph_ops(graph: Graph) -> set[str]:
    """The ops of the graph's nodes and of its token loops' bodies."""
    return {n.op for n in graph.nodes} | {sub["op"] for n in graph.nodes if n.op == "token_loop"
                                          for sub in n.attrs["body"]}


def uses_tfl(graph: Graph) -> bool:
    return any(is_tfl(op) for op in graph_ops(graph))


def tfl_sources(graph: Graph, runtime_src: Any) -> list[str]:
    """The tfl_*.c files the graph's tfl ops need (shared helpers first, when present), in a fixed order."""
    used = {op for op in graph_ops(graph) if is_tfl(op)}
    ops = sorted(used.union(*(TFL_CALLS.get(op, ()) for op in used)))
    if not ops:
        return []
    shared = [s for s in TFL_SHARED_SOURCES if (runtime_src / s).is_file()]
    return shared + sorted({f"{TFL_SOURCE.get(op, op)}.c" for op in ops})


# Code a build may leave out: the SIMD paths of tfl_fixedpoint.c's convolution and pool walks that no node of the
# graph takes. Each function below is the walk's dispatch (its conditions as in the C) on a node's attrs: the paths
# the node takes. tfl_defines says -DHYDRA_TFL_NO_<path> for every path of TFL_PATHS that no node takes (flash; the
# bits never depend on it, and a call on a left-out path fails with HYDRA_ERR_ARG).
TFL_PATHS = ("DEPTHWISE_DM1", "DEPTHWISE_DM1_TAPS", "DEPTHWISE_ROW1", "DEPTHWISE_ROW1_GROUPS", "DEPTHWISE_QUADS_2",
             "DEPTHWISE_QUADS_4", "DEPTHWISE_WALK", "CONV_GENERAL_OUTPUT", "CONV_WORD_WINDOW", "CONV_BYTE_WINDOW",
             "POOL_MAX", "POOL_AVERAGE", "POOL_CHANNEL")
DEPTHWISE_DM1_MAX_TAPS = 49  # tfl_fixedpoint.c's limits of the depthwise paths
DEPTHWISE_ROW_MAX_GROUPS, DEPTHWISE_ROW_MAX_GROUPS_ACROSS = 16, 4
POOL_QUAD_MAX_TAPS = 256  # an average pool's four-channel sums (int16 lanes)


def _tap_range(start: int, dilation: int, taps: int, size: int) -> tuple[int, int]:
    """tfl_fixedpoint.c tap_range: the taps [lo, hi) of a window that fall inside [0, size)."""
    h = 0 if start > size - 1 else (size - 1 - start) // dilation + 1
    return (0 if start >= 0 else (dilation - 1 - start) // dilation), min(h, taps)


def _dm1_takes_tap_loop(a: dict) -> bool:
    """depthwise_dm1 walked at compile time: whether a window takes its tap loop (dm1_taps), not the unrolled 3 x 3
    ones (3 or 2 rows inside the image; a border column's 2 taps)."""
    in_h, in_w, f_h, f_w = (int(v) for v in (*a["input_shape"][1:3], *a["filter_shape"][1:3]))
    out_h, out_w = int(a["output_shape"][1]), int(a["output_shape"][2])
    dh, dw = int(a["dilation_height_factor"]), int(a["dilation_width_factor"])
    sh, sw, ph, pw = (int(a[k]) for k in ("stride_height", "stride_width", "padding_height", "padding_width"))
    if (f_h, f_w) != (3, 3):
        return True
    ox_lo, ox_hi = 0, out_w
    while ox_lo < out_w and ox_lo * sw - pw < 0:
        ox_lo += 1
    while ox_hi > ox_lo and (ox_hi - 1) * sw - pw + dw * (f_w - 1) > in_w - 1:
        ox_hi -= 1
    for oy in range(out_h):
        lo, hi = _tap_range(oy * sh - ph, dh, f_h, in_h)
        rows = hi - lo if hi > lo else 0
        if rows == 0:
            continue  # every column stores the bias alone
        if ox_lo < out_w and rows not in (2, 3):
            return True  # the columns inside the image across
        for ox in [*range(ox_lo), *range(ox_hi, out_w)] if ox_lo < out_w else range(out_w):
            fx_lo, fx_hi = _tap_range(ox * sw - pw, dw, f_w, in_w)
            if fx_hi > fx_lo and not (rows >= 2 and fx_hi - fx_lo == 2):
                return True  # a border window other than 2 or 3 rows of 2 taps
    return False


def _depthwise_paths(a: dict) -> set[str]:
    """depthwise_walk: dm 1 (its quads while in_c >= 4, the pixel walk for in_c % 4 channels), one input channel
    with dm % 4 == 0 (depthwise_row1), dm 2 and dm % 4 == 0 (quads in the pixel walk), else the pixel walk."""
    in_w, in_c = int(a["input_shape"][2]), int(a["input_shape"][3])
    f_h, f_w, out_c = int(a["filter_shape"][1]), int(a["filter_shape"][2]), int(a["output_shape"][3])
    dm, groups = out_c // in_c, (f_w + 3) // 4
    if dm == 1 and f_h * f_w <= DEPTHWISE_DM1_MAX_TAPS:
        dm1 = {"DEPTHWISE_DM1"} | ({"DEPTHWISE_DM1_TAPS"} if _dm1_takes_tap_loop(a) else set())
        return (dm1 if in_c >= 4 else set()) | ({"DEPTHWISE_WALK"} if in_c % 4 else set())
    if (in_c == 1 and dm % 4 == 0 and int(a["dilation_width_factor"]) == 1 and in_w >= 4
            and groups <= DEPTHWISE_ROW_MAX_GROUPS_ACROSS and f_h * groups <= DEPTHWISE_ROW_MAX_GROUPS):
        return {"DEPTHWISE_ROW1"} | ({"DEPTHWISE_ROW1_GROUPS"} if groups > 1 else set())
    if dm == 2:
        return {"DEPTHWISE_WALK"} | ({"DEPTHWISE_QUADS_2"} if in_c >= 2 else set())
    if dm % 4 == 0:
        return {"DEPTHWISE_WALK", "DEPTHWISE_QUADS_4"}
    return {"DEPTHWISE_WALK"}


def _conv_paths(a: dict, size: bool) -> set[str]:
    """conv_simd: each pixel's window copied by words where the input channels per group n % 4 == 0, else by bytes;
    by bytes always in a build for size (optimize.py: the word window left out)."""
    return {"CONV_WORD_WINDOW" if int(a["filter_shape"][3]) % 4 == 0 and not size else "CONV_BYTE_WINDOW"}


def _pool_paths(a: dict, kind: str) -> set[str]:
    """hydra_tfl_pool_2d_s8: four channels a word, the one-channel loop for depth % 4 channels and for an average
    over more than POOL_QUAD_MAX_TAPS taps."""
    taps = int(a["filter_height"]) * int(a["filter_width"])
    one = int(a["input_shape"][3]) % 4 != 0 or (kind == "POOL_AVERAGE" and taps > POOL_QUAD_MAX_TAPS)
    return {kind} | ({"POOL_CHANNEL"} if one else set())


PATHS_OF = {  # op -> (attrs, for size) -> the paths a node takes
    "tfl_depthwise_conv_2d": lambda a, size: _depthwise_paths(a),
    "tfl_conv_2d": _conv_paths,
    "tfl_max_pool_2d": lambda a, size: _pool_paths(a, "POOL_MAX"),
    "tfl_average_pool_2d": lambda a, size: _pool_paths(a, "POOL_AVERAGE"),
}


def _conv_fast(graph: Graph, node: Node) -> bool:
    """conv_outputs_init's `fast` for a CONV_2D or DEPTHWISE_CONV_2D node: double rounding, at most 2^14 products per
    output, every multiplier >= 0 with a shift <= 0 and |bias| < 2^29 (hydra_requant_right_ok)."""
    a, f = node.attrs, node.attrs["filter_shape"]
    products = int(f[1]) * int(f[2]) * (int(f[3]) if node.op == "tfl_conv_2d" else 1)
    bias = graph.tensor(node.inputs[2]).data if len(node.inputs) > 2 and node.inputs[2] else np.zeros(1, np.int64)
    b, m, sh = (np.asarray(x).astype(np.int64) for x in (bias, a["output_multiplier"], a["output_shift"]))
    return (node_rounding(node, graph.meta.get("rounding", "double")) == "double" and products <= 2**14
            and bool((np.abs(b) < 2**29).all() and (m >= 0).all() and (sh <= 0).all()))


def tfl_defines(graph: Graph) -> list[str]:
    """HYDRA_TFL_NO_<path> for each path of TFL_PATHS no node of the graph (token loops' bodies included) takes."""
    nodes = flat_nodes(graph)
    size = for_size(graph)
    taken = set().union(*(PATHS_OF[n.op](n.attrs, size) for n in nodes if n.op in PATHS_OF))
    if any(n.op in ("tfl_conv_2d", "tfl_depthwise_conv_2d") and not _conv_fast(graph, n) for n in nodes):
        taken.add("CONV_GENERAL_OUTPUT")
    return [f"HYDRA_TFL_NO_{path}" for path in TFL_PATHS if path not in taken]


def _scratch_fn(op: str, size: bool):
    if op in tfl_hydra.KERNELS:  # one formula per op of the Hydra core (whole, or split in two)
        return lambda attrs: tfl_hydra.scratch_bytes(attrs, op)
    if op in tfl_linear.KERNELS:  # CONV_2D's im2col (every window by bytes in a build for size), none for the others
        return lambda attrs: tfl_linear.scratch_bytes(attrs, op, byte_window=size)
    for mod in (tfl_elementwise, tfl_softmax_attention):
        if op in getattr(mod, "KERNELS", {}):
            return getattr(mod, "scratch_bytes", None)
    return None


def tfl_scratch(graph: Graph) -> dict[str, int]:
    """Scratch bytes of each tfl node that needs any (the reference module's scratch_bytes(attrs))."""
    out: dict[str, int] = {}
    size = for_size(graph)
    for node in graph.nodes:
        if is_tfl(node.op):
            fn = _scratch_fn(node.op, size)
            n = int(fn(node.attrs)) if fn is not None else 0
            if n > 0:
                out[node.name] = n
    return out


def _field(m: "_ModelC", node: Node, key: str, value: Any) -> Any:
    """A C initialiser: a string, or a list of (field, initialiser) for a nested struct."""
    where = f"node {node.name} attr {key}"
    if isinstance(value, dict):  # a nested params struct (tfl_hydra_attention: the attrs of each op it replaces)
        fields = [(k, _nested_field(m, node, f"{key}.{k}", v)) for k, v in value.items() if k != ROUNDING_ATTR]
        if not any(isinstance(v, dict) for v in value.values()):  # an op's params: it rounds as the node
            fields.append(("single_rounding", m.single_rounding(node)))
        return fields
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iu":
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} is {value.dtype}, expected integers")
        return m.attr_array(node, key, value.size) if value.ndim == 1 else _bad(node, key, value)
    if isinstance(value, (tuple, list)):
        return "{" + ", ".join(c_int(v, "int32_t", where) for v in value) + "}"
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return c_int(value, "int32_t", where)
    raise CodegenError(f"node {node.name} ({node.op}): attr {key} = {value!r} has no C form")


def _nested_field(m: "_ModelC", node: Node, key: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):  # attr_array names arrays by top-level attr only
        raise CodegenError(f"node {node.name} ({node.op}): nested attr {key} is an array; nested structs take "
                           "ints and tuples")
    return _field(m, node, key, value)


def _bad(node: Node, key: str, value: np.ndarray) -> str:
    raise CodegenError(f"node {node.name} ({node.op}): attr {key} has shape {value.shape}, expected a vector")


def _operand(m: "_ModelC", node: Node, name: str) -> str:
    if name == "":
        return "NULL"
    t = m.graph.tensor(name)
    if t.is_constant and m.loop is not None and str(np.asarray(t.data).dtype) == "int8":
        return m.act(node, node.inputs.index(name))  # a constant read row by row (in a loop) points at the group's
    if t.is_constant:
        dtype = str(np.asarray(t.data).dtype)
        if dtype not in ("int8", "int32", "int64"):
            raise CodegenError(f"node {node.name} ({node.op}): constant {name!r} is {dtype}; the C kernels take "
                               "int8, int32 or int64 constants")
        return m.const_array(t, dtype)
    if t.dtype != "int8":
        raise CodegenError(f"node {node.name} ({node.op}): activation {name!r} is {t.dtype}, expected int8")
    return m.act(node, node.inputs.index(name))  # in a token loop, a row input's group of rows


# Tables a kernel reads instead of computing a function of an int8 value per element, made here (they depend on
# the node's rounding): op -> [(path of the nested params struct, field, fn(attrs, rounding) -> int32 array)]
TABLES = {
    "tfl_softmax": [((), "exp_table", tfl_elementwise.softmax_exp_table)],
    "tfl_softmax_attention": [(("softmax",), "exp_table", tfl_elementwise.softmax_exp_table)],
}


def _add_tables(m: "_ModelC", node: Node, fields: list) -> None:
    rounding = "single" if m.single_rounding(node) == "1" else "double"
    for path, field, make in TABLES.get(node.op, ()):
        attrs, target = node.attrs, fields
        for key in path:
            attrs, target = attrs[key], dict(target)[key]
        table = np.asarray(make(attrs, rounding), np.int64)
        name = "_".join((*path, field))
        target.append((field, m._define(node.name, f"_{name}", table, f"{node.name}.{name}: int32 [{table.size}]",
                                        "int32_t")))


def lower_tfl(m: "_ModelC", node: Node) -> Call:
    """One tfl_* node as a params struct and a kernel call (emit_c._ModelC.lower calls this)."""
    if len(node.outputs) != 1:
        raise CodegenError(f"node {node.name} ({node.op}): the C kernels write one output, it has {len(node.outputs)}")
    base = f"hydra_{node.op}"
    fields = [(key, _field(m, node, key, value)) for key, value in node.attrs.items() if key != ROUNDING_ATTR]
    if node.op in ROUNDED_OPS:
        fields.append(("single_rounding", m.single_rounding(node)))
    _add_tables(m, node, fields)
    if node.op in TFL_SOURCE:
        return _hydra_half(m, node, fields)
    ident, decl = m.params(node, f"{base}_params", fields)
    args = [f"&{ident}", *(_operand(m, node, n) for n in node.inputs), m.act(node, 0, "output")]
    check = ""
    sname = scratch_name(node.name)
    if any(b.name == sname for b in m.plan.buffers) or (m.loop is not None and sname in m.loop.layout.offsets):
        soff, ssize = m.scratch(node)
        args.append(f"(int32_t *)(void *)(hydra_arena + {soff})")
        check = (
            f"    if ({base}_get_buffer_size(&{ident}) > {ssize}) {{\n"
            f"        return (int)HYDRA_ERR_ARG; /* less scratch planned than the kernel needs */\n"
            f"    }}\n"
        )
    return Call(node, decl, f"{base}_s8({', '.join(args)})", check)


def _hydra_half(m: "_ModelC", node: Node, fields: list) -> Call:
    """tfl_hydra_kv_state (zero the state, accumulate the rows, kv after the last) or tfl_hydra_apply (per rows),
    tfl_hydra_attention.c's halves, with the whole kernel's params; in a token loop on the group's rows, else on
    all tokens (the state then in the node's scratch)."""
    ident, decl = m.params(node, "hydra_tfl_hydra_attention_params", fields)
    rows = m.rows or str(int(node.attrs["tokens"]))
    if node.op == "tfl_hydra_apply":
        row = f"HYDRA_ARENA_S8({m.scratch(node)[0]})"
        call = f"hydra_tfl_hydra_apply_s8(&{ident}, {m.act(node, 0)}, {m.act(node, 1)}, {rows}, " \
               f"{m.act(node, 0, 'output')}, {row})"
        return Call(node, decl, call)
    state = m.loop_state(node) if m.rows else f"(int32_t *)(void *)(hydra_arena + {m.scratch(node)[0]})"
    before = status_checked(f"hydra_tfl_hydra_kv_begin_s8(&{m.static(ident)}, {state})")
    return Call(node, decl, f"hydra_tfl_hydra_kv_rows_s8(&{ident}, {m.act(node, 0)}, {m.act(node, 1)}, {rows}, {state})",
                before=before, after=f"hydra_tfl_hydra_kv_end_s8(&{ident}, {state}, {m.act(node, 0, 'output')})")
