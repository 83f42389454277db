"""The compiler driver: each stage in order, the IR handed from one to the next.

    load (frontend) -> lower (passes) -> calibrate + quantize
    -> schedule (stream: token loops, passes/stream.py) -> plan memory
    -> emit C (codegen) -> report

Schedules: "greedy" is TFLite Micro's baseline (every op unfused, the greedy
arena planner, no in-place reuse); "stream" runs the row-local regions between
the steps that need all tokens (attention state, keys and values, pooling) as
token loops, G tokens at a time (passes/stream.py), and plans with in-place
reuse. The default is "stream". The schedule changes memory, never the output bits.

The CLI is a thin layer over these functions; so is the Python API.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .boards import Board, load_board
from .build_manifest import REPORT_FILE, TEST_VECTORS, read_manifest
from .codegen.emit_c import emit_project, kernel_scratch
from .codegen.report import MEMORY_PLOT, build_report, constant_bytes, plot_memory
from .errors import HydraEdgeError
from .ir.graph import Graph
from .ir.serialize import load_graph
from .memory.planner import MemoryPlan, plan_memory
from .ops import node_rounding
from .optimize import CodeGoal, choose_goal
from .outdir import check_output, staged_build
from .passes.legalise_tfl import legalise_tfl
from .quant.tabulate_tfl import tabulate_tfl
from .passes.pipeline import lower_to_ir
from .passes.stream import schedule_token_loops
from .quant.calibrate import DEFAULT_MAX_SAMPLES, calibrate, fallback_calibration, load_calibration
from .quant.quantize import quantize_array, quantize_graph
from .targets.budget import check_fits, check_input_fits
from .targets.device_vector import write_test_vector

NUM_TEST_VECTORS = 8

Progress = Callable[[str, int, int], None]

SCHEDULES = ("greedy", "stream")
DEFAULT_SCHEDULE = "stream"  # token loops wherever a graph has rows to stream (one without any runs op by op)
# Tokens a token loop's kernels take at once when the user does not say (tokens_per_step None): linear runs tokens
# in pairs on the Cortex-M (each weight word loaded once for both), so 2 wherever its arena is no larger than 1's.
PAIRED_TOKENS_PER_STEP = 2


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


@dataclass(frozen=True)
class LoadOptions:
    """How to read a model file that does not say everything itself (TorchScript, pickles)."""

    input_shape: tuple[int, ...] | None = None  # without the batch; TorchScript and pickles record none
    trust_pickle: bool = False  # unpickling a torch.save'd module runs code from the file
    module_class: str | None = None  # "pkg.module:ClassName" of a pickled module


def load_model(path: str | Path, options: LoadOptions | None = None) -> Graph:
    """Pick the frontend by content, then suffix (frontend/formats.py), and return its graph."""
    from .frontend import formats
    from .frontend.errors import FrontendError

    options = options or LoadOptions()
    path = Path(path)
    kind = formats.sniff(path)
    if kind == formats.PT2:
        from .frontend.pt2 import load_pt2

        graph = load_pt2(path, options.trust_pickle)
    elif kind == formats.TORCHSCRIPT:
        from .frontend.torchscript import load_torchscript

        return load_torchscript(path, options.input_shape)
    elif kind == formats.PICKLE:
        from .frontend.pickled import load_pickle

        return load_pickle(path, options.input_shape, options.trust_pickle, options.module_class)
    elif kind == formats.ONNX:
        from .frontend.onnx import load_onnx

        graph = load_onnx(path)
    elif kind == formats.TFLITE:
        from .frontend.tflite import load_tflite

        graph = load_tflite(path)
    else:  # sniff returns one of the kinds above; a new one must be wired here
        raise FrontendError(f"{path}: no frontend for format {kind!r}")
    # A file that records its own input shape: --input-shape may only confirm it.
    shape = tuple(graph.tensor(graph.inputs[0]).shape[1:]) if len(graph.inputs) == 1 else None
    if options.input_shape is not None and shape is not None and tuple(options.input_shape) != shape:
        raise FrontendError(
            f"{path}: the model's input is {list(shape)} (without the batch) but --input-shape says "
            f"{list(options.input_shape)}; drop --input-shape, which only TorchScript and pickled modules need"
        )
    return graph


def compile_graph(
    float_graph: Graph,
    board: Board,
    out: str | Path,
    calib: np.ndarray | None = None,
    rounding: str = "double",
    progress: Progress | None = None,
    schedule: str | None = None,
    tokens_per_step: int | None = None,
    force: bool = False,
    calib_percentile: float | None = None,
    optimize: str = "auto",
) -> CompileResult:
    """Lowered float IR -> quantised IR -> build folder.

    schedule: "greedy" or "stream" (None: DEFAULT_SCHEDULE, "stream");
    tokens_per_step: tokens per group in a token loop (more scratch, fewer kernel calls); None: 2 where that
    costs no arena, else 1 (with_tokens_per_step);
    calib_percentile: None for min/max ranges, or P to clip each range to its P and 100 - P percentiles;
    optimize: "auto", "speed" or "size": what the build's code is optimised for (optimize.py).
    """
    if is_prequantised(float_graph):  # an int8 .tflite: its own quantisation, nothing to calibrate
        return compile_prequantised(float_graph, board, out, calib, rounding, schedule, tokens_per_step, force,
                                    optimize)
    schedule = DEFAULT_SCHEDULE if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    if tokens_per_step is not None and (isinstance(tokens_per_step, bool) or int(tokens_per_step) != tokens_per_step
                                        or tokens_per_step < 1):
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
    qgraph, plan = plan_graph(float_graph, calib, rounding, schedule, tokens_per_step, tick, calib_percentile,
                              optimize)
    in_q = qgraph.tensor(qgraph.inputs[0]).quant
    vectors = quantize_array(calib[:NUM_TEST_VECTORS], in_q.scalar_scale, in_q.scalar_zero_point)
    return write_build(qgraph, plan, board, Path(out), vectors, force=force)


def plan_graph(float_graph: Graph, calib: np.ndarray, rounding: str = "double", schedule: str | None = None,
               tokens_per_step: int | None = None, tick: Callable[[int], None] | None = None,
               percentile: float | None = None, optimize: str = "auto") -> tuple[Graph, MemoryPlan]:
    """Calibrate, quantise, schedule and plan: the quantised graph as it will run, and its arena."""
    schedule = DEFAULT_SCHEDULE if schedule is None else schedule
    ranges = calibrate(float_graph, calib, tick, percentile)
    quantised = quantize_graph(float_graph, ranges, rounding)
    goal = choose_goal(constant_bytes(quantised), optimize)

    def planned(tps: int) -> tuple[Graph, MemoryPlan]:
        g = schedule_graph(quantised, schedule, tps, goal=goal)
        return g, plan_memory(g, kernel_scratch(g), in_place=schedule == "stream")

    return with_tokens_per_step(planned, schedule, tokens_per_step)


def with_tokens_per_step(planned: Callable[[int], tuple[Graph, MemoryPlan]], schedule: str | None,
                         tokens_per_step: int | None) -> tuple[Graph, MemoryPlan]:
    """planned(G) for the user's G; without one, G = 2 (PAIRED_TOKENS_PER_STEP) unless that plan's arena is larger
    than G = 1's (token loops only: greedy has none)."""
    if tokens_per_step is not None:
        return planned(int(tokens_per_step))
    if (schedule or DEFAULT_SCHEDULE) != "stream":
        return planned(1)
    single, paired = planned(1), planned(PAIRED_TOKENS_PER_STEP)
    return paired if paired[1].arena_bytes <= single[1].arena_bytes else single


