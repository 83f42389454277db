"""The streaming schedule: token loops over the row-local regions, in-place planning, the same bits as the
greedy build and the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.codegen.emit_c import kernel_scratch, runtime_sources
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.ir.graph import IRError
from hydra_edge.ir.serialize import load_graph, save_graph
from hydra_edge.memory.loop_plan import plan_token_loop
from hydra_edge.memory.planner import check_no_overlap, lower_bound, peak_bytes, plan_memory, scratch_name
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.ops import check_shapes
from hydra_edge.ops.token_loop import body_nodes
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.passes.stream import schedule_token_loops, split_hydra_attention
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


def _quantised(model: str, calib: str):
    graph = lower_to_ir(driver.load_model(EXAMPLES / model))
    return quantize_graph(graph, calibrate(graph, load_calibration(EXAMPLES / calib, graph)[:32]))


@pytest.fixture(scope="module")
def example_q():
    """The bundled Hydra example, quantised (op by op)."""
    return _quantised("hydra_vit_cifar10.pt2", "calib_cifar10.npz")


@pytest.fixture(scope="module")
def searched_q():
    """The searched stm32f746 example (softmax attention), quantised (op by op)."""
    return _quantised("searched_stm32f746.pt2", "searched_stm32f746_calib.npz")


def _inputs(graph, n: int = 4, seed: int = 3) -> np.ndarray:
    shape = graph.tensor(graph.inputs[0]).shape
    return np.random.default_rng(seed).integers(-128, 128, (n, *shape), dtype=np.int8)


def _loops(graph) -> list:
    return [n for n in graph.nodes if n.op == "token_loop"]


def _same_bits(a_graph, b_graph, n: int = 3) -> None:
    """Every tensor both graphs compute, bit for bit (a loop's intermediates included)."""
    for x in _inputs(a_graph, n):
        a, b = run_int(a_graph, x, keep_all=True), run_int(b_graph, x, keep_all=True)
        assert a.keys() <= b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)


# -- the pass --------------------------------------------------------------------------------------


def test_a_hydra_block_becomes_its_two_passes_over_the_tokens(example_q):
    before = [(n.name, n.op, list(n.inputs)) for n in example_q.nodes]
    g = schedule_token_loops(example_q)
    assert [(n.name, n.op, list(n.inputs)) for n in example_q.nodes] == before  # pure
    check_shapes(g)
    # the position add on whole tensors (its output is kept for the residual: nothing to stream), then per block
    assert [n.op for n in g.nodes] == ["patch_embed", "add", *["token_loop"] * 8, "linear"]
    first, second = _loops(g)[:2]
    # pass 1: k, v and the attention state; pass 2: the rest of the block, LN1 recomputed, in place on x
    assert [s.op for s in body_nodes(first)] == ["layernorm", "linear", "linear", "hydra_kv_state"]
    assert first.outputs == ["blocks.0.attn.kv"] and g.tensor("blocks.0.attn.kv").dtype == "int32"
    assert [s.name for s in body_nodes(second)] == [
        "blocks.0.norm1", "blocks.0.attn.q", "blocks.0.attn", "blocks.0.attn.proj", "add_1", "blocks.0.norm2",
        "blocks.0.mlp.fc1", "gelu", "blocks.0.mlp.fc2", "add_2"]
    assert second.outputs == ["add_2"] and "blocks.0.attn.kv" in second.inputs
    last = _loops(g)[-1]
    assert [s.op for s in body_nodes(last)][-2:] == ["layernorm", "mean_pool"] and last.outputs == ["mean"]
    assert all(n.attrs["tokens"] == 64 and n.attrs["tokens_per_step"] == 1 for n in _loops(g))
    _same_bits(example_q, g)


def test_softmax_attention_keeps_k_and_v_and_streams_the_rest(searched_q):
    g = schedule_token_loops(searched_q)
    check_shapes(g)
    kv_loop, rest = _loops(g)[:2]
    assert kv_loop.outputs == ["blocks.0.attn.k", "blocks.0.attn.v"]  # kept whole: every query reads them
    assert "blocks.0.attn.q" not in [o for n in g.nodes for o in n.outputs]  # q: one row at a time
    assert [s.op for s in body_nodes(rest)][:3] == ["layernorm", "linear", "softmax_attention"]
    assert {"blocks.0.attn.k", "blocks.0.attn.v"} <= set(rest.inputs)
    _same_bits(searched_q, g)
    plan = plan_memory(g, kernel_scratch(g), in_place=True)
    check_no_overlap(plan)
    # the searched model's arena: 31,232 B op by op, 20,384 B with K and V kept and the rest streamed
    assert plan.arena_bytes <= 21 * 1024
    assert plan.arena_bytes <= LOWER_BOUND_FACTOR * lower_bound(g, kernel_scratch(g))


