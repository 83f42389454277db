"""Softmax attention lifted out of int8 TFLite graphs (passes/lift_tfl_softmax.py): one query-row op, TFLM's bits.

The attention core written with TFLite operators (RESHAPE / TRANSPOSE per head, BATCH_MATMUL, MUL by the scale,
SOFTMAX, BATCH_MATMUL, TRANSPOSE / RESHAPE back) becomes one tfl_softmax_attention node whose kernel takes query
rows against k and v kept whole. Proofs, each able to fail:

- on the committed tests/models/tfl_softmax_vit.tflite: the lift finds both blocks; the fused reference
  (reference/tfl_softmax_attention.py) gives the unfused chain's bits on random and extreme q, k, v (fed to the
  chain itself), with the MUL's operands swapped, and without the MUL; in row groups too;
- near misses stay unfused: a head split the chains do not make (another TRANSPOSE), an intermediate another op
  reads, SOFTMAX over another axis;
- the C kernel (UBSan) on the whole tensors equals the reference, and on groups of query rows (query_rows, q and
  the output pointing at the group's rows), in place over q too, equals the whole call;
- end to end, the streamed build equals TFLite Micro's interpreter (host under UBSan, and stm32f746 under QEMU).
"""

from __future__ import annotations

import ctypes

import c_build
import numpy as np
import pytest
from c_build import EXTRA_WARNINGS, INCLUDE_DIR, SRC_DIR, STRICT_FLAGS, run_cc
from c_build_tfl import STRUCTS, params_struct
from hydra_edge import driver
from hydra_edge.frontend.tflite import load_tflite
from hydra_edge.ir.graph import Graph
from hydra_edge.ops.token_loop import body_nodes
from hydra_edge.passes.legalise_tfl import legalise_tfl
from hydra_edge.passes.lift_tfl_softmax import OP, lift_tfl_softmax
from hydra_edge.reference.int_interp import run_int, tfl_kernels
from hydra_edge.reference.tfl_softmax_attention import scratch_bytes
from hydra_edge.targets import runner
from test_tflite import _inputs, _path, _tflm

NAME = "tfl_softmax_vit"


def _graph() -> Graph:
    return legalise_tfl(load_tflite(_path(NAME)))


def _cores(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op == OP]


def _chain(graph: Graph, lifted: Graph, core) -> list:
    """The unfused nodes one lifted core replaces, in graph order: those between its q, k, v and its output."""
    kept = {n.name for n in lifted.nodes}
    ancestors, todo = set(), [core.outputs[0]]
    producer = {o: n for n in graph.nodes for o in n.outputs}
    while todo:
        name = todo.pop()
        n = producer.get(name)
        if n is None or n.name in kept or n.name in ancestors:
            continue
        ancestors.add(n.name)
        todo += [i for i in n.inputs if i and i not in core.inputs]
    return [n for n in graph.nodes if n.name in ancestors]


def _run_chain(graph: Graph, nodes: list, values: dict) -> dict:
    values = dict(values)
    for n in nodes:
        ins = [values[i] if i in values else graph.tensor(i).data if i else None for i in n.inputs]
        values[n.outputs[0]] = np.asarray(tfl_kernels()[n.op](n.attrs, ins, "double")).reshape(
            graph.tensor(n.outputs[0]).shape)
    return values


def _qkv(graph: Graph, core, seed: int) -> list[list[np.ndarray]]:
    """Extreme q, k, v (all -128, all 127, a checkerboard, mixed), then seeded random ones."""
    shape = graph.tensor(core.inputs[0]).shape
    rng = np.random.default_rng(seed)
    lo, hi = np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)
    checker = np.where(np.indices(shape).sum(axis=0) % 2 == 0, -128, 127).astype(np.int8)
    cases = [[lo, lo, lo], [hi, hi, hi], [checker, checker, checker], [hi, lo, checker], [lo, hi, hi]]
    cases += [[rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(3)] for _ in range(6)]
    return cases


def _assert_lift_matches(graph: Graph, seed: int = 0, cores: int = 2) -> Graph:
    lifted = lift_tfl_softmax(graph)
    found = _cores(lifted)
    assert len(found) == cores
    for core in found:
        chain = _chain(graph, lifted, core)
        assert {"tfl_batch_matmul", "tfl_softmax", "tfl_transpose"} <= {n.op for n in chain}
        for q, k, v in _qkv(graph, core, seed):
            want = _run_chain(graph, chain, dict(zip(core.inputs, (q, k, v))))[core.outputs[0]]
            got = tfl_kernels()[OP](core.attrs, [q, k, v], "double")
            np.testing.assert_array_equal(np.asarray(got).reshape(-1), want.reshape(-1))
    return lifted


