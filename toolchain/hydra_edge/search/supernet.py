"""The weight-sharing supernet: every candidate of a SearchSpace is a slice of one set of weights.

Sharing rules (one supernet, trained once):

1. embed dim d, MLP hidden h, rank r: a candidate uses the first d (h, r) rows
   and columns of each weight, at the largest size in the space;
2. depth L: the first L blocks;
3. attention kind: q, k, v, proj are shared; Hydra and softmax are two ways
   of mixing the same projections (a layer can switch kind without new weights);
4. patch size: one patch embedding per patch size; token grid: one position
   embedding per grid size;
5. MLP rank: the low-rank factors are their own weights (shared across d, h).

`forward(x, c)` runs candidate c; `extract(c)` copies its slice into a plain
SearchedViT that computes the same function (tests check it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.data import resize
from .model import SearchedViT, hydra, softmax_attention
from .space import Candidate, SearchSpace


def _linear(d_out: int, d_in: int, bias: bool = True) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=bias)


class _SuperBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.proj = (_linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = _linear(hidden, dim), _linear(dim, hidden)
        if rank:
            self.fc1_a, self.fc1_b = _linear(rank, dim, bias=False), _linear(hidden, rank)
            self.fc2_a, self.fc2_b = _linear(rank, hidden, bias=False), _linear(dim, rank)


def _lin(m: nn.Linear, d_out: int, d_in: int, x: torch.Tensor) -> torch.Tensor:
    bias = m.bias[:d_out] if m.bias is not None else None
    return F.linear(x, m.weight[:d_out, :d_in], bias)


def _norm(m: nn.LayerNorm, d: int, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (d,), m.weight[:d], m.bias[:d], m.eps)


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        dim = max(space.embed_dims)
        hidden = max(int(round(d * r)) for d in space.embed_dims for r in space.mlp_ratios)
        rank = max(space.mlp_ranks)
        self.dim, self.hidden, self.rank = dim, hidden, rank
        c = space.in_channels
        self.patch_embed = nn.ModuleDict({str(p): nn.Conv2d(c, dim, p, p) for p in space.patch_sizes})
        grids = sorted({i // p for i, p in space.resolutions})
        self.pos_embed = nn.ParameterDict({str(n): nn.Parameter(torch.randn(1, n * n, dim) * 0.02) for n in grids})
        self.blocks = nn.ModuleList(_SuperBlock(dim, hidden, rank) for _ in range(space.max_depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, space.num_classes)

    def _mlp(self, blk: _SuperBlock, c: Candidate, x: torch.Tensor) -> torch.Tensor:
        d, h, r = c.embed_dim, c.mlp_dim, c.mlp_rank
        if r:
            x = _lin(blk.fc1_b, h, r, _lin(blk.fc1_a, r, d, x))
            return _lin(blk.fc2_b, d, r, _lin(blk.fc2_a, r, h, F.gelu(x)))
        return _lin(blk.fc2, d, h, F.gelu(_lin(blk.fc1, h, d, x)))

    def forward(self, x: torch.Tensor, c: Candidate) -> torch.Tensor:
        """x: CIFAR-size images (resized here to c.image_size)."""
        d = c.embed_dim
        x = resize(x, c.image_size)
        conv = self.patch_embed[str(c.patch_size)]
        x = F.conv2d(x, conv.weight[:d], conv.bias[:d], stride=c.patch_size)
        x = x.flatten(2).transpose(1, 2) + self.pos_embed[str(c.image_size // c.patch_size)][:, :, :d]
        for blk, kind in zip(self.blocks, c.attention):
            y = _norm(blk.norm1, d, x)
            q, k, v = (_lin(m, d, d, y) for m in (blk.q, blk.k, blk.v))
            mixed = hydra(q, k, v) if kind == "hydra" else softmax_attention(q, k, v, c.heads)
            x = x + _lin(blk.proj, d, d, mixed)
            x = x + self._mlp(blk, c, _norm(blk.norm2, d, x))
        return _lin(self.head, c.num_classes, d, _norm(self.norm, d, x).mean(dim=1))

    @torch.no_grad()
    def extract(self, c: Candidate) -> SearchedViT:
        """Candidate c as a plain module holding copies of its slice of the weights."""
        if not self.space.contains(c):
            raise ValueError(f"candidate {c.key()} is not in this supernet's space")
        d, r = c.embed_dim, c.mlp_rank
        model = SearchedViT(c)
        conv = self.patch_embed[str(c.patch_size)]
        model.patch_embed.weight.copy_(conv.weight[:d])
        model.patch_embed.bias.copy_(conv.bias[:d])
        model.pos_embed.copy_(self.pos_embed[str(c.image_size // c.patch_size)][:, :, :d])

        def copy_lin(dst: nn.Linear, src: nn.Linear) -> None:
            n_out, n_in = dst.weight.shape
            dst.weight.copy_(src.weight[:n_out, :n_in])
            if dst.bias is not None:
                dst.bias.copy_(src.bias[:n_out])

        def copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
            dst.weight.copy_(src.weight[:d])
            dst.bias.copy_(src.bias[:d])

        for blk, sup in zip(model.blocks, self.blocks):
            copy_norm(blk.norm1, sup.norm1)
            copy_norm(blk.norm2, sup.norm2)
            for name in ("q", "k", "v", "proj"):
                copy_lin(getattr(blk.attn, name), getattr(sup, name))
            if r:
                copy_lin(blk.fc1[0], sup.fc1_a)
                copy_lin(blk.fc1[1], sup.fc1_b)
                copy_lin(blk.fc2[0], sup.fc2_a)
                copy_lin(blk.fc2[1], sup.fc2_b)
            else:
                copy_lin(blk.fc1, sup.fc1)
                copy_lin(blk.fc2, sup.fc2)
        copy_norm(model.norm, self.norm)
        copy_lin(model.head, self.head)
        return model.eval()
