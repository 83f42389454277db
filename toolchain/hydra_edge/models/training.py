"""Training helpers shared by examples/train_cifar10.py and the search's supernet and fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import torch


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


def mix_batch(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator,
              prob: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """With probability ``prob``, blend every image of an NCHW batch with another image of the batch:
    CutMix (a random box pasted in) or Mixup (a weighted average), half the time each.

    Returns (images, the partners' labels, ``lam``): the loss is ``lam * loss(own labels) + (1 - lam) *
    loss(partners' labels)``, with ``lam`` the own image's share (its area left for CutMix). Unmixed
    batches come back as they are with ``lam`` 1. Regularises small ViTs, which overfit CIFAR-10's
    50,000 images on crop and flip alone.
    """
    if rng.random() >= prob:
        return images, labels, 1.0
    partner = torch.from_numpy(rng.permutation(len(images)))
    if rng.random() < 0.5:
        h, w = images.shape[-2:]
        side = math.sqrt(1.0 - rng.beta(1.0, 1.0))  # box side as a fraction of the image's
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - int(h * side) // 2, 0), min(cy + int(h * side) // 2, h)
        x0, x1 = max(cx - int(w * side) // 2, 0), min(cx + int(w * side) // 2, w)
        mixed = images.clone()
        mixed[:, :, y0:y1, x0:x1] = images[partner, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(0.8, 0.8))
        mixed = lam * images + (1.0 - lam) * images[partner]
    return mixed, labels[partner], lam


def lr_at(progress: float, base_lr: float, warmup: float, min_lr: float) -> float:
    """Linear warmup over the first ``warmup`` fraction, then cosine to ``min_lr``."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * progress / warmup
    t = (progress - warmup) / max(1.0 - warmup, 1e-9)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))
