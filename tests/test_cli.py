"""The command line: the happy path, and bad input as one clear line with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra_edge.models.hydra_vit import HydraViTConfig
from model_zoo import calibration_inputs, export_model, make_model
from cli_helpers import assert_clean_error, invoke

CFG = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=1, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    pt2 = export_model(CFG, d)
    np.savez(d / "calib.npz", x=calibration_inputs(CFG))
    return d, pt2


def test_boards_lists_host():
    result = invoke("boards")
    assert result.exit_code == 0
    assert "host" in result.output


def test_compile_validate_run_report(workdir):
    d, pt2 = workdir
    build = d / "build"
    result = invoke("compile", pt2, "--board", "host", "--calib", d / "calib.npz", "-o", build)
    assert result.exit_code == 0, result.output
    result = invoke("validate", build)
    assert result.exit_code == 0, result.output
    assert "BIT-EXACT" in result.output

    x = calibration_inputs(CFG, n=3, seed=7)
    np.save(d / "x.npy", x)
    result = invoke("run", build, "--input", d / "x.npy", "-o", d / "y.npy", "--dequantize")
    assert result.exit_code == 0, result.output
    y = np.load(d / "y.npy")
    assert y.shape == (3, CFG.num_classes) and y.dtype == np.float32
    result = invoke("run", build, "--input", d / "x.npy", "-o", d / "yq.npy")
    assert np.load(d / "yq.npy").dtype == np.int8

    result = invoke("report", build, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("arena_bytes", "peak_bytes"):
        assert report["ram"][key] > 0
    assert report["flash"]["weights_bytes"] > 0 and report["macs"] > 0
    # The default schedule streams: the blocks in token loops; patch_embed, the position add (its output is kept
    # for the residual anyway) and the head on whole tensors.
    assert report["ram"]["schedule"] == "stream"
    assert report["ram"]["peak_bytes"] >= report["ram"]["lower_bound_bytes"] > 0
    assert {op["kind"] for op in report["ops"]} == {"patch_embed", "add", "token_loop", "linear"}
    for op in report["ops"]:
        assert {"name", "kind", "macs", "live_bytes"} <= set(op)
    assert (build / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    greedy = d / "build-greedy"
    result = invoke("compile", pt2, "--calib", d / "calib.npz", "-o", greedy, "--schedule", "greedy")
    assert result.exit_code == 0, result.output
    report = json.loads(invoke("report", greedy, "--json").output)
    assert report["ram"]["schedule"] == "greedy"
    assert {op["kind"] for op in report["ops"]} >= {"patch_embed", "linear", "layernorm", "hydra_attention", "lut", "add", "mean_pool"}


def test_inspect(workdir):
    _, pt2 = workdir
    result = invoke("inspect", pt2)
    assert result.exit_code == 0, result.output
    assert "hydra_attention" in result.output and "patch_embed" in result.output


def test_missing_file(tmp_path):
    assert_clean_error(invoke("compile", tmp_path / "nope.pt2", "-o", tmp_path / "b"), "nope.pt2")


def test_wrong_format(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("hello")
    assert_clean_error(invoke("compile", f, "-o", tmp_path / "b"), "model.txt")


def test_random_bytes_pt2(tmp_path):
    f = tmp_path / "junk.pt2"
    f.write_bytes(np.random.default_rng(0).bytes(2000))
    assert_clean_error(invoke("inspect", f), "junk.pt2")


def test_truncated_pt2(workdir, tmp_path):
    _, pt2 = workdir
    data = pt2.read_bytes()
    f = tmp_path / "truncated.pt2"
    f.write_bytes(data[: len(data) // 2])
    assert_clean_error(invoke("compile", f, "-o", tmp_path / "b"), "truncated.pt2")


def test_state_dict(tmp_path):
    f = tmp_path / "weights.pt2"
    torch.save(make_model(CFG).state_dict(), f)
    assert_clean_error(invoke("compile", f, "-o", tmp_path / "b"), "weights.pt2", "state_dict")


def test_unsupported_op(tmp_path):
    class Softmaxy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.softmax(self.fc(x), dim=-1)

    f = tmp_path / "softmax.pt2"
    torch.export.save(torch.export.export(Softmaxy(), (torch.zeros(1, 8),)), f)
    assert_clean_error(invoke("compile", f, "-o", tmp_path / "b"), "softmax")


def test_calibration_of_wrong_shape(workdir, tmp_path):
    _, pt2 = workdir
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    assert_clean_error(invoke("compile", pt2, "--calib", tmp_path / "bad.npz", "-o", tmp_path / "b"),
                       "bad.npz", "(N, 3, 16, 16)")


def test_validate_needs_a_build(tmp_path):
    assert_clean_error(invoke("validate", tmp_path), "not a hydra-edge build folder")


def test_unknown_board(workdir, tmp_path):
    _, pt2 = workdir
    assert_clean_error(invoke("compile", pt2, "--board", "nosuchboard", "-o", tmp_path / "b"), "nosuchboard", "host")


def test_console_script_prints_no_traceback(tmp_path):
    """The real entry point, in a fresh process: one line on stderr, exit 1."""
    proc = subprocess.run([sys.executable, "-m", "hydra_edge.cli", "inspect", str(tmp_path / "missing.pt2")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "missing.pt2" in proc.stderr


def test_compile_without_calibration_warns(workdir):
    d, pt2 = workdir
    result = invoke("compile", pt2, "-o", d / "build-nocalib")
    assert result.exit_code == 0, result.output
    assert "warning: no calibration data" in result.output
    assert invoke("validate", d / "build-nocalib").exit_code == 0
