"""Softmax attention end to end: the lift from every spelling, the float op, the int8 kernel bit for bit.

- the C kernel (ctypes, UBSan) against reference/int_interp.py on random and edge inputs: constant
  rows, extreme scores, T = 1, heads 1..4, odd head dims, both roundings, extreme multipliers;
- sdpa / manual / nn.MultiheadAttention (torch.export as is and after the core ATen decompositions)
  and an ONNX-style graph (4-d matmul, permute, reshape, softmax, div by a constant) lift to
  softmax_attention, and the lowered float graph equals torch;
- compiled models (all softmax, mixed Hydra/softmax, greedy and stream) validate bit-exact on the
  host and on stm32f746 under QEMU, hold no T x T buffer, and agree with float on top-1.
"""

from __future__ import annotations

import ctypes

import c_build
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra_edge import driver
from hydra_edge.frontend.aten import exported_program_to_graph
from hydra_edge.frontend.module import from_module
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.ir.graph import Graph, Node, Tensor
from hydra_edge.memory.loop_plan import plan_token_loop
from hydra_edge.memory.planner import check_no_overlap
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig, SoftmaxAttention
from hydra_edge.passes.canonicalize import canonicalize
from hydra_edge.passes.errors import LoweringError
from hydra_edge.passes.lift_softmax import lift_softmax
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.ops.softmax_attention import SOFTMAX_EXP_ENTRIES, softmax_attention, softmax_exp_table
from hydra_edge.ops import op_def
from hydra_edge.ops.token_loop import body_nodes
from hydra_edge.reference.float_interp import run_float
from hydra_edge.boards import load_board
from hydra_edge.validate.accuracy import agreement, float_outputs, int8_outputs
from hydra_edge.validate.bitexact import validate_build
from hypothesis import given
from hypothesis import strategies as st
from model_zoo import calibration_inputs, export_model, make_model
from test_kernels import EXAMPLES, Runner, act, inputs_for, random_lut, regimes, requant_params, roundings, seeds, zero_point

INT32_MAX = 2**31 - 1
STYLES = ("sdpa", "manual", "mha")


# -- the C kernel against the reference ----------------------------------------------------------


@pytest.fixture(scope="module", params=["double", "single"])
def rt(request, tmp_path_factory):
    return request.param, c_build.build_runtime_lib(tmp_path_factory.mktemp("rt"), sanitize=True)


def _node(heads, zq, zk, zv, em, es, m, s, zy) -> Node:
    attrs = dict(heads=heads, zq=zq, zk=zk, zv=zv, exp_multiplier=em, exp_shift=es, multiplier=m, shift=s,
                 out_zp=zy, max_tokens=65535)
    return Node("attn", "softmax_attention", ["q", "k", "v", "table"], ["y"], attrs)


