"""The searched models shipped in examples/: they compile for their board and budget, and the RAM and flash
their JSON quotes are what the compiler says today (so the figures cannot go stale silently)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.boards import load_board

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHIPPED = sorted(EXAMPLES.glob("searched_*.json"))


def test_two_searched_models_are_shipped():
    assert len(SHIPPED) >= 2, "examples/ should hold the stm32f746 and the 128 KB searched models"


@pytest.mark.parametrize("meta", SHIPPED, ids=lambda p: p.stem)
def test_searched_model_compiles_within_its_budget_with_the_quoted_figures(meta, tmp_path):
    info = json.loads(meta.read_text())
    board = replace(load_board(info["board"]), ram_bytes=info["ram_budget_bytes"],
                    flash_bytes=info["flash_budget_bytes"])
    calib = np.load(EXAMPLES / Path(info["calibration"]).name)["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = lower_to_ir(driver.load_model(meta.with_suffix(".pt2")))
        result = driver.compile_graph(graph, board, tmp_path / "build", calib)
    budget = result.report["budget"]
    assert budget["ram_estimate_bytes"] == info["ram_estimate_bytes"] <= info["ram_budget_bytes"]
    assert budget["flash_estimate_bytes"] == info["flash_estimate_bytes"] <= info["flash_budget_bytes"]
    assert abs(info["float_test_top1"] - info["int8_test_top1"]) <= 0.005  # int8 within half a point
