"""The streaming schedule: fused Hydra blocks, in-place planning, the same bits as the greedy build and the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from c_build import block_params, build_runtime_lib
from hydra_edge import driver
from hydra_edge.codegen.emit_c import (
    kernel_scratch,
    runtime_sources,
)
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.ir.graph import IRError
from hydra_edge.ir.ops import BLOCK_ROLES, block_body
from hydra_edge.ops import check_shapes
from hydra_edge.ops.hydra_block import scratch_size as block_scratch_size
from hydra_edge.ir.serialize import load_graph, save_graph
from hydra_edge.memory.planner import (
    check_no_overlap,
    lower_bound,
    peak_bytes,
    plan_memory,
    scratch_name,
)
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.passes.stream import find_blocks, fuse_blocks
from hydra_edge.quant.calibrate import calibrate, load_calibration
from hydra_edge.quant.quantize import quantize_graph
from hydra_edge.reference.int_interp import run_int
from hydra_edge.targets import runner
from hydra_edge.boards import load_board
from hydra_edge.targets.budget import BudgetError
from hydra_edge.validate.bitexact import validate_build
from model_zoo import EXAMPLES, calibration_inputs, export_model
from test_end_to_end import SHAPES, _random_inputs

HOST = load_board("host")
LOWER_BOUND_FACTOR = 1.15


@pytest.fixture(scope="module")
def example_q():
    """The bundled example, quantised (unfused)."""
    graph = lower_to_ir(driver.load_model(EXAMPLES / "hydra_vit_cifar10.pt2"))
    return quantize_graph(graph, calibrate(graph, _example_calib(graph)))


def _example_calib(graph):
    return load_calibration(EXAMPLES / "calib_cifar10.npz", graph)[:32]  # the arena does not depend on the data


def _inputs(graph, n: int = 4, seed: int = 3) -> np.ndarray:
    shape = graph.tensor(graph.inputs[0]).shape
    return np.random.default_rng(seed).integers(-128, 128, (n, *shape), dtype=np.int8)


# -- the pass --------------------------------------------------------------------------------------


def test_fuse_blocks_replaces_each_block(example_q):
    before = [(n.name, n.op, list(n.inputs)) for n in example_q.nodes]
    fused = fuse_blocks(example_q)
    assert [(n.name, n.op, list(n.inputs)) for n in example_q.nodes] == before  # pure
    assert [n.op for n in fused.nodes] == ["patch_embed", "add", *["hydra_block"] * 4, "layernorm", "mean_pool", "linear"]
    check_shapes(fused)
    block = fused.nodes[2]
    assert block.name == "blocks.0" and block.outputs == ["add_2"] and block.inputs[0] == "add"
    assert block.attrs["tokens_per_step"] == 1 and block.attrs["residual_operands"] == [0, 0]
    body = block_body(block)
    assert list(body) == list(BLOCK_ROLES)
    assert [body[r].name for r in ("q", "fc1", "residual1")] == ["blocks.0.attn.q", "blocks.0.mlp.fc1", "add_1"]
    assert block.inputs[1:3] == ["blocks.0.norm1.gamma", "blocks.0.norm1.beta"]
    assert all(fused.tensor(n).is_constant for n in block.inputs[1:])
    # Bit for bit the unfused graph, every intermediate tensor included.
    for x in _inputs(example_q):
        a, b = run_int(example_q, x, keep_all=True), run_int(fused, x, keep_all=True)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_fused_graph_round_trips(example_q, tmp_path):
    fused = fuse_blocks(example_q, tokens_per_step=5)
    save_graph(fused, tmp_path)
    loaded = load_graph(tmp_path)
    check_shapes(loaded)
    assert loaded.nodes[2].attrs["tokens_per_step"] == 5
    assert json.dumps(loaded.nodes[2].attrs["body"][0]["name"]) == '"blocks.0.norm1"'
    x = _inputs(example_q, 1)[0]
    assert np.array_equal(run_int(loaded, x)[0], run_int(example_q, x)[0])


def test_residual_operands_are_normalised(example_q):
    """An add written branch + residual is fused with a = residual, its (z, M, shift) pairs swapped: same bits."""
    g = example_q.copy()
    add = next(n for n in g.nodes if n.name == "add_1")  # add(x, proj) in the graph
    add.inputs = add.inputs[::-1]
    for ka, kb in (("za", "zb"), ("ma", "mb"), ("sa", "sb")):
        add.attrs[ka], add.attrs[kb] = add.attrs[kb], add.attrs[ka]
    fused = fuse_blocks(g)
    block = fused.nodes[2]
    assert block.attrs["residual_operands"] == [1, 0]
    res1 = block_body(block)["residual1"]
    original = next(n for n in example_q.nodes if n.name == "add_1")
    assert res1.inputs == original.inputs and res1.attrs == original.attrs
    for x in _inputs(g, 2):
        assert np.array_equal(run_int(fused, x)[0], run_int(example_q, x)[0])


def test_a_block_whose_input_is_read_elsewhere_is_not_fused(example_q):
    g = example_q.copy()
    g.outputs = [*g.outputs, "add_4"]  # block 2's input, now a graph output: the block may not overwrite it
    assert len(find_blocks(g)) == 3
    assert "add_4" in [n.inputs[0] for n in fuse_blocks(g).nodes if n.op == "layernorm"]
    g = example_q.copy()
    g.nodes[-3].inputs[0] = "blocks.3.attn.v"  # the final norm reads an intermediate of block 3
    assert [b["norm1"].name for b in find_blocks(g)] == ["blocks.0.norm1", "blocks.1.norm1", "blocks.2.norm1"]


def test_tokens_per_step_is_capped_and_checked(example_q):
    assert fuse_blocks(example_q, tokens_per_step=10_000).nodes[2].attrs["tokens_per_step"] == 64
    with pytest.raises(ValueError, match="positive integer"):
        fuse_blocks(example_q, tokens_per_step=0)
    bad = fuse_blocks(example_q)
    ins = bad.nodes[2].inputs
    ins[3], ins[5] = ins[5], ins[3]  # q.weight and k.weight swapped: same shape, wrong roles
    with pytest.raises(IRError, match="is not the q constant #1"):
        check_shapes(bad)


def test_scratch_formula_matches_the_c_runtime(tmp_path_factory):
    lib = build_runtime_lib(tmp_path_factory.mktemp("rt"))
    for tokens in (1, 7, 25, 64, 576):
        for dim in (8, 27, 64, 160):
            for hidden in (16, 54, 100, 640):
                for tps in (1, 3, 25, 10_000):
                    p = block_params(tokens, dim, hidden, tps)
                    assert lib.hydra_block_s8_get_buffer_size(p) == block_scratch_size(tokens, dim, hidden, tps), \
                        (tokens, dim, hidden, tps)


def test_stream_plan_is_in_place_and_within_the_bound(example_q):
    fused = fuse_blocks(example_q)
    scratch = kernel_scratch(fused)
    plan = plan_memory(fused, scratch, in_place=True)
    check_no_overlap(plan)
    tokens = {plan.offset(n.outputs[0]) for n in fused.nodes if n.op in ("add", "hydra_block", "layernorm")}
    assert len(tokens) == 1  # the token buffer stays put: every block and the final norm run on it in place
    assert plan.buffer("add_8").alias_of == "add_6"
    assert scratch["blocks.0"] == block_scratch_size(64, 64, 128, 1) == plan.buffer(scratch_name("blocks.0")).size
    assert lower_bound(fused, scratch) <= peak_bytes(plan) <= plan.arena_bytes
    assert runtime_sources(fused) == ["hydra_requantize.c", "hydra_dot.c", "hydra_linear.c", "hydra_patch_embed.c",
                                      "hydra_layernorm.c", "hydra_lut.c", "hydra_attention.c", "hydra_add.c",
                                      "hydra_mean_pool.c", "hydra_block.c"]


# -- end to end ------------------------------------------------------------------------------------


def _both(cfg: HydraViTConfig, tmp_path, board=HOST, **kw):
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    calib = calibration_inputs(cfg)
    stream = driver.compile_graph(graph, board, tmp_path / "stream", calib, schedule="stream", **kw)
    greedy = driver.compile_graph(graph, board, tmp_path / "greedy", calib, schedule="greedy")
    return stream, greedy


@pytest.mark.parametrize("name", list(SHAPES))
def test_streamed_build_equals_reference_and_greedy(name, tmp_path):
    cfg = SHAPES[name]
    stream, greedy = _both(cfg, tmp_path)
    assert [n.op for n in stream.graph.nodes].count("hydra_block") == cfg.depth
    assert "hydra_block" not in [n.op for n in greedy.graph.nodes]
    inputs = np.concatenate([np.load(stream.folder / driver.TEST_VECTORS), _random_inputs(stream)])
    check = validate_build(stream.folder, stream.graph, inputs)
    assert check.ok, check.mismatches
    flat = inputs.reshape(len(inputs), -1)
    assert np.array_equal(runner.run(stream.folder, flat), runner.run(greedy.folder, flat))
    # The planner's figures: the streamed peak and arena within 1.15x of the lower bound, below greedy's arena.
    ram, gram = stream.report["ram"], greedy.report["ram"]
    assert (ram["schedule"], gram["schedule"]) == ("stream", "greedy")
    assert ram["lower_bound_bytes"] <= ram["peak_bytes"] <= ram["arena_bytes"]
    assert ram["arena_bytes"] <= LOWER_BOUND_FACTOR * ram["lower_bound_bytes"], ram
    assert ram["arena_bytes"] <= gram["arena_bytes"]  # equal when the input image is the peak (d20-t16)
    assert json.loads((stream.folder / "build.json").read_text())["schedule"] == "stream"


def test_tokens_per_step(tmp_path):
    cfg = SHAPES["d27-t25-depth2-mlp3"]  # 25 tokens: groups of 3 leave one token over
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    calib = calibration_inputs(cfg)
    x = _inputs(graph, 5).reshape(5, -1)
    outputs, scratch = [], []
    for tps in (1, 3, cfg.num_tokens):
        result = driver.compile_graph(graph, HOST, tmp_path / f"tps{tps}", calib, tokens_per_step=tps)
        block = next(n for n in result.graph.nodes if n.op == "hydra_block")
        assert block.attrs["tokens_per_step"] == tps and result.report["ram"]["tokens_per_step"] == tps
        size = result.plan.buffer(scratch_name(block.name)).size
        assert size == block_scratch_size(cfg.num_tokens, cfg.embed_dim, cfg.mlp_dim, tps)
        check = validate_build(result.folder, result.graph, x.reshape(5, *graph.tensor(graph.inputs[0]).shape))
        assert check.ok, (tps, check.mismatches)
        outputs.append(runner.run(result.folder, x))
        scratch.append(size)
    assert scratch[0] < scratch[1] < scratch[2]
    assert all(np.array_equal(outputs[0], y) for y in outputs[1:])


def test_bundled_example_streamed_arena_is_smaller(tmp_path, capsys):
    arenas = {}
    graph = lower_to_ir(driver.load_model(EXAMPLES / "hydra_vit_cifar10.pt2"))
    calib = _example_calib(graph)
    for schedule in ("greedy", "stream"):
        r = driver.compile_graph(graph, HOST, tmp_path / schedule, calib, schedule=schedule)
        ram = r.report["ram"]
        arenas[schedule] = ram["arena_bytes"]
        assert (r.folder / driver.MEMORY_PLOT).read_bytes()[:4] == b"\x89PNG"
        with capsys.disabled():
            print(f"\nbundled example, {schedule}: arena {ram['arena_bytes']:,} B, peak {ram['peak_bytes']:,} B, "
                  f"lower bound {ram['lower_bound_bytes']:,} B")
    assert arenas["stream"] < arenas["greedy"]
    assert arenas["greedy"] >= 2 * arenas["stream"]


def test_streamed_model_on_stm32_under_qemu(tmp_path):
    cfg = SHAPES["d48-t49-depth3-mlp4"]
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    result = driver.compile_graph(graph, load_board("stm32f746"), tmp_path / "build", calibration_inputs(cfg),
                                  schedule="stream", tokens_per_step=3)
    inputs = np.concatenate([np.load(result.folder / driver.TEST_VECTORS), _random_inputs(result, n=3)])
    check = validate_build(result.folder, result.graph, inputs)
    assert check.ok, check.mismatches
    measured = json.loads((result.folder / driver.REPORT_FILE).read_text())["measured"]
    assert measured["image"]["arena_bytes"] == result.plan.arena_bytes
    assert 0 < measured["stack_used_bytes"] < measured["stack_reserved_bytes"]


def test_not_fit_names_the_op_at_the_peak_and_a_suggestion(tmp_path):
    cfg = HydraViTConfig(image_size=64, patch_size=2, embed_dim=64, depth=1, mlp_ratio=4.0)  # 1024 tokens
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    calib = calibration_inputs(cfg, n=2)
    stm32 = load_board("stm32f746")
    # All 1024 tokens at once: [T, hidden] scratch, over the 320 KB.
    with pytest.raises(BudgetError) as err:
        driver.compile_graph(graph, stm32, tmp_path / "all", calib, tokens_per_step=cfg.num_tokens)
    message = str(err.value)
    assert "the model does not fit board stm32f746: RAM needs" in message and "bytes over" in message
    assert "the peak is at op blocks.0 (hydra_block)" in message
    assert "suggestion: fewer tokens per step (now 1024; --tokens-per-step 1 saves" in message
    assert "fewer tokens (now 1024" in message and "a smaller embedding dim (now 64" in message
    assert not (tmp_path / "all").exists()
    # One token per step fits.
    result = driver.compile_graph(graph, stm32, tmp_path / "one", calib)
    assert result.report["ram"]["arena_bytes"] < 100 * 1024
