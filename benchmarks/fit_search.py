"""The largest square token grid that fits a RAM budget: shared by both benchmark venvs."""

from __future__ import annotations

from typing import Callable


def largest_grid(arena_of: Callable[[int], int], budget: int) -> tuple[int, dict[int, int]]:
    """The largest n such that an n x n token grid fits `budget` (0 if none); arena_of(n) grows
    about linearly in n*n, so guess from two points, then walk to the boundary. Returns n and
    every arena measured, by n."""
    seen: dict[int, int] = {}

    def arena(n: int) -> int:
        if n not in seen:
            seen[n] = arena_of(n)
        return seen[n]

    a4, a8 = arena(4), arena(8)
    per_token = max(1.0, (a8 - a4) / (64 - 16))
    n = max(1, int(max(1.0, (budget - a4) / per_token + 16) ** 0.5))
    if arena(n) <= budget:
        while arena(n + 1) <= budget:
            n += 1
    else:
        while n > 1 and arena(n) > budget:
            n -= 1
        if arena(n) > budget:
            n = 0
    return n, seen
