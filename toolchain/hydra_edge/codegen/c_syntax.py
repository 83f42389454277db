"""The C-writing vocabulary both emitters share (emit_c.py for the hydra ops, emit_tfl.py for the tfl_* ones).

Integer literals checked against their C type, the error a graph the emitter cannot lower raises, and one
node's lowering (its params struct declaration and its kernel call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import HydraEdgeError
from ..ir.graph import Node

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class CodegenError(HydraEdgeError, ValueError):
    """A graph the C emitter cannot lower (unquantised, an unknown op, a value out of range)."""


def c_int(value: Any, ctype: str, where: str) -> str:
    """`value` as a C literal of `ctype` (int8_t, int32_t or int64_t); a CodegenError naming `where` if it does not fit."""
    v = int(value)
    lo, hi = {"int8_t": (-128, 127), "int32_t": (INT32_MIN, INT32_MAX), "int64_t": (INT64_MIN, INT64_MAX)}[ctype]
    if not lo <= v <= hi:
        raise CodegenError(f"{where}: {v} does not fit {ctype}")
    if ctype == "int64_t":
        return "(-INT64_C(9223372036854775807) - 1)" if v == INT64_MIN else f"INT64_C({v})"
    if v == INT32_MIN:
        return "(-2147483647 - 1)"
    return str(v)


def status_checked(expr: str) -> str:
    """`status = expr;` and the early return of a failed status: the C that follows every call in model.c."""
    return f"status = {expr};\nif (status != HYDRA_OK) {{\n    return (int)status;\n}}"


def indented(text: str, spaces: int) -> list[str]:
    """The lines of `text`, each indented by `spaces`."""
    return [" " * spaces + line for line in text.split("\n")]


@dataclass
class Call:
    """One node lowered: its params struct declaration and its kernel call."""

    node: Node
    params_decl: str
    call: str
    check: str = ""  # C statements run before the call (scratch size check)
    # A reduction in a token loop (mean_pool, hydra_kv_state): the call runs once per token group, `before`
    # (a C statement) once before the loop and `after` (an expression giving a hydra_status) once after it.
    before: str = ""
    after: str = ""
    code: str = ""  # a token loop: the whole C block, instead of `status = call;`
