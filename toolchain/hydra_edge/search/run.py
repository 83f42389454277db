"""`hydra-edge search`: supernet, evolutionary search, fine-tune, export, compile, measure.

Steps (1 to 3 resume from what the run folder holds; 4 to 6, minutes, are redone):

1. split the training images into a training part and a held-out part (the
   search ranks on the held-out part; the test split is used only at the end);
2. train the supernet (supernet.pt);
3. evolve under the compiler's constraint for the board (fits.json, evolution.json);
4. fine-tune the winner from its inherited weights, and train a hand-picked
   baseline of the same budget from scratch for as many epochs as the winner
   saw in all (supernet + fine-tune);
5. export each as .pt2 with its calibration set (best.pt2, calib.npz), compile
   it for the board and measure float and int8 top-1 on the test split;
6. write search.json (the table, the rule disagreements, the timings).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from ..boards import Board
from ..errors import HydraEdgeError
from ..models.data import ImageDataset, load_dataset, resize
from .constraint import FitCache, compile_fit, rule_disagreements
from .curve import LearningCurve
from .evolution import STATE, Evolution, EvolutionConfig
from .model import SearchedViT
from .space import Candidate, SearchSpace
from .train import (Split, TrainConfig, accuracy, finetune, read_checkpoint, split_training_set, start_from,
                    train_supernet)

REPORT = "search.json"
NUM_CALIB = 64
Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Preset:
    space: SearchSpace
    supernet: TrainConfig
    evolution: EvolutionConfig
    finetune: TrainConfig
    train_subset: int  # 0: every training image not held out
    holdout: int
    test_limit: int  # 0: the whole test split
    baseline: Candidate


BASELINE = Candidate(32, 4, 64, 4, 2.0, ("hydra",) * 4)  # the bundled example's shape

PRESETS = {
    # CI and the documented quick run: minutes on 2 cores
    "tiny": Preset(SearchSpace(image_sizes=(32,), patch_sizes=(8,), embed_dims=(16, 32), depths=(1, 2),
                               mlp_ratios=(1.0, 2.0), mlp_ranks=(0, 8)),
                   TrainConfig(epochs=1, batch_size=64),
                   EvolutionConfig(population=4, generations=1, parents=2, mutations=2, crossovers=2),
                   TrainConfig(epochs=1, batch_size=64), 512, 256, 200,
                   Candidate(32, 8, 32, 1, 2.0, ("hydra",))),
    "reduced": Preset(SearchSpace(image_sizes=(24, 32), patch_sizes=(4, 8), embed_dims=(32, 48, 64, 96),
                                  depths=(2, 3, 4), mlp_ratios=(1.5, 2.0, 3.0), mlp_ranks=(0, 16)),
                      TrainConfig(epochs=4, batch_size=128),
                      EvolutionConfig(population=8, generations=3, parents=4, mutations=4, crossovers=4),
                      TrainConfig(epochs=2, batch_size=128), 10000, 2000, 2000, BASELINE),
    "full": Preset(SearchSpace(), TrainConfig(epochs=200, batch_size=256), EvolutionConfig(),
                   TrainConfig(epochs=100, batch_size=256), 0, 5000, 0, BASELINE),
}


def _resumed(path: Path, load: Callable[[], T]) -> T:
    """`load()`, which reads `path` when a run resumes: a damaged file is one HydraEdgeError naming it."""
    try:
        return load()
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, HydraEdgeError) or not path.exists():
            raise
        why = f"no {exc} entry" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise HydraEdgeError(f"{path} is damaged ({why}); delete it to redo that step of the search "
                             f"(the supernet checkpoint is kept)") from None


def _calibration(split: Split, c: Candidate, n: int = NUM_CALIB) -> np.ndarray:
    x = torch.from_numpy(split.preprocess(split.x_train[:n]))
    return resize(x, c.image_size).numpy()


def _export(model: SearchedViT, path: Path) -> None:
    c = model.candidate
    program = torch.export.export(model.eval(), (torch.zeros(1, c.in_channels, c.image_size, c.image_size),))
    torch.export.save(program, str(path))


def _measure(name: str, model: SearchedViT, split: Split, x_test: np.ndarray, y_test: np.ndarray, board: Board,
             out: Path, train_seconds: float, progress: Progress | None) -> dict:
    """Export, compile for the board, float and int8 top-1 on the test images."""
    from ..driver import compile_graph, load_model
    from ..passes.pipeline import lower_to_ir
    from ..validate.evaluate import int8_top1

    c = model.candidate
    pt2, calib = out / f"{name}.pt2", out / f"{name}_calib.npz"
    _export(model, pt2)
    np.savez(calib, x=_calibration(split, c))
    c.save(out / f"{name}.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compile_graph(lower_to_ir(load_model(pt2)), board, out / f"build_{name}", np.load(calib)["x"])
    float_top1 = accuracy(lambda b: model(resize(b, c.image_size)), x_test, y_test, split.preprocess)
    tick = (lambda i, n: progress(f"{name}: int8 top-1", i, n)) if progress else None
    ev = int8_top1(result.folder, x_test, y_test, split.preprocess, progress=tick)
    budget = result.report.get("budget", {})
    return {"name": name, "config": c.key(), "candidate": c.to_dict(),
            "ram_bytes": budget.get("ram_estimate_bytes"), "flash_bytes": budget.get("flash_estimate_bytes"),
            "float_top1": round(float_top1, 4), "int8_top1": round(ev.top1, 4), "test_images": ev.images,
            "train_seconds": round(train_seconds, 1), "pt2": str(pt2), "calib": str(calib),
            "build": str(result.folder)}


def run_search(data: Path, board: Board, out: Path, preset: Preset, log: Log = print,
               progress: Progress | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    dataset, preset, split = prepare(data, preset)
    x_test, y_test = dataset.test_split(preset.test_limit)
    log(f"data: {dataset.name}, {len(split.x_train)} training images, {len(split.x_holdout)} held out, "
        f"{len(x_test)} test")

    t0 = time.time()
    tick = (lambda s, n, m: progress("supernet", s, n)) if progress else None
    net = train_supernet(preset.space, split, out, preset.supernet, tick)
    timings["supernet_seconds"] = time.time() - t0

    t0 = time.time()
    fits = _resumed(out / "fits.json", lambda: FitCache(out / "fits.json", board))

    def score(c: Candidate) -> float:
        return accuracy(lambda b: net(b, c), split.x_holdout, split.y_holdout, split.preprocess)

    state = _resumed(out / STATE, lambda: Evolution(preset.space, fits, score, preset.evolution, out, progress)).run()
    timings["search_seconds"] = time.time() - t0
    best = state.best()[0]
    log(f"search: {len(state.seen)} candidates compiled, best {best.candidate.key()} "
        f"held-out top-1 {best.score:.3f}, RAM {best.fit.ram_bytes:,} B, flash {best.fit.flash_bytes:,} B")

    t0 = time.time()
    tick = (lambda s, n, m: progress("fine-tune", s, n)) if progress else None
    winner = finetune(net.extract(best.candidate).train(), best.candidate.image_size, split, preset.finetune, tick)
    timings["finetune_seconds"] = time.time() - t0
    rows = [_measure("best", winner, split, x_test, y_test, board, out,
                     timings["supernet_seconds"] + timings["finetune_seconds"], progress)]

    baseline = preset.baseline
    base_fit = compile_fit(baseline, board)
    if base_fit.fits:
        t0 = time.time()
        torch.manual_seed(preset.finetune.seed)
        epochs = preset.supernet.epochs + preset.finetune.epochs
        tick = (lambda s, n, m: progress("baseline", s, n)) if progress else None
        model = finetune(SearchedViT(baseline), baseline.image_size, split,
                         replace(preset.finetune, epochs=epochs), tick)
        rows.append(_measure("baseline", model, split, x_test, y_test, board, out, time.time() - t0, progress))
    else:
        log(f"baseline {baseline.key()} does not fit {board.name}: not trained")

    report = {"board": board.name, "ram_budget_bytes": board.ram_bytes, "flash_budget_bytes": board.flash_bytes,
              "rows": rows, "rules": rule_disagreements([r.fit for r in state.seen.values()]),
              "timings": {k: round(v, 1) for k, v in timings.items()},
              "preset": {"supernet": asdict(preset.supernet), "evolution": asdict(preset.evolution),
                         "finetune": asdict(preset.finetune), "train_subset": preset.train_subset,
                         "holdout": preset.holdout, "test_limit": preset.test_limit}}
    write_json(out / REPORT, report)
    return report


TRAIN_REPORT = "train.json"
TRAIN_CHECKPOINT = "train.pt"
CURVE_IMAGES = 2000  # the learning curve's test sample: about a second per point for the models searched here


def run_training(candidate: Candidate, data: Path, board: Board, out: Path, cfg: TrainConfig, test_limit: int = 0,
                 log: Log = print, progress: Progress | None = None, curve_every: float = 5.0,
                 init: Path | None = None) -> dict:
    """Train one candidate from scratch on every training image (resumable), export, compile, measure.

    What a search's winner (or a hand-picked config) needs once the architecture is chosen: the long
    training the search's fine-tune cannot afford. Writes train.pt (the checkpoint), model.pt2,
    model_calib.npz, build_model/ and train.json in `out`; every `curve_every` epochs (0: none) and at
    the end, the float top-1 on a test sample goes to curve.json and curve.png. With `init` (another run's
    train.pt), training starts from its weights instead of from scratch (a warm restart: a new schedule).
    """
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(data)
    candidate = replace(candidate, in_channels=dataset.channels)
    split = split_training_set(dataset, holdout=0, seed=cfg.seed)
    x_test, y_test = dataset.test_split(test_limit)
    log(f"data: {dataset.name}, {len(split.x_train)} training images, {len(x_test)} test; "
        f"{candidate.key()} for {cfg.epochs:g} epochs")
    torch.manual_seed(cfg.seed)
    model = SearchedViT(candidate)
    started_from = start_from(init, model) if init is not None else None
    checkpoint = out / TRAIN_CHECKPOINT
    curve = LearningCurve.load(out / "curve.json") if checkpoint.exists() else LearningCurve(out / "curve.json")
    x_watch, y_watch = dataset.test_split(CURVE_IMAGES)
    per_epoch = split.steps_per_epoch(cfg.batch_size)
    every = max(1, round(curve_every * per_epoch)) if curve_every else 0

    def tick(step: int, total: int, metrics: dict) -> None:
        if progress:
            progress("train", step, total)
        if (every and step % every == 0) or step == total:
            model.eval()
            top1 = accuracy(lambda b: model(resize(b, candidate.image_size)), x_watch, y_watch, split.preprocess)
            model.train()
            curve.record(step, step / per_epoch, top1)
            log(f"epoch {step / per_epoch:.1f}: float top-1 {top1:.3f} on {len(x_watch):,} test images")

    model = finetune(model, candidate.image_size, split, cfg, tick, checkpoint)
    seconds = float(read_checkpoint(checkpoint).get("seconds", 0.0))  # over every resume
    row = _measure("model", model, split, x_test, y_test, board, out, seconds, progress)
    report = {"board": board.name, "ram_budget_bytes": board.ram_bytes, "flash_budget_bytes": board.flash_bytes,
              "dataset": dataset.name, "training_images": len(split.x_train), "rows": [row],
              "config": asdict(cfg), "curve": curve.to_list()}
    if started_from:
        started_from["epochs"] = round(started_from["steps"] * started_from["batch_size"] / len(split.x_train), 2)
        report["started_from"] = started_from
    if curve.points:
        curve.plot(out / "curve.png", f"{candidate.key()} on {dataset.name}: float top-1 while training")
    write_json(out / TRAIN_REPORT, report)
    return report


def write_json(path: Path, data) -> None:
    """`data` as JSON in `path`, whole or not at all: a temporary file beside it, then os.replace."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def prepare(data: Path, preset: Preset) -> tuple[ImageDataset, Preset, Split]:
    """The dataset, the preset fitted to its images, and its training / held-out split."""
    dataset = load_dataset(data)
    preset = adapt_preset(preset, dataset)
    return dataset, preset, split_training_set(dataset, preset.holdout, preset.train_subset, seed=preset.supernet.seed)


