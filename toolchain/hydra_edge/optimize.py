"""What a build's code is optimised for: speed or size (`hydra-edge compile --optimize`).

Every kernel path gives the same bits; the choice only trades flash for instructions.

- speed: the compiler at -O2 and every SIMD fast path a node takes (linear's token pairs, CONV_2D's word-wise im2col
  window beside the byte-wise one, ...).
- size: the compiler at -Os and one path where speed would build two: linear one token at a time
  (HYDRA_LINEAR_ONE_ROW) without the one-token loop's even-block assembly (HYDRA_DOT4_NO_EVEN_BLOCKS), every
  CONV_2D through the byte-wise window (HYDRA_TFL_NO_CONV_WORD_WINDOW, which plans 4 ceil(k / 4) more scratch bytes
  for the convolutions on a multiple of 4 channels).
- auto (the default): size where the model's constants (weights, biases, multipliers, tables) are under
  AUTO_SIZE_BELOW bytes, else speed. On such a model the kernels' code, not the model, makes most of the image (on
  the Cortex-M7 the fast paths add about 4 KB to tfl_small_cnn's 17 KB), and it runs in a few hundred thousand
  instructions either way (docs/boards.md, "Flash").

The driver chooses once, on the quantised graph, and keeps the choice in graph.meta (OPTIMIZE_META) for the stages
after it: the memory plan (the scratch it implies), the ops' c_defines and the Makefile's optimisation level.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import HydraEdgeError
from .ir.graph import Graph


class OptimizeError(HydraEdgeError, ValueError):
    """An --optimize value other than auto, speed and size."""


OPTIMIZE_CHOICES = ("auto", "speed", "size")
AUTO_SIZE_BELOW = 16 * 1024  # bytes of model constants under which auto builds for size
OPTIMIZE_META = "optimize"  # graph.meta: "speed" or "size"
OPTIMIZE_REASON_META = "optimize_reason"
OPT_LEVEL = {"speed": "-O2", "size": "-Os"}


@dataclass(frozen=True)
class CodeGoal:
    goal: str  # "speed" or "size"
    reason: str  # why, in a line of the report

    def meta(self) -> dict[str, str]:
        """The graph.meta entries that carry the goal to the stages after the choice."""
        return {OPTIMIZE_META: self.goal, OPTIMIZE_REASON_META: self.reason}


def choose_goal(constant_bytes: int, optimize: str = "auto") -> CodeGoal:
    """The goal for `optimize` ("auto", "speed", "size") on a model of `constant_bytes` of constants (the report's
    flash total: codegen/report.py constant_bytes)."""
    if optimize not in OPTIMIZE_CHOICES:
        raise OptimizeError(f"--optimize must be one of {', '.join(OPTIMIZE_CHOICES)}, got {optimize!r}")
    if optimize != "auto":
        return CodeGoal(optimize, f"--optimize {optimize}")
    if constant_bytes < AUTO_SIZE_BELOW:
        return CodeGoal("size", f"auto: {constant_bytes:,} B of model constants, under {AUTO_SIZE_BELOW:,} B: the "
                                "kernels' code outweighs them; --optimize speed for the fast paths")
    return CodeGoal("speed", f"auto: {constant_bytes:,} B of model constants, at least {AUTO_SIZE_BELOW:,} B")


def for_size(graph: Graph) -> bool:
    """Whether the build leaves out the fast paths that have a smaller twin (speed unless the meta says size)."""
    return graph.meta.get(OPTIMIZE_META, "speed") == "size"


def opt_level(graph: Graph) -> str:
    """The C compiler's optimisation flag for the build."""
    return OPT_LEVEL["size" if for_size(graph) else "speed"]
