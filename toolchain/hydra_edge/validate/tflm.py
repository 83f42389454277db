"""For a build compiled from an int8 .tflite: TFLite Micro's own interpreter on the same inputs.

`hydra-edge validate` proves the C equals the reference interpreter; for a
.tflite build it also runs the original file (copied into the build as
SOURCE_TFLITE) on TFLM's Python interpreter (the tflite-micro package, the
test oracle) and compares the int8 outputs, so a user sees "the same bits as
TFLite Micro" for their own model. A model whose float input or output TFLite
quantises at the edge gets the int8 values through an exact round trip:
(q - zp) * scale in, round(y / scale) + zp out.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import HydraEdgeError

SOURCE_TFLITE = "source.tflite"
TFLM_PIN = "tflite-micro==0.dev20261023182759"


class TflmUnavailable(HydraEdgeError):
    """TFLite Micro's Python package is not installed."""


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """TFLM prints its allocations on file descriptor 2."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tflm_outputs(model: Path, inputs: np.ndarray) -> np.ndarray:
    """TFLM's int8 outputs (flattened, one row per sample) for int8 `inputs` (one sample per row)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise TflmUnavailable(f"TFLite Micro's interpreter is not installed: pip install {TFLM_PIN}") from None
    try:
        return _run(runtime, model.read_bytes(), inputs)
    except RuntimeError as exc:  # TFLM's Prepare/Eval failed; its own message went to fd 2
        raise HydraEdgeError(f"{model}: TFLite Micro's interpreter could not run it ({exc})") from None


def _run(runtime, data: bytes, inputs: np.ndarray) -> np.ndarray:
    rows = []
    with _quiet_fd2():
        interp = runtime.Interpreter.from_bytes(data, arena_size=max(1 << 20, 16 * len(data)))
        x_info, y_info = interp.get_input_details(0), interp.get_output_details(0)
        for x in inputs:
            x = x.reshape(x_info["shape"])
            if x_info["dtype"] != np.int8:  # the file quantises a float input itself
                q = x_info["quantization_parameters"]
                x = ((x.astype(np.float32) - q["zero_points"][0]) * q["scales"][0]).astype(x_info["dtype"])
            interp.set_input(np.ascontiguousarray(x), 0)
            interp.invoke()
            y = np.array(interp.get_output(0))
            if y.dtype != np.int8:  # dequantised at the edge: back to the int8 the graph computed
                q = y_info["quantization_parameters"]
                y = np.clip(np.round(y / q["scales"][0]) + q["zero_points"][0], -128, 127).astype(np.int8)
            rows.append(y.reshape(-1))
    return np.stack(rows)
