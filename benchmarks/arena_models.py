"""The arena of every model the repository ships, under each schedule, beside the plan's lower bound.

    python benchmarks/arena_models.py [--json FILE] [--tokens-per-step N]

Compiles each bundled model (examples/*.pt2, tests/models/*: ONNX, TorchScript, int8 .tflite) for the host
board with the default schedule and, where the model allows another, with schedule greedy; prints a table
and writes benchmarks/results/arena_models.json. The arena is the planned activation + scratch RAM
(report ram.arena_bytes), the lower bound the plan's (report ram.lower_bound_bytes): no schedule of the
graph as emitted needs less. docs/memory.md keeps the table before and after issue 16's streaming.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "arena_models.json"

# (model, calibration or None, TorchScript input shape or None)
MODELS = [
    ("examples/hydra_vit_cifar10.pt2", "examples/calib_cifar10.npz", None),
    ("examples/searched_stm32f746.pt2", "examples/searched_stm32f746_calib.npz", None),
    ("examples/searched_ram128k.pt2", "examples/searched_ram128k_calib.npz", None),
    ("tests/models/onnx_hydra_dynamo_norm.onnx", None, None),
    ("tests/models/onnx_mixed_dynamo.onnx", None, None),
    ("tests/models/onnx_softmax_dynamo_sdpa.onnx", None, None),
    ("tests/models/ts_hydra_vit_traced.pt", None, None),
    ("tests/models/tfl_hydra_vit.tflite", None, None),
    ("tests/models/tfl_softmax_vit.tflite", None, None),
    ("tests/models/tfl_small_cnn.tflite", None, None),
    ("tests/models/tfl_tiny_mlp.tflite", None, None),
]


def measure(model: str, calib: str | None, shape: tuple | None, schedule: str | None, tps: int, out: Path) -> dict:
    from hydra_edge import driver

    options = driver.LoadOptions(input_shape=shape) if shape else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no calibration for the test models: the arena does not depend on it
        result = driver.compile_model(ROOT / model, "host", out, ROOT / calib if calib else None,
                                      schedule=schedule, tokens_per_step=tps, load_options=options, force=True)
    ram = result.report["ram"]
    return {
        "model": model,
        "schedule": result.graph.meta.get("schedule", schedule or "default"),
        "tokens_per_step": tps,
        "arena_bytes": int(ram["arena_bytes"]),
        "lower_bound_bytes": int(ram["lower_bound_bytes"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    ap.add_argument("--tokens-per-step", type=int, default=1, help="tokens per streamed group")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "toolchain"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, calib, shape in MODELS:
            for schedule in (None, "greedy"):
                try:
                    row = measure(model, calib, shape, schedule, args.tokens_per_step, Path(tmp) / "build")
                except Exception as exc:  # a schedule the model refuses
                    if schedule is None:
                        raise
                    print(f"{model}: schedule {schedule}: {exc}", file=sys.stderr)
                    continue
                if schedule == "greedy" and rows and rows[-1]["model"] == model and rows[-1]["schedule"] == "greedy":
                    continue  # the default already was greedy
                rows.append(row)
    print(f"{'model':48} {'schedule':9} {'arena B':>9} {'lower bound B':>14} {'ratio':>6}")
    for r in rows:
        ratio = r["arena_bytes"] / max(r["lower_bound_bytes"], 1)
        print(f"{r['model']:48} {r['schedule']:9} {r['arena_bytes']:>9,} {r['lower_bound_bytes']:>14,} {ratio:>6.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "board": "host", "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
