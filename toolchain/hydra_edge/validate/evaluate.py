"""Int8 top-1 of a compiled model on a labelled image set (`hydra-edge eval`).

The images go through the model's preprocessing (the dataset's normalisation,
then a resize to the model's input resolution when it differs), are quantised with
the build's input scale, and run through the reference interpreter on the
build's own quantised graph. `hydra-edge validate` proves that interpreter
gives the C's bits, so this is the compiled model's accuracy, at numpy speed
and spread over the local cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HydraEdgeError
from ..ir.graph import Graph
from ..ir.serialize import load_graph
from ..models.data import preprocess, resize
from ..quant.quantize import quantize_array
from ..reference.int_interp import run_int


class EvaluationError(HydraEdgeError, ValueError):
    """Images that do not fit the compiled model."""


@dataclass(frozen=True)
class Evaluation:
    images: int
    correct: int

    @property
    def top1(self) -> float:
        return self.correct / self.images if self.images else 0.0


def model_inputs(images: np.ndarray, graph: Graph, prep: Callable[[np.ndarray], np.ndarray] = preprocess) -> np.ndarray:
    """uint8 NHWC images -> the float32 NCHW input the model was trained on (normalised by `prep`, resized)."""
    x = prep(images)
    size = graph.tensor(graph.inputs[0]).shape[-1]
    if x.shape[-1] != size:
        import torch

        x = resize(torch.from_numpy(x), size).numpy()
    return x


def _predict(args: tuple[str, np.ndarray]) -> np.ndarray:
    folder, xq = args
    graph = load_graph(folder)
    return np.array([int(np.argmax(run_int(graph, x)[0])) for x in xq])


def int8_top1(folder: str | Path, images: np.ndarray, labels: np.ndarray,
              prep: Callable[[np.ndarray], np.ndarray] = preprocess, workers: int = 0,
              progress: Callable[[int, int], None] | None = None, chunk: int = 100) -> Evaluation:
    graph = load_graph(folder)
    shape = graph.tensor(graph.inputs[0]).shape
    if len(shape) != 3 or shape[0] != images.shape[-1]:
        raise EvaluationError(f"{folder}: the model takes {list(shape)} inputs, the images are {images.shape[1:]} (HWC)")
    q = graph.tensor(graph.inputs[0]).quant
    if q is None or np.size(q.scale) != 1 or not np.isfinite(q.scalar_scale) or q.scalar_scale <= 0:
        raise EvaluationError(f"{Path(folder) / 'graph.json'}: the model's input has no int8 scale; it is not a "
                              f"compiled build, or is damaged: compile the model again with 'hydra-edge compile'")
    xq = quantize_array(model_inputs(images, graph, prep), q.scalar_scale, q.scalar_zero_point)
    chunks = [(str(folder), xq[i:i + chunk]) for i in range(0, len(xq), chunk)]
    preds: list[np.ndarray] = []
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks) or 1)) as pool:
        for pred in pool.map(_predict, chunks):
            preds.append(pred)
            if progress:
                progress(sum(len(p) for p in preds), len(xq))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return Evaluation(len(pred), int((pred == np.asarray(labels[:len(pred)])).sum()))
