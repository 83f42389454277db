"""The search space: candidates serialise, sample/mutate/crossover stay inside the space, the hand rules count right."""

from __future__ import annotations

import numpy as np
import pytest
from hydra_edge.search.formulas import formula_fits, formula_peak_activation_bytes, parameter_count
from hydra_edge.search.space import Candidate, SearchSpace


def test_candidate_json_round_trip(tmp_path):
    c = Candidate(32, 4, 96, 3, 2.0, ("hydra", "softmax", "hydra"), 32)
    c.save(tmp_path / "c.json")
    assert Candidate.load(tmp_path / "c.json") == c
    assert c.key() == "i32-p4-d96-L3-m2-hsh-r32"


@pytest.mark.parametrize("bad", [
    dict(attention=("hydra",)),  # depth 3, one kind
    dict(attention=("hydra", "linear", "hydra")),
    dict(image_size=30),
])
def test_candidate_refuses_inconsistent_configs(bad):
    base = dict(image_size=32, patch_size=4, embed_dim=64, depth=3, mlp_ratio=2.0, attention=("hydra",) * 3)
    with pytest.raises(ValueError):
        Candidate(**{**base, **bad})


def test_sample_mutate_crossover_stay_in_space():
    space = SearchSpace()
    rng = np.random.default_rng(0)
    pop = [space.sample(rng) for _ in range(50)]
    for _ in range(200):
        a, b = pop[rng.integers(len(pop))], pop[rng.integers(len(pop))]
        child = space.mutate(space.crossover(a, b, rng), rng)
        assert space.contains(child), child
        assert len(child.attention) == child.depth
        pop.append(child)
    # the space is explored, not stuck: several depths, dims and both attention kinds occur
    assert len({c.depth for c in pop}) >= 3 and len({c.embed_dim for c in pop}) >= 3
    assert {a for c in pop for a in c.attention} == {"hydra", "softmax"}


def test_sampling_is_reproducible():
    space = SearchSpace()
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def test_rank_that_saves_nothing_becomes_full_rank():
    space = SearchSpace(embed_dims=(64,), mlp_ratios=(1.5,), mlp_ranks=(64,))
    c = space.sample(np.random.default_rng(0))
    assert c.mlp_rank == 0  # 64 * (64 + 96) >= 64 * 96


def test_parameter_count_matches_torch_module():
    from torch import nn

    c = Candidate(16, 4, 24, 2, 2.0, ("hydra", "hydra"))
    d, h = c.embed_dim, c.mlp_dim
    block = [nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.LayerNorm(d),
             nn.Linear(d, h), nn.Linear(h, d)]
    parts = [nn.Conv2d(3, d, 4, 4), nn.LayerNorm(d), nn.Linear(d, 10)] + block * 2
    expect = sum(p.numel() for m in parts for p in m.parameters()) + c.num_tokens * d
    assert parameter_count(c) == expect


def test_formula_counts_softmax_scores_and_flags_budgets():
    hydra = Candidate(32, 2, 64, 1, 2.0, ("hydra",))
    soft = Candidate(32, 2, 64, 1, 2.0, ("softmax",))
    t = 256
    assert formula_peak_activation_bytes(hydra) == 5 * t * 64
    assert formula_peak_activation_bytes(soft) == 5 * t * 64 + 2 * t * t
    verdict = formula_fits(soft, ram_bytes=5 * t * 64, flash_bytes=10**6)
    assert verdict == {"params": True, "formula": False}
    assert formula_fits(hydra, ram_bytes=None, flash_bytes=1000) == {"params": False, "formula": False}


def test_supernet_slices_equal_extracted_modules():
    """Every candidate's forward through the shared weights equals its extracted plain module."""
    import torch
    from hydra_edge.models.data import resize
    from hydra_edge.search.supernet import Supernet

    torch.manual_seed(0)
    space = SearchSpace(embed_dims=(32, 64), depths=(1, 2), mlp_ratios=(1.5, 2.0), mlp_ranks=(0, 8))
    net = Supernet(space).eval()
    with torch.no_grad():  # non-trivial norms, so a slicing slip shows
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, 32, 32)
    seen = set()
    for _ in range(12):
        c = space.sample(rng)
        seen |= set(c.attention) | {("rank", bool(c.mlp_rank)), ("patch", c.patch_size)}
        with torch.no_grad():
            a, b = net(x, c), net.extract(c)(resize(x, c.image_size))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert {"hydra", "softmax", ("rank", True), ("rank", False), ("patch", 2), ("patch", 4)} <= seen


def test_extract_refuses_a_candidate_outside_the_space():
    from hydra_edge.search.supernet import Supernet

    net = Supernet(SearchSpace(embed_dims=(32,), depths=(1,)))
    with pytest.raises(ValueError, match="not in this supernet"):
        net.extract(Candidate(32, 4, 64, 1, 2.0, ("hydra",)))


def test_config_names_round_trip():
    for key in ("i32-p4-d64-L4-m2-hhhh", "i32-p4-d96-L3-m1.5-sss", "i24-p8-d48-L2-m3-hs-r16"):
        assert Candidate.from_key(key).key() == key
    assert Candidate.from_key("i32-p4-d96-L3-m1.5-hsh").attention == ("hydra", "softmax", "hydra")
