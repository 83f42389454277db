"""Bit-exact validation: the built C against the reference interpreter, byte for byte."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ir.graph import Graph
from ..reference.int_interp import run_int
from ..targets import runner


@dataclass
class Mismatch:
    sample: int
    byte: int
    expected: int
    actual: int


@dataclass
class ValidationResult:
    samples: int
    bytes_compared: int
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatched_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatched_bytes == 0


def reference_outputs(graph: Graph, inputs: np.ndarray) -> np.ndarray:
    """The reference interpreter on each sample, outputs flattened and concatenated."""
    return np.stack([np.concatenate([o.reshape(-1) for o in run_int(graph, x)]) for x in inputs]).astype(np.int8)


def compare(expected: np.ndarray, actual: np.ndarray, keep: int = 10) -> ValidationResult:
    expected = expected.reshape(len(expected), -1)
    actual = actual.reshape(len(actual), -1)
    if expected.shape != actual.shape:
        raise ValueError(f"output size differs: reference {expected.shape}, target {actual.shape}")
    diff = np.argwhere(expected != actual)
    result = ValidationResult(len(expected), expected.size, mismatched_bytes=len(diff))
    result.mismatches = [Mismatch(int(s), int(b), int(expected[s, b]), int(actual[s, b])) for s, b in diff[:keep]]
    return result


def validate_build(
    folder: str | Path, graph: Graph, inputs: np.ndarray, sanitize: bool = False, timeout: float | None = None
) -> ValidationResult:
    """Build the folder's C for its board (build.json), run it there on `inputs` (int8, one sample per row):
    natively for the host, under QEMU for the others; compare with the reference interpreter byte for byte.

    A fault, a hang or a missing toolchain raises (targets.runner's errors name the board and the cause);
    a mismatch is a result with `ok` False.
    """
    expected = reference_outputs(graph, inputs)
    actual = runner.run(Path(folder), inputs.reshape(len(inputs), -1), sanitize=sanitize, timeout=timeout)
    return compare(expected, actual)
