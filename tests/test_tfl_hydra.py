"""Hydra attention lifted out of int8 TFLite graphs (passes/lift_tfl_hydra.py): one streaming op, TFLM's bits.

The Hydra core written with TFLite operators (phi as MUL/SUM/[ADD]/RSQRT/MUL or L2_NORMALIZATION, then
MUL, SUM over tokens, MUL) becomes one tfl_hydra_attention node whose kernel runs two passes over the
tokens with O(D) state. Proofs, each able to fail:

- on the committed tests/models/tfl_hydra_vit.tflite: the lift finds both blocks; the fused reference
  (reference/tfl_hydra.py) gives the unfused ops' bits on every tensor it replaces; the compiled C gives
  TFLM's interpreter's output on host and on stm32f746 under QEMU;
- on Hydra blocks built in memory (x -> three FULLY_CONNECTED -> Hydra core) with seeded random
  quantisation (scales from a float calibration times random factors, random zero points), both phi
  spellings, with and without eps, keep_dims either way, RESHAPEs and swapped MUL/ADD operands: TFLM ==
  unfused reference == fused reference on extreme and random inputs, and the C kernel (host, UBSan) too;
- near misses are not lifted (and stay TFLM-exact): the per-token scalar broadcast along the wrong axis,
  a SUM over the features where the tokens are meant, an intermediate that another op reads;
- memory: the planner's arena shrinks on an attention-bound block, and on the committed model the peak
  over the Hydra core's steps shrinks (its arena is set by the MLP, see docs/frontends.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.codegen.emit_c import kernel_scratch
from hydra_edge.frontend.tflite import load_tflite, tflite_from_bytes
from hydra_edge.ir.graph import Graph
from hydra_edge.ops import check_shapes
from hydra_edge.memory.planner import live_bytes_per_node, plan_memory
from hydra_edge.passes.lift_tfl_hydra import OP, lift_tfl_hydra
from hydra_edge.reference.int_interp import run_int
from hydra_edge.targets import runner
from hydra_edge.boards import load_board
from tfl_single_op import _TYPES, TensorSpec, _options_object, _quantization, fb, run_tflm

MODEL = Path(__file__).resolve().parent / "models" / "tfl_hydra_vit.tflite"


def _inputs(shape: tuple[int, ...], seed: int, n_random: int = 4) -> np.ndarray:
    """-128 everywhere, 127 everywhere, a checkerboard of both, then seeded random int8 inputs."""
    rng = np.random.default_rng(seed)
    checker = np.where(np.indices(shape).sum(axis=0) % 2 == 0, -128, 127)
    fixed = np.stack([np.full(shape, -128), np.full(shape, 127), checker])
    return np.concatenate([fixed, rng.integers(-128, 128, (n_random, *shape))]).astype(np.int8)


def _tflm(model: bytes, xs: np.ndarray) -> np.ndarray:
    return np.stack([run_tflm(model, [x])[0].reshape(-1) for x in xs])


def _reference(graph: Graph, xs: np.ndarray) -> np.ndarray:
    return np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])


def _lifted(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op == OP]


def _compiled_cores(graph: Graph) -> int:
    """The lifted cores of a compiled graph: whole, or (schedule stream) as their two halves in token loops."""
    ops = [n.op for n in graph.nodes] + [s["op"] for n in graph.nodes if n.op == "token_loop" for s in n.attrs["body"]]
    assert ops.count("tfl_hydra_kv_state") == ops.count("tfl_hydra_apply")
    return ops.count(OP) + ops.count("tfl_hydra_apply")


# ---------------------------------------------------------------- a multi-operator .tflite in memory


def model_from_ops(tensors: dict[str, TensorSpec], ops: list[tuple], inputs: list[str], outputs: list[str]) -> bytes:
    """A .tflite of several builtin operators: ops are (OP, [input names], [output names], options)."""
    model = fb.ModelT()
    model.version = 3
    model.description = "hydra-edge test: Hydra block"
    model.buffers = [fb.BufferT()]
    sg = fb.SubGraphT()
    sg.tensors, index = [], {}
    for name, spec in tensors.items():
        t = fb.TensorT()
        t.shape, t.type, t.name = [int(d) for d in spec.shape], _TYPES[spec.dtype], name
        t.quantization = _quantization(spec)
        t.buffer = 0
        if spec.data is not None:
            buf = fb.BufferT()
            arr = np.ascontiguousarray(np.asarray(spec.data, dtype=np.dtype(spec.dtype)).reshape(spec.shape))
            buf.data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        index[name] = len(sg.tensors)
        sg.tensors.append(t)
    codes: dict[str, int] = {}
    model.operatorCodes, sg.operators = [], []
    for op, ins, outs, options in ops:
        if op not in codes:
            code = fb.OperatorCodeT()
            code.builtinCode = getattr(fb.BuiltinOperator, op)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
            code.version = 1
            codes[op] = len(model.operatorCodes)
            model.operatorCodes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex = codes[op]
        o.inputs, o.outputs = [index[n] for n in ins], [index[n] for n in outs]
        o.builtinOptionsType, o.builtinOptions = _options_object(op, options)
        sg.operators.append(o)
    sg.inputs, sg.outputs = [index[n] for n in inputs], [index[n] for n in outputs]
    sg.name = "main"
    model.subgraphs = [sg]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@dataclass(frozen=True)
class Variant:
    """How the Hydra block spells its core."""

    phi_q: str = "rsqrt"  # "rsqrt" (with eps), "rsqrt_noeps" or "l2"
    phi_k: str = "rsqrt"
    keep_dims: bool = False  # of the SUMs
    reshapes: bool = True  # RESHAPEs between links (the converter's habit)
    swap: bool = False  # the other operand order in every MUL and the eps ADD
    extreme: bool = False  # random zero points over the whole range, scales over a wider range
    wrong_axis: bool = False  # the per-token scalar reshaped to [1, T]: broadcast along the features (T == D)
    kv_over_features: bool = False  # the kv SUM over the features instead of the tokens: not Hydra
    leak: bool = False  # phi(k) is also an output of the model: it must stay a tensor


_OPT = {"fused_activation_function": "NONE"}


def hydra_block(seed: int, v: Variant, t: int = 6, d: int = 8) -> bytes:
    """x [1, T, D] -> q, k, v (FULLY_CONNECTED) -> the Hydra core of variant v -> out [T, D] (and phi(k) if leak).

    Scales: a float forward pass on seeded inputs gives each tensor's range; the scale covering it is
    multiplied by a random factor in [0.6, 1.6] ([0.25, 4] when extreme), zero points placed to cover the
    range (uniform over [-128, 127] when extreme, where the values are only bits).
    """
    rng = np.random.default_rng(seed)
    tensors: dict[str, TensorSpec] = {}
    ops: list[tuple] = []
    real: dict[str, np.ndarray] = {}  # float values on the calibration batch [N, ...]

    def act(name: str, values: np.ndarray, shape: tuple, nonneg: bool = False, fixed: tuple | None = None) -> str:
        real[name] = values
        if fixed is not None:
            scale, zp = fixed
        else:
            lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 1e-6)
            factor = rng.uniform(0.25, 4.0) if v.extreme else rng.uniform(0.6, 1.6)
            scale = (hi - lo) / 255 * factor
            zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
            if v.extreme and not nonneg:
                zp = int(rng.integers(-128, 128))
        tensors[name] = TensorSpec(shape, float(np.float32(scale)), zp)
        return name

    def const(name: str, data: np.ndarray, dtype: str = "int32", scale=None) -> str:
        tensors[name] = TensorSpec(tuple(data.shape), scale, 0 if scale is not None else None, dtype, data)
        return name

    n_cal = 16
    x_scale, x_zp = 0.04, int(rng.integers(-20, 20))
    xq = rng.integers(-128, 128, (n_cal, 1, t, d))
    act("x", x_scale * (xq - x_zp), (1, t, d), fixed=(x_scale, x_zp))
    for m in "qkv":
        w_scale = 0.01
        wq = rng.integers(-127, 128, (d, d)).astype(np.int8)
        bias = rng.integers(-500, 500, d).astype(np.int32)
        const(f"w{m}", wq, "int8", w_scale)
        const(f"b{m}", bias, "int32", float(np.float32(x_scale)) * w_scale)
        y = real["x"].reshape(n_cal, t, d) @ (w_scale * wq.astype(np.float64)).T + bias * x_scale * w_scale
        act(m, y, (t, d))
        ops.append(("FULLY_CONNECTED", ["x", f"w{m}", f"b{m}"], [m], {**_OPT, "keep_num_dims": False}))
    axis_d = const("axis_d", np.array([1], np.int32))
    axis_t = const("axis_t", np.array([0], np.int32))

    def binary(op: str, a: str, b: str, out: str, values: np.ndarray, shape: tuple, nonneg: bool = False) -> str:
        act(out, values, shape, nonneg)
        ops.append((op, [b, a] if v.swap else [a, b], [out], _OPT))
        return out

    def reshape(src: str, shape: tuple) -> str:
        out = f"{src}_r"
        tensors[out] = tensors[src].__class__(shape, tensors[src].scale, tensors[src].zero_point)
        real[out] = real[src].reshape(n_cal, *shape)
        ops.append(("RESHAPE", [src, const(f"{out}_shape", np.array(shape, np.int32))], [out], None))
        return out

    def phi(m: str, kind: str) -> str:
        x = real[m]
        if kind == "l2":
            y = x / np.sqrt((x * x).sum(-1, keepdims=True))
            act(f"phi_{m}", y, (t, d), fixed=(1 / 128, 0))
            ops.append(("L2_NORMALIZATION", [m], [f"phi_{m}"], _OPT))
            return f"phi_{m}"
        sq = binary("MUL", m, m, f"sq_{m}", x * x, (t, d), nonneg=True)
        if v.reshapes:
            sq = reshape(sq, (1, t, d))
        s_shape = (t, 1) if v.keep_dims else (t,)
        if v.reshapes:
            s_shape = (1, *s_shape)
        s_val = (x * x).sum(-1)
        s = act(f"s_{m}", s_val.reshape(n_cal, *s_shape), s_shape, nonneg=True)
        ops.append(("SUM", [sq, axis_d if not v.reshapes else const(f"axis2_{m}", np.array([2], np.int32))], [s],
                    {"keep_dims": v.keep_dims}))
        if kind == "rsqrt":
            eps_scale = tensors[s].scale * rng.uniform(0.01, 0.5)
            eps_q = int(rng.integers(0, 128))
            eps = const(f"eps_{m}", np.array([eps_q], np.int8), "int8", eps_scale)
            tensors[eps] = TensorSpec((1,), float(np.float32(eps_scale)), 0, "int8", np.array([eps_q], np.int8))
            s_val = s_val + eps_scale * eps_q
            s = binary("ADD", s, eps, f"se_{m}", s_val.reshape(n_cal, *s_shape), s_shape, nonneg=True)
        r_shape = (1, t) if v.wrong_axis else (t, 1)
        if tuple(tensors[s].shape) != r_shape:
            s = reshape(s, r_shape)
        r = act(f"r_{m}", 1 / np.sqrt(s_val).reshape(n_cal, *r_shape), r_shape, nonneg=True)
        ops.append(("RSQRT", [s], [r], None))
        return binary("MUL", m, r, f"phi_{m}", x * real[r], (t, d))  # numpy broadcasts as TFLM will

    pq, pk = phi("q", v.phi_q), phi("k", v.phi_k)
    kv_in = binary("MUL", pk, "v", "kv_in", real[pk] * real["v"], (t, d))
    if v.kv_over_features:  # kept [T, 1] so that the final MUL still broadcasts
        kv_shape, axis, keep = (t, 1), axis_d, True
        kv_val = real[kv_in].sum(-1, keepdims=True)
    else:
        kv_shape, axis, keep = ((1, d) if v.keep_dims else (d,)), axis_t, v.keep_dims
        kv_val = real[kv_in].sum(-2).reshape(n_cal, *kv_shape)
    kv = act("kv", kv_val, kv_shape)
    ops.append(("SUM", [kv_in, axis], [kv], {"keep_dims": keep}))
    kv_b = real[kv] if v.kv_over_features else real[kv].reshape(n_cal, 1, d)  # [N, D] would broadcast over N
    binary("MUL", pq, kv, "out", real[pq] * kv_b, (t, d))
    outputs = ["out", pk] if v.leak else ["out"]
    return model_from_ops(tensors, ops, ["x"], outputs)


VARIANTS = {
    "rsqrt": Variant(),
    "rsqrt_swapped_keep_dims": Variant(swap=True, keep_dims=True),
    "rsqrt_noeps_no_reshapes": Variant(phi_q="rsqrt_noeps", phi_k="rsqrt_noeps", reshapes=False, keep_dims=True),
    "l2": Variant(phi_q="l2", phi_k="l2"),
    "mixed_swapped": Variant(phi_q="l2", phi_k="rsqrt", swap=True),
    "extreme": Variant(extreme=True),
    "extreme_l2_swapped": Variant(phi_q="rsqrt_noeps", phi_k="l2", extreme=True, swap=True, keep_dims=True),
}
SEEDS = (0, 1, 2)


# ---------------------------------------------------------------- the committed model


def test_lift_finds_both_blocks_of_the_committed_model():
    graph = load_tflite(MODEL)
    before = [n.op for n in graph.nodes]
    lifted = lift_tfl_hydra(graph)
    assert [n.op for n in graph.nodes] == before  # pure
    nodes = _lifted(lifted)
    assert len(nodes) == 2
    check_shapes(lifted)
    lifted.validate()
    for node in nodes:
        assert node.attrs["tokens"] == 16 and node.attrs["depth"] == 32
        assert node.attrs["phi_q"]["kind"] == 0 and node.attrs["phi_q"]["has_eps"] == 1
        producers = {lifted.producer(x).op for x in node.inputs}
        assert producers == {"tfl_fully_connected"}  # q, k, v: the projections themselves
    # every SUM over the tokens, every RSQRT of phi went into the fused nodes
    assert sum(n.op == "tfl_sum" for n in graph.nodes) - sum(n.op == "tfl_sum" for n in lifted.nodes) == 6
    assert len(graph.nodes) - len(lifted.nodes) == 2 * 16


def test_fused_reference_equals_unfused_ops_on_the_committed_model():
    graph = load_tflite(MODEL)
    lifted = lift_tfl_hydra(graph)
    outs = [n.outputs[0] for n in _lifted(lifted)]
    for x in _inputs(graph.tensor(graph.inputs[0]).shape, seed=5):
        unfused, fused = run_int(graph, x, keep_all=True), run_int(lifted, x, keep_all=True)
        for name in [*outs, graph.outputs[0]]:
            np.testing.assert_array_equal(fused[name], unfused[name], err_msg=name)


@pytest.mark.parametrize("board", ["host", "stm32f746"])
def test_compiled_fused_kernel_matches_tflm_on_the_committed_model(board, tmp_path):
    res = driver.compile_model(MODEL, board, tmp_path / "build")
    # the default schedule (stream) runs each lifted core as its kernel's two halves in token loops
    assert _compiled_cores(res.graph) == 2 and not _lifted(res.graph)
    assert (res.folder / "runtime" / "src" / "tfl_hydra_attention.c").is_file()
    assert "hydra_tfl_hydra_kv_rows_s8(" in (res.folder / "model.c").read_text()
    xs = _inputs(res.graph.tensor(res.graph.inputs[0]).shape, seed=11)
    np.testing.assert_array_equal(runner.run(res.folder, xs.reshape(len(xs), -1)).reshape(len(xs), -1),
                                  _tflm(MODEL.read_bytes(), xs))


def _hydra_steps_peak(graph: Graph, out: str, in_place: bool) -> tuple[int, int]:
    """(arena, peak live bytes from the first projection to the step that writes the first Hydra output `out`)."""
    plan = plan_memory(graph, kernel_scratch(graph), in_place=in_place)
    live = live_bytes_per_node(plan, len(graph.nodes))
    first = next(i for i, n in enumerate(graph.nodes) if n.op == "tfl_fully_connected")
    end = next(i for i, n in enumerate(graph.nodes) if out in n.outputs)
    return plan.arena_bytes, max(live[first:end + 1])


def test_hydra_steps_need_less_memory_on_the_committed_model():
    graph = load_tflite(MODEL)
    lifted = lift_tfl_hydra(graph)
    out = _lifted(lifted)[0].outputs[0]  # the first block's attention output: the final MUL's tensor before
    for in_place in (False, True):  # TFLM's greedy baseline, and hydra-edge's plan
        arena_before, peak_before = _hydra_steps_peak(graph, out, in_place)
        arena_after, peak_after = _hydra_steps_peak(lifted, out, in_place)
        assert peak_after < peak_before, in_place
        assert arena_after <= arena_before, in_place  # the MLP's tensors set this model's arena


def test_arena_shrinks_on_an_attention_bound_block():
    graph = tflite_from_bytes(hydra_block(0, Variant(), t=32, d=16), "block.tflite")
    lifted = lift_tfl_hydra(graph)
    assert len(_lifted(lifted)) == 1
    for in_place in (False, True):
        before = plan_memory(graph, kernel_scratch(graph), in_place=in_place).arena_bytes
        after = plan_memory(lifted, kernel_scratch(lifted), in_place=in_place).arena_bytes
        assert after < before, (in_place, before, after)


# ---------------------------------------------------------------- blocks with random quantisation


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fused_reference_matches_tflm(name, seed):
    model = hydra_block(seed, VARIANTS[name])
    graph = tflite_from_bytes(model, f"{name}.tflite")
    lifted = lift_tfl_hydra(graph)
    assert len(_lifted(lifted)) == 1
    check_shapes(lifted)
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=seed + 100, n_random=6)
    expected = _tflm(model, xs)
    assert len(np.unique(expected)) > 8  # the case computes something, not a saturated constant
    np.testing.assert_array_equal(_reference(graph, xs), expected)
    np.testing.assert_array_equal(_reference(lifted, xs), expected)


@pytest.mark.parametrize("name", ["rsqrt_swapped_keep_dims", "mixed_swapped", "extreme_l2_swapped",
                                  "rsqrt_noeps_no_reshapes"])
def test_compiled_fused_kernel_matches_tflm(name, tmp_path):
    model = hydra_block(7, VARIANTS[name])
    graph = tflite_from_bytes(model, f"{name}.tflite")
    res = driver.compile_prequantised(graph, load_board("host"), tmp_path / "build")
    assert _compiled_cores(res.graph) == 1
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=3, n_random=6)
    c_out = runner.run(res.folder, xs.reshape(len(xs), -1), sanitize=True).reshape(len(xs), -1)
    np.testing.assert_array_equal(c_out, _tflm(model, xs))


def test_greedy_schedule_keeps_the_ops_unfused(tmp_path):
    graph = tflite_from_bytes(hydra_block(1, Variant()), "block.tflite")
    res = driver.compile_prequantised(graph, load_board("host"), tmp_path / "build", schedule="greedy")
    assert not _lifted(res.graph)
    assert any(n.attrs.get("imported_op") == "tfl_rsqrt" for n in res.graph.nodes)  # phi's RSQRT, as a table


# ---------------------------------------------------------------- near misses


@pytest.mark.parametrize("variant", [
    Variant(wrong_axis=True),  # r [1, T] broadcasts along the features (T == D): not a per-token scale
    Variant(kv_over_features=True),  # SUM over the features: no token reduction
    Variant(leak=True),  # phi(k) is a model output: the [T, D] tensor must exist
], ids=["wrong_axis", "kv_over_features", "leak"])
def test_near_misses_are_not_lifted_and_stay_exact(variant):
    t = d = 6  # square, so that the wrong broadcast is legal TFLite
    model = hydra_block(4, variant, t=t, d=d)
    graph = tflite_from_bytes(model, "near_miss.tflite")
    lifted = lift_tfl_hydra(graph)
    assert not _lifted(lifted)
    assert [n.op for n in lifted.nodes] == [n.op for n in graph.nodes]
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=9, n_random=2)
    np.testing.assert_array_equal(_reference(lifted, xs), _tflm(model, xs))


def test_near_miss_builder_lifts_without_the_flaw():
    """The near-miss models differ from a liftable one by their flaw only (else the test above proves nothing)."""
    graph = tflite_from_bytes(hydra_block(4, Variant(), t=6, d=6), "ok.tflite")
    assert len(_lifted(lift_tfl_hydra(graph))) == 1


def test_a_core_whose_ops_round_alike_lifts_with_that_rounding():
    """The lifted node rounds as the ops it replaces (its C params give that rounding to every nested op): ops
    with a "rounding" attr of their own lift when they all agree, keeping it on the node (not in its nested
    params), and stay unfused when one rounds otherwise (one kernel call rounds one way)."""
    graph = load_tflite(MODEL)
    core = {n.name for n in lift_tfl_hydra(graph).nodes}  # what lifting leaves: the replaced ones are the rest
    replaced = [n for n in graph.nodes if n.name not in core and n.op != "tfl_fully_connected"]
    once = graph.copy()
    for node in once.nodes:
        if node.name in {n.name for n in replaced}:
            node.attrs["rounding"] = "single"
    lifted = _lifted(lift_tfl_hydra(once))
    assert len(lifted) == 2 and {n.attrs["rounding"] for n in lifted} == {"single"}
    assert "rounding" not in str({k: v for k, v in lifted[0].attrs.items() if k != "rounding"})
    x = _inputs(graph.tensor(graph.inputs[0]).shape, seed=6, n_random=1)
    np.testing.assert_array_equal(_reference(lift_tfl_hydra(once), x), _reference(once, x))
    mixed = once.copy()
    rsqrt = next(n.name for n in replaced if n.op == "tfl_rsqrt")  # phi's, in one of the cores
    next(n for n in mixed.nodes if n.name == rsqrt).attrs["rounding"] = "double"
    assert len(_lifted(lift_tfl_hydra(mixed))) == 1  # the other core still lifts


ENTRY_CHECKS = r"""
#include <stdio.h>
#include "hydra_tfl.h"

