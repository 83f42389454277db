"""Fuzz the model parsers for a while: seeded random corruptions of every committed test model.

    .venv/bin/python benchmarks/fuzz_parsers.py [--attempts 2000] [--seed 0]

Each attempt corrupts one file of tests/models/ (byte flips, a truncation or a zeroed span) and loads it
through driver.load_model, as `hydra-edge compile` does. Every outcome must be a graph or a
HydraEdgeError with one clear line; anything else (another exception, a crash of the process, a parse
that runs past --timeout seconds) is a failure and is printed. Prints a table, writes
benchmarks/results/fuzz_parsers.json, exits 1 on any failure. The tests run a short, fixed version
of this (tests/test_onnx.py, tests/test_tflite.py); this is the long run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "models"
RESULTS = ROOT / "benchmarks" / "results" / "fuzz_parsers.json"


def corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = int(rng.integers(3))
    if kind == 0:  # byte flips
        for pos in rng.integers(0, len(out), int(rng.integers(1, 16))):
            out[pos] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncation
        out = out[: int(rng.integers(0, len(out)))]
    else:  # a zeroed span
        start = int(rng.integers(0, len(out)))
        out[start:start + int(rng.integers(1, 512))] = bytes(min(len(out) - start, 511))
        out = out[: len(data)]
    return bytes(out)


class Hang(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=2000, help="corruptions per model file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=20, help="seconds one parse may take")
    args = ap.parse_args(argv)

    from hydra_edge.driver import load_model
    from hydra_edge.errors import HydraEdgeError

    def on_alarm(signum, frame):
        raise Hang

    signal.signal(signal.SIGALRM, on_alarm)
    rng = np.random.default_rng(args.seed)
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(p for p in MODELS.iterdir() if p.suffix in (".onnx", ".tflite", ".pt")):
            raw = path.read_bytes()
            counts = {"graph": 0, "error": 0}
            slowest = 0.0
            start_all = time.time()
            for i in range(args.attempts):
                target = Path(tmp) / f"fuzz{path.suffix}"
                target.write_bytes(corrupt(raw, rng))
                t0 = time.time()
                signal.alarm(args.timeout)
                try:
                    load_model(target)
                    counts["graph"] += 1
                except HydraEdgeError as exc:
                    counts["error"] += 1
                    if "\n" in str(exc).strip() or str(target) not in str(exc) and target.name not in str(exc):
                        failures.append(f"{path.name} #{i}: error without the file name or on several lines: {exc}")
                except Hang:
                    failures.append(f"{path.name} #{i}: parse ran past {args.timeout} s")
                except Exception as exc:  # noqa: BLE001 - exactly what this script looks for
                    failures.append(f"{path.name} #{i}: {type(exc).__name__}: {exc}")
                finally:
                    signal.alarm(0)
                slowest = max(slowest, time.time() - t0)
            rows.append({"file": path.name, "attempts": args.attempts, **counts,
                         "slowest_parse_s": round(slowest, 3), "seconds": round(time.time() - start_all, 1)})
            print(f"{path.name:<36} {args.attempts:>6} attempts  {counts['graph']:>5} graphs  "
                  f"{counts['error']:>5} clear errors  slowest {slowest:.2f} s", flush=True)
    for f in failures[:50]:
        print("FAIL", f)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seed": args.seed, "rows": rows, "failures": failures}, indent=2) + "\n")
    print(f"{len(failures)} failures; wrote {RESULTS}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
