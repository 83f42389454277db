"""Passes: canonicalize, lift Hydra attention, lower to the ops of ir/ops.py; and the printer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra_edge.frontend.module import from_module
from hydra_edge.ir.graph import Graph, Node, QuantParams, Tensor
from hydra_edge.ops import LOWERED_OPS
from hydra_edge.ir.printer import format_graph
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig
from hydra_edge.passes.canonicalize import canonicalize
from hydra_edge.passes.errors import LoweringError
from hydra_edge.passes.lift_hydra import lift_hydra
from hydra_edge.passes.pipeline import lower_to_ir
from torch import nn

torch.set_num_threads(1)

from hydra_edge.reference.float_interp import run_float

SHAPES = {
    "norm-d36-p4-24px-depth1": HydraViTConfig(image_size=24, patch_size=4, embed_dim=36, depth=1, phi_style="norm"),
    "normalize-d36-p4-24px-depth3": HydraViTConfig(image_size=24, patch_size=4, embed_dim=36, depth=3,
                                                   phi_style="normalize"),
    "norm-d20-p8-32px-depth3": HydraViTConfig(image_size=32, patch_size=8, embed_dim=20, depth=3, mlp_ratio=2.5,
                                              phi_style="norm"),
    "normalize-d27-p4-32px-depth1-c1": HydraViTConfig(image_size=32, in_channels=1, patch_size=4, embed_dim=27,
                                                      depth=1, mlp_ratio=3.0, num_classes=7, phi_style="normalize"),
}


def _model(cfg: HydraViTConfig, seed: int = 0) -> HydraViT:
    torch.manual_seed(seed)
    model = HydraViT(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines, so that a swapped gamma/beta would show
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _example(cfg: HydraViTConfig) -> torch.Tensor:
    return torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)


def _expected_ops(depth: int) -> list[str]:
    block = ["layernorm", "linear", "linear", "linear", "hydra_attention", "linear", "add",
             "layernorm", "linear", "gelu", "linear", "add"]
    return ["patch_embed", "add"] + block * depth + ["layernorm", "mean_pool", "linear"]


@pytest.fixture(scope="module", params=list(SHAPES))
def lowered(request):
    cfg = SHAPES[request.param]
    model = _model(cfg)
    aten = from_module(model, _example(cfg))
    return cfg, model, aten, lower_to_ir(aten)


# -- the Hydra ViT family ---------------------------------------------------------


def test_op_sequence_and_counts(lowered):
    cfg, _, _, g = lowered
    d = cfg.depth
    assert [n.op for n in g.nodes] == _expected_ops(d)
    assert Counter(n.op for n in g.nodes) == {
        "patch_embed": 1, "add": 1 + 2 * d, "layernorm": 2 * d + 1, "linear": 6 * d + 1,
        "hydra_attention": d, "gelu": d, "mean_pool": 1,
    }
    assert set(n.op for n in g.nodes) <= set(LOWERED_OPS)


def test_shapes(lowered):
    cfg, _, _, g = lowered
    t, dim, c = cfg.num_tokens, cfg.embed_dim, cfg.in_channels
    shape = {n.op: g.tensor(n.outputs[0]).shape for n in g.nodes}
    assert g.tensor(g.inputs[0]).shape == (c, cfg.image_size, cfg.image_size)
    assert shape["patch_embed"] == (t, dim)
    assert shape["hydra_attention"] == (t, dim)
    assert shape["gelu"] == (t, cfg.mlp_dim)
    assert shape["mean_pool"] == (dim,)
    assert [g.tensor(o).shape for o in g.outputs] == [(cfg.num_classes,)]
    pe = next(n for n in g.nodes if n.op == "patch_embed")
    assert pe.attrs == {"patch": cfg.patch_size}
    assert g.tensor(pe.inputs[1]).shape == (dim, c, cfg.patch_size, cfg.patch_size)
    pos = g.tensor(g.nodes[1].inputs[1])
    assert pos.is_constant and pos.shape == (t, dim)  # pos_embed without its batch dim
    assert all(n.attrs == {"eps": pytest.approx(1e-5)} for n in g.nodes if n.op == "layernorm")
    assert all(n.attrs == {"approximate": "none"} for n in g.nodes if n.op == "gelu")


def test_hydra_operands_are_q_k_v(lowered):
    cfg, model, _, g = lowered
    hydras = [n for n in g.nodes if n.op == "hydra_attention"]
    for block, node in zip(model.blocks, hydras):
        for name, linear in zip(node.inputs, (block.attn.q, block.attn.k, block.attn.v)):
            producer = g.producer(name)
            assert producer.op == "linear"
            np.testing.assert_array_equal(g.tensor(producer.inputs[1]).data, linear.weight.detach().numpy())
        assert "hydra_vit.py:" in node.source


def test_parameters_preserved(lowered):
    _, model, _, g = lowered
    assert sum(t.numel for t in g.constants()) == sum(p.numel() for p in model.parameters())
    assert all(t.dtype == "float32" for t in g.tensors.values())


def test_float_matches_torch(lowered):
    cfg, model, _, g = lowered
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    for i in range(len(x)):
        (got,) = run_float(g, x[i].numpy())
        np.testing.assert_allclose(got, want[i], rtol=1e-4, atol=1e-4)


def test_passes_are_pure(lowered):
    _, _, aten, _ = lowered
    before = format_graph(aten)
    lower_to_ir(aten)
    assert format_graph(aten) == before


def test_lift_hydra_removes_the_pattern(lowered):
    cfg, _, aten, _ = lowered
    lifted = lift_hydra(canonicalize(aten))
    ops = Counter(n.op for n in lifted.nodes)
    assert ops["hydra_attention"] == cfg.depth
    for gone in ("linalg_vector_norm", "clamp_min", "expand", "div", "sum", "mul"):
        assert ops[gone] == 0, gone


# -- other spellings of the same model ----------------------------------------------


class _VariantAttention(nn.Module):
    """Hydra attention spelt differently: matmul + bias adds, dim=2 / dim=1, swapped mul operands."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.wq, self.wk, self.wv = (nn.Parameter(torch.randn(d, d) / d**0.5) for _ in range(3))
        self.bq, self.bk = nn.Parameter(torch.randn(d) * 0.1), nn.Parameter(torch.randn(d) * 0.1)
        self.v = nn.Linear(d, d, bias=False)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x @ self.wq.t() + self.bq
        k = torch.matmul(x, self.wk.T) + self.bk
        v = self.v(x)
        q = F.normalize(q, dim=2)
        k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True)
        kv = (v * k).sum(dim=1, keepdim=True)
        return self.drop(self.proj(kv * q))