def test_split_hydra_attention_is_the_same_bits(example_q):
    g = split_hydra_attention(example_q)
    ops = [n.op for n in g.nodes]
    assert "hydra_attention" not in ops and ops.count("hydra_kv_state") == ops.count("hydra_apply") == 4
    _same_bits(example_q, g, n=2)


def test_token_loop_graph_round_trips(example_q, tmp_path):
    g = schedule_token_loops(example_q, tokens_per_step=5)
    save_graph(g, tmp_path)
    loaded = load_graph(tmp_path)
    check_shapes(loaded)
    assert _loops(loaded)[0].attrs["tokens_per_step"] == 5
    assert json.dumps(_loops(loaded)[0].attrs["body"][0]["name"]) == '"blocks.0.norm1"'
    x = _inputs(example_q, 1)[0]
    assert np.array_equal(run_int(loaded, x)[0], run_int(example_q, x)[0])


def test_a_tensor_read_after_a_loop_is_kept_and_not_overwritten(example_q):
    g = example_q.copy()
    g.outputs = [*g.outputs, "add_4"]  # block 2's input, now a graph output: kept, and no loop writes over it
    s = schedule_token_loops(g)
    writer = next(n for n in s.nodes if "add_4" in n.outputs)
    assert writer.op == "token_loop"
    plan = plan_memory(s, kernel_scratch(s), in_place=True)
    check_no_overlap(plan)
    assert all(b.alias_of != "add_4" for b in plan.buffers)
    _same_bits(g, s, n=2)


def test_tokens_per_step_is_capped_and_checked(example_q):
    assert _loops(schedule_token_loops(example_q, tokens_per_step=10_000))[0].attrs["tokens_per_step"] == 64
    with pytest.raises(ValueError, match="positive integer"):
        schedule_token_loops(example_q, tokens_per_step=0)
    bad = schedule_token_loops(example_q)
    loop = _loops(bad)[1]
    loop.attrs["body"] = [loop.attrs["body"][2], *loop.attrs["body"][:2], *loop.attrs["body"][3:]]  # the attention before LN1 and q
    with pytest.raises(IRError, match="reads .*which neither the loop's inputs nor an earlier body node give"):
        check_shapes(bad)


def test_stream_plan_is_in_place_and_within_the_bound(example_q):
    g = schedule_token_loops(example_q)
    scratch = kernel_scratch(g)
    plan = plan_memory(g, scratch, in_place=True)
    check_no_overlap(plan)
    # the residual stream stays put: each block's second pass writes it over its input, row by row
    assert plan.buffer("add_4").alias_of == "add_2" and plan.buffer("add_6").alias_of == "add_4"
    for loop in _loops(g):
        layout = plan_token_loop(g, loop)
        check_no_overlap(layout.plan)
        assert scratch[loop.name] == layout.bytes == plan.buffer(scratch_name(loop.name)).size
        assert all(b.size <= 4 * 128 for b in layout.plan.buffers)  # one token's rows: G = 1, hidden 128
    assert lower_bound(g, scratch) <= peak_bytes(plan) <= plan.arena_bytes
    assert runtime_sources(g) == ["hydra_requantize.c", "hydra_dot.c", "hydra_linear.c", "hydra_patch_embed.c",
                                  "hydra_layernorm.c", "hydra_lut.c", "hydra_attention.c", "hydra_add.c",
                                  "hydra_mean_pool.c"]


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
    assert "token_loop" in [n.op for n in stream.graph.nodes]
    assert "token_loop" not in [n.op for n in greedy.graph.nodes]
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
        loops = _loops(result.graph)
        assert {n.attrs["tokens_per_step"] for n in loops} == {tps} and result.report["ram"]["tokens_per_step"] == tps
        size = max(result.plan.buffer(scratch_name(n.name)).size for n in loops)
        assert size == max(plan_token_loop(result.graph, n).bytes for n in loops)
        check = validate_build(result.folder, result.graph, x.reshape(5, *graph.tensor(graph.inputs[0]).shape))
        assert check.ok, (tps, check.mismatches)
        outputs.append(runner.run(result.folder, x))
        scratch.append(size)
    assert scratch[0] < scratch[1] < scratch[2]
    assert all(np.array_equal(outputs[0], y) for y in outputs[1:])


def test_bundled_example_streamed_arena_is_smaller(tmp_path, capsys):
    arenas = {}
    graph = lower_to_ir(driver.load_model(EXAMPLES / "hydra_vit_cifar10.pt2"))
    calib = load_calibration(EXAMPLES / "calib_cifar10.npz", graph)[:32]  # the arena does not depend on it
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
    assert "(token_loop)" in message.split("the peak is at op")[1].split("\n")[0]
    assert "suggestion: fewer tokens per step (now 1024" in message
    assert "fewer tokens (now 1024" in message and "a smaller embedding dim (now 64" in message
    assert not (tmp_path / "all").exists()
    # One token per step fits.
    result = driver.compile_graph(graph, stm32, tmp_path / "one", calib)
    assert result.report["ram"]["arena_bytes"] < 100 * 1024
