"""The toolchain's modules form layers that point one way (issue 16, part 2).

Every module's imports of hydra_edge modules are read with `ast` (imports inside functions and under
`if TYPE_CHECKING:` count too), then two rules are checked:

- no cycle between modules (no two modules importing each other, directly or through others);
- no import from a module of a later stage into one of an earlier stage (STAGES, earliest first).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "toolchain" / "hydra_edge"

# Earliest first. A module belongs to the stage of its longest matching prefix; modules of one stage may
# import each other (without cycles).
STAGES: list[tuple[str, tuple[str, ...]]] = [
    # Errors, the IR, the numerics (fixed point, gemmlowp-style), and what both codegen and targets read:
    # the build folder's manifest (build.json, report.json), the board descriptions, the folder helpers.
    ("base", ("hydra_edge", "errors", "ir", "numerics", "build_manifest", "boards", "outdir", "optimize")),
    # One file per native op (issue 16, part 1): its shape rule, references, quantisation step and kernel
    # description. Built on the IR and the numerics only, so that every later stage can ask it; the
    # emitter and the quantiser reach an op's code duck-typed, never the other way round.
    ("ops", ("ops",)),
    ("frontend", ("frontend",)),
    ("passes", ("passes",)),
    # The numpy interpreters of the IR (float and int) build on the IR and the numerics only; they come
    # before quant, whose calibration runs the float interpreter (issue 16 listed quant first).
    ("reference", ("reference",)),
    ("quant", ("quant",)),
    ("memory", ("memory",)),
    ("codegen", ("codegen",)),
    ("targets", ("targets",)),
    # Datasets, preprocessing and the example ViT: read by validate (eval) and search (training).
    ("models", ("models",)),
    ("validate", ("validate",)),
    # The compile pipeline comes before the search, which compiles each candidate (search.constraint and
    # search.run call driver); issue 16 listed driver with cli. Nothing below imports the driver.
    ("driver", ("driver",)),
    ("search", ("search",)),
    ("cli", ("cli", "cli_search")),
]

# (importer, imported): later-stage imports allowed on purpose, each with its reason. None today.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported hydra_edge module: first line}; `from pkg import mod` counts as importing pkg.mod."""
    mods = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_pkg) in mods.items():
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
            for t in targets:
                if t.split(".")[0] == "hydra_edge" and t != name:
                    assert t in mods, f"{name}:{node.lineno} imports {t}, which is not a module of the package"
                    edges.setdefault(t, node.lineno)
    return graph


def stage(module: str) -> int:
    rel = module.removeprefix("hydra_edge.") if module != "hydra_edge" else "hydra_edge"
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if (rel == p or rel.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module} is in no stage of STAGES: add it"
    return best


def later_stage_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for mod, edges in sorted(graph.items()):
        for dep, line in sorted(edges.items()):
            if stage(dep) > stage(mod) and (mod, dep) not in EXCEPTIONS:
                out.append(f"{mod}:{line} imports {dep} ({STAGES[stage(dep)][0]} after {STAGES[stage(mod)][0]})")
    return out


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "hydra_edge.errors" in graph["hydra_edge.ir.graph"]
    assert len(graph) > 50 and sum(map(len, graph.values())) > 150


def test_every_module_has_a_stage():
    for mod in import_graph():
        stage(mod)


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_import_from_a_later_stage():
    assert later_stage_imports(import_graph()) == []


def test_the_exceptions_are_still_needed():
    graph = import_graph()
    for mod, dep in EXCEPTIONS:
        assert dep in graph.get(mod, {}), f"{mod} no longer imports {dep}: drop the exception"


def test_the_checks_catch_a_cycle_and_a_backward_import():
    graph = {"hydra_edge.ir.graph": {"hydra_edge.codegen.emit_c": 1}, "hydra_edge.codegen.emit_c": {"hydra_edge.ir.graph": 2}}
    assert cycles(graph) == [["hydra_edge.codegen.emit_c", "hydra_edge.ir.graph"]]
    assert later_stage_imports(graph) == ["hydra_edge.ir.graph:1 imports hydra_edge.codegen.emit_c (codegen after base)"]


def test_every_tfl_shape_rule_has_a_frontend_and_a_reference_kernel():
    """ir/tfl_ops.py has a shape rule only for ops the .tflite frontend produces (or lift_tfl_hydra, for
    tfl_hydra_attention, and passes/stream.py, for its halves; lift_tfl_softmax, for tfl_softmax_attention) and the reference interpreter runs; none without
    a rule either."""
    from hydra_edge.frontend.tflite import prepare_table
    from hydra_edge.ir.tfl_ops import TFL_SHAPE_RULES
    from hydra_edge.reference.int_interp import tfl_kernels

    produced = {"tfl_" + op.lower() for op in prepare_table()} | {"tfl_hydra_attention", "tfl_hydra_kv_state",
                                                                  "tfl_hydra_apply", "tfl_softmax_attention"}
    assert set(TFL_SHAPE_RULES) == produced == set(tfl_kernels())
