"""The plain nn.Module a Candidate names: what the search exports and `compile` takes.

Per layer the attention is Hydra (phi(q) * sum_T(phi(k) * v), phi = L2
normalisation over the features) or softmax (F.scaled_dot_product_attention
with embed_dim // 32 heads). A non-zero mlp_rank factors each MLP linear into
two, W ~ B @ A with A: [rank, in] (no bias) and B: [out, rank], which the
compiler lowers as two linear ops. Everything is written in the spellings the
compiler's lifting passes know.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .space import Candidate


def hydra(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    return q * (k * v).sum(dim=-2, keepdim=True)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = q.shape

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, t, heads, d // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, t, d)


def linear_or_low_rank(d_in: int, d_out: int, rank: int) -> nn.Module:
    if not rank:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out))


class Attention(nn.Module):
    def __init__(self, dim: int, kind: str, heads: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.kind, self.heads = kind, heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        out = hydra(q, k, v) if self.kind == "hydra" else softmax_attention(q, k, v, self.heads)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, c: Candidate, kind: str) -> None:
        super().__init__()
        d = c.embed_dim
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, kind, c.heads)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = linear_or_low_rank(d, c.mlp_dim, c.mlp_rank)
        self.fc2 = linear_or_low_rank(c.mlp_dim, d, c.mlp_rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class SearchedViT(nn.Module):
    """Patch embedding, learned position embedding, the candidate's blocks, mean pool, head."""

    def __init__(self, c: Candidate) -> None:
        super().__init__()
        self.candidate = c
        d = c.embed_dim
        self.patch_embed = nn.Conv2d(c.in_channels, d, kernel_size=c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens, d))
        self.blocks = nn.ModuleList(Block(c, kind) for kind in c.attention)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, image, image), normalised
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))