def write_build(qgraph: Graph, plan: MemoryPlan, board: Board, out: Path, vectors: np.ndarray,
                force: bool = False, extra_files: dict[str, Path] | None = None) -> CompileResult:
    """Check the budget (BudgetError before anything is written), then the C project, test vectors, report.

    All of it goes into a temporary sibling of `out` that takes its place only when complete (outdir.py):
    a failed or interrupted compile leaves `out` as it was. `out` must be new, empty or a hydra-edge build;
    force: write into another non-empty folder too (only the build's own files are replaced).
    extra_files: name in the build -> file to copy there.
    """
    fit = check_fits(qgraph, plan, board)
    source = str(qgraph.meta.get("source_file", "")) or None
    with staged_build(out, source, force) as stage:
        emit_project(qgraph, plan, stage, board)
        np.save(stage / TEST_VECTORS, vectors)
        if board.raw.get("device_test_vector"):
            write_test_vector(stage, qgraph, vectors[0])
        report = build_report(qgraph, plan)
        report["board"] = board.name
        if board.ram_bytes is not None or board.flash_bytes is not None:
            report["budget"] = fit.as_dict(board)
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        plot_memory(report, stage / MEMORY_PLOT)
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, stage / name)
    return CompileResult(qgraph, plan, report, Path(out))


