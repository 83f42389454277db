"""passes/support.py: every op no pass handles, in one error, before any pass runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hydra_edge.cli import main
from hydra_edge.frontend.module import from_module
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig
from hydra_edge.passes.errors import LoweringError
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.passes.support import check_supported, unsupported_nodes
from torch import nn

torch.set_num_threads(1)


class _TwoBad(nn.Module):
    """sin and elu (neither lowered) around an otherwise fine patch embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(torch.sin(x))
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(torch.sin(t).mean(dim=1))


def test_every_unsupported_op_in_one_error():
    graph = from_module(_TwoBad().eval(), torch.zeros(1, 3, 16, 16))
    found = unsupported_nodes(graph)
    assert [(graph.nodes.index(n), n.op) for _, n in found] == [(i, n.op) for i, n in found]
    assert [n.op for _, n in found] == ["sin", "elu", "sin"]
    with pytest.raises(LoweringError) as info:
        lower_to_ir(graph)
    msg = str(info.value)
    # grouped by op in first-seen order, each with its count and locations: "#index where at file:line"
    assert "\n" not in msg and msg.startswith("<_TwoBad>: 3 unsupported ops of 2 kinds: aten.sin x2 (#0 sin at ")
    for i, node in found:
        where, _, line = node.source[:-1].rpartition(" (")
        assert f"#{i} {where} at {line}" in msg and line.startswith("tests/test_support.py:")
    assert "aten.elu x1 (#1 elu at tests/test_support.py:" in msg and "hydra-edge lowers:" in msg


def test_many_unsupported_nodes_are_counted_not_listed():
    class Many(nn.Module):
        def forward(self, x):
            for _ in range(12):
                x = torch.sin(x)
            return x

    msg = str(pytest.raises(LoweringError, check_supported, from_module(Many(), torch.zeros(1, 3, 8, 8))).value)
    assert msg.startswith("<Many>: 12 unsupported ops: aten.sin x12 (#0 sin at ") and ", +9 more)" in msg
    assert msg.count(" at tests/test_support.py:") == 3


def test_one_unsupported_op():
    class Sin(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    with pytest.raises(LoweringError, match=r"^<Sin>: 1 unsupported op: aten.sin x1 \(#0 sin at tests/test_support.py:\d+\);"):
        check_supported(from_module(Sin(), torch.zeros(1, 3, 8, 8)))


@pytest.mark.parametrize(
    "cfg",
    [
        HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=1),
        HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=1, phi_style="normalize"),
        HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=2, attention=("hydra", "softmax"), heads=2,
                       softmax_style="manual"),
        HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=1, attention="softmax", heads=2,
                       softmax_style="mha"),
    ],
)
def test_models_the_passes_handle_pass_the_check(cfg):
    graph = from_module(HydraViT(cfg).eval(), torch.zeros(1, 3, 16, 16))
    assert unsupported_nodes(graph) == []
    lower_to_ir(graph)


class _Folded(nn.Module):
    """sub and neg on constants only: canonicalize folds them, so they are not reported."""

    def __init__(self, on_activation: bool) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.shift = nn.Parameter(torch.ones(8))
        self.on_activation = on_activation

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        if self.on_activation:
            return (t - self.shift).mean(dim=1)
        return (t + (-(self.shift - 0.5))).mean(dim=1)


def test_constant_folds_are_not_reported_but_activation_ops_are():
    example = torch.zeros(1, 3, 16, 16)
    assert unsupported_nodes(from_module(_Folded(False).eval(), example)) == []
    lower_to_ir(from_module(_Folded(False).eval(), example))
    found = unsupported_nodes(from_module(_Folded(True).eval(), example))
    assert [n.op for _, n in found] == ["sub"]


def test_cli_names_every_unsupported_op(tmp_path):
    f = tmp_path / "bad.pt2"
    torch.export.save(torch.export.export(_TwoBad().eval(), (torch.zeros(1, 3, 16, 16),)), f)
    result = CliRunner().invoke(main, ["compile", str(f), "-o", str(tmp_path / "b")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {f}: 3 unsupported ops of 2 kinds: aten.sin x2 (#0 sin at ")
    assert "aten.elu x1" in line
