"""Evolutionary search: only candidates the compiler fits enter the population; it improves its score; it resumes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hydra_edge.search.constraint import FitCache, compile_fit, rule_disagreements
from hydra_edge.search.evolution import STATE, Evolution, EvolutionConfig
from hydra_edge.search.space import Candidate, SearchSpace
from hydra_edge.boards import load_board

SPACE = SearchSpace(image_sizes=(16,), patch_sizes=(2, 4), embed_dims=(16, 32, 48), depths=(1, 2),
                    mlp_ratios=(1.0, 2.0), mlp_ranks=(0, 8))


def _score(c: Candidate) -> float:
    """A stand-in for held-out accuracy that prefers big models (so the budget binds)."""
    return (c.embed_dim * c.depth * c.mlp_ratio * c.num_tokens) / 1e5


@pytest.fixture(scope="module")
def small_board():
    return replace(load_board("stm32f746"), ram_bytes=12 * 1024)  # a budget that cuts through this space


def test_real_constraint_agrees_with_its_own_budget(small_board):
    streamed = Candidate(16, 2, 48, 2, 2.0, ("hydra", "hydra"))
    low_rank = Candidate(16, 2, 48, 2, 2.0, ("hydra", "hydra"), mlp_rank=8)  # streamed too: its MLP is row-local
    softmax = Candidate(16, 2, 48, 2, 2.0, ("softmax", "softmax"))  # keeps K and V whole: [64, 48] each
    for candidate in (streamed, low_rank):
        fit = compile_fit(candidate, small_board)
        assert fit.fits and fit.ram_bytes <= small_board.ram_bytes
        assert not fit.formula_rule_fits  # the hand formula holds whole tensors: it would have refused it
    fit = compile_fit(softmax, small_board)
    assert not fit.fits and fit.ram_bytes > small_board.ram_bytes and fit.error == ""
    assert fit.params_rule_fits  # a parameter count would have let it through


def test_evolution_keeps_to_the_budget_improves_and_resumes(tmp_path, small_board):
    cfg = EvolutionConfig(population=4, generations=2, parents=2, mutations=3, crossovers=3, seed=1, workers=1)
    cache = FitCache(tmp_path / "fits.json", small_board)
    state = Evolution(SPACE, cache, _score, cfg, tmp_path).run()
    members = [state.seen[k] for k in state.population]
    assert len(members) == 4 and all(r.fit.fits for r in members)
    assert any(not r.fit.fits for r in state.seen.values())  # the budget did reject some
    first = json.loads((tmp_path / STATE).read_text())
    assert first["generation"] == 2
    # resume with more generations: continues from generation 2, keeps every record
    more = Evolution(SPACE, FitCache(tmp_path / "fits.json", small_board), _score,
                     EvolutionConfig(**{**cfg.__dict__, "generations": 3}), tmp_path).run()
    assert more.generation == 3 and set(state.seen) <= set(more.seen)
    assert more.best()[0].score >= state.best()[0].score
    counts = rule_disagreements([r.fit for r in more.seen.values()])
    planned = [r for r in more.seen.values() if not r.fit.error]  # both attention kinds lower: every one planned
    assert len(planned) == len(more.seen)
    assert counts["candidates"] == len(planned) and counts["compiler_accepts"] >= 4
