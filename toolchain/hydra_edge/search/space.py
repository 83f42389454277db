"""The search space: small ViT configurations for a memory-budgeted search.

A `Candidate` is one point of the space: input resolution, patch size, embed
dim, depth, MLP ratio, the attention kind of every layer (Hydra or softmax)
and the rank of the MLP's linears (0: full rank; r: each MLP linear factored
into two of rank r, W ~ B @ A). It serialises to JSON and names a
HydraViTConfig, so a searched model is a plain nn.Module that `compile` takes.

`SearchSpace` holds the choices and does the three things an evolutionary
search needs: sample, mutate, cross over. All randomness comes from the
numpy Generator the caller passes in (reproducible searches, no globals).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ATTENTION_KINDS = ("hydra", "softmax")
SOFTMAX_HEAD_DIM = 32  # softmax layers use embed_dim // 32 heads (at least one)


@dataclass(frozen=True)
class Candidate:
    image_size: int
    patch_size: int
    embed_dim: int
    depth: int
    mlp_ratio: float
    attention: tuple[str, ...]  # one kind per layer
    mlp_rank: int = 0  # 0: full-rank MLP linears
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        if len(self.attention) != self.depth:
            raise ValueError(f"attention has {len(self.attention)} entries for depth {self.depth}")
        bad = [a for a in self.attention if a not in ATTENTION_KINDS]
        if bad:
            raise ValueError(f"unknown attention kind(s) {bad}; choose from {ATTENTION_KINDS}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_dim(self) -> int:
        return int(round(self.embed_dim * self.mlp_ratio))

    @property
    def heads(self) -> int:
        return max(1, self.embed_dim // SOFTMAX_HEAD_DIM)

    def key(self) -> str:
        """A short, stable name (also the cache key of its measurements)."""
        att = "".join("h" if a == "hydra" else "s" for a in self.attention)
        rank = f"-r{self.mlp_rank}" if self.mlp_rank else ""
        return (f"i{self.image_size}-p{self.patch_size}-d{self.embed_dim}-L{self.depth}"
                f"-m{self.mlp_ratio:g}-{att}{rank}")

    @classmethod
    def from_key(cls, key: str, in_channels: int = 3, num_classes: int = 10) -> "Candidate":
        """The candidate `key()` names, e.g. i32-p4-d64-L4-m2-hhhh or i32-p4-d96-L3-m1.5-sss-r16."""
        m = re.fullmatch(r"i(\d+)-p(\d+)-d(\d+)-L(\d+)-m([0-9.]+)-([hs]+)(?:-r(\d+))?", key)
        if m is None:
            raise ValueError(f"{key!r} is not a config name like i32-p4-d64-L4-m2-hhhh "
                             f"(input, patch, dim, depth, MLP ratio, h/s per layer, optional -rRANK)")
        image, patch, dim, depth, ratio, kinds, rank = m.groups()
        attention = tuple("hydra" if k == "h" else "softmax" for k in kinds)
        return cls(int(image), int(patch), int(dim), int(depth), float(ratio), attention, int(rank or 0),
                   in_channels, num_classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attention"] = list(self.attention)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        d = dict(d)
        d["attention"] = tuple(d["attention"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Candidate":
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class SearchSpace:
    image_sizes: tuple[int, ...] = (24, 28, 32)
    patch_sizes: tuple[int, ...] = (2, 4)
    embed_dims: tuple[int, ...] = (64, 96, 128, 160, 192)
    depths: tuple[int, ...] = (4, 5, 6, 7, 8)
    mlp_ratios: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0)
    attention_kinds: tuple[str, ...] = ATTENTION_KINDS
    mlp_ranks: tuple[int, ...] = (0, 32, 64)  # 0: full rank
    in_channels: int = 3
    num_classes: int = 10
    mutation_prob: float = 0.3
    # (image, patch) pairs whose token count is a whole grid; filled from the choices
    resolutions: tuple[tuple[int, int], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        pairs = tuple((i, p) for i in self.image_sizes for p in self.patch_sizes if i % p == 0)
        if not pairs:
            raise ValueError("no image size in the space is a multiple of any patch size")
        object.__setattr__(self, "resolutions", pairs)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def _pick(self, rng: np.random.Generator, options: tuple):
        return options[int(rng.integers(len(options)))]

    def sample(self, rng: np.random.Generator) -> Candidate:
        image, patch = self._pick(rng, self.resolutions)
        depth = int(self._pick(rng, self.depths))
        attention = tuple(self._pick(rng, self.attention_kinds) for _ in range(depth))
        return self._make(image, patch, int(self._pick(rng, self.embed_dims)), depth,
                          float(self._pick(rng, self.mlp_ratios)), attention, int(self._pick(rng, self.mlp_ranks)))

    def mutate(self, c: Candidate, rng: np.random.Generator) -> Candidate:
        """Each gene resampled with probability mutation_prob; a new depth keeps the first layers' kinds."""
        def maybe(value, options):
            return self._pick(rng, options) if rng.random() < self.mutation_prob else value

        image, patch = maybe((c.image_size, c.patch_size), self.resolutions)
        depth = int(maybe(c.depth, self.depths))
        kinds = list(c.attention[:depth]) + [self._pick(rng, self.attention_kinds) for _ in range(depth - c.depth)]
        attention = tuple(maybe(k, self.attention_kinds) for k in kinds)
        return self._make(image, patch, int(maybe(c.embed_dim, self.embed_dims)), depth,
                          float(maybe(c.mlp_ratio, self.mlp_ratios)), attention, int(maybe(c.mlp_rank, self.mlp_ranks)))

    def crossover(self, a: Candidate, b: Candidate, rng: np.random.Generator) -> Candidate:
        """Each gene from one parent or the other; the layers' kinds follow the chosen depth."""
        def pick(x, y):
            return x if rng.random() < 0.5 else y

        image, patch = pick((a.image_size, a.patch_size), (b.image_size, b.patch_size))
        depth = pick(a.depth, b.depth)
        longer = a.attention if len(a.attention) >= len(b.attention) else b.attention
        attention = tuple(
            pick(a.attention[i], b.attention[i]) if i < min(a.depth, b.depth) else longer[i] for i in range(depth)
        )
        return self._make(image, patch, pick(a.embed_dim, b.embed_dim), depth, pick(a.mlp_ratio, b.mlp_ratio),
                          attention, pick(a.mlp_rank, b.mlp_rank))

    def contains(self, c: Candidate) -> bool:
        return ((c.image_size, c.patch_size) in self.resolutions and c.embed_dim in self.embed_dims
                and c.depth in self.depths and c.mlp_ratio in self.mlp_ratios and c.mlp_rank in self.mlp_ranks
                and all(a in self.attention_kinds for a in c.attention))

    def largest(self) -> Candidate:
        """The supernet's shape: every elastic dimension at its maximum."""
        image, patch = max(self.resolutions, key=lambda ip: ((ip[0] // ip[1]) ** 2, ip[0]))
        depth = self.max_depth
        return self._make(image, patch, max(self.embed_dims), depth, max(self.mlp_ratios),
                          (self.attention_kinds[0],) * depth, 0)

    def smallest(self) -> Candidate:
        """The sandwich rule's other end: every elastic dimension at its minimum."""
        image, patch = min(self.resolutions, key=lambda ip: ((ip[0] // ip[1]) ** 2, ip[0]))
        depth = min(self.depths)
        return self._make(image, patch, min(self.embed_dims), depth, min(self.mlp_ratios),
                          (self.attention_kinds[0],) * depth, 0)

    def _make(self, image: int, patch: int, dim: int, depth: int, ratio: float, attention: tuple[str, ...],
              rank: int) -> Candidate:
        # A rank at or above the layer's smaller side saves nothing: full rank then.
        hidden = int(round(dim * ratio))
        if rank and rank * (dim + hidden) >= dim * hidden:
            rank = 0
        return Candidate(image, patch, dim, depth, ratio, attention, rank, self.in_channels, self.num_classes)
