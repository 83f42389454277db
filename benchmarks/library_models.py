"""ViTs as the libraries write them, through every export path: compiles, bit-exact, int8 against float.

    python benchmarks/library_models.py [--models a,b] [--exports pt2,onnx_dynamo,onnx_legacy]
                                        [--finetune-steps N] [--images N] [--json FILE]

Each model of tests/library_models.py (timm, DeiT, torchvision, Hugging Face, the Hydra paper's listing,
timm with Hydra attention: 32x32 input, patch 4, D 96, depth 3, 3 heads; and the CNNs: ResNet-8, a
MobileNetV2-style net, a conv-tokenizer ViT, a LeNet-style net) is trained briefly on CIFAR-10
(../shared/data, --finetune-steps of batch 64 from its seeded initialisation), exported as .pt2, ONNX by
the dynamo exporter and ONNX by the legacy one, and each file is compiled for the host and the stm32f746.
Per cell: does it compile; do the host build and the QEMU Cortex-M7 build give the reference
interpreter's bytes on the build's test vectors; the relative L2 error of the int8 logits against the float
model's on --images CIFAR-10 test images; float and int8 top-1 on them. One table, and JSON in
benchmarks/results/library_models.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "benchmarks" / "results" / "library_models.json"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10.npz"


def finetune(model: torch.nn.Module, steps: int, x: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
    """A short supervised run on uint8 NHWC images x (AdamW, cosine decay, random crops and flips); the
    model is left in eval mode."""
    from hydra_edge.models.data import preprocess
    from hydra_edge.models.training import augment, lr_at

    if steps <= 0:
        return
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step / steps, 1e-3, 0.05, 1e-5)
        idx = rng.integers(0, len(x), 64)
        batch = torch.from_numpy(preprocess(augment(x[idx], rng)))
        loss = torch.nn.functional.cross_entropy(model(batch), torch.from_numpy(y[idx].astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def measure_export(model, how: str, folder: Path, calib: np.ndarray, x: np.ndarray, labels: np.ndarray,
                   float_logits: np.ndarray) -> dict:
    import library_models as lm
    from hydra_edge import driver
    from hydra_edge.boards import load_board
    from hydra_edge.build_manifest import TEST_VECTORS
    from hydra_edge.validate.accuracy import int8_outputs
    from hydra_edge.validate.bitexact import validate_build

    cell: dict = {"export": how}
    path = folder / f"model{'.pt2' if how == 'pt2' else '.onnx'}"
    try:
        lm.export(model, how, path)
    except Exception as exc:  # noqa: BLE001 - an exporter failure is a result of the table, not a crash
        cell["error"] = f"export: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return cell
    try:
        graph = driver.lower_to_ir(driver.load_model(path))
    except Exception as exc:  # noqa: BLE001
        cell["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return cell
    for board in ("host", "stm32f746"):
        out = folder / board
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = driver.compile_graph(graph, load_board(board), out, calib=calib, force=True)
            vectors = np.load(out / TEST_VECTORS)
            check = validate_build(out, result.graph, vectors.reshape(len(vectors), -1))
            cell[f"bitexact_{board}"] = check.ok
            cell[f"arena_{board}"] = result.report["ram"]["arena_bytes"]
        except Exception as exc:  # noqa: BLE001
            cell["error"] = f"{board}: {type(exc).__name__}: {str(exc)[:300]}"
            return cell
    cell["compiles"] = True
    run = int8_outputs(folder / "host", x)
    int8_logits = run.dequantized.reshape(len(x), -1)
    cell["rel_l2"] = float(np.linalg.norm(int8_logits - float_logits) / np.linalg.norm(float_logits))
    cell["int8_top1"] = float((int8_logits.argmax(1) == labels).mean())
    return cell


def main() -> int:
    import library_models as lm
    from hydra_edge.models.data import load_cifar10, preprocess

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join([*lm.VITS, *lm.CNNS]))
    ap.add_argument("--exports", default=",".join(lm.EXPORTS))
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = load_cifar10(CIFAR)
    rng = np.random.default_rng(0)  # the file is sorted by class: draw the images
    pick = rng.permutation(len(x_test))[:args.images]
    test, labels = preprocess(x_test[pick]), y_test[pick].astype(np.int64)
    calib = preprocess(x_train[rng.permutation(len(x_train))[:64]])
    rows = []
    for name in args.models.split(","):
        start = time.time()
        model = lm.build(name)
        finetune(model, args.finetune_steps, x_train, y_train)
        with torch.no_grad():
            float_logits = model(torch.from_numpy(test)).numpy()
        float_top1 = float((float_logits.argmax(1) == labels).mean())
        for how in args.exports.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    cell = measure_export(model, how, Path(tmp), calib, test, labels, float_logits)
                except Exception:  # noqa: BLE001 - keep the table going; the trace says what broke
                    cell = {"export": how, "error": traceback.format_exc(limit=3)[-400:]}
            cell.update(model=name, float_top1=float_top1, finetune_steps=args.finetune_steps)
            rows.append(cell)
            print(_row(cell), flush=True)
        print(f"  ({name}: {time.time() - start:.0f} s)", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"images": args.images, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


def _row(c: dict) -> str:
    yes = lambda v: "yes" if v else ("NO" if v is not None else "-")  # noqa: E731
    if "error" in c:
        return f"{c['model']:22s} {c['export']:12s} no: {c['error'][:160]}"
    return (f"{c['model']:22s} {c['export']:12s} compiles yes  bit-exact host {yes(c.get('bitexact_host'))} "
            f"M7 {yes(c.get('bitexact_stm32f746'))}  rel L2 {c['rel_l2']:.3f}  top-1 float {c['float_top1']:.3f} "
            f"int8 {c['int8_top1']:.3f}  arena {c['arena_stm32f746']:,} B")


if __name__ == "__main__":
    sys.exit(main())
