"""Bounded resources: a big graph compiles in linear time, a huge input is refused before anything big is
allocated, test vectors are drawn as int8, and file-given names reach the build cleaned."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import onnx
import pytest
from cli_helpers import assert_clean_error, invoke
from hydra_edge import driver
from hydra_edge.passes import canonicalize as canon_mod
from hydra_edge.passes import lift_hydra as hydra_mod
from hydra_edge.passes import lift_softmax as softmax_mod
from hydra_edge.passes import lower as lower_mod
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.targets.budget import BudgetError
from onnx import TensorProto, helper, numpy_helper
from tfl_single_op import TensorSpec, single_op_model


def _chain_onnx(path, blocks: int, d: int = 8) -> int:
    """Conv patch embedding, then `blocks` x (MatMul, Add bias, Add residual), then a mean: built by hand."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((d, 3, 2, 2)).astype(np.float32) * 0.3, "conv_w"),
            numpy_helper.from_array(np.zeros(d, np.float32), "conv_b"),
            numpy_helper.from_array(np.array([1, d, 4], np.int64), "shape"),
            numpy_helper.from_array(np.eye(d, dtype=np.float32) * 0.5, "w"),
            numpy_helper.from_array(np.full((d,), 0.01, np.float32), "b"),
            numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="patch", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Reshape", ["c", "shape"], ["f"], name="flat"),
             helper.make_node("Transpose", ["f"], ["x0"], name="tr", perm=[0, 2, 1])]
    x = "x0"
    for i in range(blocks):
        nodes += [helper.make_node("MatMul", [x, "w"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"m{i}", "b"], [f"a{i}"], name=f"add{i}"),
                  helper.make_node("Add", [f"a{i}", x], [f"r{i}"], name=f"res{i}")]
        x = f"r{i}"
    nodes.append(helper.make_node("ReduceMean", [x, "axes"], ["y"], name="pool", keepdims=0))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, d])], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return len(nodes)


