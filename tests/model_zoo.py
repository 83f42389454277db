"""Small Hydra ViTs for the tests: built with random weights, exported to .pt2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig, export_pt2

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

torch.set_num_threads(1)


def make_model(cfg: HydraViTConfig, seed: int = 0) -> HydraViT:
    torch.manual_seed(seed)
    model = HydraViT(cfg).eval()
    # Random LayerNorm affine parameters, so the integer LayerNorm sees more than gamma = 1, beta = 0.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def export_model(cfg: HydraViTConfig, folder: Path, seed: int = 0) -> Path:
    path = folder / "model.pt2"
    export_pt2(make_model(cfg, seed), str(path))
    return path


def calibration_inputs(cfg: HydraViTConfig, n: int = 8, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, cfg.in_channels, cfg.image_size, cfg.image_size)).astype(np.float32)


