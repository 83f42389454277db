"""Run by tests/test_search_train.py under torchrun: a few supernet steps on synthetic data, final weights saved."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from hydra_edge.search.space import SearchSpace
from hydra_edge.search.train import Split, TrainConfig, init_distributed, train_supernet

SPACE = SearchSpace(image_sizes=(16,), patch_sizes=(4, 8), embed_dims=(16, 32), depths=(1, 2), mlp_ranks=(0, 4))
CONFIG = TrainConfig(epochs=1, batch_size=16, checkpoint_every=1000)


def synthetic_split(n: int = 64) -> Split:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    return Split(x, y, x[:8], y[:8])


def main(out: str) -> None:
    torch.set_num_threads(1)
    rank, size = init_distributed()
    folder = Path(out) / f"rank{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    net = train_supernet(SPACE, synthetic_split(), folder, CONFIG)
    torch.save(net.state_dict(), Path(out) / f"final_rank{rank}_of{size}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