def test_lift_finds_both_blocks_and_equals_the_unfused_chain():
    graph = _graph()
    lifted = _assert_lift_matches(graph)
    assert not any(n.op in ("tfl_batch_matmul", "tfl_softmax") for n in lifted.nodes)
    core = _cores(lifted)[0]
    a = core.attrs
    assert (a["tokens"], a["heads"], a["head_dim"], a["has_scale"]) == (16, 2, 16, 1)
    for x in _inputs(graph.tensor(graph.inputs[0]).shape, seed=1)[:5]:  # the whole model, every tensor after
        np.testing.assert_array_equal(run_int(graph, x)[0], run_int(lifted, x)[0])


def test_swapped_scale_operands_lift_with_the_same_bits():
    graph = _graph()
    for node in _scale_muls(graph):
        node.inputs = node.inputs[::-1]
        a = node.attrs
        node.attrs = {**a, "input1_shape": a["input2_shape"], "input2_shape": a["input1_shape"],
                      "input1_offset": a["input2_offset"], "input2_offset": a["input1_offset"]}
    _assert_lift_matches(graph, seed=3)


def test_no_scale_lifts_with_the_same_bits():
    graph = _graph()
    _drop_scale(graph)
    lifted = _assert_lift_matches(graph, seed=4)
    assert all(c.attrs["has_scale"] == 0 and "scale" not in c.attrs for c in _cores(lifted))


def _scale_muls(graph: Graph) -> list:
    """The MULs of the scores [2, 16, 16] by the one-element scale."""
    return [n for n in graph.nodes if n.op == "tfl_mul" and graph.tensor(n.inputs[1]).is_constant and
            graph.tensor(n.inputs[0]).shape == (2, 16, 16)]


def _drop_scale(graph: Graph) -> None:
    """The committed graph without its MULs by the scale (the scores go straight to SOFTMAX's RESHAPE)."""
    for mul in _scale_muls(graph):
        graph.nodes.remove(mul)
        for n in graph.nodes:
            n.inputs = [mul.inputs[0] if i == mul.outputs[0] else i for i in n.inputs]
        del graph.tensors[mul.outputs[0]]


def _first_core_nodes(graph: Graph) -> list:
    lifted = lift_tfl_softmax(graph)
    return _chain(graph, lifted, _cores(lifted)[0])


def test_another_head_split_is_not_lifted():
    graph = _graph()
    chain = _first_core_nodes(graph)
    v_t = [n for n in chain if n.op == "tfl_transpose"][1]  # (q, v, k, out): v [1, T, H, dh] -> [1, H, T, dh]
    a = v_t.attrs
    assert tuple(a["input_strides"])[-3:] == (16, 32, 1)
    strides = list(a["input_strides"])
    strides[-2], strides[-1] = 1, 32  # reads [h, s, j] from s + 32 j: a transposed v, not v's heads
    v_t.attrs = {**a, "input_strides": tuple(strides)}
    assert len(_cores(lift_tfl_softmax(graph))) == 1


def test_an_intermediate_read_elsewhere_is_not_lifted():
    graph = _graph()
    chain = _first_core_nodes(graph)
    sm = next(n for n in chain if n.op == "tfl_softmax")
    graph.outputs = [*graph.outputs, sm.outputs[0]]
    assert len(_cores(lift_tfl_softmax(graph))) == 1


def test_softmax_over_another_axis_is_not_lifted():
    graph = _graph()
    sm = next(n for n in _first_core_nodes(graph) if n.op == "tfl_softmax")
    sm.attrs = {**sm.attrs, "outer_size": 2 * 16 * 2, "depth": 8}
    assert len(_cores(lift_tfl_softmax(graph))) == 1


