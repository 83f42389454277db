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


@pytest.mark.parametrize("source", ["hydra_dot.c", "hydra_linear.c"])
@pytest.mark.parametrize("board", BOARDS)
def test_dot_paths_compile_strict(board, source, tmp_path):
    """The target paths (the dot products, linear's token pairs and output stages) under the host tests' strictest
    warnings, with the board's compiler and flags."""
    proc = c_build.compile_strict(load_board(board), source, tmp_path / "kernel.o")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_linear_token_pairs_on_m7(rounding, tmp_path):
    """The M7's two-token path (hydra_linear.c's LDM/SMLAD pair loop, the per-channel pair outputs, hydra_clamp_row_s8's
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


def channel_graph(rng: np.random.Generator, k: int, n: int, tokens: int, zy: int, rounding: str,
                  clamp: tuple[int, int]) -> Graph:
    """A linear layer whose channels all differ: random multipliers in [2^30, 2^31), shifts from 0 to 3 below the
    sensible one (a rounding shift of 1 included), one channel of small weights with shift 0 (no rounding shift), the
    output zero point at an end of int8, random biases."""
    w = rng.integers(-128, 128, (n, k))
    w[1] = rng.integers(-1, 2, k)  # shift 0 maps a small accumulator into int8
    fine = sensible(np.sqrt(k) * 75 * 73)
    shift = np.clip(fine - rng.integers(0, 4, n), -31, 0)
    shift[1], shift[2] = 0, -1
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (tokens, k), -3)
    g.add_constant("w", w.astype(np.int8))
    g.add_constant("b", rng.integers(-3000, 3001, n).astype(np.int32))
    y = act(g, "y", (tokens, n), zy)
    attrs = {"multiplier": rng.integers(2**30, 2**31, n).astype(np.int32), "shift": shift.astype(np.int32),
             "out_zp": np.int32(zy), "act_min": clamp[0], "act_max": clamp[1]}
    g.add_node(Node("fc", "linear", [x, "w", "b"], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    return g


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_linear_pair_channels_on_m7(rounding, tmp_path):
    """The M7's token pairs with every channel's multiplier, shift and bias its own (a channel's output stage cannot
    take its neighbour's), shift 0 and -1, both ends of the zero point (2 zy + 1 joins the rounding), K over 4 groups
    (K = 16m), one to three groups past them (each entry into the four-group loop) and 1 to 3 tail columns, N % 4 of
    0 and 3, odd and even token counts, clamps; against the reference and the portable build."""
    rng = np.random.default_rng(23)
    cases = [(16, 8, 4, 127, (-128, 127)), (20, 11, 3, -128, (-128, 127)), (24, 12, 5, 127, (0, 127)),
             (28, 8, 2, -128, (-128, 127)), (40, 11, 4, 5, (-20, 90)), (64, 16, 6, -128, (-128, 127)),
             (66, 9, 5, 127, (-128, 127)), (125, 8, 4, -7, (0, 6)), (128, 12, 7, 127, (-128, 127))]
    for k, n, tokens, zy, clamp in cases:
        g = channel_graph(rng, k, n, tokens, zy, rounding, clamp)
        folder = tmp_path / f"k{k}"
        emit_project(g, plan_memory(g, kernel_scratch(g)), folder, "stm32f746")
        assert "right_only = 1" in (folder / "model.c").read_text().replace(".right_only", "right_only")
        xs = inputs_for(rng, (tokens, k), -3)
        result = validate_build(folder, g, xs)
        assert result.ok, (k, n, tokens, result.mismatches)
        ref = reference_outputs(g, xs)
        assert len(np.unique(ref)) > min(16, (clamp[1] - clamp[0]) // 2), k  # the outputs are not all saturated
        portable = runner.run(folder, xs.reshape(len(xs), -1), extra_cppflags=PORTABLE_CPPFLAGS)
        assert np.array_equal(portable, ref.reshape(portable.shape)), k
