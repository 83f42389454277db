"""The compiler driver: each stage in order, the IR handed from one to the next.

    load (frontend) -> lower (passes) -> calibrate + quantize
    -> schedule (stream: fuse encoder blocks, passes/stream.py) -> plan memory
    -> emit C (codegen) -> report

Schedules: "greedy" is TFLite Micro's baseline (every op unfused, the greedy
arena planner, no in-place reuse); "stream" fuses each Hydra encoder block into
one hydra_block node run token group by token group, in place on the token
buffer, and plans with in-place reuse. The default is "stream" when the graph
has Hydra attention. The schedule changes memory, never the output bits.

The CLI is a thin layer over these functions; so is the Python API.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .codegen.emit_c import emit_project, kernel_scratch, read_manifest
from .codegen.report import MEMORY_PLOT, build_report, plot_memory
from .errors import HydraEdgeError
from .ir.graph import Graph
from .ir.serialize import load_graph
from .memory.planner import MemoryPlan, plan_memory
from .passes.pipeline import lower_to_ir
from .passes.stream import fuse_blocks
from .quant.calibrate import calibrate, fallback_calibration, load_calibration
from .quant.quantize import quantize_array, quantize_graph
from .targets.board import Board, load_board
from .targets.budget import check_fits
from .targets.device_vector import write_test_vector

REPORT = "report.json"
TEST_VECTORS = "test_inputs.npy"
NUM_TEST_VECTORS = 8

Progress = Callable[[str, int, int], None]

SCHEDULES = ("greedy", "stream")


class ScheduleError(HydraEdgeError, ValueError):
    """An unknown schedule or a bad tokens-per-step value."""


class CalibrationFallbackWarning(UserWarning):
    """No calibration data was given: ranges come from synthetic inputs."""


@dataclass
class CompileResult:
    graph: Graph  # the quantised IR
    plan: MemoryPlan
    report: dict
    folder: Path


def load_model(path: str | Path) -> Graph:
    """Pick the frontend by file suffix and return the aten-level graph."""
    from .frontend.errors import FrontendError
    from .frontend.pt2 import load_pt2

    path = Path(path)
    if path.suffix == ".pt2":
        return load_pt2(path)
    raise FrontendError(f"{path}: unsupported model format {path.suffix or '(no suffix)'}; hydra-edge reads .pt2 (torch.export.save)")


def compile_graph(
    float_graph: Graph,
    board: Board,
    out: str | Path,
    calib: np.ndarray | None = None,
    rounding: str = "double",
    progress: Progress | None = None,
    schedule: str | None = None,
    tokens_per_step: int = 1,
) -> CompileResult:
    """Lowered float IR -> quantised IR -> build folder.

    schedule: "greedy" or "stream" (None: "stream" when the graph has Hydra attention, else "greedy");
    tokens_per_step: tokens per group in a streamed block (more scratch, fewer weight reads).
    """
    schedule = default_schedule(float_graph) if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    if isinstance(tokens_per_step, bool) or int(tokens_per_step) != tokens_per_step or tokens_per_step < 1:
        raise ScheduleError(f"tokens per step must be a positive integer, got {tokens_per_step!r}")
    if calib is None:
        warnings.warn(
            "no calibration data (--calib): activation ranges come from standard-normal inputs; "
            "int8 accuracy will be poor unless your inputs are normalised the same way",
            CalibrationFallbackWarning,
            stacklevel=2,
        )
        calib = fallback_calibration(float_graph)
    tick = (lambda i: progress("calibrate", i, len(calib))) if progress else None
    ranges = calibrate(float_graph, calib, tick)
    qgraph = schedule_graph(quantize_graph(float_graph, ranges, rounding), schedule, int(tokens_per_step))
    plan = plan_memory(qgraph, kernel_scratch(qgraph), in_place=schedule == "stream")
    fit = check_fits(qgraph, plan, board)  # BudgetError, before anything is written, if it cannot fit
    folder = emit_project(qgraph, plan, Path(out), board)
    in_q = qgraph.tensor(qgraph.inputs[0]).quant
    vectors = quantize_array(calib[:NUM_TEST_VECTORS], in_q.scalar_scale, in_q.scalar_zero_point)
    np.save(folder / TEST_VECTORS, vectors)
    if board.raw.get("device_test_vector"):
        write_test_vector(folder, qgraph, vectors[0])
    report = build_report(qgraph, plan)
    report["board"] = board.name
    if board.ram_bytes is not None or board.flash_bytes is not None:
        report["budget"] = fit.as_dict(board)
    (folder / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    plot_memory(report, folder / MEMORY_PLOT)
    return CompileResult(qgraph, plan, report, folder)


def default_schedule(graph: Graph) -> str:
    """"stream" when the graph has Hydra attention (its blocks can be fused), "greedy" otherwise."""
    return "stream" if any(n.op in ("hydra_attention", "hydra_block") for n in graph.nodes) else "greedy"


def schedule_graph(qgraph: Graph, schedule: str, tokens_per_step: int = 1) -> Graph:
    """The quantised graph as the schedule runs it: fused blocks for "stream"; meta records the choice."""
    if schedule not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    g = fuse_blocks(qgraph, tokens_per_step) if schedule == "stream" else qgraph.copy()
    g.meta["schedule"] = schedule
    g.meta["tokens_per_step"] = int(tokens_per_step)
    return g


def compile_model(
    model_path: str | Path,
    board_name: str,
    out: str | Path,
    calib_path: str | Path | None = None,
    rounding: str = "double",
    progress: Progress | None = None,
    schedule: str | None = None,
    tokens_per_step: int = 1,
) -> CompileResult:
    board = load_board(board_name)
    graph = lower_to_ir(load_model(model_path))
    calib = load_calibration(calib_path, graph) if calib_path else None
    return compile_graph(graph, board, out, calib, rounding, progress, schedule, tokens_per_step)


def load_build(folder: str | Path) -> tuple[dict, Graph]:
    return read_manifest(folder), load_graph(folder)
