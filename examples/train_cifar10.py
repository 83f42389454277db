#!/usr/bin/env python
"""Train a small Hydra-attention ViT on CIFAR-10 on the CPU and export it for hydra-edge.

    python examples/train_cifar10.py --data /path/cifar10.npz \\
        --out examples/hydra_vit_cifar10.pt2 --minutes 25

Training stops at --epochs or when the --minutes wall-clock budget is spent,
whichever comes first; the learning rate follows a cosine whose progress is the
larger of the step fraction and the time fraction, so a budget-limited run
still anneals to zero. Writes, beside --out:

* ``<stem>.pt2``   the model exported with ``hydra_edge.models.hydra_vit.export_pt2``
* ``<stem>.json``  config, normalisation, float test top-1, epochs, training seconds
* ``cifar10_samples.npz``  100 test images, 10 of each class, drawn with a fixed seed (``images`` uint8 NHWC,
  ``labels`` uint8; the test split is sorted by class, so its first 100 would all be airplanes)
* ``calib_cifar10.npz``    ``x``: 64 preprocessed (float32 NCHW) training images, the PTQ calibration set
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from hydra_edge.models.data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, preprocess
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig, export_pt2
from hydra_edge.models.training import augment, lr_at

NUM_SAMPLES = 100


def balanced_sample(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` images, as many of each class, drawn with a fixed seed, in index order."""
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    per_class = count // len(classes)
    pick = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(pick))
NUM_CALIB = 64
EVAL_SUBSET = 2000


