"""Post-training calibration: the float range of every activation of the IR."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HydraEdgeError
from ..ir.graph import Graph
from ..reference.float_interp import run_float

FALLBACK_SAMPLES = 32


class CalibrationError(HydraEdgeError, ValueError):
    """Calibration data that does not fit the model."""


@dataclass
class Range:
    lo: float = np.inf
    hi: float = -np.inf

    def update(self, value: np.ndarray) -> None:
        self.lo = min(self.lo, float(value.min()))
        self.hi = max(self.hi, float(value.max()))


def load_calibration(path: str | Path, graph: Graph) -> np.ndarray:
    """Read a .npz of float inputs (key `x`, or its only array), shaped (N, *input) or (N, 1, *input)."""
    path = Path(path)
    shape = graph.tensor(graph.inputs[0]).shape
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise CalibrationError(f"{path}: expected an array named 'x' (found {', '.join(keys) or 'none'})")
            data = np.asarray(npz[key])
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise CalibrationError(f"{path}: not a readable .npz file ({exc})") from None
    if data.ndim == len(shape) + 2 and data.shape[1] == 1:
        data = data[:, 0]
    if data.ndim != len(shape) + 1 or tuple(data.shape[1:]) != tuple(shape):
        raise CalibrationError(
            f"{path}: calibration array '{key}' has shape {data.shape}, the model input is {shape}: "
            f"expected (N, {', '.join(map(str, shape))})"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise CalibrationError(f"{path}: calibration data must be float (the model's preprocessed input), got {data.dtype}")
    if len(data) == 0:
        raise CalibrationError(f"{path}: calibration array is empty")
    return data.astype(np.float32)


def fallback_calibration(graph: Graph, samples: int = FALLBACK_SAMPLES) -> np.ndarray:
    """Standard-normal inputs: the range of a normalised image, nothing more (see docs/quantization.md)."""
    shape = graph.tensor(graph.inputs[0]).shape
    return np.random.default_rng(0).standard_normal((samples, *shape)).astype(np.float32)


def calibrate(graph: Graph, data: np.ndarray, progress: Callable[[int], None] | None = None) -> dict[str, Range]:
    """Run the float graph on every sample and record min/max of every activation."""
    ranges: dict[str, Range] = {t.name: Range() for t in graph.activations()}

    def observe(name: str, value: np.ndarray) -> None:
        ranges[name].update(value)

    for i, x in enumerate(data):
        run_float(graph, x, observe)
        if progress:
            progress(i + 1)
    return ranges
