"""The optimised kernel paths on their own targets, bit for bit against the reference interpreter.

runtime_c/src/hydra_dot.c has an SXTB16/SMLAD path (Cortex-M7), a NEON path (armv8-a, Jetson Nano)
and an SDOT path (armv8.2-a+dotprod, Jetson Orin) beside the portable loop the host tests run. Here
a linear layer is compiled for each board and run there (QEMU) on lengths that exercise every
unrolled step and every tail (K below 4, K = 8m + 4, K = 16m + r with odd r), rows that start at
every byte offset (odd K), and the extreme operands: inputs and weights of all -128 or all 127, so
every product is +-2^14. Each weight row is requantised twice, once at a scale fit for random
operands and once at one that maps K * 2^14 into int8, so neither kind of input is hidden by
saturation; the odd row count leaves one row to hydra_dot_s8 after hydra_dot2_s8's pairs. Needs the
cross toolchains and QEMU (.ci/run installs them).
"""

from __future__ import annotations


import c_build
import numpy as np
import pytest
from hydra_edge.codegen.emit_c import emit_project, kernel_scratch
from hydra_edge.ir.graph import Graph, Node
from hydra_edge.memory.planner import plan_memory
from hydra_edge.boards import load_board
from hydra_edge.targets import runner
from hydra_edge.targets.icount import PORTABLE_CPPFLAGS
from hydra_edge.validate.bitexact import reference_outputs, validate_build
from test_kernels import act, inputs_for, sensible

BOARDS = ["stm32f746", "jetson-nano", "jetson-orin"]
LENGTHS = [3, 12, 29, 67, 130]
TOKENS = 3


def weight_rows(rng: np.random.Generator, k: int) -> np.ndarray:
    """Random rows, constant -128 and 127 rows and an alternating one."""
    alternating = np.where(np.arange(k) % 2 == 0, -128, 127)
    return np.stack([rng.integers(-128, 128, k), rng.integers(-128, 128, k), np.full(k, -128),
                     np.full(k, 127), alternating]).astype(np.int8)


def linear_graph(rng: np.random.Generator, k: int, zx: int, tokens: int = TOKENS) -> Graph:
    w = weight_rows(rng, k)
    w = np.concatenate([w, w, w[:1]])  # the same rows at two scales, and an odd count (a row without a pair)
    n = len(w)
    fine, coarse = sensible(np.sqrt(k) * 75 * 73), sensible(k * 2**14)
    shift = np.array([fine] * 5 + [coarse] * 5 + [fine], np.int32)
    g = Graph(meta={"rounding": "double"})
    x = act(g, "x", (tokens, k), zx)
    g.add_constant("w", w)
    g.add_constant("b", rng.integers(-50, 51, n).astype(np.int32))
    y = act(g, "y", (tokens, n), 3)
    attrs = {"multiplier": np.full(n, 2**30 + 12345, np.int32), "shift": shift, "out_zp": np.int32(3)}
    g.add_node(Node("fc", "linear", [x, "w", "b"], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    return g


@pytest.mark.parametrize("board", BOARDS)
def test_dot_paths_on_target(board, tmp_path):
    rng = np.random.default_rng(7)
    for k in LENGTHS:
        g = linear_graph(rng, k, zx=-5)
        folder = tmp_path / f"k{k}"
        emit_project(g, plan_memory(g, kernel_scratch(g)), folder, board)
        assert g.tensor("y").shape == (TOKENS, 11)
        xs = inputs_for(rng, (TOKENS, k), -5)
        result = validate_build(folder, g, xs)
        assert result.ok, (board, k, result.mismatches)
        assert result.bytes_compared == xs.shape[0] * TOKENS * 11
        # The portable loop on the same target (what `hydra-edge bench --portable-kernels` builds): another
        # image, the same bytes.
        image = runner.build(folder).read_bytes()
        portable = runner.run(folder, xs.reshape(len(xs), -1), extra_cppflags=PORTABLE_CPPFLAGS)
        assert runner.build(folder, extra_cppflags=PORTABLE_CPPFLAGS).read_bytes() != image, (board, k)
        assert np.array_equal(portable, reference_outputs(g, xs).reshape(portable.shape)), (board, k)


@pytest.mark.parametrize("board", BOARDS)
def test_dot_paths_compile_strict(board, tmp_path):
    """The target paths under the host tests' strictest warnings, with the board's compiler and flags."""
    proc = c_build.compile_strict(load_board(board), "hydra_dot.c", tmp_path / "dot.o")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_linear_token_pairs_on_m7(rounding, tmp_path):
    """The M7's two-token path (hydra_dot_pair2_q15's LDM/SMLAD loop, the per-channel pair outputs, clamp_row's
    SSUB8/SEL activation clamp): odd token counts (a token left alone), N % 4 rows after the blocks, K % 4 tail
    columns, K at the pair path's bound (128) and past it (129), fused clamps, both roundings, against the reference
    and the portable build."""
    rng = np.random.default_rng(17)
    for k, (lo, hi) in [(3, (-128, 127)), (4, (0, 127)), (29, (-20, 50)), (64, (-128, 127)), (67, (0, 6)),
                        (128, (-128, 127)), (129, (0, 127)), (256, (-5, 127))]:
        g = linear_graph(rng, k, zx=7, tokens=5)
        g.meta["rounding"] = rounding
        g.nodes[0].attrs.update(act_min=lo, act_max=hi)
        folder = tmp_path / f"k{k}"
        emit_project(g, plan_memory(g, kernel_scratch(g)), folder, "stm32f746")
        assert "right_only = 1" in (folder / "model.c").read_text().replace(".right_only", "right_only")
        xs = inputs_for(rng, (5, k), 7)
        result = validate_build(folder, g, xs)
        assert result.ok, (k, lo, hi, result.mismatches)
        portable = runner.run(folder, xs.reshape(len(xs), -1), extra_cppflags=PORTABLE_CPPFLAGS)
        assert np.array_equal(portable, reference_outputs(g, xs).reshape(portable.shape)), k
