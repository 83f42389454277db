"""The one error type of the frontends: a model file or module we cannot read."""

from __future__ import annotations

from ..errors import HydraEdgeError


class FrontendError(HydraEdgeError):
    """A one-line, user-facing message that names the file and says what to do."""


def first_line(exc: BaseException) -> str:
    """"Type: first non-blank line" of an exception from a library (torch, onnx), for a one-line message."""
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
