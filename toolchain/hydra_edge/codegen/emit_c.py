"""Emit a quantised Graph as a self-contained C project for one board.

The build folder stands alone (nothing in it refers back to the repository):

    model.c            weights (static const, 16-byte aligned), the arena,
                       one param struct per node, hydra_model_run()
    model.h            HYDRA_MODEL_{INPUT,OUTPUT,ARENA}_BYTES, the prototype
    main.c             the board's harness (boards/<board>/main.c; each board's
                       board.toml `files` lists what it copies: the STM32F746
                       has main_qemu.c, main_device.c, startup, linker scripts)
    Makefile           the model's sources and flags, then boards/<board>/board.mk:
                       host: `make` -> ./model, `make SANITIZE=1` -> ./model-asan;
                       stm32f746: `make` -> fw-qemu.elf, `make device` -> device.elf
    runtime/include/hydra_rt.h
    runtime/src/*.c    hydra_requantize.c, hydra_dot.c and the kernels the model uses
    build.json         what the Python side needs to drive the binary
                       (board, input/output shapes, bytes and quantisation)
    graph.json, constants.npz
                       the quantised graph (ir.serialize), so that
                       validate / run / report can reload it

The emitter knows the runtime only through include/hydra_rt.h: one param
struct and one call per node (each native op's OpDef.emit in hydra_edge/ops), in graph order, with arena offsets from the
memory plan. Files are rewritten only when their content changes, so that
`make` rebuilds only what changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..boards import Board, get_board
from ..build_manifest import BUILD_MANIFEST, SANITIZE_BINARY
from ..ir.graph import Graph, Node, Tensor
from ..ir.serialize import save_graph
from ..ir.tfl_ops import token_rows
from ..memory.loop_plan import STATE_SUFFIX, LoopLayout, plan_token_loop, row_bytes
from ..memory.planner import MemoryPlan, check_no_overlap, scratch_name
from ..ops import REGISTRY, check_shapes, node_rounding, op_def
from ..ops.token_loop import graph_row_facts
from .c_syntax import INT32_MAX, Call, CodegenError, c_int, indented, status_checked
from ..optimize import opt_level
from .emit_tfl import TFL_HEADER, is_tfl, lower_tfl, tfl_defines, tfl_scratch, tfl_sources, uses_tfl

RUNTIME_DIR = Path(__file__).resolve().parents[3] / "runtime_c"

# op -> its runtime_c/src file (OpDef.c_source), in the registry's order
OP_SOURCES = {name: d.c_source for name, d in REGISTRY.items() if d.c_source}
ALWAYS_SOURCES = ("hydra_requantize.c", "hydra_dot.c")

_C_KEYWORDS = set(
    """auto break case char const continue default do double else enum extern float for goto if inline int long
    register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
    _Bool _Complex _Imaginary main input output status NULL memcpy""".split()
)


def kernel_scratch(graph: Graph) -> dict[str, int]:
    """Scratch bytes per node, as the runtime's *_get_buffer_size() computes them (OpDef.scratch)."""
    scratch: dict[str, int] = {}
    for node in graph.nodes:
        d = op_def(node.op)
        if node.op == "token_loop":  # its rows buffers and its body's scratch (memory/loop_plan.py)
            scratch[node.name] = plan_token_loop(graph, node).bytes
        elif d is not None and d.scratch is not None:
            scratch[node.name] = d.scratch(graph, node)
    scratch.update(tfl_scratch(graph))  # imported .tflite ops (codegen/emit_tfl.py)
    return scratch




# -- C literals -----------------------------------------------------------------


_CTYPES = {"int8": "int8_t", "int32": "int32_t", "int64": "int64_t"}


def shared_key(data: np.ndarray, ctype: str | None = None) -> tuple:
    """What makes two const arrays one in model.c: the C type and the values (an integer array as int64 values)."""
    data = np.asarray(data)
    ctype = ctype or _CTYPES.get(str(data.dtype), str(data.dtype))
    flat = data.reshape(-1)
    if data.dtype.kind not in "iub":
        return ctype, data.dtype.str, flat.tobytes()
    as_c = {"int8_t": np.int8, "int32_t": np.int32}.get(ctype, np.int64)
    if flat.size and np.iinfo(as_c).min <= flat.min() and flat.max() <= np.iinfo(as_c).max:
        return ctype, flat.astype(as_c, copy=False).tobytes()  # the values as the C array holds them
    return ctype, flat.astype(np.int64).tobytes()  # (values the C type cannot hold are refused by c_int)