@torch.no_grad()
def evaluate(model: HydraViT, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy (0..1) of ``model`` on uint8 NHWC ``images``."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = torch.from_numpy(preprocess(images[i : i + batch]))
        pred = model(x).argmax(dim=1).numpy()
        correct += int((pred == labels[i : i + batch]).sum())
    return correct / len(images)


@click.command(context_settings={"show_default": True})
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CIFAR-10 .npz (x_train, y_train, x_test, y_test).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("examples/hydra_vit_cifar10.pt2"), help="Exported program (.pt2).")
@click.option("--samples-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Sample images npz [default: cifar10_samples.npz beside --out].")
@click.option("--calib-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibration npz [default: calib_cifar10.npz beside --out].")
@click.option("--epochs", type=click.IntRange(min=1), default=100, help="Maximum epochs.")
@click.option("--minutes", type=click.FloatRange(min=0.0, min_open=True), default=25.0,
              help="Wall-clock training budget; training stops cleanly when spent.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128)
@click.option("--lr", type=float, default=2e-3, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=float, default=0.05)
@click.option("--warmup", type=click.FloatRange(0.0, 0.5), default=0.03,
              help="Fraction of the run spent in linear warmup.")
@click.option("--label-smoothing", type=float, default=0.1)
@click.option("--seed", type=int, default=0)
@click.option("--image-size", type=int, default=32)
@click.option("--patch-size", type=int, default=4)
@click.option("--embed-dim", type=int, default=64)
@click.option("--depth", type=int, default=4)
@click.option("--mlp-ratio", type=float, default=2.0)
@click.option("--phi-style", type=click.Choice(["norm", "normalize"]), default="norm")
@click.option("--threads", type=click.IntRange(min=1), default=1, help="torch CPU threads.")
def main(data_path: Path, out_path: Path, samples_out: Path | None, calib_out: Path | None,
         epochs: int, minutes: float, batch_size: int, lr: float, weight_decay: float, warmup: float,
         label_smoothing: float, seed: int, image_size: int, patch_size: int, embed_dim: int,
         depth: int, mlp_ratio: float, phi_style: str, threads: int) -> None:
    """Train a HydraViT on CIFAR-10 and export it (plus samples and calibration data)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    try:
        x_train, y_train, x_test, y_test = load_cifar10(data_path)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if image_size != x_train.shape[1]:
        raise click.ClickException(f"--image-size {image_size} does not match the data ({x_train.shape[1]})")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    samples_out = samples_out or out_path.parent / "cifar10_samples.npz"
    calib_out = calib_out or out_path.parent / "calib_cifar10.npz"
    json_out = out_path.with_suffix(".json")

    # Data products that do not depend on training: write them first.
    pick = balanced_sample(y_test, NUM_SAMPLES)
    np.savez(samples_out, images=x_test[pick], labels=y_test[pick].astype(np.uint8))
    calib_idx = np.sort(np.random.default_rng(seed + 1).choice(len(x_train), NUM_CALIB, replace=False))
    np.savez(calib_out, x=preprocess(x_train[calib_idx]))
    click.echo(f"wrote {samples_out} ({NUM_SAMPLES} test images) and {calib_out} ({NUM_CALIB} train images)")

    cfg = HydraViTConfig(image_size=image_size, patch_size=patch_size, embed_dim=embed_dim,
                         depth=depth, mlp_ratio=mlp_ratio, phi_style=phi_style)
    model = HydraViT(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    click.echo(f"config {cfg.to_dict()}  tokens {cfg.num_tokens}  params {n_params}")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "pos_embed"]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n != "pos_embed")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))

    steps_per_epoch = len(x_train) // batch_size  # drop the ragged last batch
    total_steps = epochs * steps_per_epoch
    budget_s = minutes * 60.0
    eval_idx = np.random.default_rng(seed + 2).choice(len(x_test), EVAL_SUBSET, replace=False)
    x_eval, y_eval = x_test[eval_idx], y_test[eval_idx]

    start = time.monotonic()
    step = 0
    epochs_run = 0.0
    out_of_time = False
    for epoch in range(epochs):
        model.train()
        perm = rng.permutation(len(x_train))
        loss_sum, correct, seen = 0.0, 0, 0
        t_epoch = time.monotonic()
        for b in range(steps_per_epoch):
            elapsed = time.monotonic() - start
            if elapsed >= budget_s:
                out_of_time = True
                break
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = torch.from_numpy(preprocess(augment(x_train[idx], rng)))
            y = torch.from_numpy(y_train[idx].astype(np.int64))
            for group in opt.param_groups:
                group["lr"] = lr_at(max(step / total_steps, elapsed / budget_s), lr, warmup, 0.0)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(dim=1) == y).sum())
            seen += len(idx)
        epochs_run += seen / (steps_per_epoch * batch_size)
        if seen:
            if not math.isfinite(loss_sum):
                raise click.ClickException(f"loss diverged in epoch {epoch + 1}")
            acc = evaluate(model, x_eval, y_eval)
            click.echo(f"epoch {epoch + 1:3d}  loss {loss_sum / seen:.4f}  train acc {correct / seen:.4f}  "
                       f"test acc ({EVAL_SUBSET}) {acc:.4f}  lr {opt.param_groups[0]['lr']:.2e}  "
                       f"{time.monotonic() - t_epoch:.0f}s  total {time.monotonic() - start:.0f}s"
                       + ("  (partial, budget spent)" if out_of_time else ""), nl=True)
        if out_of_time:
            break
    train_seconds = time.monotonic() - start
    click.echo(f"training stopped after {epochs_run:.2f} epochs, {step} steps, {train_seconds:.0f}s"
               + (" (time budget)" if out_of_time else ""))

    model.eval()
    test_acc = evaluate(model, x_test, y_test)
    click.echo(f"float test top-1 (10000 images): {test_acc:.4f}")

    export_pt2(model, str(out_path))
    # Check the exported program against the module on the sample images.
    program = torch.export.load(str(out_path)).module()
    xs = torch.from_numpy(preprocess(x_test[:NUM_SAMPLES]))
    with torch.no_grad():
        ref = model(xs)
        got = torch.cat([program(xs[i : i + 1]) for i in range(NUM_SAMPLES)])
    max_diff = float((ref - got).abs().max())
    click.echo(f"exported {out_path} ({out_path.stat().st_size} bytes); "
               f"max |logit diff| vs module on {NUM_SAMPLES} samples: {max_diff:.3g}")

    meta = {
        "config": cfg.to_dict(),
        "num_tokens": cfg.num_tokens,
        "num_params": n_params,
        "normalisation": {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
                          "input": "uint8 NHWC RGB -> (x/255 - mean)/std, NCHW float32"},
        "float_test_top1": test_acc,
        "epochs_run": round(epochs_run, 3),
        "steps": step,
        "stopped_by_time_budget": out_of_time,
        "train_seconds": round(train_seconds, 1),
        "export_max_abs_logit_diff": max_diff,
        "training": {"optimizer": "AdamW", "lr": lr, "weight_decay": weight_decay, "warmup": warmup,
                     "schedule": "cosine over max(step, time) fraction", "label_smoothing": label_smoothing,
                     "batch_size": batch_size, "max_epochs": epochs, "minutes": minutes, "seed": seed,
                     "augmentation": "random crop (4 px zero padding) + horizontal flip",
                     "torch": torch.__version__, "threads": threads},
        "samples": str(samples_out),
        "calibration": str(calib_out),
    }
    json_out.write_text(json.dumps(meta, indent=2) + "\n")
    click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
