"""The greedy arena planner: lifetimes, placement, the overlap checker."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
from hydra_edge.ir.graph import Graph, IRError, Node, Tensor
from hydra_edge.memory.planner import (
    ALIGNMENT,
    IN_PLACE_OPS,
    Buffer,
    MemoryPlan,
    MemoryPlanError,
    check_no_overlap,
    format_plan,
    live_bytes_per_node,
    lower_bound,
    lower_bound_per_node,
    peak_bytes,
    place,
    plan_memory,
    scratch_name,
)
from hypothesis import given, settings
from hypothesis import strategies as st


@st.composite
def random_graphs(draw) -> tuple[Graph, dict[str, int]]:
    """A random DAG in topological order: each node reads 1-3 earlier tensors (and maybe a constant)."""
    size = st.integers(1, 3000)
    g = Graph()
    g.add_tensor(Tensor("in", (draw(size),), "int8"))
    g.add_constant("w", np.zeros(7, np.int8))
    produced = ["in"]
    n_nodes = draw(st.integers(1, 20))
    for i in range(n_nodes):
        # Bias towards recent tensors (chains), with some long-lived skips.
        recent = produced[-3:]
        ins = draw(st.lists(st.sampled_from(recent) | st.sampled_from(produced), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            ins.append("w")
        out = f"t{i}"
        g.add_tensor(Tensor(out, (draw(size),), draw(st.sampled_from(["int8", "int32"]))))
        g.add_node(Node(f"n{i}", "op", ins, [out]))
        produced.append(out)
    g.inputs = ["in"]
    g.outputs = draw(st.lists(st.sampled_from(produced[1:]), min_size=1, max_size=2, unique=True))
    scratch = draw(st.dictionaries(st.sampled_from([n.name for n in g.nodes]), st.integers(0, 2000), max_size=4))
    return g, scratch


def _brute_force_overlap(plan: MemoryPlan) -> bool:
    """Two buffers share a byte at a step where both are live, other than an in-place handover."""
    for i, a in enumerate(plan.buffers):
        for b in plan.buffers[i + 1 :]:
            steps = set(range(a.first, a.last + 1)) & set(range(b.first, b.last + 1))
            bytes_ = set(range(a.offset, a.end)) & set(range(b.offset, b.end))
            if not (steps and bytes_):
                continue
            handover = (b.alias_of == a.name and steps == {b.first} == {a.last}) or (
                a.alias_of == b.name and steps == {a.first} == {b.last})
            if not handover:
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(random_graphs())
def test_random_graph_plans_have_no_overlap(case):
    g, scratch = case
    plan = plan_memory(g, scratch)
    check_no_overlap(plan)
    assert not _brute_force_overlap(plan)
    n = len(g.nodes)
    live = live_bytes_per_node(plan, n)
    assert plan.arena_bytes >= peak_bytes(plan) == max(live)
    assert plan.arena_bytes % ALIGNMENT == 0
    assert all(b.offset % ALIGNMENT == 0 for b in plan.buffers)

    # Lifetimes follow the node order; constants are not planned.
    names = {b.name for b in plan.buffers}
    assert "w" not in names
    assert {t.name for t in g.activations()} <= names
    for b in plan.buffers:
        if b.name.endswith("#scratch"):
            i = next(i for i, node in enumerate(g.nodes) if scratch_name(node.name) == b.name)
            assert (b.first, b.last) == (i, i)
            continue
        writer = next((i for i, node in enumerate(g.nodes) if b.name in node.outputs), 0)
        readers = [i for i, node in enumerate(g.nodes) if b.name in node.inputs]
        last = n - 1 if b.name in g.outputs else max(readers + [writer])
        assert (b.first, b.last) == (writer, last), b.name
        assert b.size == g.tensor(b.name).nbytes
    # Per-step live bytes, recomputed from the graph directly.
    for i in range(n):
        expect = sum(b.size for b in plan.buffers if b.first <= i <= b.last)
        assert live[i] == expect


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 64), st.integers(0, 5), st.integers(0, 3), st.integers(0, 8)),
        min_size=1,
        max_size=8,
    )
)
def test_checker_agrees_with_brute_force(specs):
    """Arbitrary (not greedy) placements: the checker raises exactly when two live buffers share a byte."""
    bufs = [Buffer(f"b{i}", size, first, first + span, 16 * slot) for i, (size, first, span, slot) in enumerate(specs)]
    plan = MemoryPlan(bufs, max(b.end for b in bufs) + 15 & ~15)
    if _brute_force_overlap(plan):
        with pytest.raises(MemoryPlanError, match="overlap"):
            check_no_overlap(plan)
    else:
        check_no_overlap(plan)


def _chain(sizes: list[int]) -> Graph:
    g = Graph()
    g.add_tensor(Tensor("x", (sizes[0],), "int8"))
    prev = "x"
    for i, s in enumerate(sizes[1:]):
        g.add_tensor(Tensor(f"t{i}", (s,), "int8"))
        g.add_node(Node(f"n{i}", "op", [prev], [f"t{i}"]))
        prev = f"t{i}"
    g.inputs, g.outputs = ["x"], [prev]
    return g


def test_chain_reuses_memory():
    g = _chain([100, 100, 100, 100])
    plan = plan_memory(g)
    check_no_overlap(plan)
    # Two slots of 100 bytes (the second at offset 112) are enough for a chain.
    assert plan.arena_bytes == 224
    assert peak_bytes(plan) == 200
    assert {b.offset for b in plan.buffers} == {0, 112}
    assert live_bytes_per_node(plan, 3) == [200, 200, 200]


def test_largest_first_and_scratch_lives_one_step():
    g = _chain([10, 500, 20])
    plan = plan_memory(g, {"n1": 64})
    check_no_overlap(plan)
    assert plan.buffer("t0").offset == 0  # the largest buffer goes first, at 0
    s = plan.buffer(scratch_name("n1"))
    assert (s.first, s.last, s.size) == (1, 1, 64)
    assert live_bytes_per_node(plan, 2) == [510, 500 + 20 + 64]


def test_checker_catches_a_planted_overlap():
    g = _chain([64, 64, 64, 64])
    plan = plan_memory(g)
    check_no_overlap(plan)
    # t0 (steps 0..1) and t1 (steps 1..2) are both live at step 1: put them on the same bytes.
    plan.buffer("t1").offset = plan.buffer("t0").offset
    with pytest.raises(MemoryPlanError, match="'t0'.*'t1'|'t1'.*'t0'"):
        check_no_overlap(plan)


def test_checker_allows_sharing_between_disjoint_lifetimes():
    bufs = [Buffer("a", 32, 0, 1, 0), Buffer("b", 32, 2, 3, 0)]
    check_no_overlap(MemoryPlan(bufs, 32))
    bufs[1].first = 1  # now both live at step 1
    with pytest.raises(MemoryPlanError):
        check_no_overlap(MemoryPlan(bufs, 32))


def test_checker_rejects_out_of_arena_and_misaligned():
    with pytest.raises(MemoryPlanError, match="past the arena"):
        check_no_overlap(MemoryPlan([Buffer("a", 32, 0, 0, 16)], 32))
    with pytest.raises(MemoryPlanError, match="aligned"):
        check_no_overlap(MemoryPlan([Buffer("a", 8, 0, 0, 8)], 32))


def test_graph_inputs_live_from_zero_and_outputs_to_the_end():
    g = _chain([8, 8, 8, 8])
    g.outputs = ["t0", "t2"]
    plan = plan_memory(g)
    assert (plan.buffer("x").first, plan.buffer("x").last) == (0, 0)
    assert (plan.buffer("t0").first, plan.buffer("t0").last) == (0, 2)


def test_bad_graphs_are_refused():
    g = _chain([8, 8])
    g.nodes[0].inputs = ["nowhere_written"]
    g.add_tensor(Tensor("nowhere_written", (4,), "int8"))
    with pytest.raises(IRError, match="before any node writes it"):
        plan_memory(g)
    with pytest.raises(IRError, match="unknown node"):
        plan_memory(_chain([8, 8]), {"nope": 4})


def test_format_plan_lists_buffers_and_steps():
    g = _chain([40, 300, 40])
    plan = plan_memory(g, {"n0": 16})
    text = format_plan(plan)
    for b in plan.buffers:
        assert b.name in text
    assert f"arena {plan.arena_bytes} bytes" in text
    timeline = [line for line in text.splitlines() if line.strip().split(" ")[0].isdigit() and "|" in line]
    assert len(timeline) == 2


def test_place_is_deterministic():
    bufs = lambda: [Buffer(f"b{i}", 16, 0, 0) for i in range(4)]  # noqa: E731
    assert [b.offset for b in place(bufs()).buffers] == [b.offset for b in place(bufs()).buffers] == [0, 16, 32, 48]


# -- in-place reuse and the lower bound ------------------------------------------------------------

@st.composite
def random_in_place_graphs(draw) -> tuple[Graph, dict[str, int]]:
    """Random DAGs whose nodes are often in-place-capable ops (add, lut, layernorm) with an output the size of
    their first input, so that in-place reuse has chances to apply and to be wrong."""
    size = st.integers(1, 600)
    g = Graph()
    g.add_tensor(Tensor("in", (draw(size),), "int8"))
    g.add_constant("w", np.zeros(7, np.int8))
    produced = ["in"]
    for i in range(draw(st.integers(1, 14))):
        op = draw(st.sampled_from(["op", "add", "lut", "layernorm"]))
        recent = produced[-3:]
        ins = draw(st.lists(st.sampled_from(recent) | st.sampled_from(produced), min_size=1,
                            max_size=2 if op == "add" else 1, unique=True))
        if op in ("add", "op") and len(ins) == 1 and draw(st.booleans()):
            ins.append(ins[0])  # add(x, x): both operands the same tensor
        if op in ("lut", "layernorm") or draw(st.booleans()):
            ins.append("w")
        same = op != "op" and draw(st.integers(0, 3)) > 0
        out_size = g.tensor(ins[0]).nbytes if same else draw(size)
        g.add_tensor(Tensor(f"t{i}", (out_size,), "int8"))
        g.add_node(Node(f"n{i}", op, ins, [f"t{i}"]))
        produced.append(f"t{i}")
    g.inputs = ["in"]
    g.outputs = draw(st.lists(st.sampled_from(produced[1:]), min_size=1, max_size=2, unique=True))
    scratch = draw(st.dictionaries(st.sampled_from([n.name for n in g.nodes]), st.integers(0, 300), max_size=3))
    return g, scratch


def _topological_orders(g: Graph, limit: int):
    """Every topological order of g's nodes (up to `limit`), as node lists."""
    producer = {o: n.name for n in g.nodes for o in n.outputs}
    deps = {n.name: {producer[i] for i in n.inputs if i in producer} for n in g.nodes}
    by_name = {n.name: n for n in g.nodes}

    def walk(done: list[str], left: set[str]):
        if not left:
            yield [by_name[n] for n in done]
            return
        for name in sorted(left):
            if deps[name] <= set(done):
                yield from walk(done + [name], left - {name})

    return islice(walk([], set(deps)), limit)


