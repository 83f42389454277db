"""The compile report of graphs the ViT tests do not reach."""

from __future__ import annotations

import numpy as np
import torch
from hydra_edge import driver
from hydra_edge.boards import load_board
from hydra_edge.codegen.report import build_report, format_report, node_macs
from hydra_edge.frontend.module import from_module
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.validate.bitexact import validate_build
from torch import nn


class PooledNorm(nn.Module):
    """timm's fc_norm: the tokens averaged first, then a LayerNorm over the pooled [D] vector, then the head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.fc_norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.fc_norm(tokens.mean(dim=1)))


def test_layernorm_over_a_1d_tensor(tmp_path):
    torch.manual_seed(0)
    graph = lower_to_ir(from_module(PooledNorm().eval(), torch.randn(1, 3, 8, 8)))
    norm = next(n for n in graph.nodes if n.op == "layernorm")
    assert graph.tensor(norm.inputs[0]).shape == (16,)
    calib = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    result = driver.compile_graph(graph, load_board("host"), tmp_path / "build", calib)  # wrote the report
    qnorm = next(n for n in result.graph.nodes if n.op == "layernorm")
    assert node_macs(result.graph, qnorm) == 3 * 16
    report = build_report(result.graph, result.plan)
    assert any(op["kind"] == "layernorm" and op["macs"] == 48 for op in report["ops"])
    assert "layernorm" in format_report(report)
    x = np.random.default_rng(1).integers(-128, 128, size=(4, 3, 8, 8), dtype=np.int8)
    check = validate_build(result.folder, result.graph, x)
    assert check.ok, check.mismatches


def test_a_tflite_build_says_what_its_schedule_did(tmp_path):
    """An int8 .tflite streams by default (the report says how many of its ops run in token loops) and with
    schedule greedy is compiled in its own op order: the report says so, rather than only "schedule greedy"."""
    from model_zoo import ROOT

    model = ROOT / "tests" / "models" / "tfl_hydra_vit.tflite"
    result = driver.compile_model(model, "host", tmp_path / "default")
    streamed, loops = result.report["ram"], sum(n.op == "token_loop" for n in result.graph.nodes)
    assert streamed["schedule"] == "stream" and loops >= 2
    assert f" ops in {loops} token loops, run token group by token group; " in streamed["schedule_detail"]
    assert streamed["schedule_detail"].endswith("in place where a kernel allows") == streamed["in_place"]
    unfused = driver.compile_model(model, "host", tmp_path / "greedy", schedule="greedy").report
    assert "Hydra core" not in unfused["ram"]["schedule_detail"]
    assert unfused["ram"]["schedule_detail"] in format_report(unfused)


def test_a_streamed_build_says_how_many_ops_run_in_token_loops(tmp_path):
    from model_zoo import EXAMPLES

    ram = driver.compile_model(EXAMPLES / "hydra_vit_cifar10.pt2", "host", tmp_path / "b",
                               EXAMPLES / "calib_cifar10.npz").report["ram"]
    assert ram["schedule"] == "stream"
    # 4 blocks, each two loops (k, v and the state; the rest), the last with the final norm and the pooling:
    # patch_embed, the position add and the head run on whole tensors
    assert ram["schedule_detail"].startswith("58 ops in 8 token loops, run token group by token group; "
                                             "3 ops on whole tensors")
