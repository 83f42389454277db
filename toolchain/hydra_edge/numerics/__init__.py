"""Fixed-point arithmetic (gemmlowp-style), the bottom layer: the quantiser, the reference interpreters and the
.tflite frontend all build on it."""
