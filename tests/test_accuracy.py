"""The bundled example: int8 (compiled C) agrees with float on top-1 for >= 98 % of the bundled images."""

from __future__ import annotations

import numpy as np
from hydra_edge import driver
from hydra_edge.models.data import preprocess
from hydra_edge.validate.accuracy import agreement, float_outputs, int8_outputs
from hydra_edge.validate.bitexact import compare, reference_outputs
from model_zoo import EXAMPLES


def test_example_int8_matches_float(example_pt2, tmp_path):
    x = preprocess(np.load(EXAMPLES / "cifar10_samples.npz")["images"])
    result = driver.compile_model(example_pt2, "host", tmp_path / "build", EXAMPLES / "calib_cifar10.npz")
    run = int8_outputs(result.folder, x)
    a = agreement(float_outputs(example_pt2, x), run.dequantized)
    print(f"\ntop-1 agreement {a.top1_agree:.1%} on {a.samples} images; "
          f"logit error max {a.max_abs_error:.4f} mean {a.mean_abs_error:.4f} (float units)")
    assert a.samples == 100
    assert a.top1_agree >= 0.98
    assert compare(reference_outputs(result.graph, run.inputs), run.outputs).ok