@settings(max_examples=200, deadline=None)
@given(random_in_place_graphs())
def test_in_place_plans_have_no_overlap_and_respect_the_lower_bound(case):
    g, scratch = case
    for in_place in (False, True):
        plan = plan_memory(g, scratch, in_place=in_place)
        check_no_overlap(plan)
        assert not _brute_force_overlap(plan)
        bound = lower_bound(g, scratch, in_place=in_place)
        assert plan.arena_bytes >= peak_bytes(plan) >= bound
        assert all(lb <= live for lb, live in zip(lower_bound_per_node(g, scratch, in_place), live_bytes_per_node(plan)))
        if not in_place:
            assert all(b.alias_of is None for b in plan.buffers)
        # In place never takes the bytes of a tensor that is read later (or is a graph output).
        for b in plan.buffers:
            if b.alias_of is None:
                continue
            step = b.first
            node = g.nodes[step]
            assert b.name in node.outputs and b.alias_of in node.inputs and node.op in IN_PLACE_OPS
            assert b.alias_of not in g.outputs
            assert not any(b.alias_of in later.inputs for later in g.nodes[step + 1 :])
            assert plan.buffer(b.alias_of).offset == b.offset


@settings(max_examples=60, deadline=None)
@given(random_in_place_graphs())
def test_lower_bound_holds_for_every_schedule(case):
    """The bound is below the peak of the plan of every topological order of the same ops."""
    g, scratch = case
    for in_place in (False, True):
        bound = lower_bound(g, scratch, in_place=in_place)
        for order in _topological_orders(g, 40):
            h = g.copy()
            h.nodes = [n for n in order]
            assert peak_bytes(plan_memory(h, scratch, in_place=in_place)) >= bound