def is_prequantised(graph: Graph) -> bool:
    """A graph that arrives quantised (an int8 .tflite: tfl_* ops with TFLM's prepared attrs)."""
    return graph.meta.get("frontend") == "tflite"


class PrequantisedWarning(UserWarning):
    """An option that does nothing for an already-quantised model (an int8 .tflite)."""


def compile_prequantised(
    qgraph: Graph,
    board: Board,
    out: str | Path,
    calib: np.ndarray | None = None,
    rounding: str = "double",
    schedule: str | None = None,
    tokens_per_step: int | None = None,
    force: bool = False,
    optimize: str = "auto",
) -> CompileResult:
    """An int8 .tflite graph -> build folder: no lowering, calibration or quantisation (the file's own).

    Calibration data is ignored with a warning (the file's scales are kept). By default (schedule None or
    "stream") each Hydra core written with tfl ops is lifted into one tfl_hydra_attention node with the same
    bits (passes/lift_tfl_hydra.py), each softmax attention core into one tfl_softmax_attention node
    (passes/lift_tfl_softmax.py: query rows against k and v whole) and the graph is scheduled as token loops (passes/stream.py: the row-local
    tfl ops, the legalised native ones and the core's two halves run token group by token group);
    schedule "greedy" keeps every op unfused (TFLM's own graph), op by op. Either way the nodes with a native
    twin of the same bits become native ops (passes/legalise_tfl.py), planned with in-place reuse where a
    kernel allows it (a RESHAPE is an alias, tfl_hydra_attention writes over q, k or v, an add over an operand).
    rounding "double" keeps the graph's rounding (TFLM's, from the frontend); "single" gives LiteRT's reference
    kernels (BUILTIN_REF), whose FULLY_CONNECTED rounds once while the other ops round as TFLM
    (frontend.tflite.litert_rounding). Each node's C params say its rounding (ops.node_rounding).
    """
    if calib is not None:
        warnings.warn("calibration data is ignored for an int8 .tflite: the model keeps its own quantisation",
                      PrequantisedWarning, stacklevel=3)
    if schedule not in (None, *SCHEDULES):
        raise ScheduleError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    if rounding not in ("double", "single"):
        raise ScheduleError(f"rounding must be 'double' or 'single', got {rounding!r}")
    if rounding == "single":  # LiteRT's reference kernels: FULLY_CONNECTED rounds once, the others as TFLM
        from .frontend.tflite import litert_rounding

        qgraph = litert_rounding(qgraph)
    if schedule != "greedy":  # the Hydra cores as one streaming op each, bit for bit the unfused ops
        from .passes.lift_tfl_hydra import lift_tfl_hydra
        from .passes.lift_tfl_softmax import lift_tfl_softmax

        qgraph = lift_tfl_softmax(lift_tfl_hydra(qgraph))
    qgraph = legalise_tfl(qgraph)  # FULLY_CONNECTED, 1x1 CONV_2D, ADD, MEAN over tokens: native kernels, TFLM's bits
    qgraph = tabulate_tfl(qgraph)  # LOGISTIC, TANH, RSQRT, QUANTIZE: 256-entry tables of TFLM's values
    goal = choose_goal(constant_bytes(qgraph), optimize)

    def planned(tps: int) -> tuple[Graph, MemoryPlan]:
        g = schedule_graph(qgraph, schedule or DEFAULT_SCHEDULE, tps, goal=goal)
        g.meta.setdefault("rounding", "double")  # TFLM's, unless the graph says otherwise
        plan = plan_memory(g, kernel_scratch(g), in_place=True)
        if g.meta["schedule"] == "stream":  # recomputed chains (a LayerNorm of tfl ops) only where they save RAM
            unchained = schedule_graph(qgraph, "stream", tps, chains=False, goal=goal)
            unchained.meta.setdefault("rounding", "double")
            unchained_plan = plan_memory(unchained, kernel_scratch(unchained), in_place=True)
            if unchained_plan.arena_bytes <= plan.arena_bytes:
                g, plan = unchained, unchained_plan
        return g, plan

    g, plan = with_tokens_per_step(planned, schedule, tokens_per_step)
    x = g.tensor(g.inputs[0])
    check_input_fits(g, board)  # before the test vectors (NUM_TEST_VECTORS inputs) are drawn
    rng = np.random.default_rng(0)  # seeded: extremes first, then random int8 inputs (drawn as int8)
    vectors = rng.integers(-128, 128, (NUM_TEST_VECTORS, *x.shape), dtype=np.int8)
    vectors[0], vectors[1] = -128, 127
    source = Path(str(g.meta.get("source_file", "")))
    extra = {}
    tflm_bits = all(node_rounding(n, g.meta["rounding"]) == "double" for n in qgraph.nodes)  # TFLM rounds twice
    if tflm_bits and source.is_file():  # validate also runs it on TFLite Micro (validate/tflm.py)
        from .validate.tflm import SOURCE_TFLITE

        extra[SOURCE_TFLITE] = source
    return write_build(g, plan, board, Path(out), vectors, force=force, extra_files=extra)


