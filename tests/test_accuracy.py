"""The bundled example: int8 (compiled C) agrees with float on top-1 for >= 98 % of the bundled images."""

from __future__ import annotations

import numpy as np
import torch

from hydra_edge import driver
from hydra_edge.models.data import preprocess
from hydra_edge.targets import host
from hydra_edge.validate.bitexact import compare, reference_outputs

from model_zoo import EXAMPLES


def test_example_int8_matches_float(example_pt2, tmp_path):
    samples = np.load(EXAMPLES / "cifar10_samples.npz")
    x = preprocess(samples["images"])
    result = driver.compile_model(example_pt2, "host", tmp_path / "build", EXAMPLES / "calib_cifar10.npz")

    with torch.no_grad():
        float_logits = torch.export.load(str(example_pt2)).module()(torch.from_numpy(x)).numpy()
    inp, out = (result.graph.tensor(n).quant for n in (result.graph.inputs[0], result.graph.outputs[0]))
    xq = driver.quantize_input(x, inp.scalar_scale, inp.scalar_zero_point)
    yq = host.run(result.folder, xq.reshape(len(xq), -1))
    int8_logits = driver.dequantize(yq, out.scalar_scale, out.scalar_zero_point)

    agree = np.mean(float_logits.argmax(1) == int8_logits.argmax(1))
    err = np.abs(float_logits - int8_logits)
    print(f"\ntop-1 agreement {agree:.1%} on {len(x)} images; logit error max {err.max():.4f} mean {err.mean():.4f} "
          f"(float units; output step {out.scalar_scale:.4f})")
    assert agree >= 0.98
    assert compare(reference_outputs(result.graph, xq), yq).ok
