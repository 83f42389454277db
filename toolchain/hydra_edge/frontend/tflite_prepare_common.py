"""What the two TFLite prepare modules share (tflite_prepare_elementwise.py, tflite_prepare_linear.py).

CalculateActivationRangeQuantized's table for an int8 output: the real bounds of each fused activation,
quantised by the caller's ``zp + round(f / scale)`` and clamped to [-128, 127]. The quantisation stays with
each caller, which raises its own error type.
"""

from __future__ import annotations

from collections.abc import Callable

INT8_MIN, INT8_MAX = -128, 127

# The real bounds each fused activation clamps to (None: that side is only int8's).
ACTIVATION_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "NONE": (None, None),
    "RELU": (0.0, None),
    "RELU6": (0.0, 6.0),
    "RELU_N1_TO_1": (-1.0, 1.0),
}
ACTIVATIONS = tuple(ACTIVATION_BOUNDS)


def activation_bounds(activation: str, quantize: Callable[[float], int]) -> tuple[int, int]:
    """The int8 range of ``activation`` (a key of ACTIVATION_BOUNDS): lower bound quantised first, as TFLM."""
    lo, hi = ACTIVATION_BOUNDS[activation]
    return (INT8_MIN if lo is None else max(INT8_MIN, quantize(lo)),
            INT8_MAX if hi is None else min(INT8_MAX, quantize(hi)))
