"""Float vs int8 on the bundled CIFAR-10 images, and the bit-exact verdict.

    python examples/demo_accuracy.py --model examples/hydra_vit_cifar10.pt2 --build build/demo

The float model runs in PyTorch from the .pt2; the int8 model is the compiled
C of the build folder, run on the host; the reference interpreter checks the
C output byte for byte on every image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra_edge.ir.serialize import load_graph
from hydra_edge.models.data import preprocess
from hydra_edge.validate.accuracy import agreement, float_outputs, int8_outputs
from hydra_edge.validate.bitexact import compare, reference_outputs

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--samples", type=Path, default=HERE / "cifar10_samples.npz")
    args = ap.parse_args()

    samples = np.load(args.samples)
    labels = samples["labels"].astype(np.int64)
    x = preprocess(samples["images"])

    float_logits = float_outputs(args.model, x)
    run = int8_outputs(args.build, x)
    check = compare(reference_outputs(load_graph(args.build), run.inputs), run.outputs)
    a = agreement(float_logits, run.dequantized)

    n = len(labels)
    print(f"images: {n} bundled CIFAR-10 test images")
    print(f"float top-1: {np.mean(float_logits.argmax(1) == labels):.1%}   "
          f"int8 top-1: {np.mean(run.dequantized.argmax(1) == labels):.1%}")
    print(f"int8 agrees with float on top-1: {round(a.top1_agree * n)}/{n} ({a.top1_agree:.1%})")
    print(f"logit error (float units): max {a.max_abs_error:.4f}, mean {a.mean_abs_error:.4f}")
    verdict = "BIT-EXACT" if check.ok else f"MISMATCH ({check.mismatched_bytes} bytes)"
    print(f"C vs reference interpreter: {verdict} on {check.samples} images, {check.bytes_compared} bytes")
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
