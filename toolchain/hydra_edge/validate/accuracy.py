"""Float vs int8: the exported model in PyTorch against the compiled model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..build_manifest import read_manifest
from ..quant.quantize import dequantize_array, quantize_array
from ..targets import runner


def float_outputs(pt2: str | Path, x: np.ndarray) -> np.ndarray:
    """Run the exported float model one sample at a time (it was exported with batch 1)."""
    module = torch.export.load(str(pt2)).module()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(xi[None])).numpy() for xi in x.astype(np.float32)])


@dataclass
class Int8Run:
    inputs: np.ndarray  # int8, one sample per row
    outputs: np.ndarray  # int8 as the target wrote them
    dequantized: np.ndarray  # float32


def int8_outputs(build: str | Path, x: np.ndarray) -> Int8Run:
    """Quantise float inputs with the build's input scale, run the compiled C, dequantise."""
    manifest = read_manifest(build)
    inp, out = manifest["input"], manifest["output"]
    xq = quantize_array(x, inp["scale"], inp["zero_point"])
    yq = runner.run(build, xq.reshape(len(xq), -1))
    return Int8Run(xq, yq, dequantize_array(yq, out["scale"], out["zero_point"]))


@dataclass
class Agreement:
    samples: int
    top1_agree: float  # fraction of samples where int8 and float pick the same class
    max_abs_error: float  # in float units
    mean_abs_error: float


def agreement(float_logits: np.ndarray, int8_logits: np.ndarray) -> Agreement:
    err = np.abs(float_logits - int8_logits)
    same = float_logits.argmax(1) == int8_logits.argmax(1)
    return Agreement(len(same), float(same.mean()), float(err.max()), float(err.mean()))