def _counting(monkeypatch, module, name, counts):
    real = getattr(module, name)

    def counted(*args, **kwargs):
        counts[f"{module.__name__}.{name}"] = counts.get(f"{module.__name__}.{name}", 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_big_onnx_graph_passes_are_linear(tmp_path, monkeypatch):
    """A 3,000-node chain: every pass builds its producer/reader maps a bounded number of times (lift_softmax
    built a matcher per node: quadratic, minutes at 20,000 nodes), and lowering names stay cheap."""
    path = tmp_path / "chain.onnx"
    n = _chain_onnx(path, 1000)
    assert n > 3000
    graph = driver.load_model(path)
    counts: dict[str, int] = {}
    for module in (softmax_mod, hydra_mod, lower_mod):
        for name in ("producers", "consumers"):
            _counting(monkeypatch, module, name, counts)
    _counting(monkeypatch, canon_mod, "consumers", counts)
    matchers = []
    real_init = softmax_mod._Matcher.__init__
    monkeypatch.setattr(softmax_mod._Matcher, "__init__", lambda self, g: (matchers.append(1), real_init(self, g))[1])
    fresh_probes = []
    real_fresh = lower_mod._Lowerer.fresh

    def fresh(self, base):
        name = real_fresh(self, base)
        fresh_probes.append(self.suffix.get(base, 0) - fresh_probes_start.get(base, 0))
        fresh_probes_start[base] = self.suffix.get(base, 0)
        return name

    fresh_probes_start: dict[str, int] = {}
    monkeypatch.setattr(lower_mod._Lowerer, "fresh", fresh)
    lowered = lower_to_ir(graph)
    assert sum(1 for nd in lowered.nodes if nd.op == "linear") == 1000
    assert len(matchers) <= 1
    assert all(c <= 4 for c in counts.values()), counts
    # each fresh name resumes where its base stopped: the suffixes probed over the pass add up to O(names)
    assert sum(fresh_probes) <= 2 * len(fresh_probes) + 10


def test_planning_a_long_chain_compares_only_buffers_alive_together(tmp_path, monkeypatch):
    """Placement and the overlap check look at the buffers live at the same steps, not at every pair: on a
    3,000-node chain they read a buffer's end a bounded number of times per buffer (it was every pair:
    millions here, an hour at 20,000 nodes)."""
    from hydra_edge.codegen.report import build_report
    from hydra_edge.memory import planner

    path = tmp_path / "chain.onnx"
    _chain_onnx(path, 1000)
    graph = lower_to_ir(driver.load_model(path))
    calib = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    reads = [0]
    real_end = planner.Buffer.end

    def counted_end(self):
        reads[0] += 1
        return real_end.fget(self)

    monkeypatch.setattr(planner.Buffer, "end", property(counted_end))
    qgraph, plan = driver.plan_graph(graph, calib, schedule="greedy")  # op by op: 3,000 buffers
    planner.check_no_overlap(plan)
    assert len(plan.buffers) > 2000
    assert reads[0] <= 20 * len(plan.buffers), f"{reads[0]:,} reads of Buffer.end for {len(plan.buffers):,} buffers"
    ram = build_report(qgraph, plan)["ram"]
    assert 0 < ram["lower_bound_bytes"] <= ram["peak_bytes"] <= ram["arena_bytes"]


def test_softmax_lift_keeps_one_matcher_across_lifts(monkeypatch):
    """Several attentions in one graph: the matcher is made once and updated, and each one still lifts."""
    import torch
    from hydra_edge.frontend.module import from_module
    from torch import nn

    class Attn(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.heads = heads

        def forward(self, x):
            b, t, d = x.shape
            h = self.heads
            q = self.q(x).reshape(b, t, h, d // h).transpose(1, 2)
            k = self.k(x).reshape(b, t, h, d // h).transpose(1, 2)
            v = self.v(x).reshape(b, t, h, d // h).transpose(1, 2)
            p = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)
            return x + (p @ v).transpose(1, 2).reshape(b, t, d)

    torch.manual_seed(0)
    model = nn.Sequential(*[Attn() for _ in range(6)]).eval()
    graph = from_module(model, torch.zeros(1, 4, 8))
    matchers = []
    real_init = softmax_mod._Matcher.__init__
    monkeypatch.setattr(softmax_mod._Matcher, "__init__", lambda self, g: (matchers.append(1), real_init(self, g))[1])
    lifted = softmax_mod.lift_softmax(canon_mod.canonicalize(graph))
    lifted.validate()
    assert sum(1 for nd in lifted.nodes if nd.op == "softmax_attention") == 6
    assert len(matchers) == 1
    prod = {o: nd for nd in lifted.nodes for o in nd.outputs}
    order = {id(nd): i for i, nd in enumerate(lifted.nodes)}
    for nd in (nd for nd in lifted.nodes if nd.op == "softmax_attention"):
        assert [prod[i].op for i in nd.inputs] == ["linear"] * 3
        assert all(order[id(prod[i])] < order[id(nd)] for i in nd.inputs)


def _big_input_tflite(path, n: int = 4096) -> None:
    model = single_op_model("LOGISTIC", [TensorSpec((1, n, n), 0.1, 0)], [TensorSpec((1, n, n), 1 / 256, -128)])
    path.write_bytes(model)


def test_input_over_board_ram_is_refused_before_allocating(tmp_path):
    """A 456-byte .tflite with a 16M-element input: refused with the bytes over, Python's peak stays small
    (it took 1.45 GB: int64 test vectors and the plan before the budget check)."""
    path = tmp_path / "big.tflite"
    _big_input_tflite(path)
    assert path.stat().st_size < 4096
    tracemalloc.start()
    try:
        with pytest.raises(BudgetError, match=r"input alone needs 33,554,432 B .* 33,226,752 bytes over"):
            driver.compile_model(path, "stm32f746", tmp_path / "build")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"peak {peak:,} B"
    assert not (tmp_path / "build").exists()
    result = invoke("compile", path, "--board", "stm32f746", "-o", tmp_path / "build2")
    assert_clean_error(result, "input alone", "bytes over", "smaller input")


def test_test_vectors_are_drawn_as_int8(tmp_path):
    """A 1M-element input on the host (no RAM budget): the 8 vectors are drawn as int8 (8 MB), not int64 (64 MB)."""
    path = tmp_path / "mid.tflite"
    _big_input_tflite(path, 1024)
    tracemalloc.start()
    try:
        driver.compile_model(path, "host", tmp_path / "build")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60 << 20, f"peak {peak:,} B"


def test_control_characters_in_tflite_names(tmp_path):
    """NUL, control characters and comment ends in tensor names: cleaned before they reach C, JSON, .npz."""
    path = tmp_path / "names.tflite"
    model = single_op_model("LOGISTIC", [TensorSpec((1, 4, 4), 0.1, 0, name='in\x00put*/ "q\n#define X\x7f')],
                            [TensorSpec((1, 4, 4), 1 / 256, -128, name="out\x01\x1b[2J")])
    path.write_bytes(model)
    result = invoke("inspect", path)
    assert result.exit_code == 0, result.output
    assert "\x00" not in result.output and "\x1b" not in result.output
    out = tmp_path / "build"
    result = invoke("compile", path, "-o", out)
    assert result.exit_code == 0, result.output
    for name in ("model.c", "model.h", "build.json", "graph.json"):
        text = (out / name).read_bytes()
        bad = [b for b in text if b < 32 and b not in (9, 10, 13) or b == 127]
        assert not bad, f"{name} holds control bytes {sorted(set(bad))}"
    graph = json.loads((out / "graph.json").read_text())
    assert "in_put" in json.dumps(graph)
    for src in ("model.c", "model.h"):  # no comment is closed early by a name
        for line in (out / src).read_text().splitlines():
            if "/*" in line:
                assert line.count("*/") <= line.count("/*"), line