def test_in_place_chain_is_one_buffer():
    g = Graph()
    g.add_tensor(Tensor("x", (100,), "int8"))
    g.add_constant("table", np.zeros(256, np.int8))
    prev = "x"
    for i, op in enumerate(["lut", "lut", "op", "lut"]):
        g.add_tensor(Tensor(f"t{i}", (100,), "int8"))
        g.add_node(Node(f"n{i}", op, [prev, "table"], [f"t{i}"]))
        prev = f"t{i}"
    g.inputs, g.outputs = ["x"], [prev]
    greedy, inplace = plan_memory(g), plan_memory(g, in_place=True)
    assert greedy.arena_bytes == 224 and peak_bytes(greedy) == 200
    # x -> t0 -> t1 in place; "op" needs a separate output t2; t3 in place of t2.
    assert [inplace.buffer(n).alias_of for n in ("x", "t0", "t1", "t2", "t3")] == [None, "x", "t0", None, "t2"]
    assert inplace.arena_bytes == 224 and live_bytes_per_node(inplace) == [100, 100, 200, 100]
    assert lower_bound(g) == 200 and lower_bound(g, in_place=False) == 200
    assert "in place of x" in format_plan(inplace)
    check_no_overlap(inplace)


def test_in_place_is_refused_when_the_input_is_read_later():
    g = Graph()
    g.add_tensor(Tensor("x", (64,), "int8"))
    for name in ("a", "b", "c"):
        g.add_tensor(Tensor(name, (64,), "int8"))
    g.add_node(Node("n0", "layernorm", ["x"], ["a"]))
    g.add_node(Node("n1", "add", ["x", "a"], ["b"]))  # x is read here, after n0: n0 may not overwrite it
    g.add_node(Node("n2", "add", ["b", "a"], ["c"]))  # b and a both die here: c takes b (operand a of the add)
    g.inputs, g.outputs = ["x"], ["c"]
    plan = plan_memory(g, in_place=True)
    assert plan.buffer("a").alias_of is None
    assert plan.buffer("b").alias_of == "x"
    assert plan.buffer("c").alias_of == "b"
    check_no_overlap(plan)


