"""The learning curve of a long `hydra-edge train` run: float top-1 on a test sample every few epochs.

Kept in curve.json beside the checkpoint, so a run resumed over several sessions keeps its whole curve
(a point re-measured after a resume replaces the one at the same step), and drawn as curve.png. It only
watches: nothing is chosen by it, so the test split stays a measurement.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HydraEdgeError


@dataclass
class LearningCurve:
    path: Path  # curve.json
    points: dict[int, tuple[float, float]] = field(default_factory=dict)  # step -> (epoch, float top-1)

    @classmethod
    def load(cls, path: Path) -> LearningCurve:
        """The curve in `path` (empty if there is none); a damaged file is a HydraEdgeError that names it."""
        curve = cls(path)
        if path.exists():
            try:
                rows = json.loads(path.read_text())
                if not isinstance(rows, list):
                    raise TypeError("not a JSON list")
                for i, p in enumerate(rows):
                    try:
                        curve.points[int(p["step"])] = (float(p["epoch"]), float(p["float_top1"]))
                    except KeyError as exc:
                        raise KeyError(f"point {i} has no {exc}") from None
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                why = exc.args[0] if isinstance(exc, KeyError) else str(exc)
                raise HydraEdgeError(f"{path} is damaged ({why}); delete it to resume without the earlier "
                                     f"curve points (the checkpoint is kept)") from None
        return curve

    def record(self, step: int, epoch: float, top1: float) -> None:
        """Add (or replace) the point at `step` and rewrite curve.json whole (a temporary file, then
        os.replace), so an interruption leaves the old curve or the new one, never half of one."""
        self.points[step] = (epoch, top1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_list(), indent=1) + "\n")
        os.replace(tmp, self.path)

    def to_list(self) -> list[dict]:
        return [{"step": s, "epoch": round(e, 2), "float_top1": round(a, 4)} for s, (e, a) in sorted(self.points.items())]

    def plot(self, png: Path, title: str) -> Path:
        from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state

        rows = self.to_list()
        fig = Figure(figsize=(6.0, 3.8), dpi=110)
        ax = fig.add_subplot()
        ax.plot([r["epoch"] for r in rows], [100 * r["float_top1"] for r in rows], marker="o", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("float top-1 on the test sample (%)")
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(png)
        return png