@pytest.mark.parametrize("group", [1, 3, 16])
def test_reference_on_query_row_groups_equals_the_whole(group):
    lifted = lift_tfl_softmax(_graph())
    core = _cores(lifted)[1]
    t, d = core.attrs["tokens"], core.attrs["heads"] * core.attrs["head_dim"]
    for q, k, v in _qkv(lifted, core, 5)[3:7]:
        q = q.reshape(t, d)
        whole = tfl_kernels()[OP](core.attrs, [q, k, v], "double")
        parts = [tfl_kernels()[OP]({**core.attrs, "query_rows": min(t, t0 + group) - t0}, [q[t0:t0 + group], k, v],
                                   "double") for t0 in range(0, t, group)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


# -- the C kernel ----------------------------------------------------------------------------------------------

_i32 = ctypes.c_int32
_BMM = type("TflBatchMatmulParams", (ctypes.Structure,), {"_fields_": [
    ("batch_shape", _i32 * 3), ("lhs_batch_strides", _i32 * 3), ("rhs_batch_strides", _i32 * 3),
    *((f, _i32) for f in ("rows", "cols", "depth", "lhs_row_stride", "lhs_depth_stride", "rhs_depth_stride",
                          "rhs_col_stride", "lhs_offset", "rhs_offset", "output_offset", "output_multiplier",
                          "output_shift", "activation_min", "activation_max", "single_rounding"))]})
_PARAMS = type("TflSoftmaxAttentionParams", (ctypes.Structure,), {"_fields_": [
    *((f, _i32) for f in ("tokens", "heads", "head_dim", "query_rows", "has_scale", "scale_value")),
    ("qk", _BMM), ("scale", STRUCTS["mul"]), ("softmax", STRUCTS["softmax"]), ("pv", _BMM)]})


def _nested(struct_type, attrs: dict):
    s = struct_type()
    for field, ctype in s._fields_:
        value = attrs.get(field, 0) if field == "single_rounding" else attrs[field]  # TFLM's double rounding
        setattr(s, field, ctype(*[int(v) for v in value]) if isinstance(value, (tuple, list)) else int(value))
    return s


def _params(attrs: dict, rows: int):
    p = _PARAMS()
    for f in ("tokens", "heads", "head_dim", "has_scale", "scale_value"):
        setattr(p, f, int(attrs[f]))
    p.query_rows = rows
    p.qk, p.pv = _nested(_BMM, attrs["qk"]), _nested(_BMM, attrs["pv"])
    p.softmax_params = params_struct("softmax", attrs["softmax"])  # owns the exp table the copy points at
    p.softmax = p.softmax_params
    if attrs["has_scale"]:
        p.scale = params_struct("mul", attrs["scale"])
    return p


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """tfl_softmax_attention.c and the kernels it calls, strict flags, UBSan (undefined behaviour aborts)."""
    if not c_build.have_compiler():
        pytest.skip(f"no C compiler ({c_build.CC})")
    out = tmp_path_factory.mktemp("tfl_softmax") / "libtfl_softmax_attention.so"
    sources = ["hydra_requantize.c", "tfl_fixedpoint.c", "tfl_batch_matmul.c", "tfl_mul.c", "tfl_softmax.c",
               "tfl_softmax_attention.c"]
    run_cc([*STRICT_FLAGS, *EXTRA_WARNINGS, "-fPIC", "-shared", f"-I{INCLUDE_DIR}",
            "-fsanitize=undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g",
            *(str(SRC_DIR / s) for s in sources), "-o", str(out)])
    lib = ctypes.CDLL(str(out))
    lib.hydra_tfl_softmax_attention_s8.restype = ctypes.c_int
    lib.hydra_tfl_softmax_attention_s8.argtypes = [ctypes.POINTER(_PARAMS), *[ctypes.c_void_p] * 5]
    lib.hydra_tfl_softmax_attention_get_buffer_size.restype = ctypes.c_int32
    lib.hydra_tfl_softmax_attention_get_buffer_size.argtypes = [ctypes.POINTER(_PARAMS)]
    return lib


def _call(lib, attrs: dict, q: np.ndarray, k, v, rows: int, out: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    p = _params(attrs, rows)
    size = lib.hydra_tfl_softmax_attention_get_buffer_size(ctypes.byref(p))
    assert size == scratch_bytes(attrs)
    scratch = np.zeros(size // 4, np.int32)
    out = np.zeros_like(q) if out is None else out
    st = lib.hydra_tfl_softmax_attention_s8(ctypes.byref(p), q.ctypes.data, k.ctypes.data, v.ctypes.data,
                                            out.ctypes.data, scratch.ctypes.data)
    return st, out


@pytest.mark.parametrize("variant", ["committed", "no_scale"])
def test_c_kernel_equals_the_reference_whole_and_on_row_groups(lib, variant):
    graph = _graph()
    if variant == "no_scale":
        _drop_scale(graph)
    for core in _cores(lift_tfl_softmax(graph)):
        a = core.attrs
        t, d = a["tokens"], a["heads"] * a["head_dim"]
        for q, k, v in _qkv(graph, core, 6):
            q, k, v = (np.ascontiguousarray(x.reshape(t, d)) for x in (q, k, v))
            want = tfl_kernels()[OP](a, [q, k, v], "double")
            st, whole = _call(lib, a, q, k, v, t)
            assert st == c_build.HYDRA_OK
            np.testing.assert_array_equal(whole, want)
            for group in (1, 3, 5):
                got = np.zeros_like(q)
                for t0 in range(0, t, group):
                    rows = min(t, t0 + group) - t0
                    st, part = _call(lib, a, np.ascontiguousarray(q[t0:t0 + rows]), k, v, rows)
                    assert st == c_build.HYDRA_OK
                    got[t0:t0 + rows] = part
                np.testing.assert_array_equal(got, whole)
            inplace = q.copy()  # the output over q, one row at a time (TFL_IN_PLACE)
            for t0 in range(t):
                row = inplace[t0:t0 + 1]
                assert _call(lib, a, row, k, v, 1, out=row)[0] == c_build.HYDRA_OK
            np.testing.assert_array_equal(inplace, whole)


def test_c_kernel_rejects_bad_params(lib):
    core = _cores(lift_tfl_softmax(_graph()))[0]
    a = core.attrs
    q = k = v = np.zeros((16, 32), np.int8)
    for rows in (0, 17):
        assert _call(lib, a, q, k, v, rows)[0] == c_build.HYDRA_ERR_SHAPE
    assert _call(lib, {**a, "pv": {**a["pv"], "rhs_depth_stride": 16}}, q, k, v, 16)[0] == c_build.HYDRA_ERR_SHAPE
    assert _call(lib, {**a, "softmax": {**a["softmax"], "depth": 8}}, q, k, v, 16)[0] == c_build.HYDRA_ERR_SHAPE
    assert _call(lib, {**a, "has_scale": 2}, q, k, v, 16)[0] == c_build.HYDRA_ERR_ARG
    assert _call(lib, {**a, "scale_value": 128}, q, k, v, 16)[0] == c_build.HYDRA_ERR_ARG


# -- end to end ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tps", [1, 5])
def test_streamed_build_equals_tflm_under_ubsan(tps, tmp_path):
    res = driver.compile_model(_path(NAME), "host", tmp_path / "build", tokens_per_step=tps)
    body = [sub.op for n in res.graph.nodes if n.op == "token_loop" for sub in body_nodes(n)]
    assert body.count(OP) == 2 and "tfl_batch_matmul" not in body
    assert not any(n.op in ("tfl_batch_matmul", "tfl_softmax") for n in res.graph.nodes)
    assert (res.folder / "runtime" / "src" / "tfl_softmax_attention.c").is_file()
    xs = _inputs(res.graph.tensor(res.graph.inputs[0]).shape, seed=8)
    c_out = runner.run(res.folder, xs.reshape(len(xs), -1), sanitize=True).reshape(len(xs), -1)
    np.testing.assert_array_equal(c_out, _tflm(_path(NAME).read_bytes(), xs))


def test_streamed_build_equals_tflm_on_stm32_under_qemu(tmp_path):
    res = driver.compile_model(_path(NAME), "stm32f746", tmp_path / "build")
    xs = _inputs(res.graph.tensor(res.graph.inputs[0]).shape, seed=9)[:4]
    np.testing.assert_array_equal(runner.run(res.folder, xs.reshape(len(xs), -1)).reshape(len(xs), -1),
                                  _tflm(_path(NAME).read_bytes(), xs))


def test_greedy_keeps_the_core_unfused(tmp_path):
    res = driver.compile_model(_path(NAME), "host", tmp_path / "build", schedule="greedy")
    assert not any(n.op == OP for n in res.graph.nodes)
    assert sum(n.op == "tfl_batch_matmul" for n in res.graph.nodes) == 4
