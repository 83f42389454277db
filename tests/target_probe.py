"""Run a few lines of C on a board (under its emulator) over many inputs: for the runtime's inline helpers, whose
target paths (SMMULR on the Cortex-M7, ...) the host tests never build.

A probe is a build folder for a one-layer model whose input and output sizes are the probe's, with model.c
replaced by `hydra_model_run(input, output) { BODY }`: the board's own harness, Makefile and emulator then run it
on each row of the inputs (targets/runner.py), as they run a model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from hydra_edge.codegen.emit_c import RUNTIME_DIR, emit_project, kernel_scratch
from hydra_edge.ir.graph import Graph, Node
from hydra_edge.memory.planner import plan_memory
from hydra_edge.targets import runner
from test_kernels import act

PROBE_TEMPLATE = """/* a target probe (tests/target_probe.py) */
#include <string.h>

#include "hydra_rt.h"
#include "model.h"

int hydra_model_run(const int8_t *input, int8_t *output)
{
%s
    return 0;
}
"""


def probe_folder(folder: Path, board: str, body: str, in_bytes: int, out_bytes: int,
                 sources: tuple[str, ...] = ()) -> Path:
    """A build folder for `board` whose model reads `in_bytes`, writes `out_bytes` and runs `body` (C) to do so;
    `sources`: runtime_c/src files it calls besides those of linear (hydra_dot.c, hydra_linear.c, hydra_requantize.c)."""
    g = Graph(meta={"rounding": "double"})
    x, y = act(g, "x", (1, in_bytes), 0), act(g, "y", (1, out_bytes), 0)
    g.add_constant("w", np.zeros((out_bytes, in_bytes), np.int8))
    g.add_constant("b", np.zeros(out_bytes, np.int32))
    attrs = {"multiplier": np.full(out_bytes, 2**30, np.int32), "shift": np.zeros(out_bytes, np.int32),
             "out_zp": np.int32(0)}
    g.add_node(Node("fc", "linear", [x, "w", "b"], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    emit_project(g, plan_memory(g, kernel_scratch(g)), folder, board)
    (folder / "model.c").write_text(PROBE_TEMPLATE % body)
    makefile = folder / "Makefile"
    for name in sources:
        shutil.copy(RUNTIME_DIR / "src" / name, folder / "runtime" / "src" / name)
        makefile.write_text(makefile.read_text().replace("MODEL_SRCS = model.c", f"MODEL_SRCS = model.c runtime/src/{name}", 1))
    return folder


def run_probe(folder: Path, rows: np.ndarray, extra_cppflags: str = "") -> np.ndarray:
    """The probe's output bytes for each row of `rows` (int8 [N, in_bytes])."""
    return runner.run(folder, np.ascontiguousarray(rows, dtype=np.int8), extra_cppflags=extra_cppflags)
