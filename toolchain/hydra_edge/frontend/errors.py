"""The one error type of the frontends: a model file or module we cannot read."""

from __future__ import annotations

import os
import re
from importlib.util import find_spec

from ..errors import HydraEdgeError, display_path

# torch's own frames, wherever the torch that exported the file was installed (found without importing it)
_TORCH_SPEC = find_spec("torch")
_TORCH_DIR = os.path.dirname(_TORCH_SPEC.origin) if _TORCH_SPEC and _TORCH_SPEC.origin else None
_TORCH_FRAME = re.compile(r"[/\\](?:site|dist)-packages[/\\]torch[/\\]")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


class FrontendError(HydraEdgeError):
    """A one-line, user-facing message that names the file and says what to do."""


def first_line(exc: BaseException) -> str:
    """"Type: first non-blank line" of an exception from a library (torch, onnx), for a one-line message."""
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def source_location(stack_trace: str | None) -> str:
    """The innermost frame of a recorded stack trace outside torch itself, as "path/file.py:line" (the path
    as errors.display_path gives it), "" if none. torch.export and the dynamo ONNX exporter record them."""
    if not stack_trace:
        return ""
    frames = _FRAME.findall(stack_trace)
    for path, line in reversed(frames):
        inside_torch = _TORCH_DIR is not None and os.path.abspath(path).startswith(_TORCH_DIR + os.sep)
        if not inside_torch and not _TORCH_FRAME.search(path):
            return f"{display_path(path)}:{line}"
    if frames:
        path, line = frames[-1]
        return f"{display_path(path)}:{line}"
    return ""
