"""codegen/emit_tfl.py tfl_defines: -DHYDRA_TFL_NO_<path> in a build's CPPFLAGS for each SIMD path of
runtime_c/src/tfl_fixedpoint.c's convolution and pool walks that no node of the graph takes (flash: the kernels of
the paths a model never runs are left out). The bits never depend on them.

- the models: which builds get which macros, and a build with them gives the reference's bits on the M7;
- each path the compiler says a node takes (CONV_GENERAL_OUTPUT: a multiplier above 1) is one the C takes: the
  single-operator models of test_tfl_conv_simd.py (which run every case with its build's macros: no node reaches a
  left-out path), one per set of paths, built again with one of their paths left out, fail with the kernel's
  HYDRA_ERR_ARG instead of reaching it;
- linear: HYDRA_LINEAR_RIGHT_ONLY (ops/linear.py c_defines).
Needs the cross toolchain and QEMU (.ci/run installs them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.boards import load_board
from hydra_edge.codegen.emit_tfl import PATHS_OF, TFL_PATHS, tfl_defines
from hydra_edge.frontend.tflite import tflite_from_bytes
from hydra_edge.passes.legalise_tfl import legalise_tfl
from hydra_edge.reference.int_interp import run_int
from hydra_edge.targets import runner
from hydra_edge.targets.host import RunError
from hydra_edge.validate.bitexact import validate_build
from test_tfl_conv_simd import CASES as SIMD_CASES
from test_tfl_conv_simd import _conv, _inputs
from test_tflite import _path
from tfl_single_op import single_op_model

BENCH_MODELS = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
ALL = {f"HYDRA_TFL_NO_{p}" for p in TFL_PATHS}
# test_tfl_conv_simd's cases, and a CONV_2D whose multipliers go above 1 (the general output stage)
CASES = {**SIMD_CASES, "conv3x3_same_s1_c8_o4_multiplier_above_1": _conv(
    (1, 6, 6, 8), 4, (3, 3), 1, "SAME", 3, seed=40, scales=np.geomspace(0.001, 4.0, 4))}


def _cppflags_defines(folder: Path) -> set[str]:
    line = next(line for line in (folder / "Makefile").read_text().splitlines() if line.startswith("CPPFLAGS"))
    return {flag[2:] for flag in line.split() if flag.startswith("-D")}


@pytest.mark.parametrize("model, optimize, taken", [
    # DEPTHWISE_CONV_2D dm 2 on 8 channels (quads_2 in the pixel walk), CONV_2D on 3 and on 16 channels, both pools
    (_path("tfl_small_cnn"), "speed", {"DEPTHWISE_QUADS_2", "DEPTHWISE_WALK", "CONV_WORD_WINDOW", "CONV_BYTE_WINDOW",
                                       "POOL_MAX", "POOL_AVERAGE"}),
    # the same for size (auto's choice for its 4 KB of constants): the 16-channel CONV_2D by the byte window too
    (_path("tfl_small_cnn"), "auto", {"DEPTHWISE_QUADS_2", "DEPTHWISE_WALK", "CONV_BYTE_WINDOW", "POOL_MAX",
                                      "POOL_AVERAGE"}),
    # DS-CNN: dm 64 on one input channel (row1), dm 1 on 64 channels, one average pool; its 1x1 convolutions are linear
    (BENCH_MODELS / "ds_cnn.tflite", "auto", {"DEPTHWISE_ROW1", "DEPTHWISE_DM1", "POOL_AVERAGE"}),
])
def test_models_leave_out_the_paths_they_never_take(model, optimize, taken, tmp_path):
    res = driver.compile_model(model, "stm32f746", tmp_path / "build", optimize=optimize)
    defines = _cppflags_defines(res.folder)
    assert {d for d in defines if d.startswith("HYDRA_TFL_NO_")} == ALL - {f"HYDRA_TFL_NO_{p}" for p in taken}
    xs = np.random.default_rng(0).integers(-128, 128, (3, *res.graph.tensor(res.graph.inputs[0]).shape)).astype(np.int8)
    assert validate_build(res.folder, res.graph, xs).ok


def _representatives() -> dict[str, tuple[str, frozenset[str]]]:
    """One case of CASES per set of paths its node takes (not the ones legalised to linear): case -> paths."""
    seen: dict[frozenset[str], str] = {}
    for case in sorted(CASES):
        op, inputs, outputs, options = CASES[case]
        graph = legalise_tfl(tflite_from_bytes(single_op_model(op, inputs, outputs, options), f"{case}.tflite"))
        (node,) = graph.nodes
        if node.op in PATHS_OF:
            seen.setdefault(frozenset(p for p in TFL_PATHS if f"HYDRA_TFL_NO_{p}" not in tfl_defines(graph)), case)
    return {case: paths for paths, case in seen.items()}


REPRESENTATIVES = _representatives()


@pytest.mark.parametrize("case", sorted(REPRESENTATIVES))
def test_each_path_said_taken_is_taken(case, tmp_path):
    op, inputs, outputs, options = CASES[case]
    graph = tflite_from_bytes(single_op_model(op, inputs, outputs, options), f"{case}.tflite")
    paths = REPRESENTATIVES[case]
    res = driver.compile_prequantised(graph, load_board("stm32f746"), tmp_path / "build", optimize="speed")
    assert paths and set(tfl_defines(res.graph)) == ALL - {f"HYDRA_TFL_NO_{p}" for p in paths}
    assert {d for d in _cppflags_defines(res.folder) if d.startswith("HYDRA_TFL_NO_")} == set(tfl_defines(res.graph))
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=1)[:2]
    flat = xs.reshape(len(xs), -1)
    expected = np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])
    np.testing.assert_array_equal(runner.run(res.folder, flat).reshape(len(xs), -1), expected)
    for path in sorted(paths):
        with pytest.raises(RunError, match="kernel error"):
            runner.run(res.folder, flat, extra_cppflags=f"-DHYDRA_TFL_NO_{path}")


def test_linear_right_only_where_every_linear_rounds_twice_and_right_only(tmp_path):
    """ops/linear.py c_defines: -DHYDRA_LINEAR_RIGHT_ONLY (no general requantisation in hydra_linear.c) where every
    linear node rounds twice and takes right_only, not once one rounds once; the build with it gives the same bits
    on the M7, and a node it does not fit fails with HYDRA_ERR_ARG."""
    from hydra_edge.ops.linear import c_defines

    res = driver.compile_model(_path("tfl_tiny_mlp"), "stm32f746", tmp_path / "build")
    assert "HYDRA_LINEAR_RIGHT_ONLY" in _cppflags_defines(res.folder)
    xs = np.random.default_rng(0).integers(-128, 128, (3, *res.graph.tensor(res.graph.inputs[0]).shape)).astype(np.int8)
    assert validate_build(res.folder, res.graph, xs).ok
    single = res.graph.copy()
    node = next(n for n in single.nodes if n.op == "linear")
    node.attrs["rounding"] = "single"
    assert "HYDRA_LINEAR_RIGHT_ONLY" not in c_defines(single)
    model_c = res.folder / "model.c"
    text = model_c.read_text()
    assert ".single_rounding = 0" in text
    model_c.write_text(text.replace(".single_rounding = 0", ".single_rounding = 1", 1))
    with pytest.raises(RunError, match="kernel error"):
        runner.run(res.folder, xs.reshape(len(xs), -1))
