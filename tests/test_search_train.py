"""Supernet training: the sandwich step, resume from a checkpoint, and data parallelism under torchrun;
the one-candidate training (fine-tune, `hydra-edge train`) and its resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_worker import CONFIG, SPACE, synthetic_split
from hydra_edge.errors import HydraEdgeError
from hydra_edge.models.data import ImageDataset
from hydra_edge.models.training import mix_batch
from hydra_edge.search.supernet import Supernet
from hydra_edge.search.model import SearchedViT
from hydra_edge.search.space import Candidate
from hydra_edge.search.train import (CHECKPOINT, TrainConfig, finetune, sandwich, split_training_set,
                                     train_supernet)

TESTS = Path(__file__).resolve().parent


def test_sandwich_has_largest_smallest_and_random_and_is_reproducible():
    cfg = TrainConfig(random_per_step=2, seed=3)
    a = sandwich(SPACE, 5, cfg)
    assert a == sandwich(SPACE, 5, cfg)  # every process of a run draws the same candidates
    assert a[0].embed_dim == max(SPACE.embed_dims) and a[0].depth == SPACE.max_depth
    assert a[1] == SPACE.smallest() and len(a) == 4
    assert {a[0].attention[0], sandwich(SPACE, 6, cfg)[0].attention[0]} == {"hydra", "softmax"}


def test_holdout_is_disjoint_from_training():
    x = np.arange(100).reshape(100, 1, 1, 1).astype(np.uint8).repeat(3, axis=3)
    data = ImageDataset("numbers", x, np.zeros(100, np.uint8), x[:1], np.zeros(1, np.uint8), (0.5,) * 3, (0.25,) * 3)
    split = split_training_set(data, holdout=20, subset=50)
    held, trained = set(split.x_holdout[:, 0, 0, 0]), set(split.x_train[:, 0, 0, 0])
    assert len(held) == 20 and len(trained) == 50 and not held & trained
    assert split.preprocess(x[:1])[0, 0, 0, 0] == np.float32((0 / 255 - 0.5) / 0.25)  # the dataset's normalisation


def test_training_learns_and_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    split = synthetic_split()
    straight = train_supernet(SPACE, split, tmp_path / "a", CONFIG)
    # interrupt a run after its second step (checkpointed every step), then start it again
    every_step = TrainConfig(**{**CONFIG.__dict__, "checkpoint_every": 1})

    class Interrupted(Exception):
        pass

    def stop_at_2(step, total, metrics):
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_supernet(SPACE, split, tmp_path / "b", every_step, progress=stop_at_2)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["step"] == 2
    resumed = train_supernet(SPACE, split, tmp_path / "b", every_step)
    with pytest.raises(HydraEdgeError, match=r"other settings: epochs 1(\.0)? \(now 2\)"):
        train_supernet(SPACE, split, tmp_path / "b", TrainConfig(**{**every_step.__dict__, "epochs": 2}))
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    fresh = train_supernet(SPACE, split, tmp_path / "c", TrainConfig(**{**CONFIG.__dict__, "epochs": 0.0001}))
    changed = sum(not torch.equal(p, q) for p, q in zip(straight.state_dict().values(), fresh.state_dict().values()))
    assert changed > 10  # training moved the weights


def _mixed_batches(prob: float, draws: int = 200):
    images = torch.arange(8 * 2 * 6 * 5, dtype=torch.float32).reshape(8, 2, 6, 5)
    labels = torch.arange(8)
    return images, labels, [mix_batch(images, labels, np.random.default_rng([7, i]), prob) for i in range(draws)]


def test_mix_batch_cutmix_and_mixup_weigh_the_labels_by_what_each_image_contributes():
    images, labels, draws = _mixed_batches(1.0)
    kinds = set()
    for mixed, partner_labels, lam in draws:
        assert 0.0 <= lam <= 1.0 and sorted(partner_labels.tolist()) == labels.tolist()
        partner = images[partner_labels]  # labels are the image indices, so they name each image's partner
        own = mixed == images
        if torch.equal(mixed, lam * images + (1 - lam) * partner) and not own.all():
            kinds.add("mixup")
        else:  # CutMix: every pixel is the image's own or its partner's, lam the share left its own
            assert torch.equal(torch.where(own, images, partner), mixed)
            fixed = labels != partner_labels
            assert own[fixed].float().mean().item() == pytest.approx(lam)
            kinds.add("cutmix")
    assert kinds == {"mixup", "cutmix"}
    again = _mixed_batches(1.0)[2]
    assert all(torch.equal(a[0], b[0]) and a[2] == b[2] for a, b in zip(draws, again))


def test_mix_batch_probability_zero_changes_nothing_and_a_half_mixes_about_half():
    images, labels, draws = _mixed_batches(0.0)
    assert all(m is images and torch.equal(p, labels) and lam == 1.0 for m, p, lam in draws)
    mixed = sum(lam < 1.0 or not torch.equal(p, labels) for _, p, lam in _mixed_batches(0.5)[2])
    assert 70 <= mixed <= 130


@pytest.mark.parametrize("mix", [0.0, 1.0])
def test_one_candidate_training_resumes_to_the_same_weights_and_seconds_add_up(tmp_path, mix):
    torch.set_num_threads(1)
    split = synthetic_split()
    cand = Candidate(16, 4, 16, 2, 2.0, ("hydra", "softmax"))
    cfg = TrainConfig(epochs=2, batch_size=16, checkpoint_every=1, mix=mix)

    def fresh() -> SearchedViT:
        torch.manual_seed(0)
        return SearchedViT(cand)

    straight = finetune(fresh(), 16, split, cfg).state_dict()
    ckpt = tmp_path / "train.pt"

    class Interrupted(Exception):
        pass

    seen: list[float] = []

    def stop_at_3(step, total, metrics):
        seen.append(metrics["seconds"])
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        finetune(fresh(), 16, split, cfg, stop_at_3, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3 and state["seconds"] == pytest.approx(seen[-1])
    if mix:
        with pytest.raises(HydraEdgeError, match=r"mix 1\.0 \(now 0\.0\)"):
            finetune(fresh(), 16, split, TrainConfig(**{**cfg.__dict__, "mix": 0.0}), checkpoint=ckpt)
    else:  # a checkpoint written before the `mix` setting existed resumes as mix 0
        del state["config"]["mix"]
        torch.save(state, ckpt)
    after: list[float] = []
    resumed = finetune(fresh(), 16, split, cfg, lambda s, n, m: after.append(m["seconds"]), checkpoint=ckpt)
    assert len(after) == 8 - 3 and after[0] >= seen[-1]  # 2 epochs of 4 steps; the clock goes on from the checkpoint
    for (name, p), q in zip(straight.items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    assert sum(not torch.equal(p, q) for p, q in zip(straight.values(), fresh().state_dict().values())) > 5


def test_two_processes_under_torchrun_train_like_one(tmp_path):
    """gloo, two local processes: both end with identical weights, equal to one process on the whole batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "dist_worker.py"), str(tmp_path)]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, str(TESTS / "dist_worker.py"), str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"final_rank{r}_of2.pt", weights_only=True) for r in (0, 1))
    one = torch.load(tmp_path / "single" / "final_rank0_of1.pt", weights_only=True)
    torch.manual_seed(CONFIG.seed)
    init = Supernet(SPACE).state_dict()  # what train_supernet starts from
    for name in r0:
        torch.testing.assert_close(r0[name], r1[name], rtol=0, atol=0, msg=name)  # the ranks stay in sync
    # and train like one process on the whole batch: float sums in another order, nothing more
    # (Adam magnifies those for parameters with tiny gradients, so compare whole updates, not elements)
    moved = torch.cat([(one[n] - init[n]).flatten() for n in init]).norm()
    apart = torch.cat([(r0[n] - one[n]).flatten() for n in init]).norm()
    assert moved > 0.01 and apart < 1e-3 * moved, (float(moved), float(apart))


def test_learning_curve_survives_a_resume_and_a_remeasured_step_replaces_its_point(tmp_path):
    from hydra_edge.search.curve import LearningCurve

    curve = LearningCurve.load(tmp_path / "curve.json")  # no file yet: empty
    assert curve.points == {}
    curve.record(100, 0.26, 0.31)
    curve.record(200, 0.51, 0.40)
    resumed = LearningCurve.load(tmp_path / "curve.json")
    resumed.record(200, 0.51, 0.41)  # step 200 trained again after an interruption
    resumed.record(300, 0.77, 0.45)
    assert LearningCurve.load(tmp_path / "curve.json").to_list() == [
        {"step": 100, "epoch": 0.26, "float_top1": 0.31}, {"step": 200, "epoch": 0.51, "float_top1": 0.41},
        {"step": 300, "epoch": 0.77, "float_top1": 0.45}]
    assert resumed.plot(tmp_path / "curve.png", "t").stat().st_size > 1000
