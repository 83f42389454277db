"""A small Vision Transformer with Hydra attention (Bolya et al. 2022), or softmax attention.

Hydra attention uses as many heads as features, a cosine kernel and no softmax:

    out_t = phi(q_t) * sum_s phi(k_s) * v_s        (elementwise, phi = L2 norm)

so the attention state is one D-vector, whatever the token count. Layers may
use ordinary softmax attention instead (`attention`: "hydra", "softmax" or one
of those per layer), with `heads` heads, written the way users write it
(`softmax_style`): "sdpa" (F.scaled_dot_product_attention), "manual"
(q @ k.transpose(-2, -1) * scale -> softmax -> @ v, heads split by view and
transpose) or "mha" (nn.MultiheadAttention, packed in_proj). The compiler
must lift all three to the same softmax_attention node. This module is plain
PyTorch: `torch.export` turns it into the graph the compiler reads.
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
    # "hydra" or "softmax" for every layer, or a tuple with one of those per layer.
    attention: str | tuple[str, ...] = "hydra"
    heads: int = 1  # softmax layers only (Hydra has one head per feature)
    softmax_style: str = "sdpa"  # "sdpa", "manual" or "mha": how a softmax layer is written

    def layer_attention(self, i: int) -> str:
        kinds = (self.attention,) * self.depth if isinstance(self.attention, str) else tuple(self.attention)
        if len(kinds) != self.depth or any(k not in ATTENTION_KINDS for k in kinds):
            raise ValueError(f"attention must be one of {ATTENTION_KINDS} or a tuple of {self.depth} of them, "
                             f"got {self.attention!r}")
        return kinds[i]

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_dim(self) -> int:
        return int(round(self.embed_dim * self.mlp_ratio))

    def to_dict(self) -> dict:
        return asdict(self)


ATTENTION_KINDS = ("hydra", "softmax")
SOFTMAX_STYLES = ("sdpa", "manual", "mha")


def _phi(x: torch.Tensor, style: str) -> torch.Tensor:
    if style == "normalize":
        return F.normalize(x, dim=-1)
    return x / x.norm(p=2, dim=-1, keepdim=True)  # p spelled out: torch.jit.script needs it


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


class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention: proj(concat_h softmax(q_h k_h^T / sqrt(dh)) v_h)."""

    def __init__(self, dim: int, heads: int, style: str) -> None:
        super().__init__()
        if style not in SOFTMAX_STYLES:
            raise ValueError(f"softmax_style must be one of {SOFTMAX_STYLES}, got {style!r}")
        if heads < 1 or dim % heads:
            raise ValueError(f"heads = {heads} must divide embed_dim = {dim}")
        self.heads, self.style = heads, style
        self.scale = (dim // heads) ** -0.5
        if style == "mha":
            self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
            self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, dh)
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, D)
        if self.style == "mha":
            return self.mha(x, x, x, need_weights=False)[0]
        b, t, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        if self.style == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            out = (attn.softmax(dim=-1) @ v).permute(0, 2, 1, 3)
        return self.proj(out.reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, phi_style: str, attention: str = "hydra", heads: int = 1,
                 softmax_style: str = "sdpa") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = (SoftmaxAttention(dim, heads, softmax_style) if attention == "softmax"
                     else HydraAttention(dim, phi_style))
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
        self.blocks = nn.ModuleList(
            Block(d, cfg.mlp_dim, cfg.phi_style, cfg.layer_attention(i), cfg.heads, cfg.softmax_style)
            for i in range(cfg.depth)
        )
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