def test_checker_rejects_bad_aliases():
    ok = [Buffer("x", 32, 0, 1, 0), Buffer("y", 32, 1, 2, 0, alias_of="x")]
    check_no_overlap(MemoryPlan(ok, 32))
    read_later = [Buffer("x", 32, 0, 2, 0), Buffer("y", 32, 1, 3, 0, alias_of="x")]
    with pytest.raises(MemoryPlanError, match="in place needs its last step to be 1"):
        check_no_overlap(MemoryPlan(read_later, 32))
    twice = [Buffer("x", 32, 0, 1, 0), Buffer("y", 32, 1, 1, 0, alias_of="x"), Buffer("z", 32, 1, 2, 0, alias_of="x")]
    with pytest.raises(MemoryPlanError, match="both take the bytes of 'x'"):
        check_no_overlap(MemoryPlan(twice, 32))
    moved = [Buffer("x", 32, 0, 1, 0), Buffer("y", 32, 1, 2, 32, alias_of="x")]
    with pytest.raises(MemoryPlanError, match="does not start at its offset"):
        check_no_overlap(MemoryPlan(moved, 64))
    # a third buffer on the same bytes while both live is still an overlap
    third = [*ok, Buffer("z", 16, 1, 1, 16)]
    with pytest.raises(MemoryPlanError, match="overlap"):
        check_no_overlap(MemoryPlan(third, 32))


def test_a_second_order_is_kept_only_when_it_packs_smaller():
    """Step 5a: TFLM's largest-first order puts the long-lived B above A and E (arena 1920); size x lifetime
    first puts B at 0 and the rest after it (1568, the peak)."""
    def bufs():
        return [Buffer("A", 768, 0, 0), Buffer("B", 384, 0, 3), Buffer("C", 384, 2, 3), Buffer("D", 384, 2, 3),
                Buffer("E", 416, 3, 3)]

    plan = place(bufs())
    check_no_overlap(plan)
    assert plan.arena_bytes == peak_bytes(plan) == 1568 and plan.offset("B") == 0
    # where largest-first is as good, its placement stays (the TFLM-compatible one)
    same = place([Buffer("x", 64, 0, 1), Buffer("y", 32, 1, 2), Buffer("z", 64, 2, 3)])
    assert (same.offset("x"), same.offset("z"), same.offset("y")) == (0, 0, 64)
