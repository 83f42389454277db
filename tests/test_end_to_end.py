"""Hydra ViTs of several shapes, compiled to C for the host and validated bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.boards import load_board
from hydra_edge.validate.bitexact import validate_build
from model_zoo import calibration_inputs, export_model

# Odd embed dims, token counts that are not powers of two, depth 1 to 6, mlp ratios 2 to 4.
SHAPES = {
    "d36-t36-depth1-mlp2": HydraViTConfig(image_size=24, patch_size=4, embed_dim=36, depth=1, mlp_ratio=2.0),
    "d27-t25-depth2-mlp3": HydraViTConfig(image_size=20, patch_size=4, embed_dim=27, depth=2, mlp_ratio=3.0),
    "d48-t49-depth3-mlp4": HydraViTConfig(image_size=28, patch_size=4, embed_dim=48, depth=3, mlp_ratio=4.0,
                                          phi_style="normalize"),
    "d20-t16-depth6-mlp2.5": HydraViTConfig(image_size=32, patch_size=8, embed_dim=20, depth=6, mlp_ratio=2.5),
    "d33-t9-depth4-c1": HydraViTConfig(image_size=12, in_channels=1, patch_size=4, embed_dim=33, depth=4,
                                       mlp_ratio=2.0, num_classes=7),
}


def _compile(cfg: HydraViTConfig, tmp_path, rounding: str = "double"):
    pt2 = export_model(cfg, tmp_path)
    graph = lower_to_ir(load_pt2(pt2))
    return driver.compile_graph(graph, load_board("host"), tmp_path / "build", calibration_inputs(cfg), rounding)


def _random_inputs(result, n: int = 6, seed: int = 2) -> np.ndarray:
    shape = result.graph.tensor(result.graph.inputs[0]).shape
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape), dtype=np.int8)
    x[0] = -128  # extremes too: a constant image makes every token's LayerNorm input nearly flat
    x[1] = 127
    return x


@pytest.mark.parametrize("name", list(SHAPES))
def test_bit_exact(name, tmp_path):
    result = _compile(SHAPES[name], tmp_path)
    vectors = np.load(result.folder / driver.TEST_VECTORS)
    inputs = np.concatenate([vectors, _random_inputs(result)])
    check = validate_build(result.folder, result.graph, inputs)
    assert check.ok, check.mismatches
    assert check.bytes_compared == len(inputs) * SHAPES[name].num_classes


def test_bit_exact_single_rounding(tmp_path):
    result = _compile(SHAPES["d27-t25-depth2-mlp3"], tmp_path, rounding="single")
    assert result.graph.meta["rounding"] == "single"
    check = validate_build(result.folder, result.graph, _random_inputs(result))
    assert check.ok, check.mismatches


def test_bit_exact_under_sanitizers(tmp_path):
    result = _compile(SHAPES["d48-t49-depth3-mlp4"], tmp_path)
    check = validate_build(result.folder, result.graph, _random_inputs(result, n=3), sanitize=True)
    assert check.ok, check.mismatches


def test_single_and_double_rounding_differ_somewhere(tmp_path):
    """The two modes are really different code paths: some intermediate tensor differs by 1."""
    from hydra_edge.reference.int_interp import run_int

    cfg = SHAPES["d27-t25-depth2-mlp3"]
    (tmp_path / "d").mkdir()
    (tmp_path / "s").mkdir()
    double = _compile(cfg, tmp_path / "d")
    single = _compile(cfg, tmp_path / "s", rounding="single")
    x = _random_inputs(double, n=3)[2]
    a, b = run_int(double.graph, x, keep_all=True), run_int(single.graph, x, keep_all=True)
    differing = [n for n in a if not np.array_equal(a[n], b[n])]
    assert differing, "double and single rounding gave identical tensors everywhere"
