"""Instruction counts of the bundled CIFAR-10 Hydra ViT on the emulated boards, SIMD against portable kernels.

    python benchmarks/bench_example.py [--boards stm32f746 jetson-orin] [--runs 2] [--out DIR]
        [--model examples/searched_stm32f746.pt2 --calib examples/searched_stm32f746_calib.npz --json FILE]

Compiles examples/hydra_vit_cifar10.pt2 (calibrated with examples/calib_cifar10.npz) for each board,
runs `hydra-edge bench` (QEMU with the instruction-counting plugin) on the build's first test vector,
once with the target's kernels and once with the portable C ones (-DHYDRA_PORTABLE_KERNELS, the same
bits), prints a per-op table per board and a summary, and writes benchmarks/results/bench_example.json.

QEMU counts executed instructions, not cycles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hydra_vit_cifar10.pt2"
CALIB = ROOT / "examples" / "calib_cifar10.npz"
RESULTS = ROOT / "benchmarks" / "results" / "bench_example.json"


def _shown(path: Path) -> str:
    """A path as the results file names it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def default_boards() -> list[str]:
    from hydra_edge.boards import list_boards

    known = list_boards()
    jetsons = [b for b in known if b.startswith("jetson")]
    # The Cortex-M7 target, and one aarch64 board (the Orin-class one when there is one).
    picked = ["stm32f746"] if "stm32f746" in known else []
    picked += [b for b in jetsons if "orin" in b][:1] or jetsons[:1]
    return picked


def main(argv: list[str] | None = None) -> int:
    from hydra_edge import driver
    from hydra_edge.targets.icount import NOTE, bench, format_bench

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", nargs="+", default=None, help="boards to bench (default: stm32f746 and a jetson)")
    ap.add_argument("--runs", type=int, default=2, help="emulator runs per board; counts must be identical")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench", help="parent folder of the builds")
    ap.add_argument("--json", type=Path, default=RESULTS, help="where to write the combined results")
    ap.add_argument("--model", type=Path, default=EXAMPLE, help="the model to compile (default: the bundled example)")
    ap.add_argument("--calib", type=Path, default=CALIB, help="its calibration .npz")
    args = ap.parse_args(argv)

    boards = args.boards or default_boards()
    if not boards:
        print("no emulated boards (stm32f746, jetson-*) are defined", file=sys.stderr)
        return 1
    results = {}
    for name in boards:
        folder = args.out / name
        t0 = time.perf_counter()
        driver.compile_model(args.model, name, folder, args.calib)
        t1 = time.perf_counter()
        portable = bench(folder, runs=1, portable=True)
        result = bench(folder, runs=args.runs)
        t2 = time.perf_counter()
        result["compile_s"], result["bench_s"] = round(t1 - t0, 2), round(t2 - t1, 2)
        result["portable_inference_instructions"] = portable["inference"]["instructions"]
        results[name] = result
        print(f"== {name} ==")
        print(format_bench(result))
        print()

    print(f"{'board':<14} {'instructions/inference':>24} {'portable C':>14} {'saved':>7} {'MACs':>12} "
          f"{'MACs/instr':>11} {'repeatable':>11}")
    for name, r in results.items():
        inf, plain = r["inference"], r["portable_inference_instructions"]
        print(f"{name:<14} {inf['instructions']:>24,} {plain:>14,} {1 - inf['instructions'] / plain:>7.1%} "
              f"{inf['macs']:>12,} {inf['macs_per_instruction']:>11.4f} {'yes' if r['repeatable'] else 'NO':>11}")
    print(f"\n{NOTE}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": _shown(args.model),
        "calibration": _shown(args.calib),
        "note": NOTE,
        "boards": {
            name: {
                "instructions_per_inference": r["inference"]["instructions"],
                "portable_instructions_per_inference": r["portable_inference_instructions"],
                "macs": r["inference"]["macs"],
                "macs_per_instruction": r["inference"]["macs_per_instruction"],
                "run_instructions": r["run"]["instructions"],
                "repeatable": r["repeatable"],
                "runs": r["runs"],
            }
            for name, r in results.items()
        },
        "details": results,
    }
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r["repeatable"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
