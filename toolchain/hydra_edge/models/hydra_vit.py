"""A small Vision Transformer with Hydra attention (Bolya et al. 2022).

Hydra attention uses as many heads as features, a cosine kernel and no softmax:

    out_t = phi(q_t) * sum_s phi(k_s) * v_s        (elementwise, phi = L2 norm)

so the attention state is one D-vector, whatever the token count. This module
is plain PyTorch: `torch.export` turns it into the graph the compiler reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HydraViTConfig:
    image_size: int = 32
    in_channels: int = 3
    patch_size: int = 4
    embed_dim: int = 64
    depth: int = 4
    mlp_ratio: float = 2.0
    num_classes: int = 10
    # "norm" writes phi as x / x.norm(); "normalize" as F.normalize: the
    # compiler must lift both to the same node.
    phi_style: str = "norm"

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_dim(self) -> int:
        return int(round(self.embed_dim * self.mlp_ratio))

    def to_dict(self) -> dict:
        return asdict(self)


def _phi(x: torch.Tensor, style: str) -> torch.Tensor:
    if style == "normalize":
        return F.normalize(x, dim=-1)
    return x / x.norm(dim=-1, keepdim=True)


class HydraAttention(nn.Module):
    def __init__(self, dim: int, phi_style: str = "norm") -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.phi_style = phi_style

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, D)
        q = _phi(self.q(x), self.phi_style)
        k = _phi(self.k(x), self.phi_style)
        v = self.v(x)
        kv = (k * v).sum(dim=-2, keepdim=True)  # (B, 1, D): the whole attention state
        return self.proj(q * kv)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, phi_style: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = HydraAttention(dim, phi_style)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HydraViT(nn.Module):
    """Patch embedding, learned position embedding, Hydra blocks, mean pool, head."""

    def __init__(self, cfg: HydraViTConfig) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_tokens, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.mlp_dim, cfg.phi_style) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W), normalised floats
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T, D)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).mean(dim=1)
        return self.head(x)


def export_pt2(model: HydraViT, path: str) -> None:
    """Export with batch 1, the shape the compiler lowers."""
    model = model.eval()
    cfg = model.cfg
    example = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    program = torch.export.export(model, (example,))
    torch.export.save(program, path)