def schedule_graph(qgraph: Graph, schedule: str, tokens_per_step: int | None = None, chains: bool = True,
                   goal: CodeGoal | None = None) -> Graph:
    """The quantised graph as the schedule runs it: token loops for "stream" (`chains`: passes/stream.py's
    recomputed chains); meta records the choice and the code's goal (default: auto's for this graph)."""
    if schedule not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    g = schedule_token_loops(qgraph, tokens_per_step, chains) if schedule == "stream" else qgraph.copy()
    g.meta["schedule"] = schedule
    g.meta["tokens_per_step"] = int(tokens_per_step)
    g.meta.update((goal or choose_goal(constant_bytes(qgraph))).meta())
    return g


def compile_model(
    model_path: str | Path,
    board_name: str,
    out: str | Path,
    calib_path: str | Path | None = None,
    rounding: str = "double",
    progress: Progress | None = None,
    schedule: str | None = None,
    tokens_per_step: int | None = None,
    load_options: LoadOptions | None = None,
    force: bool = False,
    calib_samples: int | None = DEFAULT_MAX_SAMPLES,
    calib_percentile: float | None = None,
    optimize: str = "auto",
) -> CompileResult:
    """The model file -> build folder `out` (see write_build; force as there).

    calib_samples: read at most the first N samples of calib_path (load_calibration);
    calib_percentile, optimize: see compile_graph.
    """
    check_output(out, model_path, force)  # a bad -o before any work
    board = load_board(board_name)
    graph = load_model(model_path, load_options)
    check_input_fits(graph, board)  # an input over the board's RAM: refused before anything large is made
    if is_prequantised(graph):  # an int8 .tflite is already in its final op set
        calib = np.zeros((1,)) if calib_path else None  # only its presence matters: it is ignored, with a warning
        return compile_prequantised(graph, board, out, calib, rounding, schedule, tokens_per_step, force, optimize)
    graph = lower_to_ir(graph)
    calib = load_calibration(calib_path, graph, calib_samples) if calib_path else None
    return compile_graph(graph, board, out, calib, rounding, progress, schedule, tokens_per_step, force,
                         calib_percentile, optimize)


def load_build(folder: str | Path) -> tuple[dict, Graph]:
    return read_manifest(folder), load_graph(folder)
