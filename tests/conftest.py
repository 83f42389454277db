"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings
from model_zoo import EXAMPLES

# CI explores a fixed set of examples so that a submission's verdict is repeatable; local runs
# draw new examples each time (and keep the failures they find in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def example_pt2() -> Path:
    return EXAMPLES / "hydra_vit_cifar10.pt2"
