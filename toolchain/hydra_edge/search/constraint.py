"""The search's constraint: the real compiler's RAM and flash for the board, not a formula.

Each candidate is built (random weights: sizes do not depend on values),
lowered, quantised, scheduled and planned exactly as `hydra-edge compile`
does, and targets/budget.estimate gives RAM (arena + stack reserve + harness)
and flash (weights + per-channel params + code reserve). Nothing is written.
Results are cached by the candidate's key in a JSON file, so a resumed search
does not compile again.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..boards import Board
from ..errors import HydraEdgeError
from ..frontend.module import from_module
from ..passes.pipeline import lower_to_ir
from ..quant.calibrate import fallback_calibration
from ..targets.budget import estimate
from .formulas import formula_fits, formula_peak_activation_bytes, parameter_count
from .model import SearchedViT
from .space import Candidate


@dataclass(frozen=True)
class Fit:
    key: str
    fits: bool
    ram_bytes: int
    flash_bytes: int
    arena_bytes: int
    schedule: str
    params: int
    formula_ram_bytes: int
    params_rule_fits: bool
    formula_rule_fits: bool
    error: str = ""  # why the compiler refused it, if it did (not a budget)


def compile_fit(c: Candidate, board: Board) -> Fit:
    """Plan candidate c for `board` with the compiler's own stages; never raises for a model that is too big."""
    from ..driver import plan_graph  # the driver imports search/ lazily too

    rules = formula_fits(c, board.ram_bytes, board.flash_bytes)
    common = dict(key=c.key(), params=parameter_count(c), formula_ram_bytes=formula_peak_activation_bytes(c),
                  params_rule_fits=rules["params"], formula_rule_fits=rules["formula"])
    torch.manual_seed(0)
    model = SearchedViT(c).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = lower_to_ir(from_module(model, torch.zeros(1, c.in_channels, c.image_size, c.image_size)))
        qgraph, plan = plan_graph(graph, fallback_calibration(graph, samples=1))  # sizes do not depend on ranges
    except HydraEdgeError as exc:
        return Fit(fits=False, ram_bytes=0, flash_bytes=0, arena_bytes=0, schedule="", error=str(exc), **common)
    est = estimate(qgraph, plan, board)
    fits = ((board.ram_bytes is None or est.ram_bytes <= board.ram_bytes)
            and (board.flash_bytes is None or est.flash_bytes <= board.flash_bytes))
    return Fit(fits=fits, ram_bytes=est.ram_bytes, flash_bytes=est.flash_bytes, arena_bytes=plan.arena_bytes,
               schedule=qgraph.meta["schedule"], **common)


class FitCache:
    """compile_fit results by candidate key, kept in a JSON file (one board per file)."""

    def __init__(self, path: Path, board: Board) -> None:
        self.path, self.board = Path(path), board
        self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, c: Candidate) -> Fit:
        if c.key() not in self.entries:
            self.put(c, compile_fit(c, self.board))
        return Fit(**self.entries[c.key()])

    def put(self, c: Candidate, fit: Fit) -> None:
        self.entries[c.key()] = asdict(fit)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1) + "\n")
        tmp.replace(self.path)


def rule_disagreements(fits: list[Fit]) -> dict[str, int]:
    """How often each hand rule and the compiler disagree, over the candidates the compiler could plan
    (one it refused for another reason, an op it cannot lower, is no verdict on size)."""
    fits = [f for f in fits if not f.error]
    out = {"candidates": len(fits), "compiler_accepts": sum(f.fits for f in fits)}
    for rule in ("params", "formula"):
        verdicts = [(getattr(f, f"{rule}_rule_fits"), f.fits) for f in fits]
        out[f"{rule}_accepts_compiler_rejects"] = sum(r and not c for r, c in verdicts)
        out[f"{rule}_rejects_compiler_accepts"] = sum(c and not r for r, c in verdicts)
    return out
