"""Evolutionary search under the compiler's constraint.

1. Sample candidates until the population holds `population` that fit the
   board (the compiler says so: search/constraint.py); score each by the
   supernet's top-1 on the held-out images, with inherited weights.
2. Each generation: the best `parents` breed `mutations` mutants and
   `crossovers` children; children that do not fit are dropped before any
   scoring (a bounded number of tries); the population becomes the best
   `population` of parents and children.
3. After every generation the state (every candidate seen with its fit and
   score, the population, the generator's state) goes to a JSON file, so an
   interrupted search resumes where it stopped.

Compiles for a batch of children run in a process pool over all local cores;
scoring uses torch's threads.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .constraint import Fit, FitCache, compile_fit
from .space import Candidate, SearchSpace

STATE = "evolution.json"


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 16
    generations: int = 8
    parents: int = 6
    mutations: int = 8
    crossovers: int = 8
    max_tries: int = 400  # candidates drawn per generation before giving up on filling it
    seed: int = 0
    workers: int = 0  # compile processes; 0 = every local core


@dataclass
class Record:
    candidate: Candidate
    fit: Fit
    score: float | None = None  # held-out top-1 (0..1) with inherited weights; None if it does not fit

    def to_dict(self) -> dict:
        return {"candidate": self.candidate.to_dict(), "fit": asdict(self.fit), "score": self.score}

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        return cls(Candidate.from_dict(d["candidate"]), Fit(**d["fit"]), d["score"])


@dataclass
class SearchState:
    generation: int = 0
    population: list[str] = field(default_factory=list)  # keys into seen
    seen: dict[str, Record] = field(default_factory=dict)
    rng_state: dict | None = None

    def save(self, path: Path) -> None:
        data = {"generation": self.generation, "population": self.population, "rng_state": self.rng_state,
                "seen": {k: r.to_dict() for k, r in self.seen.items()}}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SearchState":
        data = json.loads(path.read_text())
        return cls(data["generation"], data["population"],
                   {k: Record.from_dict(r) for k, r in data["seen"].items()}, data["rng_state"])

    def best(self, n: int = 1) -> list[Record]:
        scored = [self.seen[k] for k in self.population if self.seen[k].score is not None]
        return sorted(scored, key=lambda r: (-r.score, r.fit.ram_bytes))[:n]


Progress = Callable[[str, int, int], None]  # (phase, done, total)


class Evolution:
    def __init__(self, space: SearchSpace, fits: FitCache, score: Callable[[Candidate], float], cfg: EvolutionConfig,
                 folder: Path, progress: Progress | None = None) -> None:
        self.space, self.fits, self.score, self.cfg = space, fits, score, cfg
        self.path = folder / STATE
        self.progress = progress
        self.state = SearchState.load(self.path) if self.path.exists() else SearchState()
        self.rng = np.random.default_rng(cfg.seed)
        if self.state.rng_state is not None:
            self.rng.bit_generator.state = self.state.rng_state

    def _fit_all(self, cands: list[Candidate]) -> list[Fit]:
        """Compile the ones not cached yet in parallel, then read everything through the cache."""
        todo = list({c.key(): c for c in cands if c.key() not in self.fits.entries}.values())
        workers = self.cfg.workers or os.cpu_count() or 1
        if len(todo) > 1 and workers > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                for c, fit in zip(todo, pool.map(compile_fit, todo, [self.fits.board] * len(todo))):
                    self.fits.put(c, fit)
        return [self.fits.get(c) for c in cands]

    def _fitting(self, propose: Callable[[], Candidate], want: int, phase: str) -> list[Candidate]:
        """Up to `want` new candidates that fit, drawn from `propose` in batches; each compiled once."""
        found: list[Candidate] = []
        tries = 0
        while len(found) < want and tries < self.cfg.max_tries:
            batch = [propose() for _ in range(max(2, want - len(found)))]
            tries += len(batch)
            for c, fit in zip(batch, self._fit_all(batch)):
                key = c.key()
                if key not in self.state.seen:
                    self.state.seen[key] = Record(c, fit)
                if fit.fits and key not in self.state.population and all(f.key() != key for f in found):
                    found.append(c)
                if self.progress:
                    self.progress(f"{phase}: compile", len(found), want)
        return found[:want]

    def _score(self, cands: list[Candidate], phase: str) -> None:
        for i, c in enumerate(cands):
            rec = self.state.seen[c.key()]
            if rec.score is None:
                rec.score = float(self.score(c))
            if self.progress:
                self.progress(f"{phase}: score", i + 1, len(cands))

    def _checkpoint(self) -> None:
        self.state.rng_state = self.rng.bit_generator.state
        self.state.save(self.path)

    def run(self) -> SearchState:
        cfg, st = self.cfg, self.state
        if not st.population:
            first = self._fitting(lambda: self.space.sample(self.rng), cfg.population, "generation 0")
            if not first:
                raise ValueError(f"no candidate of the space fits the board after {cfg.max_tries} tries")
            self._score(first, "generation 0")
            st.population = [c.key() for c in first]
            self._checkpoint()
        while st.generation < cfg.generations:
            phase = f"generation {st.generation + 1}/{cfg.generations}"
            parents = [r.candidate for r in st.best(cfg.parents)]

            def pick() -> Candidate:
                return parents[int(self.rng.integers(len(parents)))]

            children = self._fitting(lambda: self.space.mutate(pick(), self.rng), cfg.mutations, phase)
            children += self._fitting(lambda: self.space.crossover(pick(), pick(), self.rng), cfg.crossovers, phase)
            self._score(children, phase)
            pool = list(dict.fromkeys(st.population + [c.key() for c in children]))
            ranked = sorted(pool, key=lambda k: (-(st.seen[k].score or 0.0), st.seen[k].fit.ram_bytes))
            st.population = ranked[:cfg.population]
            st.generation += 1
            self._checkpoint()
        return st