def adapt_preset(preset: Preset, data: ImageDataset) -> Preset:
    """The preset's space and baseline for the dataset's image size and channels (presets are CIFAR-shaped)."""
    size, channels = data.image_size, data.channels
    space = preset.space
    if size not in space.image_sizes:
        patches = tuple(p for p in sorted(set(space.patch_sizes) | {7}) if size % p == 0 and p < size)
        space = replace(space, image_sizes=(size,), patch_sizes=patches)
    space = replace(space, in_channels=channels)
    b = preset.baseline
    patch = b.patch_size if size % b.patch_size == 0 else space.patch_sizes[-1]
    baseline = replace(b, image_size=size if b.image_size not in space.image_sizes else b.image_size,
                       patch_size=patch, in_channels=channels)
    return replace(preset, space=space, baseline=baseline)


def format_rows(rows: list[dict]) -> list[str]:
    lines = [f"{'model':<9} {'config':<28} {'RAM B':>9} {'flash B':>10} {'float':>6} {'int8':>6} {'train s':>8}"]
    for r in rows:
        lines.append(f"{r['name']:<9} {r['config']:<28} {r['ram_bytes'] or 0:>9,} {r['flash_bytes'] or 0:>10,} "
                     f"{r['float_top1']:>6.3f} {r['int8_top1']:>6.3f} {r['train_seconds']:>8.0f}")
    return lines


def format_table(report: dict) -> list[str]:
    lines = format_rows(report["rows"])
    rules = report["rules"]
    lines.append(f"rules over {rules['candidates']} candidates: parameter count accepts {rules['params_accepts_compiler_rejects']} "
                 f"the compiler rejects; the formula accepts {rules['formula_accepts_compiler_rejects']} it rejects "
                 f"and rejects {rules['formula_rejects_compiler_accepts']} it accepts")
    return lines