def _c_comment(text: str) -> str:
    return " ".join(text.replace("*/", "* /").replace("/*", "/ *").split())


class _Namer:
    """Unique C identifiers derived from IR names."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, name: str, suffix: str = "") -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", name + suffix)
        base = re.sub(r"_+", "_", base) or "t"
        if base[0].isdigit() or base[0] == "_" or base in _C_KEYWORDS or base.lower().startswith("hydra_"):
            base = "t_" + base.lstrip("_")
        ident, i = base, 2
        while ident in self.used:
            ident, i = f"{base}_{i}", i + 1
        self.used.add(ident)
        return ident


# -- the emitter ------------------------------------------------------------------


@dataclass
class _Loop:
    """The token loop being emitted: where its rows live, and which params its body's calls use per group."""

    node: Node
    layout: LoopLayout
    base: int  # the loop's scratch offset in the arena
    rows: list[str] = field(default_factory=list)  # the current body call's lines in the loop (its params' choice)
    statics: dict[str, str] = field(default_factory=dict)  # a per-group params pointer -> the full groups' struct


@dataclass
class _ModelC:
    graph: Graph
    plan: MemoryPlan
    namer: _Namer = field(default_factory=_Namer)
    arrays: list[str] = field(default_factory=list)  # C definitions of const arrays
    const_names: dict[str, str] = field(default_factory=dict)  # tensor name -> C identifier
    # (C type, values) -> (C identifier, index in arrays): an identical array is defined once, its later
    # users get the first one's name (the softmax exp table of every layer, equal gelu tables, ...)
    shared: dict[tuple, tuple[str, int]] = field(default_factory=dict)
    loop: _Loop | None = None  # set while a token loop's body is lowered

    @property
    def rows(self) -> str | None:
        """Inside a token loop, the C expression of the group's rows; None outside one."""
        return "rows" if self.loop is not None else None

    # operands ---------------------------------------------------------------
    def tensor(self, node: Node, index: int, kind: str = "input") -> Tensor:
        names = node.inputs if kind == "input" else node.outputs
        if index >= len(names):
            raise CodegenError(f"node {node.name} ({node.op}): expected an {kind} #{index}, it has {len(names)}")
        return self.graph.tensor(names[index])

    def act(self, node: Node, index: int, kind: str = "input") -> str:
        """A pointer expression for an int8 activation operand (a const array when constant)."""
        t = self.tensor(node, index, kind)
        if t.dtype != "int8":
            raise CodegenError(
                f"node {node.name} ({node.op}): {kind} {t.name!r} is {t.dtype}; the emitter needs a quantised graph"
            )
        if t.is_constant:
            if kind == "output":
                raise CodegenError(f"node {node.name}: output {t.name!r} is a constant")
            return self._row(node, index, kind, t, self.const_array(t, "int8"))
        if self.loop is not None and (inner := self.loop.layout.rows(t.name)) is not None:
            return f"HYDRA_ARENA_S8({self.loop.base + inner})"  # a tensor that lives only in the loop: G rows
        return self._row(node, index, kind, t, f"HYDRA_ARENA_S8({self.offset(t.name)})")

    def _row(self, node: Node, index: int, kind: str, t: Tensor, whole: str) -> str:
        """In a token loop, a row operand points at the group's first row: input rows or output rows of a row op."""
        d = graph_row_facts(self.graph, node) if self.loop is not None else None
        if d is None:
            return whole
        if (index in d.row_inputs) if kind == "input" else not d.reduces:
            return f"({whole} + (size_t)t0 * {row_bytes(self.graph, t.name)})"
        return whole

    def act32(self, node: Node, index: int, kind: str = "input") -> str:
        """A pointer to an int32 activation (hydra_kv_state's kv), whole."""
        t = self.tensor(node, index, kind)
        if t.dtype != "int32" or t.is_constant:
            raise CodegenError(f"node {node.name} ({node.op}): {kind} {t.name!r} must be an int32 activation")
        return f"(int32_t *)(void *)(hydra_arena + {self.offset(t.name)})"

    def offset(self, buffer: str) -> int:
        try:
            return self.plan.offset(buffer)
        except KeyError:
            raise CodegenError(f"the memory plan has no buffer for {buffer!r}") from None

    def const(self, node: Node, index: int, dtype: str, layout=None, suffix: str = "") -> str:
        """The C array of the node's constant input `index`; `layout` (array -> array of the same bytes, named
        with `suffix`) reorders it for the kernel."""
        t = self.tensor(node, index)
        if not t.is_constant:
            raise CodegenError(f"node {node.name} ({node.op}): input {t.name!r} must be a constant")
        if layout is None:
            return self.const_array(t, dtype)
        data = np.asarray(t.data)
        if str(data.dtype) != dtype:
            raise CodegenError(f"constant {t.name!r} is {data.dtype}, the kernel needs {dtype}")
        return self._define(t.name, suffix, layout(data), f"{t.name}: {dtype} {list(data.shape)}, reordered{suffix}")

    def const_array(self, t: Tensor, dtype: str) -> str:
        data = np.asarray(t.data)
        if str(data.dtype) != dtype:
            raise CodegenError(f"constant {t.name!r} is {data.dtype}, the kernel needs {dtype}")
        if t.name not in self.const_names:
            self.const_names[t.name] = self._define(t.name, "", data, f"{t.name}: {dtype} {list(data.shape)}")
        return self.const_names[t.name]

    def attr_array(self, node: Node, key: str, length: int) -> str:
        data = np.asarray(self.attr(node, key))
        if data.shape != (length,):
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} has shape {data.shape}, expected ({length},)")
        if data.dtype.kind not in "iu":
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} is {data.dtype}, expected integers")
        return self._define(node.name, "_" + key, data.astype(np.int64), f"{node.name}.{key}: int32 [{length}]",
                            "int32_t")

    def _define(self, name: str, suffix: str, data: np.ndarray, comment: str, ctype: str | None = None) -> str:
        """The identifier of a static const array with these values: a new definition, or an identical earlier one."""
        key = shared_key(data, ctype)
        if key in self.shared:
            ident, index = self.shared[key]
            head, _, body = self.arrays[index].rpartition("*/\n")  # the users' comments, then the definition
            self.arrays[index] = f"{head}*/\n/* also {_c_comment(comment)} */\n{body}"
            return ident
        ident = self.namer(name, suffix)
        self.shared[key] = (ident, len(self.arrays))
        self.arrays.append(self._array(ident, data, comment, ctype))
        return ident

    def _array(self, ident: str, data: np.ndarray, comment: str, ctype: str | None = None) -> str:
        ctype = ctype or _CTYPES[str(data.dtype)]
        flat = data.reshape(-1).tolist()
        per_line = {"int8_t": 16, "int32_t": 8, "int64_t": 4}[ctype]
        body = ",\n".join(
            "    " + ", ".join(c_int(v, ctype, comment) for v in flat[i : i + per_line])
            for i in range(0, len(flat), per_line)
        )
        return (
            f"/* {_c_comment(comment)} */\n"
            f"static const {ctype} {ident}[{max(len(flat), 1)}] HYDRA_ALIGNED(16) = {{\n{body or '    0'}\n}};\n"
        )

    # attrs ----------------------------------------------------------------------
    def attr(self, node: Node, key: str) -> Any:
        if key not in node.attrs:
            raise CodegenError(f"node {node.name} ({node.op}): missing attr {key!r} (is the graph quantised?)")
        return node.attrs[key]

    def scalar(self, node: Node, key: str, ctype: str = "int32_t", lo: int | None = None, hi: int | None = None) -> str:
        value = self.attr(node, key)
        try:
            v = int(np.asarray(value).reshape(()))
        except (TypeError, ValueError):
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} = {value!r} is not an integer scalar") from None
        if np.asarray(value).dtype.kind not in "iu":
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} = {value!r} is not an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} = {v} is outside [{lo}, {hi}]")
        return c_int(v, ctype, f"node {node.name} attr {key}")

    def zp(self, node: Node, key: str) -> str:
        return self.scalar(node, key, lo=-128, hi=127)

    def shift(self, node: Node, key: str) -> str:
        return self.scalar(node, key, lo=-31, hi=30)

    def multiplier(self, node: Node, key: str) -> str:
        return self.scalar(node, key, lo=0, hi=INT32_MAX)

    def single_rounding(self, node: Node) -> str:
        """The params' single_rounding: the node's rounding (ops.node_rounding, the graph's by default) as 0 or 1."""
        return "1" if node_rounding(node, _rounding(self.graph)) == "single" else "0"

    def check_array_range(self, node: Node, key: str, lo: int, hi: int) -> None:
        data = np.asarray(self.attr(node, key)).astype(np.int64)
        if data.size and (data.min() < lo or data.max() > hi):
            raise CodegenError(f"node {node.name} ({node.op}): attr {key} has values outside [{lo}, {hi}]")

    # ops --------------------------------------------------------------------------
    def params(self, node: Node, ctype: str, fields: list[tuple[str, Any]]) -> tuple[str, str]:
        """A static const param struct; a field whose value is a list of fields is a nested struct.

        In a token loop, an op whose params give its rows (OpDef.rows_field; a tfl op's TflRows.fields) gets them
        for a group of G rows, and a second struct for the last group when G does not divide T: the identifier
        returned then points at the one for the current group (both in flash: nothing is copied per loop)."""
        ident = self.namer(node.name, "_params")
        sets = self._row_fields(node) if self.loop is not None else []
        if not sets:
            return ident, f"static const {ctype} {ident} = {{\n{_initialiser(fields, 1)}\n}};\n"
        tokens, group = int(self.loop.node.attrs["tokens"]), int(self.loop.node.attrs["tokens_per_step"])
        decl = f"static const {ctype} {ident} = {{\n{_initialiser(_with_rows(fields, sets, group), 1)}\n}};\n"
        if tokens % group == 0:
            return ident, decl
        last = self.namer(node.name, "_params_last")
        decl += f"static const {ctype} {last} = {{\n{_initialiser(_with_rows(fields, sets, tokens % group), 1)}\n}};\n"
        step = f"step{len(self.loop.statics)}"
        self.loop.rows.append(f"const {ctype} *{step} = rows == {group} ? &{ident} : &{last};")
        self.loop.statics[f"(*{step})"] = ident
        return f"(*{step})", decl

    def _row_fields(self, node: Node) -> list[tuple[str, int]]:
        """(field, elements per row) of the params a group sets: `name` or `name[index]`."""
        d = op_def(node.op)
        if d is None:  # a tfl op: its shapes' token dimensions, or its element count (ir/tfl_ops.tfl_rows)
            facts = graph_row_facts(self.graph, node)
            return list(facts.fields) if facts else []
        if d.rows_field is None:
            return []
        out = self.tensor(node, 0, "output")
        return [(d.rows_field, out.numel // token_rows(out.shape) if d.rows_field_elements else 1)]

    def static(self, ident: str) -> str:
        """The static param struct behind `ident` (a token loop's per-group copy), for code before or after the loop."""
        return self.loop.statics.get(ident, ident) if self.loop is not None else ident

    # the op files' duck-typed view of the emitter (OpDef.fields and OpDef.emit) -----------------------------
    def call(self, node: Node, params_decl: str, call: str, check: str = "", before: str = "", after: str = "") -> Call:
        return Call(node, params_decl, call, check, before, after)

    def checked(self, expr: str) -> str:
        """C that evaluates a hydra_status expression and returns it when it failed (for an op's `before`)."""
        return status_checked(expr)

    def error(self, message: str) -> CodegenError:
        return CodegenError(message)

    def scratch(self, node: Node) -> tuple[int, int]:
        """(arena offset, planned bytes) of a node's scratch buffer (inside a token loop: in the loop's scratch)."""
        sname = scratch_name(node.name)
        if self.loop is not None:
            return self.loop.base + self.loop.layout.offsets[sname], self.loop.layout.sizes[sname]
        return self.offset(sname), self.plan.buffer(sname).size

    def loop_state(self, node: Node) -> str:
        """An int32 pointer to what an op keeps across the token loop (OpDef.loop_state): a reduction's running
        sums, softmax attention's key sums."""
        if self.loop is None:
            raise CodegenError(f"node {node.name} ({node.op}): loop state outside a token loop")
        return f"(int32_t *)(void *)(hydra_arena + {self.loop.base + self.loop.layout.offsets[node.name + STATE_SUFFIX]})"

    def token_loop(self, node: Node) -> Call:
        """A token_loop node: its body's calls in a loop over groups of G tokens (ops/token_loop.py)."""
        from ..ops.token_loop import body_nodes

        tokens, group = int(node.attrs["tokens"]), int(node.attrs["tokens_per_step"])
        loop = self.loop = _Loop(node, plan_token_loop(self.graph, node), self.scratch(node)[0])
        try:
            calls = []
            for sub in body_nodes(node):
                loop.rows = []
                calls.append((self.lower(sub), loop.rows))
        finally:
            self.loop = None
        decls = "".join(c.params_decl for c, _ in calls)
        before = [c.before for c, _ in calls if c.before]
        # each op's params made for a group in flash (and for a shorter last group): the loop only picks them
        body = [*before, f"for (int32_t t0 = 0; t0 < {tokens}; t0 += {group}) {{",
                f"    const int32_t rows = {tokens} - t0 < {group} ? {tokens} - t0 : {group};",
                "    (void)rows; /* (read by the calls that take rows, and to pick a shorter last group's params) */"]
        for c, rows in calls:
            body.append(f"    {{ /* {_c_comment(f'{c.node.name} ({c.node.op})')} */")
            body += [f"        {line}" for line in rows]
            body += [f"        {line.strip()}" for line in c.check.rstrip("\n").split("\n") if line.strip()]
            body += [*indented(status_checked(c.call), 8), "    }"]
        body.append("}")
        body += [status_checked(c.after) for c, _ in calls if c.after]
        lines = [f"/* {len(calls)} ops over {tokens} tokens, {group} at a time */", "{",
                 *(f"    {line}" for text in body for line in text.split("\n")), "}"]
        return Call(node, decls, "", code="\n".join(lines))

    def lower(self, node: Node) -> Call:
        if is_tfl(node.op):  # an imported .tflite op: the generic contract-driven emitter
            return lower_tfl(self, node)
        d = op_def(node.op)
        if d is None or d.emit is None:
            raise CodegenError(
                f"node {node.name}: op {node.op!r} has no C kernel (supported: {', '.join(OP_SOURCES)}); "
                "quantise the graph first (gelu becomes lut)"
            )
        return d.emit(self, node)


def _with_rows(fields: list[tuple[str, Any]], sets: list[tuple[str, int]], rows: int) -> list[tuple[str, Any]]:
    """The fields with each of `sets` (`name` or `name[index]`, elements per row) set for `rows` rows."""
    values = dict(fields)
    for name, per_row in sets:
        key, _, index = name.partition("[")
        if key not in values:
            raise CodegenError(f"params have no field {key!r} to give the group's rows")
        if not index:
            values[key] = str(rows * per_row)
            continue
        items = [v.strip() for v in str(values[key]).strip("{}").split(",")]
        items[int(index.rstrip("]"))] = str(rows * per_row)
        values[key] = "{" + ", ".join(items) + "}"
    return [(k, values[k]) for k, _ in fields]


def _initialiser(fields: list[tuple[str, Any]], depth: int) -> str:
    pad = "    " * depth
    lines = []
    for k, v in fields:
        if isinstance(v, list):
            lines.append(f"{pad}.{k} = {{\n{_initialiser(v, depth + 1)}\n{pad}}},")
        else:
            lines.append(f"{pad}.{k} = {v},")
    return "\n".join(lines)


# -- files ----------------------------------------------------------------------


def _io_tensor(graph: Graph, names: list[str], what: str) -> Tensor:
    if len(names) != 1:
        raise CodegenError(f"the emitter supports one graph {what}, this graph has {len(names)}: {names}")
    t = graph.tensor(names[0])
    if t.dtype != "int8" or t.is_constant:
        raise CodegenError(f"graph {what} {t.name!r} must be an int8 activation (is the graph quantised?), got {t.dtype}")
    return t


def _rounding(graph: Graph) -> str:
    rounding = graph.meta.get("rounding", "double")
    if rounding not in ("double", "single"):
        raise CodegenError(f'graph.meta["rounding"] must be "double" or "single", got {rounding!r}')
    return rounding


def _ops_used(graph: Graph) -> set[str]:
    """Every op the graph runs, token loops' bodies included, and the ops their kernels call."""
    used = {node.op for node in graph.nodes}
    used |= {sub["op"] for node in graph.nodes if node.op == "token_loop" for sub in node.attrs["body"]}
    return used | {dep for op in list(used) if op in REGISTRY for dep in REGISTRY[op].c_depends}


def runtime_sources(graph: Graph) -> list[str]:
    """The runtime_c/src files this graph needs: the fixed-point and dot helpers, then one per op used, in a fixed order."""
    used = _ops_used(graph)
    native = dict.fromkeys(src for op, src in OP_SOURCES.items() if op in used)  # ops may share a source file
    return list(ALWAYS_SOURCES) + list(native) + tfl_sources(graph, RUNTIME_DIR / "src")


def runtime_defines(graph: Graph) -> list[str]:
    """The ops' c_defines and the tfl walks' left-out paths (emit_tfl.tfl_defines) for this graph (code the build
    may leave out), sorted."""
    used = _ops_used(graph)
    native = {d for op in used if op in REGISTRY and REGISTRY[op].c_defines for d in REGISTRY[op].c_defines(graph)}
    return sorted(native | (set(tfl_defines(graph)) if uses_tfl(graph) else set()))


# Called before each kernel call and once after the last: an instruction counter (hydra-edge bench,
# targets/icount.py) splits a run at this function's address, so region k between two calls is op k.
# Never inlined or cloned, and its empty asm keeps GCC from deleting the calls; costs a call and a return.
OP_MARKER = "hydra_op_marker"
_OP_MARKER_C = [
    "/* ---- per-op marker: instruction counters (hydra-edge bench) split a run at this function ---- */",
    "",
    "#if defined(__GNUC__) && !defined(__clang__)",
    "#define HYDRA_OP_MARKER_ATTR __attribute__((noinline, noclone, used))",
    "#elif defined(__clang__)",
    "#define HYDRA_OP_MARKER_ATTR __attribute__((noinline, used))",
    "#else",
    "#define HYDRA_OP_MARKER_ATTR",
    "#endif",
    "",
    f"void {OP_MARKER}(int32_t op_index);",
    "",
    f"HYDRA_OP_MARKER_ATTR void {OP_MARKER}(int32_t op_index)",
    "{",
    "#if defined(__GNUC__) || defined(__clang__)",
    '    __asm__ volatile("" : : "r"(op_index) : "memory");',
    "#else",
    "    (void)op_index;",
    "#endif",
    "}",
    "",
]


def _model_c(graph: Graph, plan: MemoryPlan, board: Board, x: Tensor, y: Tensor) -> str:
    m = _ModelC(graph, plan)
    calls = [m.lower(node) for node in graph.nodes]
    x_off, y_off = m.offset(x.name), m.offset(y.name)
    lines = [
        "/*",
        " * model.c - generated by hydra-edge; do not edit.",
        f" * {len(graph.nodes)} nodes, arena {plan.arena_bytes} bytes, {_rounding(graph)} rounding, board {board.name}.",
        " */",
        "#include <string.h>",
        "",
        '#include "hydra_rt.h"',
        *(['#include "hydra_tfl.h"'] if uses_tfl(graph) else []),
        '#include "model.h"',
        "",
        "#if defined(__GNUC__) || defined(__clang__)",
        "#define HYDRA_ALIGNED(n) __attribute__((aligned(n)))",
        "#else",
        "#define HYDRA_ALIGNED(n)",
        "#endif",
        "",
        *_OP_MARKER_C,
        "/* ---- weights and constants (flash) ---- */",
        "",
        *m.arrays,
        "/* ---- activation arena (RAM): offsets from the memory plan ---- */",
        "",
        "static uint8_t hydra_arena[HYDRA_MODEL_ARENA_BYTES] HYDRA_ALIGNED(16);",
        "#define HYDRA_ARENA_S8(offset) ((int8_t *)(hydra_arena + (offset)))",
        "",
        "/* ---- kernel parameters ---- */",
        "",
        *[c.params_decl for c in calls],
        "int hydra_model_run(const int8_t *input, int8_t *output)",
        "{",
        "    hydra_status status;",
        "    if (input == NULL || output == NULL) {",
        "        return (int)HYDRA_ERR_ARG;",
        "    }",
        f"    memcpy(hydra_arena + {x_off}, input, HYDRA_MODEL_INPUT_BYTES); /* {_c_comment(x.name)} */",
    ]
    for index, c in enumerate(calls):
        src = f" <- {c.node.source}" if c.node.source else ""
        lines.append("")
        lines.append(f"    {OP_MARKER}({index});")
        lines.append(f"    /* {_c_comment(f'{c.node.name} ({c.node.op}){src}')} */")
        if c.code:  # a token loop
            lines += [f"    {line}" for line in c.code.split("\n")]
            continue
        if c.check:
            lines.append(c.check.rstrip("\n"))
        if c.before:
            lines += indented(c.before, 4)
        lines += indented(status_checked(c.call), 4)
        if c.after:
            lines += indented(status_checked(c.after), 4)
    lines += [
        "",
        f"    {OP_MARKER}({len(calls)}); /* end of the last op */",
        f"    memcpy(output, hydra_arena + {y_off}, HYDRA_MODEL_OUTPUT_BYTES); /* {_c_comment(y.name)} */",
        "    return 0;",
        "}",
        "",
    ]
    return "\n".join(lines)


def _model_h(graph: Graph, plan: MemoryPlan, x: Tensor, y: Tensor) -> str:
    def quant(t: Tensor) -> str:
        q = t.quant
        if q is None:
            return "no quantisation parameters"
        return f"scale {float(np.asarray(q.scale).reshape(-1)[0])!r}, zero point {int(np.asarray(q.zero_point).reshape(-1)[0])}"

    return "\n".join(
        [
            "/* model.h - generated by hydra-edge; do not edit. */",
            "#ifndef HYDRA_MODEL_H",
            "#define HYDRA_MODEL_H",
            "",
            "#include <stdint.h>",
            "",
            f"/* input {_c_comment(x.name)}: int8 {list(x.shape)}, {quant(x)} */",
            f"#define HYDRA_MODEL_INPUT_BYTES {x.nbytes}",
            f"/* output {_c_comment(y.name)}: int8 {list(y.shape)}, {quant(y)} */",
            f"#define HYDRA_MODEL_OUTPUT_BYTES {y.nbytes}",
            "/* the static activation arena (inside model.c) */",
            f"#define HYDRA_MODEL_ARENA_BYTES {max(plan.arena_bytes, 1)}",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            "/* Runs the model once: input[HYDRA_MODEL_INPUT_BYTES] -> output[HYDRA_MODEL_OUTPUT_BYTES].",
            " * Returns 0, or the hydra_status of the first kernel that failed. Not reentrant (one static arena). */",
            "int hydra_model_run(const int8_t *input, int8_t *output);",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            "#endif /* HYDRA_MODEL_H */",
            "",
        ]
    )


def _makefile(graph: Graph, board: Board, sources: list[str]) -> str:
    """The model's part (sources, the board's compiler and flags), then the board's board.mk. No rounding
    define: each node's params say its rounding (single_rounding)."""
    if board.cross:  # a cross compiler: an environment CC (the host's) must not replace it
        cc = f"CC = {board.cc}"
    else:
        cc = "CC ?= cc" if board.cc == "cc" else f"ifeq ($(origin CC),default)\nCC = {board.cc}\nendif"
    srcs = " \\\n       ".join(["model.c", *[f"runtime/src/{s}" for s in sources]])
    extra = []
    if board.ldflags:
        extra.append(f"LDFLAGS = {' '.join(board.ldflags)}")
    if board.stack_bytes is not None:
        extra.append(f"STACK_BYTES = {int(board.stack_bytes)}")
    rules = board.makefile_path.read_text()
    return "\n".join(
        [
            f"# Makefile - generated by hydra-edge for board {board.name}; do not edit.",
            "# The model's sources and flags; the board's build rules follow (boards/<board>/board.mk).",
            cc,
            f"BOARD_CFLAGS = {' '.join(board.cflags)}",
            f"OPT = {opt_level(graph)}",
            "CPPFLAGS = -I. -Iruntime/include" + "".join(f" -D{d}" for d in runtime_defines(graph)),
            *extra,
            f"MODEL_SRCS = {srcs}",
            "",
            rules,
        ]
    )


def _write(path: Path, data: str | bytes) -> None:
    """Write only when the content changes, so that make's timestamps stay meaningful; whole or not at all
    (a temporary file beside it, then os.replace)."""
    from ..outdir import atomic_write

    raw = data.encode() if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, raw)


def _io_info(t: Tensor) -> dict[str, Any]:
    q = t.quant
    return {
        "name": t.name,
        "shape": list(t.shape),
        "bytes": t.nbytes,
        "scale": None if q is None else float(np.asarray(q.scale).reshape(-1)[0]),
        "zero_point": None if q is None else int(np.asarray(q.zero_point).reshape(-1)[0]),
    }


def emit_project(
    graph: Graph, plan: MemoryPlan, folder: str | Path, board: Board | str = "host", runtime_dir: Path = RUNTIME_DIR
) -> Path:
    """Write the build folder for `graph` on `board`; returns the folder.

    `folder` must be new, empty or a hydra-edge build (files are updated in place, each atomically);
    driver.write_build writes a whole build into a fresh folder and swaps it in (outdir.py).
    """
    board = get_board(board)
    folder = Path(folder)
    if folder.is_dir() and not (folder / BUILD_MANIFEST).is_file() and any(folder.iterdir()):
        raise CodegenError(f"{folder} is a non-empty folder that is not a hydra-edge build (no {BUILD_MANIFEST}); "
                           "emit into a new or empty folder")
    graph.validate()
    check_shapes(graph)
    check_no_overlap(plan)
    x = _io_tensor(graph, graph.inputs, "input")
    y = _io_tensor(graph, graph.outputs, "output")
    for t in graph.activations():
        if t.dtype != "int8" and not (t.dtype == "int32" and len(t.shape) == 1):  # int32: an attention state
            raise CodegenError(f"activation {t.name!r} is {t.dtype}; the emitter needs a quantised (int8) graph")
    sources = runtime_sources(graph)
    missing = [s for s in sources if not (runtime_dir / "src" / s).is_file()]
    header = runtime_dir / "include" / "hydra_rt.h"
    if missing or not header.is_file():
        raise CodegenError(f"runtime files missing in {runtime_dir}: {', '.join(missing or ['include/hydra_rt.h'])}")
    board_files = board.file_paths()
    for path in [*board_files, board.makefile_path]:
        if not path.is_file():
            raise CodegenError(f"board {board.name}: {path} is missing (listed in {board.folder / 'board.toml'})")

    model_c = _model_c(graph, plan, board, x, y)
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "model.c", model_c)
    _write(folder / "model.h", _model_h(graph, plan, x, y))
    for path in board_files:
        _write(folder / path.name, path.read_bytes())
    _write(folder / "Makefile", _makefile(graph, board, sources))
    _write(folder / "runtime" / "include" / "hydra_rt.h", header.read_bytes())
    if uses_tfl(graph):
        _write(folder / "runtime" / "include" / TFL_HEADER, (runtime_dir / "include" / TFL_HEADER).read_bytes())
    src_dir = folder / "runtime" / "src"
    for stale in src_dir.glob("*.c") if src_dir.is_dir() else ():
        if stale.name not in sources:
            stale.unlink()
    for s in sources:
        _write(src_dir / s, (runtime_dir / "src" / s).read_bytes())
    manifest = {
        "format": "hydra-edge-build",
        "version": 1,
        "hydra_edge_version": __version__,
        "source": str(graph.meta.get("source_file", "")),
        "board": board.name,
        "rounding": _rounding(graph),
        "input": _io_info(x),
        "output": _io_info(y),
        "arena_bytes": plan.arena_bytes,
        "schedule": graph.meta.get("schedule", "stream" if plan.in_place else "greedy"),
        "runtime_sources": sources,
        "board_kind": board.kind,
        "binary": board.binary,
        "sanitize_binary": SANITIZE_BINARY,
    }
    _write(folder / BUILD_MANIFEST, json.dumps(manifest, indent=1) + "\n")
    save_graph(graph, folder)
    return folder
