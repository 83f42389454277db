"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_zoo import EXAMPLES


@pytest.fixture(scope="session")
def example_pt2() -> Path:
    return EXAMPLES / "hydra_vit_cifar10.pt2"