static int failures;
#define CHECK(c) do { if (!(c)) { printf("FAIL %d: %s\n", __LINE__, #c); failures++; } } while (0)

int main(void)
{
    hydra_tfl_mul_params mul = {{1, 1, 1, 1, 1, 2}, {1, 1, 1, 1, 1, 2}, {1, 1, 1, 1, 1, 2}, 0, 0, 0,
                                1 << 30, 0, -128, 127, 0};
    hydra_tfl_hydra_attention_params p = {0};
    p.tokens = 2;
    p.depth = 2;
    p.phi_q.kind = p.phi_k.kind = HYDRA_TFL_PHI_L2;
    p.phi_q.l2.outer_size = p.phi_k.l2.outer_size = 1;
    p.phi_q.l2.depth = p.phi_k.l2.depth = 2;
    p.kv_mul = p.out_mul = mul;
    for (int d = 0; d < HYDRA_TFL_MAX_DIMS; d++)
        p.kv_sum.input_shape[d] = p.kv_sum.reduce_shape[d] = 1;
    p.kv_sum.input_shape[4] = p.kv_sum.input_shape[5] = p.kv_sum.reduce_shape[4] = 2;
    p.kv_sum.num_elements = 2;
    p.kv_sum.output_multiplier = 1 << 30;
    hydra_tfl_hydra_attention_params bad = p;
    bad.tokens = 0;

    const int8_t k[4] = {-128, 127, 5, -7}, v[4] = {3, -128, 127, 0}, q[4] = {127, 127, -128, 1};
    int32_t state[3]; /* 5 * depth bytes */
    int8_t kv[2], out[4], row[2];
    CHECK(hydra_tfl_hydra_kv_begin_s8(&p, state) == HYDRA_OK);
    CHECK(hydra_tfl_hydra_kv_rows_s8(&p, k, v, 2, state) == HYDRA_OK);
    CHECK(hydra_tfl_hydra_kv_rows_s8(NULL, k, v, 2, state) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_kv_rows_s8(&p, NULL, v, 2, state) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_kv_rows_s8(&p, k, NULL, 2, state) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_kv_rows_s8(&p, k, v, 2, NULL) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_kv_rows_s8(&bad, NULL, v, 2, state) == HYDRA_ERR_ARG); /* pointers first */
    CHECK(hydra_tfl_hydra_kv_rows_s8(&bad, k, v, 2, state) == HYDRA_ERR_SHAPE);  /* then the params */
    CHECK(hydra_tfl_hydra_kv_rows_s8(&p, k, v, 0, state) == HYDRA_ERR_SHAPE);    /* then the rows */
    CHECK(hydra_tfl_hydra_kv_rows_s8(&p, k, v, 3, state) == HYDRA_ERR_SHAPE);
    CHECK(hydra_tfl_hydra_kv_end_s8(&p, state, kv) == HYDRA_OK);
    CHECK(hydra_tfl_hydra_apply_s8(&p, q, kv, 2, out, row) == HYDRA_OK);
    CHECK(hydra_tfl_hydra_apply_s8(NULL, q, kv, 2, out, row) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_apply_s8(&p, NULL, kv, 2, out, row) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_apply_s8(&p, q, NULL, 2, out, row) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_apply_s8(&p, q, kv, 2, NULL, row) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_apply_s8(&p, q, kv, 2, out, NULL) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_apply_s8(&bad, q, kv, 2, out, NULL) == HYDRA_ERR_ARG);
    CHECK(hydra_tfl_hydra_apply_s8(&bad, q, kv, 2, out, row) == HYDRA_ERR_SHAPE);
    CHECK(hydra_tfl_hydra_apply_s8(&p, q, kv, 0, out, row) == HYDRA_ERR_SHAPE);
    CHECK(hydra_tfl_hydra_apply_s8(&p, q, kv, 3, out, row) == HYDRA_ERR_SHAPE);
    printf(failures ? "FAILED %d\n" : "OK\n", failures);
    return failures != 0;
}
"""


def test_kv_rows_and_apply_check_their_arguments_alike(tmp_path):
    """The C entry points of the split core refuse NULL pointers (HYDRA_ERR_ARG) before bad params, and those
    (HYDRA_ERR_SHAPE) before a row count outside [1, tokens]; built with UBSan."""
    import subprocess

    from c_build import INCLUDE_DIR, SRC_DIR, STRICT_FLAGS, run_cc

    src = tmp_path / "entry_checks.c"
    src.write_text(ENTRY_CHECKS)
    sources = ["tfl_hydra_attention.c", "tfl_mul.c", "tfl_sum.c", "tfl_add.c", "tfl_rsqrt.c", "tfl_l2_normalization.c",
               "tfl_fixedpoint.c", "hydra_requantize.c"]
    exe = tmp_path / "entry_checks"
    run_cc([*STRICT_FLAGS, "-fsanitize=undefined", "-fno-sanitize-recover=all", f"-I{INCLUDE_DIR}", str(src),
            *(str(SRC_DIR / s) for s in sources), "-o", str(exe)])
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stdout + proc.stderr
