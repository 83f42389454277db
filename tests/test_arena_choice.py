"""plan_memory(in_place=True) keeps the smaller of the plans with and without optional in-place reuse."""

from __future__ import annotations

import numpy as np
import pytest
from hydra_edge.ir.graph import Graph, Node, Tensor
from hydra_edge.memory.planner import MemoryPlanError, check_no_overlap, plan_memory
from hypothesis import given, settings
from test_planner import random_graphs, random_in_place_graphs


def _check_choice(g: Graph, scratch: dict[str, int]) -> None:
    kept = plan_memory(g, scratch, in_place=True)
    without = plan_memory(g, scratch, in_place=False)
    check_no_overlap(kept)
    check_no_overlap(without)
    assert kept.arena_bytes <= without.arena_bytes
    if kept.in_place:  # the in-place plan, no larger than the other one (ties keep it)
        assert kept.other_arena_bytes in (None, without.arena_bytes)
        assert kept.arena_bytes <= (kept.other_arena_bytes or kept.arena_bytes)
    else:  # the plan without optional reuse was smaller: it is exactly that plan
        assert kept.arena_bytes == without.arena_bytes < kept.other_arena_bytes
        assert [(b.name, b.offset, b.alias_of) for b in kept.buffers] == [
            (b.name, b.offset, b.alias_of) for b in without.buffers]


@settings(max_examples=200, deadline=None)
@given(random_in_place_graphs())
def test_in_place_never_gives_a_larger_arena(case):
    _check_choice(*case)


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_in_place_never_gives_a_larger_arena_without_in_place_ops(case):
    _check_choice(*case)


def test_a_stretched_in_place_buffer_is_not_kept():
    """lut in place on t1 makes t1 and t2 one 48 B buffer over steps 1-3, placed above t3: 192 B against 144 B."""
    g = Graph()
    for name, size in {"in": 64, "t0": 80, "t1": 48, "t2": 48, "t3": 96}.items():
        g.add_tensor(Tensor(name, (size,), "int8"))
    g.add_constant("w", np.zeros(256, np.int8))
    g.add_node(Node("n0", "op", ["in"], ["t0"]))
    g.add_node(Node("n1", "op", ["in"], ["t1"]))
    g.add_node(Node("n2", "lut", ["t1", "w"], ["t2"]))
    g.add_node(Node("n3", "op", ["t2"], ["t3"]))
    g.inputs, g.outputs = ["in"], ["t3"]
    plan = plan_memory(g, {}, in_place=True)
    assert (plan.arena_bytes, plan.in_place, plan.other_arena_bytes) == (144, False, 192)
    assert all(b.alias_of is None for b in plan.buffers)
    _check_choice(g, {})


def test_a_token_loop_is_in_place_on_the_input_its_pass_allows_only_when_it_dies_there():
    """A token loop's in_place pairs (passes/stream.py) are step 2a's slots for that node, nothing more."""
    g = Graph()
    for name, size in {"x": 64, "h": 64, "k": 64, "y": 64, "z": 64}.items():
        g.add_tensor(Tensor(name, (size,), "int8"))
    g.add_constant("w", np.zeros(256, np.int8))
    g.add_node(Node("n0", "lut", ["x", "w"], ["h"]))
    g.add_node(Node("n1", "lut", ["x", "w"], ["k"]))
    g.add_node(Node("n2", "token_loop", ["k", "h"], ["y"], {"in_place": [[0, 1]]}))
    g.add_node(Node("n3", "lut", ["y", "w"], ["z"]))
    g.inputs, g.outputs = ["x"], ["z"]
    plan = plan_memory(g, {}, in_place=True)
    check_no_overlap(plan)
    assert plan.buffer("y").alias_of == "h"  # not k: the pass allowed input 1 only
    assert plan_memory(g, {}, in_place=False).buffer("y").alias_of is None
    g.outputs = ["z", "h"]  # h must survive: the loop may not write over it
    assert plan_memory(g, {}, in_place=True).buffer("y").alias_of is None


def test_report_bound_allows_in_place_when_the_plan_without_it_is_kept():
    """The report's lower bound is over every schedule the compile allowed: with in place asked for, it is
    the in-place bound even when the plan without in place was kept (it was the larger no-in-place one)."""
    from hydra_edge.codegen.report import build_report
    from hydra_edge.memory.planner import lower_bound_per_node

    g = Graph()
    for name, size in {"in": 64, "t0": 80, "t1": 48, "t2": 48, "t3": 96}.items():
        g.add_tensor(Tensor(name, (size,), "int8"))
    g.add_constant("w", np.zeros(256, np.int8))
    g.add_node(Node("n0", "lut", ["in", "w"], ["t0"]))
    g.add_node(Node("n1", "lut", ["in", "w"], ["t1"]))
    g.add_node(Node("n2", "lut", ["t1", "w"], ["t2"]))
    g.add_node(Node("n3", "lut", ["t2", "w"], ["t3"]))
    g.inputs, g.outputs = ["in"], ["t3"]
    plan = plan_memory(g, {}, in_place=True)
    assert not plan.in_place
    with_in_place, without = lower_bound_per_node(g, {}, in_place=True), lower_bound_per_node(g, {}, in_place=False)
    assert with_in_place != without  # n2 may run in place on t1
    assert [op["lower_bound_bytes"] for op in build_report(g, plan)["ops"]] == with_in_place
