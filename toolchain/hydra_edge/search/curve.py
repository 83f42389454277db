"""The learning curve of a long `hydra-edge train` run: float top-1 on a test sample every few epochs.

Kept in curve.json beside the checkpoint, so a run resumed over several sessions keeps its whole curve
(a point re-measured after a resume replaces the one at the same step), and drawn as curve.png. It only
watches: nothing is chosen by it, so the test split stays a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LearningCurve:
    path: Path  # curve.json
    points: dict[int, tuple[float, float]] = field(default_factory=dict)  # step -> (epoch, float top-1)

    @classmethod
    def load(cls, path: Path) -> LearningCurve:
        curve = cls(path)
        if path.exists():
            for p in json.loads(path.read_text()):
                curve.points[int(p["step"])] = (float(p["epoch"]), float(p["float_top1"]))
        return curve

    def record(self, step: int, epoch: float, top1: float) -> None:
        self.points[step] = (epoch, top1)
        self.path.write_text(json.dumps(self.to_list(), indent=1) + "\n")

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
