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
import torch

from hydra_edge import driver
from hydra_edge.models.data import preprocess
from hydra_edge.targets import host
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

    torch.set_num_threads(1)
    with torch.no_grad():
        float_logits = torch.export.load(str(args.model)).module()(torch.from_numpy(x)).numpy()

    manifest, graph = driver.load_build(args.build)
    inp, out = manifest["input"], manifest["outputs"][0]
    xq = driver.quantize_input(x, inp["scale"], inp["zero_point"])
    yq = host.run(args.build, xq.reshape(len(xq), -1))
    int8_logits = driver.dequantize(yq, out["scale"], out["zero_point"])

    check = compare(reference_outputs(graph, xq), yq)
    f_top1, q_top1 = float_logits.argmax(1), int8_logits.argmax(1)
    err = np.abs(float_logits - int8_logits)
    n = len(labels)
    print(f"images: {n} bundled CIFAR-10 test images")
    print(f"float top-1: {np.mean(f_top1 == labels):.1%}   int8 top-1: {np.mean(q_top1 == labels):.1%}")
    print(f"int8 agrees with float on top-1: {np.sum(f_top1 == q_top1)}/{n} ({np.mean(f_top1 == q_top1):.1%})")
    print(f"logit error (float units): max {err.max():.4f}, mean {err.mean():.4f}; output step {out['scale']:.4f}")
    verdict = "BIT-EXACT" if check.ok else f"MISMATCH ({check.mismatched_bytes} bytes)"
    print(f"C vs reference interpreter: {verdict} on {check.samples} images, {check.bytes_compared} bytes")
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
