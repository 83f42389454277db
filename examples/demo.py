"""The product's main job, end to end: the best shipped model on a microcontroller and on a Jetson.

    python examples/demo.py [--boards stm32f746 jetson-orin] [--out build/demo]

For each board it runs the commands a user would type, says what each one proves, and ends with one
table: RAM and flash against the board's budget, instructions per inference (exact, counted by QEMU)
and int8 top-1 on the bundled CIFAR-10 test images, run on the emulated target itself.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "searched_stm32f746.pt2"
CALIB = HERE / "searched_stm32f746_calib.npz"
SAMPLES = HERE / "cifar10_samples.npz"
CLI = Path(sys.executable).with_name("hydra-edge")


@dataclass
class BoardResult:
    board: str
    ram: str
    flash: str
    instructions: int
    macs_per_instruction: float
    int8_top1: float
    bit_exact: bool


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def step(title: str, proves: str, args: list[str], quiet: bool = False) -> str:
    """Run one hydra-edge command as a user would, echo it and what it proves; stop the demo if it fails."""
    print(f"\n== {title}\n   proves: {proves}\n   $ hydra-edge {' '.join(shlex.quote(a) for a in args)}", flush=True)
    start = time.monotonic()
    done = subprocess.run([str(CLI), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout + done.stderr)
        raise SystemExit(f"demo stopped: 'hydra-edge {args[0]}' exited {done.returncode}")
    if not quiet:
        for line in done.stdout.splitlines():
            print(f"   {line}")
    print(f"   ({time.monotonic() - start:.1f} s)")
    return done.stdout


def _of(used: int, budget: int | None) -> str:
    return f"{used:,} B" if not budget else f"{used:,} / {budget:,} B ({100 * used / budget:.0f}%)"


def run_board(board: str, out: Path, images: np.ndarray, labels: np.ndarray) -> BoardResult:
    from hydra_edge.ir.serialize import load_graph
    from hydra_edge.models.data import preprocess
    from hydra_edge.validate.accuracy import int8_outputs
    from hydra_edge.validate.bitexact import compare, reference_outputs

    build = out / board
    print(f"\n######## {board}")
    compiled = step("compile", "the .pt2 is read without running code from it, quantised to int8, planned into "
                    "a static arena checked against the board's RAM and flash, and emitted as C",
                    ["compile", _shown(MODEL), "--board", board, "--calib", _shown(CALIB), "-o", _shown(build)],
                    quiet=True)
    for line in compiled.splitlines():
        if line.startswith(("budget", "wrote")):
            print(f"   {line}")
    step("validate", "the C, cross-compiled for the board and run on its emulator, gives every output byte of "
         "the numpy reference interpreter (the integer spec)", ["validate", _shown(build)])
    bench = json.loads(step("bench", "instructions per inference, counted exactly by a QEMU plugin "
                            "(instructions, not cycles)", ["bench", _shown(build), "--json"], quiet=True))
    inference = bench["inference"]
    print(f"   {inference['instructions']:,} instructions per inference, "
          f"{inference['macs_per_instruction']:.2f} MACs per instruction")

    print(f"\n== int8 top-1 on the target\n   proves: the compiled model classifies as well as the float one, "
          f"run on the emulated {board} itself, {len(labels)} bundled CIFAR-10 test images", flush=True)
    start = time.monotonic()
    run = int8_outputs(build, preprocess(images))
    check = compare(reference_outputs(load_graph(build), run.inputs), run.outputs)
    top1 = float(np.mean(run.dequantized.argmax(1) == labels))
    print(f"   int8 top-1 {top1:.1%}; target vs reference interpreter: "
          f"{'BIT-EXACT' if check.ok else f'MISMATCH ({check.mismatched_bytes} bytes)'} on {check.samples} images "
          f"({time.monotonic() - start:.1f} s)")

    measured = json.loads((build / "report.json").read_text())["measured"]
    image, budget = measured["image"], measured.get("budget", {})
    return BoardResult(board, _of(image["ram_bytes"], budget.get("ram_bytes")),
                       _of(image["flash_bytes"], budget.get("flash_bytes")), inference["instructions"],
                       inference["macs_per_instruction"], top1, check.ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", nargs="+", default=["stm32f746", "jetson-orin"])
    ap.add_argument("--out", type=Path, default=Path("build/demo"), help="parent folder of the build folders")
    args = ap.parse_args(argv)

    facts = json.loads(MODEL.with_suffix(".json").read_text())
    samples = np.load(SAMPLES)
    images, labels = samples["images"], samples["labels"].astype(np.int64)
    print(f"model: {_shown(MODEL)}  ({facts['config_key']}: a ViT found by 'hydra-edge search' for the STM32F746; "
          f"{facts['int8_test_top1']:.1%} int8 top-1 on all 10,000 CIFAR-10 test images)")
    results = [run_board(board, args.out, images, labels) for board in args.boards]

    print("\n######## summary (RAM and flash from the linked ELF; the Jetson's is a static Linux executable, "
          "libc included)")
    header = f"{'board':<12} {'RAM':>28} {'flash':>30} {'instructions':>14} {'MAC/insn':>8} {'int8 top-1':>10}  bits"
    print(header)
    for r in results:
        print(f"{r.board:<12} {r.ram:>28} {r.flash:>30} {r.instructions:>14,} {r.macs_per_instruction:>8.2f} "
              f"{r.int8_top1:>10.1%}  {'exact' if r.bit_exact else 'DIFFER'}")
    print(f"int8 top-1 on {len(labels)} bundled images; the whole test split: 'hydra-edge eval BUILD --data "
          "cifar10.npz'")
    return 0 if all(r.bit_exact for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