def _run_c(lib, node: Node, q, k, v, table, rounding: str = "double") -> tuple[int, np.ndarray]:
    t, d = q.shape
    a = node.attrs
    p = c_build.SoftmaxAttentionParams(
        tokens=t, dim=d, heads=a["heads"], query_rows=t, q_zero_point=a["zq"], k_zero_point=a["zk"], v_zero_point=a["zv"],
        exp_multiplier=a["exp_multiplier"], exp_shift=a["exp_shift"], exp_table=table.ctypes.data,
        exp_table_size=len(table), multiplier=a["multiplier"], shift=a["shift"], output_zero_point=a["out_zp"],
        single_rounding=int(rounding == "single"))
    size = lib.hydra_softmax_attention_s8_get_buffer_size(ctypes.byref(p))
    scratch = np.zeros(max(size, 4) // 4, np.int32)
    out = np.zeros((t, d), np.int8)
    status = lib.hydra_softmax_attention_s8(ctypes.byref(p), q.ctypes.data, k.ctypes.data, v.ctypes.data,
                                            out.ctypes.data, scratch.ctypes.data)
    return status, out


def _case(rng, t, d, heads, regime):
    """(node, q, k, v): random attention inputs and parameters; regime 'edge' picks extreme values."""
    table = softmax_exp_table()
    if regime == "realistic":
        zq, zk, zv, zy = (int(z) for z in rng.integers(-40, 41, 4))
        em, es = int(rng.integers(2**30, INT32_MAX)), int(rng.integers(-20, -8))
        m, s = int(rng.integers(2**30, INT32_MAX)), int(rng.integers(-17, -10))
    else:
        zq, zk, zv, zy = (int(z) for z in rng.choice([-128, 127, 0], 4))
        em = int(rng.choice([0, 2**30, INT32_MAX]))
        es = int(rng.choice([-31, -1, 0, 1, 30]))
        m, s = int(rng.choice([0, 2**30, INT32_MAX])), int(rng.choice([-31, -16, 0, 30]))
    q, k, v = (rng.integers(-128, 128, (t, d)).astype(np.int8) for _ in range(3))
    return _node(heads, zq, zk, zv, em, es, m, s, zy), q, k, v, table


def _check(rt, node, q, k, v, table):
    rounding, lib = rt
    status, got = _run_c(lib, node, q, k, v, table, rounding)
    assert status == c_build.HYDRA_OK
    want = op_def("softmax_attention").int_ref(node, q, k, v, table, rounding)
    np.testing.assert_array_equal(got, want, err_msg=str(node.attrs))


@pytest.mark.parametrize("heads, dh", [(1, 1), (1, 8), (2, 5), (3, 7), (4, 3), (4, 16)])
@pytest.mark.parametrize("t", [1, 2, 7, 30])
def test_kernel_random(rt, t, heads, dh):
    rng = np.random.default_rng(t * 100 + heads * 10 + dh)
    for regime in ("realistic", "realistic", "edge", "edge"):
        _check(rt, *_case(rng, t, heads * dh, heads, regime))


def test_kernel_edge_inputs(rt):
    rng = np.random.default_rng(7)
    t, heads, dh = 9, 3, 5
    d = heads * dh
    node, q, k, v, table = _case(rng, t, d, heads, "realistic")
    zq, zk = node.attrs["zq"], node.attrs["zk"]
    cases = [
        (np.full((t, d), zq, np.int8), k, v),  # q at its zero point: all scores 0, uniform weights
        (q, np.tile(k[:1], (t, 1)), v),  # identical keys: uniform weights whatever q
        (q, k, np.full((t, d), 127, np.int8)),  # constant values
        (np.full((t, d), 127, np.int8), np.full((t, d), -128, np.int8), v),  # extreme scores
    ]
    for qq, kk, vv in cases:
        _check(rt, node, qq, kk, vv, table)
    # The largest |scores| and differences: zero points at the far end, one huge and one tiny key.
    big = _node(1, -128, 127, -128, INT32_MAX, 30, INT32_MAX, 0, 127)
    q = np.full((4, 64), 127, np.int8)
    k = np.full((4, 64), -128, np.int8)
    k[1] = 127
    _check(rt, big, q, k, np.full((4, 64), 127, np.int8), table)
    _check(rt, _node(1, 0, 0, 0, 0, 0, 2**30, -16, 0), q, k, v[:4, :15].repeat(5, axis=1)[:, :64].copy(), table)


@pytest.mark.parametrize("t", [256, 258])
def test_kernel_value_sum_at_the_int32_edge(rt, t):
    """Up to 256 tokens the weighted value sum is formed in int32, above in int64: uniform weights (q at its
    zero point) on values 255 above their zero point reach 256 * 2^15 * 255 = 2^31 - 2^23, and 258 * 2^15 * 255 > 2^31."""
    table = softmax_exp_table()
    node = _node(2, 3, -7, -128, 2**30, -10, INT32_MAX, -22, 0)
    q = np.full((t, 16), 3, np.int8)
    k = np.random.default_rng(t).integers(-128, 128, (t, 16)).astype(np.int8)
    _check(rt, node, q, k, np.full((t, 16), 127, np.int8), table)
    _check(rt, node, np.random.default_rng(t + 1).integers(-128, 128, (t, 16)).astype(np.int8), k,
           np.random.default_rng(t + 2).integers(-128, 128, (t, 16)).astype(np.int8), table)


def test_kernel_rejects_bad_params(rt):
    _, lib = rt
    rng = np.random.default_rng(3)
    node, q, k, v, table = _case(rng, 4, 6, 2, "realistic")
    assert _run_c(lib, node, q, k, v, table)[0] == c_build.HYDRA_OK
    bad_table = table.copy()
    bad_table[0] = 2**15 - 1  # the bounds on the sum and the reciprocal need exp(0) = 2^15
    assert _run_c(lib, node, q, k, v, bad_table)[0] == c_build.HYDRA_ERR_ARG
    bad_table = table.copy()
    bad_table[5] = 2**15 + 1
    assert _run_c(lib, node, q, k, v, bad_table)[0] == c_build.HYDRA_ERR_ARG
    three = Node("attn", "softmax_attention", [], [], {**node.attrs, "heads": 4})  # 4 does not divide 6
    assert _run_c(lib, three, q, k, v, table)[0] == c_build.HYDRA_ERR_SHAPE
    zp = Node("attn", "softmax_attention", [], [], {**node.attrs, "zv": 128})
    assert _run_c(lib, zp, q, k, v, table)[0] == c_build.HYDRA_ERR_ARG
    p = c_build.SoftmaxAttentionParams(tokens=65536, dim=4, heads=1)
    assert lib.hydra_softmax_attention_s8_get_buffer_size(ctypes.byref(p)) == 0
    p.tokens = 30
    assert lib.hydra_softmax_attention_s8_get_buffer_size(ctypes.byref(p)) == 8 * 30


def test_exp_table():
    table = softmax_exp_table()
    assert len(table) == SOFTMAX_EXP_ENTRIES and table[0] == 2**15
    assert np.all(np.diff(table) <= 0) and table[709] == 1 and table[710] == 0
    i = np.arange(700)
    np.testing.assert_allclose(table[:700], np.exp(-i / 64) * 2**15, atol=0.5)


def test_int8_close_to_float():
    """The integer op against float softmax attention on the dequantised inputs: within a few output steps."""
    rng = np.random.default_rng(11)
    t, heads, d = 20, 2, 16
    sq = sk = sv = 0.02
    sy = 0.025  # |output| <= s_v * 130 < 127.5 s_y - 1: no saturation
    scale = (d // heads) ** -0.5
    from hydra_edge.numerics.fixedpoint import quantize_multiplier

    em, es = quantize_multiplier(scale * sq * sk * 64)
    m, s = quantize_multiplier(sv / (2**15 * sy))
    node = _node(heads, 3, -5, 2, em, es, m, s, -1)
    q, k, v = (rng.integers(-128, 128, (t, d)).astype(np.int8) for _ in range(3))
    y = op_def("softmax_attention").int_ref(node, q, k, v, softmax_exp_table(), "double")
    ref = softmax_attention(sq * (q - 3.0), sk * (k + 5.0), sv * (v - 2.0), heads, scale)
    err = np.abs(sy * (y.astype(np.float64) + 1) - ref) / sy
    assert err.max() <= 2.0, err.max()
    assert err.mean() <= 0.6, err.mean()


# -- the emitted op through the host harness (ASan + UBSan), as tests/test_kernels.py does ------------


@pytest.fixture(scope="module")
def kernel_runner(tmp_path_factory):
    return Runner(tmp_path_factory.mktemp("softmax_kernels"))


@EXAMPLES
@given(st.data(), st.one_of(st.integers(1, 13), st.sampled_from([1, 64])), st.integers(1, 4), st.integers(1, 9),
       regimes, roundings, seeds)
def test_emitted_kernel(kernel_runner, data, t, heads, dh, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    zq, zk, zv, zy = (zero_point(data, regime, label) for label in ("zq", "zk", "zv", "zy"))
    g = Graph(meta={"rounding": rounding})
    q = act(g, "q", (t, heads * dh), zq)
    # k and v from random tables of q; sometimes k is constant (every score equal: uniform weights).
    k = random_lut(g, rng, q, "k", zk, constant=zk if data.draw(st.integers(0, 4), "k constant") == 0 else None)
    v = random_lut(g, rng, q, "v", zv)
    em, es = requant_params(data, regime, dh * 75 * 75 / 64, "exp")  # a score difference ~ a few table steps
    m, s = requant_params(data, regime, 75 * 2**15, "out")
    g.add_constant("table", softmax_exp_table())
    y = act(g, "y", (t, heads * dh), zy)
    g.add_node(_node(heads, zq, zk, zv, em, es, m, s, zy))
    g.nodes[-1].inputs = [q, k, v, "table"]
    g.nodes[-1].outputs = [y]
    g.inputs, g.outputs = [q], [y]
    kernel_runner.check(g, inputs_for(rng, (t, heads * dh), zq, n=3))


# -- lifting ---------------------------------------------------------------------------------


def _cfg(style: str, attention="softmax", heads: int = 3, depth: int = 2) -> HydraViTConfig:
    return HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=depth, mlp_ratio=2.0, attention=attention,
                          heads=heads, softmax_style=style)


def _lowered(model: HydraViT, core_aten: bool):
    x = torch.zeros(1, 3, 16, 16)
    program = torch.export.export(model.eval(), (x,))
    if core_aten:
        program = program.run_decompositions()
    return lower_to_ir(exported_program_to_graph(program, "model.pt2", "pt2"))


@pytest.mark.parametrize("core_aten", [False, True], ids=["export", "core-aten"])
@pytest.mark.parametrize("style", STYLES)
def test_styles_lift_and_match_torch(style, core_aten):
    cfg = _cfg(style, ("softmax", "hydra", "softmax"), heads=3, depth=3)
    model = make_model(cfg)
    g = _lowered(model, core_aten)
    ops = [n.op for n in g.nodes]
    assert ops.count("softmax_attention") == 2 and ops.count("hydra_attention") == 1
    assert ops.count("linear") == 3 * 6 + 1  # q, k, v, proj, fc1, fc2 per block (MHA's in_proj split), head
    for n in g.nodes:
        if n.op == "softmax_attention":
            assert n.attrs["heads"] == 3 and n.attrs["scale"] == pytest.approx(8**-0.5)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x).numpy()
    for i in range(len(x)):
        np.testing.assert_allclose(run_float(g, x[i].numpy())[0], want[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_heads_and_packed_in_proj(heads):
    model = make_model(_cfg("mha", heads=heads, depth=1))
    g = _lowered(model, False)
    attn = next(n for n in g.nodes if n.op == "softmax_attention")
    assert attn.attrs["heads"] == heads
    mha = model.blocks[0].attn.mha
    w = mha.in_proj_weight.detach().numpy()
    for i, name in enumerate(attn.inputs):  # q, k, v: the thirds of the packed projection, in order
        lin = next(n for n in g.nodes if n.outputs[0] == name)
        np.testing.assert_array_equal(g.tensor(lin.inputs[1]).data, w[24 * i:24 * (i + 1)])


class _Attn(torch.nn.Module):
    """Tokens from a linear, then one attention body, as users write it."""

    def __init__(self, body) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(12, 36)
        self.body = body

    def forward(self, x):  # x: [1, 4, 12]
        q, k, v = self.lin(x).chunk(3, dim=-1)
        split = lambda t: t.reshape(1, 4, 2, 6).permute(0, 2, 1, 3)  # noqa: E731
        return self.body(split(q), split(k), split(v)).transpose(1, 2).reshape(1, 4, 12)


def _lift(body) -> Graph:
    return lift_softmax(canonicalize(from_module(_Attn(body).eval(), torch.zeros(1, 4, 12))))


@pytest.mark.parametrize(
    "name, body, scale",
    [
        ("div-after", lambda q, k, v: ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1) @ v, 0.5),
        ("scaled-q", lambda q, k, v: F.softmax((q * 0.25) @ k.transpose(2, 3), dim=3) @ v, 0.25),
        ("sdpa-scale", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3), 0.3),
        ("unscaled", lambda q, k, v: torch.softmax(torch.matmul(q, k.permute(0, 1, 3, 2)), dim=-1) @ v, 1.0),
    ],
)
def test_spellings_lift(name, body, scale):
    g = _lift(body)
    attn = [n for n in g.nodes if n.op == "softmax_attention"]
    assert len(attn) == 1 and attn[0].attrs == {"heads": 2, "scale": pytest.approx(scale)}
    assert not {"softmax", "_softmax", "matmul", "scaled_dot_product_attention"} & {n.op for n in g.nodes}
    # chunk(3) of one projection: three linears cut out of it
    assert [n.op for n in g.nodes if n.outputs[0] in attn[0].inputs] == ["linear"] * 3


@pytest.mark.parametrize(
    "name, body",
    [
        ("masked", lambda q, k, v: ((q @ k.transpose(-1, -2)) + torch.ones(4, 4)).softmax(-1) @ v),
        ("causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        ("softmax-over-queries", lambda q, k, v: (q @ k.transpose(-1, -2)).softmax(-2) @ v),
        ("scores-transposed", lambda q, k, v: (q @ k.transpose(-1, -2)).transpose(-1, -2).softmax(-1) @ v),
    ],
)
def test_non_attention_is_not_lifted(name, body):
    g = _lift(body)
    assert "softmax_attention" not in {n.op for n in g.nodes}


def test_masked_attention_is_refused_with_a_hint():
    class Masked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = torch.nn.Conv2d(3, 8, 4, stride=4)
            self.attn = SoftmaxAttention(8, 2, "sdpa")

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            b, n, d = t.shape
            q, k, v = (self.attn._split(f(t)) for f in (self.attn.q, self.attn.k, self.attn.v))
            mask = torch.ones(n, n, dtype=torch.bool).tril()
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.attn.proj(out.transpose(1, 2).reshape(b, n, d)).mean(1)

    with pytest.raises(LoweringError, match=r"scaled_dot_product_attention.*with an attn_mask that hides some keys"):
        lower_to_ir(from_module(Masked().eval(), torch.zeros(1, 3, 8, 8)))


def _onnx_style_graph() -> tuple[Graph, dict]:
    """What the ONNX frontend emits: matmul 4-d, permute (dims), reshape (shape), softmax (dim), div by a constant."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_tensor(Tensor("x", (1, 4, 12)))
    g.inputs = ["x"]
    w = {n: rng.standard_normal((12, 12)).astype(np.float32) for n in "qkv"}

    def node(op, inputs, out_shape, **attrs):
        name = g.unique_name(op)
        g.add_tensor(Tensor(name, out_shape))
        g.add_node(Node(name, op, inputs, [name], attrs))
        return name

    heads = {}
    for n in "qkv":
        g.add_constant(f"w{n}", w[n].T.copy())
        p = node("matmul", ["x", f"w{n}"], (1, 4, 12))
        r = node("reshape", [p], (1, 4, 3, 4), shape=[1, 4, 3, 4])
        perm = [0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]
        heads[n] = node("permute", [r], (1, 3, 4, 4), dims=perm)
    g.add_constant("sqrt_dh", np.array(2.0, np.float32))
    s = node("matmul", [heads["q"], heads["k"]], (1, 3, 4, 4))
    s = node("div", [s, "sqrt_dh"], (1, 3, 4, 4))
    p = node("softmax", [s], (1, 3, 4, 4), dim=3)
    o = node("matmul", [p, heads["v"]], (1, 3, 4, 4))
    o = node("permute", [o], (1, 4, 3, 4), dims=[0, 2, 1, 3])
    o = node("reshape", [o], (1, 4, 12), shape=[1, 4, 12])
    g.add_constant("wo", rng.standard_normal((12, 12)).astype(np.float32))
    g.outputs = [node("matmul", [o, "wo"], (1, 4, 12))]
    return g, w


def test_onnx_spelling_lifts():
    g, w = _onnx_style_graph()
    lifted = lift_softmax(canonicalize(g))
    attn = [n for n in lifted.nodes if n.op == "softmax_attention"]
    assert len(attn) == 1 and attn[0].attrs == {"heads": 3, "scale": 0.5}
    assert [n.op for n in lifted.nodes] == ["matmul"] * 3 + ["softmax_attention", "matmul"]
    # the float semantics: the lifted op on the projections equals the unlifted chain
    x = np.random.default_rng(1).standard_normal((4, 12))
    q, k, v = (x @ w[n].T for n in "qkv")
    split = lambda a: a.reshape(4, 3, 4).transpose(1, 0, 2)  # noqa: E731
    s = split(q) @ split(k).transpose(0, 2, 1) / 2.0
    p = np.exp(s - s.max(-1, keepdims=True))
    want = ((p / p.sum(-1, keepdims=True)) @ split(v)).transpose(1, 0, 2).reshape(4, 12)
    np.testing.assert_allclose(softmax_attention(q, k, v, 3, 0.5), want, rtol=1e-12)


# -- compiled models ----------------------------------------------------------------------------


def _compile(cfg, tmp_path, board="host", rounding="double", schedule=None):
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    return driver.compile_graph(graph, load_board(board), tmp_path / "build", calibration_inputs(cfg), rounding,
                                schedule=schedule)


def _inputs(result, n=4, seed=2):
    shape = result.graph.tensor(result.graph.inputs[0]).shape
    x = np.random.default_rng(seed).integers(-128, 128, size=(n, *shape), dtype=np.int8)
    x[0] = -128
    x[1] = 127
    return np.concatenate([np.load(result.folder / driver.TEST_VECTORS), x])


def _no_square_buffers(result):
    """Every softmax_attention: scratch of one row of scores (8 T bytes), an output apart from q, k, v; in a
    token loop, the same inside the loop's own plan."""
    g, plan = result.graph, result.plan
    nodes = [(n, plan) for n in g.nodes if n.op == "softmax_attention"]
    for loop in (n for n in g.nodes if n.op == "token_loop"):
        layout = plan_token_loop(g, loop)
        check_no_overlap(layout.plan)
        nodes += [(n, layout.plan) for n in body_nodes(loop) if n.op == "softmax_attention"]
    assert nodes
    for n, where in nodes:
        t = g.tensor(n.inputs[0]).shape[0]
        assert where.buffer(n.name + "#scratch").size == 8 * t
        out = plan.buffer(n.outputs[0]) if n.outputs[0] in [b.name for b in plan.buffers] else None
        for name in n.inputs[:3] if out is not None else ():
            b = plan.buffer(name)
            assert out.end <= b.offset or b.end <= out.offset, (name, n.outputs[0])
    t = max(g.tensor(n.inputs[0]).shape[0] for n, _ in nodes)
    assert all(b.size < t * t * 4 or b.name == g.inputs[0] for b in plan.buffers if "#scratch" in b.name)


@pytest.mark.parametrize(
    "style, attention, rounding, schedule",
    [
        ("manual", "softmax", "double", None),
        ("sdpa", "softmax", "single", "greedy"),
        ("mha", ("hydra", "softmax"), "double", "stream"),
        ("sdpa", ("softmax", "hydra"), "double", "greedy"),
        ("manual", ("softmax", "hydra"), "single", "stream"),
    ],
)
def test_bit_exact_host(style, attention, rounding, schedule, tmp_path):
    cfg = _cfg(style, attention, heads=2)
    result = _compile(cfg, tmp_path, rounding=rounding, schedule=schedule)
    ops = [n.op for n in result.graph.nodes]
    run = [sub["op"] for n in result.graph.nodes for sub in n.attrs.get("body", [])] + ops  # loops' bodies too
    assert run.count("softmax_attention") == (2 if attention == "softmax" else 1)
    if schedule == "stream":
        assert "token_loop" in ops and "hydra_attention" not in ops  # its halves run in token loops
    _no_square_buffers(result)
    check = validate_build(result.folder, result.graph, _inputs(result))
    assert check.ok, check.mismatches
    assert check.bytes_compared == len(_inputs(result)) * cfg.num_classes


def test_bit_exact_under_sanitizers(tmp_path):
    result = _compile(_cfg("manual", heads=4, depth=1), tmp_path)
    check = validate_build(result.folder, result.graph, _inputs(result, n=2), sanitize=True)
    assert check.ok, check.mismatches


@pytest.mark.parametrize("board", ["stm32f746", "jetson-orin"])
def test_bit_exact_on_board(board, tmp_path):
    """Under QEMU, where q.k takes the target's dot-product path (SMLAD, SDOT)."""
    cfg = _cfg("sdpa", ("softmax", "hydra"), heads=2)
    result = _compile(cfg, tmp_path, board=board)
    assert result.report["ram"]["schedule"] == "stream"
    check = validate_build(result.folder, result.graph, _inputs(result, n=2))
    assert check.ok, check.mismatches


def test_int8_top1_agrees_with_float(tmp_path):
    cfg = _cfg("manual", ("softmax", "hydra"), heads=2)
    pt2 = export_model(cfg, tmp_path)
    calib = calibration_inputs(cfg, n=16)
    graph = lower_to_ir(load_pt2(pt2))
    result = driver.compile_graph(graph, load_board("host"), tmp_path / "build", calib)
    x = np.random.default_rng(5).standard_normal((24, 3, 16, 16)).astype(np.float32)
    a = agreement(float_outputs(pt2, x), int8_outputs(result.folder, x).dequantized)
    print(f"\ntop-1 agreement {a.top1_agree:.1%}; logit error max {a.max_abs_error:.4f} mean {a.mean_abs_error:.4f}")
    assert a.top1_agree >= 0.9
