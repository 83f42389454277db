"""`hydra-edge eval`: int8 top-1 through the reference interpreter equals what the compiled C predicts."""

from __future__ import annotations

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.models.data import ImageDataset
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.quant.quantize import quantize_array
from hydra_edge.targets import runner
from hydra_edge.boards import load_board
from hydra_edge.validate.evaluate import EvaluationError, int8_top1, model_inputs
from model_zoo import calibration_inputs, export_model

CFG = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=1, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    graph = lower_to_ir(load_pt2(export_model(CFG, folder)))
    return driver.compile_graph(graph, load_board("host"), folder / "build", calibration_inputs(CFG))


def test_int8_top1_counts_what_the_c_predicts(build):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    x = model_inputs(images, build.graph)
    q = build.graph.tensor(build.graph.inputs[0]).quant
    c_pred = runner.run(build.folder, quantize_array(x, q.scalar_scale, q.scalar_zero_point).reshape(40, -1)).argmax(1)
    labels = np.where(rng.random(40) < 0.5, c_pred, (c_pred + 1) % 10).astype(np.uint8)
    result = int8_top1(build.folder, images, labels, workers=2, chunk=7)
    assert result.images == 40 and result.correct == int((labels == c_pred).sum())
    assert 0 < result.correct < 40


def test_resized_inputs_and_shape_errors(build):
    data = ImageDataset("grey", np.zeros((2, 16, 16, 1), np.uint8), np.zeros(2, np.uint8),
                        np.zeros((2, 16, 16, 1), np.uint8), np.zeros(2, np.uint8), (0.5,), (0.5,))
    with pytest.raises(EvaluationError, match="takes"):
        int8_top1(build.folder, data.x_test, data.y_test, data.preprocess)
    big = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    assert model_inputs(big, build.graph).shape == (3, 3, 16, 16)  # resized to the model's resolution
