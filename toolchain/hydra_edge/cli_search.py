"""`hydra-edge search` and `hydra-edge eval`: the memory-budgeted search and the compiled model's accuracy."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click
import torch

from .boards import load_board


def _progress():
    """A rich progress display and a (phase, done, total) callback that drives one bar per phase."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bars = Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False)
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    return bars, update


@click.command()
@click.option("--board", "board_name", required=True, help="Target board (hydra-edge boards lists them).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True,
              help="A CIFAR-10 .npz (x_train, y_train, x_test, y_test) or a Fashion-MNIST folder of idx files "
                   "(/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoints, the search state, best.pt2, best_calib.npz, search.json. "
                   "Run the same command again to resume.")
@click.option("--preset", type=click.Choice(["tiny", "reduced", "full"]), default="reduced", show_default=True,
              help="Search size: tiny (a smoke test, minutes), reduced (the documented 2-core run), "
                   "full (the real search; wants a GPU or many hours).")
@click.option("--ram-budget", type=click.IntRange(min=1), help="RAM budget in bytes instead of the board's.")
@click.option("--flash-budget", type=click.IntRange(min=1), help="Flash budget in bytes instead of the board's.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Supernet epochs instead of the preset's.")
@click.option("--finetune-epochs", type=click.FloatRange(min=0, min_open=True),
              help="Fine-tune epochs of the winner instead of the preset's (the baseline trains for the supernet's "
                   "plus these).")
@click.option("--train-images", type=click.IntRange(min=0),
              help="Training images to use instead of the preset's (0: every image not held out).")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (default: every local core).")
def search(board_name: str, data: Path, out: Path, preset: str, ram_budget: int | None, flash_budget: int | None,
           epochs: float | None, finetune_epochs: float | None, train_images: int | None,
           threads: int | None) -> None:
    """Search the ViT that fits BOARD: supernet, evolution under the compiler's RAM/flash, fine-tune, export.

    Under torchrun (WORLD_SIZE > 1) the supernet trains data-parallel; the other steps run on rank 0.
    """
    from .search.run import PRESETS, format_table, run_search
    from .search.train import init_distributed

    torch.set_num_threads(threads or os.cpu_count() or 1)
    board = load_board(board_name)
    board = replace(board, ram_bytes=ram_budget or board.ram_bytes, flash_bytes=flash_budget or board.flash_bytes)
    chosen = PRESETS[preset]
    if epochs:
        chosen = replace(chosen, supernet=replace(chosen.supernet, epochs=epochs))
    if finetune_epochs:
        chosen = replace(chosen, finetune=replace(chosen.finetune, epochs=finetune_epochs))
    if train_images is not None:
        chosen = replace(chosen, train_subset=train_images)
    rank, size = init_distributed()
    if size > 1 and rank > 0:  # the other processes only help train the supernet
        from .search.run import prepare
        from .search.train import train_supernet

        _, chosen, split = prepare(data, chosen)
        train_supernet(chosen.space, split, out, chosen.supernet)
        return
    bars, update = _progress()
    with bars:
        report = run_search(data, board, out, chosen, log=bars.console.print, progress=update)
    for line in format_table(report):
        click.echo(line)
    click.echo(f"wrote {out / 'search.json'}; compile the winner with:\n"
               f"  hydra-edge compile {out / 'best.pt2'} --board {board_name} --calib {out / 'best_calib.npz'} "
               f"-o build/")


@click.command("train")
@click.argument("config")
@click.option("--board", "board_name", required=True, help="Target board the model is compiled for at the end.")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True,
              help="A CIFAR-10 .npz or a Fashion-MNIST folder of idx files.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: train.pt (checkpoint), model.pt2, model_calib.npz, build_model/, train.json. "
                   "Run the same command again to resume.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--mix", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability that a batch is CutMix-ed or Mixup-ed (half each): regularisation for long runs.")
@click.option("--test-limit", type=click.IntRange(min=0), default=0,
              help="Measure on a seeded sample of this many test images (0: the whole test split).")
@click.option("--curve-every", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Epochs between learning-curve points (float top-1 on 2,000 test images; curve.json, "
                   "curve.png); 0: only at the end.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from the weights of another run's train.pt (same config) instead of from scratch: "
                   "a warm restart with a new schedule.")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (default: every local core).")
def train(config: str, board_name: str, data: Path, out: Path, epochs: float, batch_size: int, lr: float,
          mix: float, test_limit: int, curve_every: float, init: Path | None, threads: int | None) -> None:
    """Train the ViT that CONFIG names from scratch on every training image, then export, compile, measure.

    CONFIG is a candidate JSON (a search's best.json or baseline.json, an examples/searched_*.json) or a
    config name such as i32-p4-d64-L4-m2-hhhh (input, patch, dim, depth, MLP ratio, h/s per layer).
    Checkpoints every 100 steps; the same command resumes; --init starts from another run's weights instead.
    The recipe is the search's fine-tune (AdamW, cosine with warmup, label smoothing 0.1, random crop and
    flip), with CutMix / Mixup on --mix.
    """
    from .search.run import format_rows, run_training
    from .search.train import TrainConfig

    torch.set_num_threads(threads or os.cpu_count() or 1)
    candidate = _load_candidate(config)
    board = load_board(board_name)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, mix=mix)
    bars, update = _progress()
    with bars:
        report = run_training(candidate, data, board, out, cfg, test_limit, log=bars.console.print, progress=update,
                              curve_every=curve_every, init=init)
    for line in format_rows(report["rows"]):
        click.echo(line)
    click.echo(f"wrote {out / 'train.json'}")


def _load_candidate(config: str):
    """A candidate from a search's JSON (the candidate itself, or a report with it under "config"), or its name."""
    from .errors import HydraEdgeError
    from .search.space import Candidate

    path = Path(config)
    if not path.is_file():
        try:
            return Candidate.from_key(config)
        except ValueError as exc:
            raise HydraEdgeError(f"{config}: no such file, and {exc}") from None
    try:
        d = json.loads(path.read_text())
        if isinstance(d, dict) and isinstance(d.get("config"), dict):
            d = d["config"]
        return Candidate.from_dict(d)
    except KeyError as exc:
        why = f"no {exc} field"
    except (ValueError, TypeError, AttributeError) as exc:
        why = str(exc)
    raise HydraEdgeError(f"{path}: not a candidate config ({why}); pass a search's best.json or baseline.json, "
                         f"an examples/searched_*.json, or a config name such as i32-p4-d64-L4-m2-hhhh")


@click.command("eval")
@click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True,
              help="The dataset the model was trained on (CIFAR-10 .npz or a Fashion-MNIST folder).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate a seeded sample of this many test images.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(build: Path, data: Path, limit: int | None, as_json: bool) -> None:
    """Int8 top-1 of the compiled model in BUILD on the dataset's test split.

    Runs the build's quantised graph in the reference interpreter, which `hydra-edge validate` proves
    equal to the compiled C, over every local core.
    """
    from .models.data import load_dataset
    from .validate.evaluate import int8_top1

    dataset = load_dataset(data)
    x, y = dataset.test_split(limit or 0)
    bars, update = _progress()
    with bars:
        result = int8_top1(build, x, y, dataset.preprocess, progress=lambda i, n: update("int8 top-1", i, n))
    if as_json:
        click.echo(json.dumps({"build": str(build), "dataset": dataset.name, "images": result.images,
                               "correct": result.correct, "top1": result.top1}))
    else:
        click.echo(f"int8 top-1: {result.top1:.2%} ({result.correct}/{result.images} {dataset.name} test images)")
