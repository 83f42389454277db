"""`hydra-edge compile --optimize` (toolchain/hydra_edge/optimize.py): what the build's code is built for.

- auto chooses size for a model under AUTO_SIZE_BELOW bytes of constants and speed otherwise; the choice and why
  are in the report, its Makefile's OPT and leave-out macros follow it;
- a build for size and one for speed of the same model give the same bits on the M7 (the reference's), and the
  one for size is the smaller image (test_tfl_conv_simd.py runs the byte window on every CONV_2D of a size build);
- a bad value is a clear error.
Needs the cross toolchain and QEMU (.ci/run installs them).
"""

from __future__ import annotations

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.codegen.report import constant_bytes
from hydra_edge.optimize import AUTO_SIZE_BELOW, CodeGoal, OptimizeError, choose_goal
from hydra_edge.targets import runner
from hydra_edge.targets.elf import image_sizes
from hydra_edge.validate.bitexact import validate_build
from test_tflite import _path
from cli_helpers import assert_clean_error, invoke

SIZE_MACROS = {"HYDRA_LINEAR_ONE_ROW", "HYDRA_DOT4_NO_EVEN_BLOCKS", "HYDRA_TFL_NO_CONV_WORD_WINDOW"}


def _makefile(folder) -> tuple[str, set[str]]:
    """The Makefile's OPT and its -D macros."""
    lines = (folder / "Makefile").read_text().splitlines()
    opt = next(line.split("=", 1)[1].strip() for line in lines if line.startswith("OPT ="))
    cppflags = next(line for line in lines if line.startswith("CPPFLAGS"))
    return opt, {flag[2:] for flag in cppflags.split() if flag.startswith("-D")}


@pytest.mark.parametrize("model, goal", [("tfl_small_cnn", "size"), ("tfl_tiny_mlp", "size"),
                                         ("tfl_hydra_vit", "speed")])
def test_auto_chooses_by_the_models_constants(model, goal):
    constants = constant_bytes(driver.load_model(_path(model)))
    chosen = choose_goal(constants)
    assert chosen.goal == goal and chosen.reason.startswith(f"auto: {constants:,} B of model constants")
    assert (constants < AUTO_SIZE_BELOW) == (goal == "size")
    for explicit in ("speed", "size"):
        assert choose_goal(constants, explicit) == CodeGoal(explicit, f"--optimize {explicit}")


def test_a_bad_optimize_value_is_refused():
    with pytest.raises(OptimizeError, match="auto, speed, size"):
        choose_goal(1000, "fast")
    result = invoke("compile", _path("tfl_tiny_mlp"), "--optimize", "fast")
    assert_clean_error(result, "fast", "auto", "speed", "size")


@pytest.mark.parametrize("board", ["stm32f746", "jetson-orin"])
def test_size_and_speed_give_the_same_bits(board, tmp_path):
    """tfl_hydra_vit (token loops of two tokens: on the M7 linear's pairs in the speed build, one row at a time for
    size; any one-token call takes dot4's even blocks for speed and dot4_blocked for size; -O2 against -Os on both)
    both ways, against the reference (TFLite Micro's bits: tests/test_tflite.py); on the M7 the build for size is the
    smaller image."""
    xs = np.random.default_rng(3).integers(-128, 128, (3, 1, 3, 16, 16)).astype(np.int8)
    flash = {}
    for goal in ("speed", "size"):
        res = driver.compile_model(_path("tfl_hydra_vit"), board, tmp_path / goal, optimize=goal)
        assert res.report["code"]["optimize"] == goal
        opt, macros = _makefile(res.folder)
        assert opt == ("-Os" if goal == "size" else "-O2")
        assert (SIZE_MACROS - {"HYDRA_TFL_NO_CONV_WORD_WINDOW"} <= macros) == (goal == "size")
        shape = res.graph.tensor(res.graph.inputs[0]).shape
        assert validate_build(res.folder, res.graph, xs.reshape(len(xs), *shape)).ok
        if board == "stm32f746":
            flash[goal] = image_sizes(runner.build(res.folder))["flash_bytes"]
    assert board != "stm32f746" or flash["size"] < flash["speed"]


def test_the_cli_says_what_the_build_is_for(tmp_path):
    small = invoke("compile", _path("tfl_small_cnn"), "--board", "stm32f746", "-o", tmp_path / "auto")
    assert small.exit_code == 0, small.output
    assert "code   built for size (auto: " in small.output
    opt, macros = _makefile(tmp_path / "auto")
    assert opt == "-Os" and SIZE_MACROS <= macros
    fast = invoke("compile", _path("tfl_small_cnn"), "--board", "stm32f746", "--optimize", "speed",
                  "-o", tmp_path / "speed")
    assert fast.exit_code == 0, fast.output
    assert "code   built for speed (--optimize speed)" in fast.output
    opt, macros = _makefile(tmp_path / "speed")
    assert opt == "-O2" and not SIZE_MACROS & macros
