"""Train the supernet once (sandwich rule), or fine-tune one extracted candidate.

Sandwich rule, per step: the largest candidate learns from the labels; the
smallest and `random_per_step` sampled candidates learn from the largest's
soft predictions (in-place distillation); their gradients add up before one
optimizer step. Candidates are drawn from a generator seeded by (seed, step),
so every process of a distributed run trains the same subnets.

Distributed: started under torchrun (WORLD_SIZE > 1), each process takes its
share of every batch and the gradients are averaged with an all_reduce
(gloo on CPU, nccl on a GPU): plain data parallelism, with nothing to do for
the parameters a step did not touch (they have no gradient on any process).
Rank 0 writes checkpoints; a run resumes from its last checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import HydraEdgeError
from ..models.data import CIFAR10_MEAN, CIFAR10_STD, ImageDataset, preprocess
from ..models.training import augment, lr_at, mix_batch
from .space import Candidate, SearchSpace
from .supernet import Supernet

CHECKPOINT = "supernet.pt"
Progress = Callable[[int, int, dict], None]  # (step, total, metrics)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 30.0
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of the run
    label_smoothing: float = 0.1
    random_per_step: int = 1  # sampled candidates besides the largest and the smallest
    mix: float = 0.0  # one-candidate training only: probability a batch is CutMix-ed or Mixup-ed
    seed: int = 0
    checkpoint_every: int = 100  # steps


@dataclass(frozen=True)
class Split:
    """uint8 NHWC images and labels: the training part, and the held-out part the search ranks on,
    with the dataset's normalisation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return preprocess(images, self.mean, self.std)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self.x_train) // batch_size)


def split_training_set(data: ImageDataset, holdout: int, subset: int = 0, seed: int = 0) -> Split:
    """Hold out `holdout` training images (never the test split); `subset` > 0 keeps that many for training."""
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    hold, train = order[:holdout], order[holdout:]
    if subset:
        train = train[:subset]
    x, y = data.x_train, data.y_train
    return Split(x[train], y[train], x[hold], y[hold], data.mean, data.std)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, nccl with CUDA); no-op when run alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()


def average_gradients(model: nn.Module) -> None:
    rank, size = world()
    if size == 1:
        return
    # Every process trains the same candidates, so the same parameters have no gradient on every rank:
    # they stay None (the optimizer skips them, as it would in one process).
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= size


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    keep = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": keep, "weight_decay": 0.0}], lr=cfg.lr)


def sandwich(space: SearchSpace, step: int, cfg: TrainConfig) -> list[Candidate]:
    """The step's candidates: the largest (its attention kind alternating by step), the smallest, random ones."""
    rng = np.random.default_rng([cfg.seed, step])
    kind = space.attention_kinds[step % len(space.attention_kinds)]
    largest = space.largest()
    largest = Candidate(largest.image_size, largest.patch_size, largest.embed_dim, largest.depth, largest.mlp_ratio,
                        (kind,) * largest.depth, 0, space.in_channels, space.num_classes)
    return [largest, space.smallest()] + [space.sample(rng) for _ in range(cfg.random_per_step)]


def _batch(split: Split, step: int, steps_per_epoch: int, cfg: TrainConfig,
           shard: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of the step's batch, augmented (the whole batch's draw, so any world size sees the same data)."""
    rank, size = world() if shard else (0, 1)
    epoch, i = divmod(step, steps_per_epoch)
    order = np.random.default_rng([cfg.seed, 1, epoch]).permutation(len(split.x_train))
    idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
    images = augment(split.x_train[idx], np.random.default_rng([cfg.seed, 2, step]))[rank::size]
    labels = split.y_train[idx][rank::size].astype(np.int64)
    return torch.from_numpy(split.preprocess(images)), torch.from_numpy(labels)


def save_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig,
                    seconds: float = 0.0) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": asdict(cfg),
                "seconds": seconds}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer | None = None,
                    cfg: TrainConfig | None = None) -> tuple[int, float]:
    """Restore weights (and optimizer state); returns (the step to continue from, training seconds so far).
    Tensors only: weights_only. With `cfg`, a checkpoint written under other settings is refused: resuming
    it would silently change the run's schedule."""
    state = read_checkpoint(path, need_optimizer=opt is not None)
    if cfg is not None:
        # A setting added since the checkpoint was written reads as its default.
        saved, asked, default = state.get("config", {}), asdict(cfg), asdict(TrainConfig())
        changed = [f"{k} {saved.get(k, default[k])} (now {v})" for k, v in asked.items()
                   if k != "checkpoint_every" and saved.get(k, default[k]) != v]
        if changed:
            raise HydraEdgeError(f"{path} was written by a run with other settings: {', '.join(changed)}; "
                                 f"run again with those settings to resume, or use a new output folder")
    try:
        net.load_state_dict(state["model"])
        if opt is not None:
            opt.load_state_dict(state["optimizer"])
        return int(state["step"]), float(state.get("seconds", 0.0))
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise HydraEdgeError(f"{path} does not fit this model ({_first_line(exc)}): it was written for another "
                             f"config; use a new output folder, or delete it to start the training over") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].split('. ')[0][:200] if text else ''}".rstrip(": ")  # one sentence


