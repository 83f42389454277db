"""Training helpers shared by examples/train_cifar10.py and the search's supernet and fine-tuning."""

from __future__ import annotations

import math

import numpy as np


def augment(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop with ``pad`` zero-pixel padding and random horizontal flip (uint8 NHWC)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
    flip = rng.random(n) < 0.5
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def lr_at(progress: float, base_lr: float, warmup: float, min_lr: float) -> float:
    """Linear warmup over the first ``warmup`` fraction, then cosine to ``min_lr``."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * progress / warmup
    t = (progress - warmup) / max(1.0 - warmup, 1e-9)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))