class _VariantViT(nn.Module):
    def __init__(self, d: int = 18, p: int = 4, size: int = 16, mlp: int = 40) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, d, p, stride=p)
        self.register_buffer("pos", torch.randn((size // p) ** 2, d) * 0.1)  # no batch dim
        self.ln1, self.ln2, self.norm = nn.LayerNorm(d), nn.LayerNorm(d, elementwise_affine=False), nn.LayerNorm(d)
        self.attn = _VariantAttention(d)
        self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)
        self.act = nn.GELU(approximate="tanh")
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x)
        t = t.reshape(t.shape[0], t.shape[1], -1).permute(0, 2, 1).contiguous()
        t = t + self.pos
        t = t + self.attn(self.ln1(t)).clone()
        t = t + self.fc2(self.act(self.fc1(self.ln2(t))))
        return self.head(self.norm(t).mean(dim=-2).detach())


@pytest.fixture(scope="module")
def variant():
    torch.manual_seed(3)
    model = _VariantViT().eval()
    return model, lower_to_ir(from_module(model, torch.zeros(1, 3, 16, 16)))


def test_variant_lowers_to_the_same_ops(variant):
    _, g = variant
    assert [n.op for n in g.nodes] == _expected_ops(1)
    assert next(n for n in g.nodes if n.op == "gelu").attrs == {"approximate": "tanh"}
    q, k, v = next(n for n in g.nodes if n.op == "hydra_attention").inputs
    # x @ W.t() + b became a linear whose bias is b.
    model = variant[0]
    q_lin = g.producer(q)
    np.testing.assert_allclose(g.tensor(q_lin.inputs[1]).data, model.attn.wq.detach().numpy())
    np.testing.assert_allclose(g.tensor(q_lin.inputs[2]).data, model.attn.bq.detach().numpy())
    np.testing.assert_array_equal(g.tensor(g.producer(v).inputs[2]).data, 0)  # bias=False: zeros


def test_variant_float_matches_torch(variant):
    model, g = variant
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x).numpy()
    for i in range(len(x)):
        np.testing.assert_allclose(run_float(g, x[i].numpy())[0], want[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("phi_style", ["norm", "normalize"])
def test_core_aten_program_lowers(phi_style, tmp_path):
    """A .pt2 saved after the default (core ATen) decompositions: addmm between views, native_layer_norm + getitem,
    convolution, permute; F.normalize's clamp_min becomes clamp(min=eps)."""
    from hydra_edge.frontend.pt2 import load_pt2

    cfg = HydraViTConfig(image_size=16, patch_size=4, embed_dim=12, depth=2, phi_style=phi_style)
    model = _model(cfg)
    program = torch.export.export(model, (_example(cfg),)).run_decompositions()
    torch.export.save(program, tmp_path / "core.pt2")
    aten = load_pt2(tmp_path / "core.pt2")
    assert {"addmm", "native_layer_norm", "convolution", "getitem"} <= {n.op for n in aten.nodes}
    g = lower_to_ir(aten)
    assert [n.op for n in g.nodes] == _expected_ops(2)
    # Weights transposed twice (permute in the program, back in lowering) keep their parameter's name.
    assert g.nodes[3].inputs[1] == "p_blocks_0_attn_q_weight"
    if run_float is not None:
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            want = model(x).numpy()[0]
        np.testing.assert_allclose(run_float(g, x[0].numpy())[0], want, rtol=1e-4, atol=1e-4)


# -- what the compiler refuses ---------------------------------------------------------


class _Tokens(nn.Module):
    """Patch embedding then `body`: a frame for one unsupported op."""

    def __init__(self, body, conv: nn.Conv2d | None = None) -> None:
        super().__init__()
        self.conv = conv or nn.Conv2d(3, 8, 4, stride=4)
        self.lin = nn.Linear(8, 8)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x).flatten(2).transpose(1, 2)
        return self.body(self, t).mean(dim=1)


def _lowering_error(body, conv=None) -> str:
    graph = from_module(_Tokens(body, conv).eval(), torch.zeros(1, 3, 16, 16))
    with pytest.raises(LoweringError) as info:
        lower_to_ir(graph)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_softmax_is_refused():
    msg = _lowering_error(lambda m, t: F.softmax(m.lin(t), dim=-1))
    assert "unsupported op 'aten.softmax' at node softmax (tests/test_passes.py:" in msg
    assert "hydra-edge lowers: conv2d (patch embedding; any kernel, stride, padding" in msg


def test_sin_is_refused():
    msg = _lowering_error(lambda m, t: torch.sin(m.lin(t)))
    assert "aten.sin x1 (#4 sin at tests/test_passes.py:" in msg


def test_relu_after_a_linear_is_its_clamp():
    graph = lower_to_ir(from_module(_Tokens(lambda m, t: torch.relu(m.lin(t))).eval(), torch.zeros(1, 3, 16, 16)))
    (lin,) = [n for n in graph.nodes if n.op == "linear"]
    assert lin.attrs["clamp_min"] == 0.0 and "activation" not in [n.op for n in graph.nodes]


def test_a_padded_conv_stem_is_a_conv2d_whose_map_is_the_token_matrix():
    """conv 3x3 stride 1 padding 1 then .flatten(2).transpose(1, 2): conv2d, and its [H*W, C] output is the tokens."""
    graph = lower_to_ir(from_module(_Tokens(lambda m, t: t, nn.Conv2d(3, 8, 3, stride=1, padding=1)).eval(),
                                    torch.zeros(1, 3, 16, 16)))
    assert [n.op for n in graph.nodes] == ["conv2d", "mean_pool"]
    assert graph.tensor(graph.nodes[0].outputs[0]).shape == (16 * 16, 8)


def test_dilated_conv_is_refused():
    msg = _lowering_error(lambda m, t: t, nn.Conv2d(3, 8, 3, padding=2, dilation=2))
    assert "conv2d" in msg and "dilation [2, 2]" in msg and "test_passes.py:" in msg


def test_grouped_conv_that_is_not_depthwise_is_refused():
    msg = _lowering_error(lambda m, t: t, nn.Conv2d(3, 6, 3, padding=1, groups=3))
    assert "conv2d" in msg and "groups 3" in msg and "depthwise" in msg


def test_broken_hydra_pattern_is_refused():
    """A sum over the features instead of the tokens is not Hydra attention: the norm is not lowered."""

    def body(m, t):
        q, k = F.normalize(m.lin(t), dim=-1), F.normalize(t, dim=-1)
        return q * (k * t).sum(dim=-1, keepdim=True)

    msg = _lowering_error(body)
    assert "'aten.linalg_vector_norm'" in msg and "Hydra attention" in msg


def test_activation_broadcast_add_is_refused():
    msg = _lowering_error(lambda m, t: t + t.mean(dim=1, keepdim=True))
    assert "'aten.add'" in msg or "'aten.mean'" in msg


class _Vector(nn.Module):
    def __init__(self, body) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.body = body

    def forward(self, x):
        return self.body(self, x)


def test_non_image_input_is_refused():
    """An unsupported op is named first; a model made only of lowered ops still needs an image input."""
    with pytest.raises(LoweringError, match="'aten.softmax'"):
        lower_to_ir(from_module(_Vector(lambda m, x: torch.softmax(m.fc(x), dim=-1)), torch.zeros(1, 8)))
    with pytest.raises(LoweringError, match=r"input x is float32\[1, 8\]; hydra-edge lowers a float32 image"):
        lower_to_ir(from_module(_Vector(lambda m, x: m.fc(x)), torch.zeros(1, 8)))


# -- canonicalize on hand-made graphs -------------------------------------------------------


def test_canonicalize_folds_and_drops():
    g = Graph()
    g.add_tensor(Tensor("x", (1, 4, 3)))
    g.inputs = ["x"]
    g.add_constant("w", np.arange(6, dtype=np.float32).reshape(3, 2))
    for name, shape in [("wt", (2, 3)), ("c", (1, 4, 3)), ("e", (1, 4, 3)), ("nl", (1, 4, 3)), ("nl__1", (1, 4, 1)),
                        ("g", (1, 4, 3)), ("y", (1, 4, 2))]:
        g.add_tensor(Tensor(name, shape))
    g.add_node(Node("wt", "t", ["w"], ["wt"]))
    g.add_node(Node("c", "clone", ["x"], ["c"], {"memory_format": None}))
    g.add_node(Node("e", "expand", ["c"], ["e"], {"size": [1, 4, 3]}))
    g.add_node(Node("chk", "_assert_tensor_metadata", ["e"], [], {"dtype": "float32"}))
    g.add_node(Node("nl", "native_layer_norm", ["e"], ["nl", "nl__1"], {"normalized_shape": [3], "eps": 1e-5}))
    g.add_node(Node("g", "getitem", ["nl"], ["g"], {"index": 0}))
    g.add_node(Node("y", "linear", ["g", "wt"], ["y"], {"bias": None}))
    g.outputs = ["y"]
    g.validate()
    c = canonicalize(g)
    c.validate()
    assert [n.op for n in c.nodes] == ["native_layer_norm", "linear"]
    assert c.nodes[0].inputs == ["x"] and c.nodes[1].inputs == ["nl", "w_t"]
    np.testing.assert_array_equal(c.tensor("w_t").data, np.arange(6, dtype=np.float32).reshape(3, 2).T)
    assert [n.op for n in g.nodes][:3] == ["t", "clone", "expand"]  # the input graph is untouched


# -- the printer ----------------------------------------------------------------


def test_format_graph_lowered(lowered):
    cfg, model, _, g = lowered
    text = format_graph(g)
    lines = text.splitlines()
    assert lines[0] == "graph <HydraViT> (frontend module)"
    assert lines[1] == f"inputs:  x float32[{cfg.in_channels}, {cfg.image_size}, {cfg.image_size}]"
    assert lines[2].startswith("outputs: ") and f"float32[{cfg.num_classes}]" in lines[2]
    assert len(lines) == 3 + 1 + len(g.nodes) + 1
    assert "patch_embed" in lines[4] and "patch=4" in lines[4] or f"patch={cfg.patch_size}" in lines[4]
    assert f"p_patch_embed_weight<float32[{cfg.embed_dim}, {cfg.in_channels}, {cfg.patch_size}, {cfg.patch_size}]>" in text
    params = sum(p.numel() for p in model.parameters())
    assert lines[-1].startswith(f"{len(g.nodes)} nodes, {params:,} parameters")
    assert f"linear {6 * cfg.depth + 1}" in lines[-1] and "hydra_attention" in lines[-1]


def test_format_graph_aten_and_quantised():
    g = Graph()
    g.add_tensor(Tensor("x", (4, 8), "int8", QuantParams.per_tensor(0.05, -3)))
    g.inputs = ["x"]
    g.add_constant("w", np.ones((2, 8), np.int8),
                   QuantParams(np.full(2, 0.01), np.zeros(2, np.int32), axis=0))
    g.add_constant("b", np.zeros(2, np.int32))
    g.add_tensor(Tensor("y", (4, 2), "int8", QuantParams.per_tensor(0.1, 0)))
    g.add_node(Node("fc", "linear", ["x", "w", "b"], ["y"],
                    {"multiplier": np.array([1 << 30, 1 << 29], np.int32), "shift": np.arange(64, dtype=np.int32),
                     "out_zp": 0}, "fc (model.py:3)"))
    g.outputs = ["y"]
    text = format_graph(g)
    assert "x int8[4, 8] (s=0.05, zp=-3)" in text
    assert "w<int8[2, 8] (per-channel axis 0, 2 scales)>" in text
    assert "multiplier=[1073741824,536870912]" in text and "shift=int32[64]" in text
    assert "# fc (model.py:3)" in text
    assert text.splitlines()[-1] == "1 nodes, 18 parameters in 2 constants (0.0 KiB); ops: linear 1"


class _MaskedAttention(nn.Module):
    """Softmax attention the lift leaves alone for a reason the error should say."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.register_buffer("mask", torch.triu(torch.full((16, 16), float("-inf")), 1))

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        q, k, v = self.q(t), self.k(t), self.v(t)
        if self.mode == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True).mean(1)
        if self.mode == "mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask).mean(1)
        if self.mode == "dim":
            return (torch.softmax(q @ k.transpose(-2, -1), dim=-2) @ v).mean(1)
        return (torch.softmax(q @ k.transpose(-2, -1) * 0.25 + self.mask, dim=-1) @ v).mean(1)


@pytest.mark.parametrize("mode,says", [
    ("causal", "causal (is_causal=True)"), ("mask", "with an attn_mask that hides some keys"),
    ("additive", "its scores get a constant mask that hides some keys"), ("dim", "softmax is over dim 1, not the keys"),
])
def test_an_attention_that_almost_lifts_says_why(mode, says):
    graph = from_module(_MaskedAttention(mode).eval(), torch.zeros(1, 3, 16, 16))
    with pytest.raises(LoweringError) as info:
        lower_to_ir(graph)
    assert f"softmax attention found, but {says}" in str(info.value)
