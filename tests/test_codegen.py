"""The C emitter, the host board and the build report on small hand-made int8 graphs."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
from hydra_edge.codegen.emit_c import (
    RUNTIME_DIR,
    CodegenError,
    emit_project,
    kernel_scratch,
)
from hydra_edge.codegen.report import build_report, format_report
from hydra_edge.ir.graph import Graph, Node, QuantParams, Tensor
from hydra_edge.ir.serialize import load_graph
from hydra_edge.memory.planner import plan_memory
from hydra_edge.targets import host
from hydra_edge.boards import BoardError, list_boards, load_board


def qmul(real: float) -> tuple[int, int]:
    """A real multiplier as (M, shift), docs/numerics.md "Multipliers"."""
    if real == 0:
        return 0, 0
    f, e = math.frexp(real)
    m = int(math.floor(abs(f) * 2**31 + 0.5))
    if m == 2**31:
        m, e = 2**30, e + 1
    return (0, 0) if e < -31 else (m, e)


def act(g: Graph, name: str, shape: tuple[int, ...], scale: float, zp: int) -> str:
    g.add_tensor(Tensor(name, shape, "int8", QuantParams.per_tensor(scale, zp)))
    return name


def add_linear(g: Graph, rng, name: str, x: str, n: int, scale: float, zp: int, source: str = "") -> str:
    xt = g.tensor(x)
    k = xt.shape[-1]
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    s_w = rng.uniform(0.005, 0.02, n)
    bias = rng.integers(-5000, 5000, n) - xt.quant.scalar_zero_point * w.astype(np.int64).sum(axis=1)
    g.add_constant(f"{name}.weight", w, QuantParams(s_w, np.zeros(n, np.int32), axis=0))
    g.add_constant(f"{name}.bias", bias.astype(np.int32))
    ms = [qmul(xt.quant.scalar_scale * s / scale) for s in s_w]
    y = act(g, f"{name}.out", (*xt.shape[:-1], n), scale, zp)
    attrs = {
        "multiplier": np.array([m for m, _ in ms], np.int32),
        "shift": np.array([s for _, s in ms], np.int32),
        "out_zp": np.int32(zp),
    }
    g.add_node(Node(name, "linear", [x, f"{name}.weight", f"{name}.bias"], [y], attrs, source))
    return y


def tiny_graph(rounding: str = "double", seed: int = 0) -> Graph:
    """x -> linear -> lut (GELU table) -> add(residual x) -> mean_pool."""
    rng = np.random.default_rng(seed)
    T, D = 6, 10
    g = Graph(meta={"rounding": rounding})
    x = act(g, "input", (T, D), 0.05, -3)
    h = add_linear(g, rng, "blocks.0.fc", x, D, 0.08, 4, source="model.blocks[0].fc (hydra_vit.py:77)")
    # GELU table, as the quantiser computes it.
    s_g, z_g = 0.04, -20
    r = 0.08 * (np.arange(256) - 128 - 4)
    gelu = 0.5 * r * (1 + np.vectorize(math.erf)(r / math.sqrt(2)))
    table = np.clip(np.sign(gelu / s_g) * np.floor(np.abs(gelu / s_g) + 0.5) + z_g, -128, 127).astype(np.int8)
    g.add_constant("gelu.table", table)
    gl = act(g, "gelu.out", (T, D), s_g, z_g)
    g.add_node(Node("gelu", "lut", [h, "gelu.table"], [gl], {}, "model.blocks[0].act"))
    # Residual add, TFLite's scheme with left_shift 20.
    s_a, s_b, s_y = s_g, 0.05, 0.1
    tm = 2 * max(s_a, s_b)
    (ma, sa), (mb, sb), (my, sy) = qmul(s_a / tm), qmul(s_b / tm), qmul(tm / (2**20 * s_y))
    res = act(g, "residual", (T, D), s_y, 2)
    g.add_node(
        Node(
            "residual_add",
            "add",
            [gl, x],
            [res],
            {"left_shift": 20, "za": z_g, "ma": ma, "sa": sa, "zb": -3, "mb": mb, "sb": sb, "my": my, "sy": sy,
             "out_zp": 2},
        )
    )
    m, s = qmul(s_y / (T * 0.03))
    y = act(g, "pooled", (D,), 0.03, -1)
    g.add_node(Node("pool", "mean_pool", [res], [y], {"in_zp": 2, "multiplier": m, "shift": s, "out_zp": -1}))
    g.inputs, g.outputs = [x], [y]
    g.validate()
    return g


def linear_graph(rounding: str = "double") -> Graph:
    rng = np.random.default_rng(3)
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (5, 7), 0.05, 10)
    h = add_linear(g, rng, "fc1", x, 9, 0.1, -5)
    y = add_linear(g, rng, "fc2", h, 3, 0.2, 0)
    g.inputs, g.outputs = [x], [y]
    return g


def reference(g: Graph, xs: np.ndarray) -> np.ndarray | None:
    try:
        from hydra_edge.reference.int_interp import run_int
    except ImportError:
        return None
    return np.stack([run_int(g, x)[0].reshape(-1) for x in xs])


def emit(g: Graph, folder, **kw):
    plan = plan_memory(g, kernel_scratch(g))
    return emit_project(g, plan, folder, "host", **kw), plan


def fake_runtime(tmp_path):
    """A runtime tree with every kernel file present (empty stubs where the real one is missing)."""
    root = tmp_path / "fake_runtime"
    (root / "src").mkdir(parents=True)
    (root / "include").mkdir()
    shutil.copy(RUNTIME_DIR / "include" / "hydra_rt.h", root / "include")
    from hydra_edge.codegen.emit_c import ALWAYS_SOURCES, OP_SOURCES

    for name in [*ALWAYS_SOURCES, *OP_SOURCES.values()]:
        (root / "src" / name).write_text(f"/* {name} */\n")
    return root


# -- layout ------------------------------------------------------------------------


def test_build_folder_layout(tmp_path):
    g = tiny_graph()
    folder, plan = emit(g, tmp_path / "build", runtime_dir=fake_runtime(tmp_path))
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert names == {
        "model.c",
        "model.h",
        "main.c",
        "Makefile",
        "build.json",
        "graph.json",
        "constants.npz",
        "runtime/include/hydra_rt.h",
        "runtime/src/hydra_requantize.c",
        "runtime/src/hydra_dot.c",
        "runtime/src/hydra_linear.c",
        "runtime/src/hydra_lut.c",
        "runtime/src/hydra_add.c",
        "runtime/src/hydra_mean_pool.c",
    }
    model_c = (folder / "model.c").read_text()
    # Weights named after their tensors, const, aligned; the alignment attribute guarded for non-GCC compilers.
    assert "static const int8_t blocks_0_fc_weight_blocked[100] HYDRA_ALIGNED(16) = {" in model_c
    assert "static const int8_t gelu_table[256] HYDRA_ALIGNED(16)" in model_c
    assert "#if defined(__GNUC__) || defined(__clang__)" in model_c
    assert "static uint8_t hydra_arena[HYDRA_MODEL_ARENA_BYTES] HYDRA_ALIGNED(16);" in model_c
    assert "static const hydra_linear_params blocks_0_fc_params = {" in model_c
    assert "int hydra_model_run(const int8_t *input, int8_t *output)" in model_c
    # A comment naming the node and its source above each call, calls in graph order.
    lines = model_c.splitlines()
    calls = [i for i, line in enumerate(lines) if "status = hydra_" in line]
    assert len(calls) == 4
    assert "blocks.0.fc (linear) <- model.blocks[0].fc (hydra_vit.py:77)" in lines[calls[0] - 1]
    assert [lines[i].split("(")[0].split()[-1] for i in calls] == [
        "hydra_linear_s8", "hydra_lut_s8", "hydra_add_s8", "hydra_mean_pool_s8"
    ]
    model_h = (folder / "model.h").read_text()
    assert "#define HYDRA_MODEL_INPUT_BYTES 60" in model_h
    assert "#define HYDRA_MODEL_OUTPUT_BYTES 10" in model_h
    assert f"#define HYDRA_MODEL_ARENA_BYTES {plan.arena_bytes}" in model_h
    makefile = (folder / "Makefile").read_text()
    assert "CC ?= cc" in makefile and "-std=c99 $(OPT) -Wall -Wextra -Werror -pedantic" in makefile
    assert "\nOPT = -O2\n" in makefile  # a hand-built graph's meta says no goal: speed
    assert "ROUNDING" not in makefile  # rounding is per node (the params), never a build define
    assert "-fsanitize=address,undefined -fno-sanitize-recover=all -g" in makefile
    assert (folder / "main.c").read_text() == (load_board("host").folder / "main.c").read_text()
    # The graph travels with the build.
    assert [n.name for n in load_graph(folder).nodes] == [n.name for n in g.nodes]


def test_single_rounding_is_a_field_of_each_node(tmp_path):
    """No build-wide define: every requantising node's params carry its rounding (the graph's by default)."""
    folder, _ = emit(tiny_graph("single"), tmp_path / "b", runtime_dir=fake_runtime(tmp_path))
    assert "ROUNDING" not in (folder / "Makefile").read_text()
    model_c = (folder / "model.c").read_text()
    assert model_c.count(".single_rounding = 1,") == 3 and ".single_rounding = 0," not in model_c  # linear, add, mean
    g = tiny_graph("single")
    g.nodes[0].attrs["rounding"] = "double"  # a node may differ from the graph
    folder, _ = emit(g, tmp_path / "c", runtime_dir=tmp_path / "fake_runtime")
    model_c = (folder / "model.c").read_text()
    assert model_c.count(".single_rounding = 1,") == 2 and model_c.count(".single_rounding = 0,") == 1


def test_re_emitting_drops_stale_kernels_and_keeps_unchanged_files(tmp_path):
    rt = fake_runtime(tmp_path)
    folder, _ = emit(tiny_graph(), tmp_path / "b", runtime_dir=rt)
    before = (folder / "model.c").stat().st_mtime_ns
    emit(tiny_graph(), folder, runtime_dir=rt)
    assert (folder / "model.c").stat().st_mtime_ns == before
    emit(linear_graph(), folder, runtime_dir=rt)
    assert sorted(p.name for p in (folder / "runtime" / "src").iterdir()) == ["hydra_dot.c", "hydra_linear.c", "hydra_requantize.c"]


def test_emitter_refuses_what_it_cannot_lower(tmp_path):
    g = tiny_graph()
    g.nodes[1].op = "gelu"
    with pytest.raises(Exception, match="gelu"):
        emit(g, tmp_path / "b")
    g = tiny_graph()
    g.tensors["input"].dtype = "float32"
    with pytest.raises(CodegenError, match="quantised"):
        emit(g, tmp_path / "b")
    g = tiny_graph()
    del g.nodes[0].attrs["out_zp"]
    with pytest.raises(CodegenError, match="blocks.0.fc.*out_zp"):
        emit(g, tmp_path / "b")
    g = tiny_graph()
    g.nodes[2].attrs["sy"] = 40
    with pytest.raises(CodegenError, match="residual_add.*sy"):
        emit(g, tmp_path / "b")


def test_boards():
    assert "host" in list_boards()
    board = load_board("host")
    assert board.arch == "x86-64" and board.ram_bytes is None and board.flash_bytes is None
    with pytest.raises(BoardError, match="unknown board 'nope'; known boards: .*host"):
        load_board("nope")


# -- build and run ---------------------------------------------------------------------


def test_linear_model_builds_runs_and_matches(tmp_path):
    g = linear_graph()
    folder, _ = emit(g, tmp_path / "b")
    xs = np.random.default_rng(0).integers(-128, 128, (3, 5, 7)).astype(np.int8)
    ys = host.run(folder, xs)
    assert ys.shape == (3, 15) and ys.dtype == np.int8
    ref = reference(g, xs)
    if ref is not None:
        np.testing.assert_array_equal(ys, ref)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_tiny_graph_builds_runs_and_matches(tmp_path, rounding):
    g = tiny_graph(rounding)
    folder, _ = emit(g, tmp_path / "b")
    rng = np.random.default_rng(1)
    xs = np.concatenate([rng.integers(-128, 128, (3, 6, 10)), np.full((1, 6, 10), -128), np.full((1, 6, 10), 127)])
    xs = xs.astype(np.int8)
    ys = host.run(folder, xs)
    assert ys.shape == (5, 10)
    ref = reference(g, xs)
    if ref is not None:
        np.testing.assert_array_equal(ys, ref)


def test_sanitized_build_runs_clean(tmp_path):
    g = linear_graph("single")
    folder, _ = emit(g, tmp_path / "b")
    xs = np.random.default_rng(2).integers(-128, 128, (4, 5, 7)).astype(np.int8)
    ys = host.run(folder, xs, sanitize=True)
    assert (folder / "model-asan").is_file()
    np.testing.assert_array_equal(ys, host.run(folder, xs))


def test_harness_exit_codes(tmp_path):
    g = linear_graph()
    folder, _ = emit(g, tmp_path / "b")
    binary = host.build(folder)

    def run(*args):
        return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)

    p = run()
    assert p.returncode == 2 and "usage" in p.stderr
    p = run(tmp_path / "missing.bin", tmp_path / "out.bin")
    assert p.returncode == 3 and "missing.bin" in p.stderr
    (tmp_path / "bad.bin").write_bytes(b"\0" * 36)
    p = run(tmp_path / "bad.bin", tmp_path / "out.bin")
    assert p.returncode == 4 and "36 bytes" in p.stderr and "35" in p.stderr
    (tmp_path / "two.bin").write_bytes(b"\1" * 70)
    p = run(tmp_path / "two.bin", tmp_path / "nodir" / "out.bin")
    assert p.returncode == 3 and "out.bin" in p.stderr
    p = run(tmp_path / "two.bin", tmp_path / "out.bin")
    assert p.returncode == 0 and (tmp_path / "out.bin").stat().st_size == 2 * 15
    with pytest.raises(ValueError, match="35 int8 values"):
        host.run(folder, np.zeros((2, 36), np.int8))
    with pytest.raises(TypeError, match="int8"):
        host.run(folder, np.zeros((2, 35), np.int16))


def test_compiler_errors_are_reported(tmp_path):
    g = linear_graph()
    folder, _ = emit(g, tmp_path / "b")
    with open(folder / "model.c", "a") as f:
        f.write("\nstatic int unused_variable_here;\n")
    with pytest.raises(host.BuildError, match="unused_variable_here"):
        host.build(folder)


# -- report -------------------------------------------------------------------------


def test_report():
    g = tiny_graph()
    plan = plan_memory(g, kernel_scratch(g))
    rep = build_report(g, plan)
    assert rep["ram"]["arena_bytes"] == plan.arena_bytes >= rep["ram"]["peak_bytes"] > 0
    assert rep["flash"]["weights_bytes"] == 100 + 4 * 10 + 256
    assert [op["macs"] for op in rep["ops"]] == [6 * 10 * 10, 60, 60, 60]
    assert rep["macs"] == 600 + 180
    assert [op["kind"] for op in rep["ops"]] == ["linear", "lut", "add", "mean_pool"]
    assert rep["ops"][-1]["output_shape"] == [10]
    assert all(op["live_bytes"] > 0 for op in rep["ops"])
    text = format_report(rep)
    assert "residual_add" in text and f"{plan.arena_bytes}" in text


@pytest.mark.parametrize("n,k", [(1, 1), (4, 4), (5, 7), (8, 13), (11, 3), (12, 64)])
def test_linear_weights_blocked_layout_reorders_the_same_bytes(n, k):
    """ops/linear.py blocked_weights: rows in blocks of 4, per group of 4 columns the 4 rows' 4 bytes, then the
    K % 4 tail row by row; the N % 4 last rows as they are (what hydra_dot4_blocked_s8 reads)."""
    from hydra_edge.ops.linear import blocked_weights

    w = np.arange(n * k, dtype=np.int64).reshape(n, k)
    b = blocked_weights(w)
    assert sorted(b.tolist()) == list(range(n * k))  # a reordering: every byte once
    full_n, full_k = n - n % 4, k - k % 4
    at = 0
    for n0 in range(0, full_n, 4):
        for k0 in range(0, full_k, 4):
            for r in range(4):
                assert b[at:at + 4].tolist() == w[n0 + r, k0:k0 + 4].tolist()
                at += 4
        for r in range(4):
            assert b[at:at + k - full_k].tolist() == w[n0 + r, full_k:].tolist()
            at += k - full_k
    assert b[at:].tolist() == w[full_n:].reshape(-1).tolist()