def read_checkpoint(path: Path, need_optimizer: bool = True) -> dict:
    """A checkpoint written by save_checkpoint (tensors only: weights_only); a damaged or truncated file, or one
    that is no checkpoint, is a HydraEdgeError that names it and says it can be deleted to start over."""
    again = "delete it to start the training over (its steps are lost)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a truncated file or one that is not a checkpoint
        raise HydraEdgeError(f"{path} is damaged or not a training checkpoint ({_first_line(exc)}); {again}") from None
    needed = ["model", "step"] + (["optimizer"] if need_optimizer else [])
    missing = [k for k in needed if not isinstance(state, dict) or k not in state]
    if missing:
        raise HydraEdgeError(f"{path} is not a training checkpoint (no {', '.join(map(repr, missing))}); {again}")
    if not isinstance(state.get("config", {}), dict) or not isinstance(state["model"], dict):
        raise HydraEdgeError(f"{path} is damaged (its 'config' or 'model' is not a dict); {again}")
    return state


def start_from(path: Path, net: nn.Module) -> dict:
    """Load the weights of another run's checkpoint (a `train.pt` of the same config) into `net`, to train on
    from them; returns what that run had done: steps, batch size and training seconds."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = state["model"]
    except Exception as exc:  # torch.load raises many types for a file that is not a checkpoint
        raise HydraEdgeError(f"{path}: not a training checkpoint (train.pt) ({type(exc).__name__}: {exc})") from None
    mine = net.state_dict()
    differ = [f"{k} {tuple(weights[k].shape) if k in weights else 'missing'} (this config: {tuple(v.shape)})"
              for k, v in mine.items() if k not in weights or weights[k].shape != v.shape]
    differ += [f"{k} (not in this config)" for k in weights if k not in mine]
    if differ:
        raise HydraEdgeError(f"{path} holds the weights of another config: {'; '.join(differ[:3])}"
                             f"{' ...' if len(differ) > 3 else ''}; start from a train.pt of the same config")
    net.load_state_dict(weights)
    return {"checkpoint": str(path), "steps": int(state["step"]),
            "batch_size": int(state.get("config", {}).get("batch_size", 0)),
            "train_seconds": round(float(state.get("seconds", 0.0)), 1)}


def train_supernet(space: SearchSpace, split: Split, out: Path, cfg: TrainConfig,
                   progress: Progress | None = None) -> Supernet:
    """Train (or resume) the supernet in `out`; returns it trained. Every process of a torchrun calls this."""
    rank, _ = world()
    torch.manual_seed(cfg.seed)
    net = Supernet(space)
    opt = _optimizer(net, cfg)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    step = load_checkpoint(ckpt, net, opt, cfg)[0] if ckpt.exists() else 0
    steps_per_epoch = split.steps_per_epoch(cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    net.train()
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step / total, cfg.lr, cfg.warmup, cfg.min_lr)
        x, y = _batch(split, step, steps_per_epoch, cfg)
        opt.zero_grad(set_to_none=True)
        metrics = {}
        teacher = None
        for j, cand in enumerate(sandwich(space, step, cfg)):
            logits = net(x, cand)
            if j == 0:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                teacher = logits.detach().softmax(dim=-1)
                metrics["loss"] = loss.item()
            else:
                loss = F.kl_div(logits.log_softmax(dim=-1), teacher, reduction="batchmean")
            loss.backward()
        average_gradients(net)
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        if rank == 0 and (step % cfg.checkpoint_every == 0 or step == total):
            save_checkpoint(ckpt, net, opt, step, cfg)
        if progress is not None and rank == 0:
            progress(step, total, metrics)
    return net.eval()


@torch.no_grad()
def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, labels: np.ndarray,
             prep: Callable[[np.ndarray], np.ndarray] = preprocess, batch: int = 500) -> float:
    """Top-1 (0..1) of `forward` on uint8 NHWC images, normalised by `prep`."""
    correct = 0
    for i in range(0, len(images), batch):
        pred = forward(torch.from_numpy(prep(images[i:i + batch]))).argmax(dim=1).numpy()
        correct += int((pred == labels[i:i + batch]).sum())
    return correct / max(1, len(images))


def finetune(model: nn.Module, image_size: int, split: Split, cfg: TrainConfig,
             progress: Progress | None = None, checkpoint: Path | None = None) -> nn.Module:
    """Train one candidate alone (labels only) from the weights it has; one process (rank 0).

    With `checkpoint`, the weights, optimizer and step are saved every `cfg.checkpoint_every` steps and a
    later call resumes from them (batches and augmentation are drawn from (seed, step), so a resumed run
    sees the same data as a straight one). The metrics' "seconds" counts training time over all calls.
    """
    from ..models.data import resize

    torch.manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    step, before = 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        step, before = load_checkpoint(checkpoint, model, opt, cfg)
    steps_per_epoch = split.steps_per_epoch(cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    model.train()
    start = time.time()
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step / total, cfg.lr, cfg.warmup, cfg.min_lr)
        x, y = _batch(split, step, steps_per_epoch, cfg, shard=False)
        x, y_partner, lam = mix_batch(x, y, np.random.default_rng([cfg.seed, 3, step]), cfg.mix)
        logits = model(resize(x, image_size))
        loss = lam * F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if lam < 1.0:
            loss = loss + (1.0 - lam) * F.cross_entropy(logits, y_partner, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seconds = before + time.time() - start
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == total):
            save_checkpoint(checkpoint, model, opt, step, cfg, seconds)
        if progress is not None:
            progress(step, total, {"loss": loss.item(), "seconds": seconds})
    return model.eval()
