"""The streaming schedule: group the ops that can run token group by token group into token loops.

On the quantised IR, most of a ViT is row-local: layernorm, linear, add, the activation table, each
token's output row from that token's input rows (OpDef.row_inputs). Only a few steps need all tokens:
Hydra attention's state (a sum over every token, O(D)), softmax attention's keys and values (each query
row reads all of them), mean pooling. `schedule_token_loops` finds the maximal regions of row-local ops
between such steps and makes each a `token_loop` node (ops/token_loop.py) that the emitter runs G tokens
at a time, so that a tensor that lives only inside a region takes G rows of RAM instead of T.

The steps, on a pure copy of the graph:

1. Split every hydra_attention into hydra_kv_state(k, v) -> kv[D] (a reduction over the tokens) and
   hydra_apply(q, kv) (row-local, reading kv whole): the same bits, the state as the one cross-token value.
2. Levels (as soon as possible): a node's level is the largest of its producers' levels, plus one over
   an edge that needs the producer complete: a whole input (softmax's k and v, hydra_apply's kv), a
   reduction's result, or an edge from or to an op that cannot stream (patch_embed, a linear on one row).
3. As late as possible: a streamable node whose outputs only feed row inputs moves up to the lowest
   level of its readers (the q projection joins its attention), so that its output need not be stored.
4. Recompute instead of store: a cheap node (at most 4 MACs an output element: layernorm, add, lut)
   read at several levels runs again at each of them, when its inputs are read at those levels anyway,
   so that recomputing keeps nothing alive longer (LN1 before q, and before k and v, as a Hydra block's
   two passes over the tokens do; not a position add, whose input would live on instead of its output).
   An input made by another cheap row node of the same level that nothing else reads there brings that
   node along: a chain is recomputed back to inputs that are at hand (a .tflite's LayerNorm, seven ops).
   `chains=False` recomputes single nodes only (the driver keeps that when its arena is no larger: a chain
   costs instructions on every token and pays only where it sets the peak).
5. Stored tensors: graph inputs and outputs, whole inputs, the outputs of ops that do not stream and of
   reductions, and a tensor read at a level its producer does not run at.
6. Regions: the streamable nodes of one level and token count, joined along the edges of tensors that
   are not stored; cut at stored ones (a residual stream both regions keep anyway), unless the cuts
   would make two regions of the level wait on each other. A region of one node stays a plain node.
7. Each region becomes a token_loop: inputs the tensors it reads from outside, outputs the stored
   tensors it writes, in_place the outputs that may take an input's bytes (the input is read row by row
   only, and each row of it before the output's same row is written). The nodes are put in an order
   every reader follows its writers (Kahn, earliest original node first).

`tokens_per_step` (>= 1, capped at each region's token count) is G.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..ir.graph import Graph, Node, Tensor
from ..ir.ops import node_to_dict
from ..ir.tfl_ops import token_rows
from ..ops import op_def, strip_leading_ones
from ..ops.token_loop import RowFacts, graph_row_facts

RECOMPUTE_MACS_PER_ELEMENT = 4  # step 4: layernorm (3), add and lut (1) are recomputed; a linear never


def split_hydra_attention(graph: Graph) -> Graph:
    """Step 1: hydra_attention(q, k, v) -> hydra_kv_state(k, v) -> kv; hydra_apply(q, kv) (pure)."""
    g = graph.copy()
    nodes: list[Node] = []
    for node in g.nodes:
        if node.op == "tfl_hydra_attention" and len(node.inputs) == 3:  # the same two passes (tfl_hydra_attention.c)
            q, k, v = node.inputs
            kv = g.unique_name(node.name + ".kv")
            g.tensors[kv] = Tensor(kv, (int(node.attrs["depth"]),), "int8")
            nodes.append(Node(node.name + ".kv", "tfl_hydra_kv_state", [k, v], [kv], dict(node.attrs), node.source))
            nodes.append(Node(node.name, "tfl_hydra_apply", [q, kv], list(node.outputs), dict(node.attrs), node.source))
            continue
        if node.op != "hydra_attention" or len(node.inputs) != 3 or "kv_shift" not in node.attrs:
            nodes.append(node)
            continue
        q, k, v = node.inputs
        tokens, dim = g.tensor(k).shape
        kv = g.unique_name(node.name + ".kv")
        g.tensors[kv] = Tensor(kv, (dim,), "int32")
        nodes.append(Node(node.name + ".kv", "hydra_kv_state", [k, v], [kv], {**node.attrs, "tokens": int(tokens)},
                          node.source))
        nodes.append(Node(node.name, "hydra_apply", [q, kv], list(node.outputs), dict(node.attrs), node.source))
    g.nodes = nodes
    return g


@dataclass
class _Facts:
    """Steps 2-5 of the module docstring, over the graph's node indices."""

    graph: Graph
    producer: dict[str, int] = field(default_factory=dict)
    readers: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # tensor -> [(node, input index)]
    tokens: dict[int, int] = field(default_factory=dict)  # streamable node -> its token count
    facts: dict[int, RowFacts] = field(default_factory=dict)  # streamable node -> how it runs in a loop

    def __post_init__(self) -> None:
        for i, node in enumerate(self.graph.nodes):
            for k, name in enumerate(node.inputs):
                self.readers.setdefault(name, []).append((i, k))
            for name in node.outputs:
                self.producer[name] = i
            d = graph_row_facts(self.graph, node)
            t = None if d is None else self._stream_tokens(node, d)
            if t is not None:
                self.tokens[i], self.facts[i] = t, d

    def _stream_tokens(self, node: Node, d: RowFacts) -> int | None:
        """T when `node` can run in a token loop: its row inputs [T, w] (one an activation; TFLite's [1, T, ...]
        too), its output rows too."""
        g = self.graph
        rows = [k for k in d.row_inputs if k < len(node.inputs) and node.inputs[k]]
        shapes = [g.tensor(node.inputs[k]).shape for k in rows]
        tokens = {token_rows(s) for s in shapes}
        if not shapes or len(tokens) != 1 or min(tokens) < 2 or (d.tokens is not None and d.tokens not in tokens):
            return None
        if d.tokens is None and any(len(strip_leading_ones(s)) != 2 for s in shapes):  # a native op: [T, w]
            return None
        if all(g.tensor(node.inputs[k]).is_constant for k in rows):
            return None
        out = g.tensor(node.outputs[0]).shape
        if not d.reduces and (token_rows(out) != min(tokens) or
                              (d.tokens is None and len(strip_leading_ones(out)) != 2)):
            return None
        return min(tokens)

    def row_edge(self, p: int, c: int, k: int) -> bool:
        """Whether input k of node c, written by node p, can be handed over row by row in one loop."""
        if p not in self.tokens or c not in self.tokens or self.tokens[p] != self.tokens[c]:
            return False
        return not self.facts[p].reduces and k in self.facts[c].row_inputs

    def macs(self, i: int) -> int:
        node = self.graph.nodes[i]
        d = op_def(node.op)
        return d.macs(self.graph, node) if d is not None else self.graph.tensor(node.outputs[0]).numel

    def edges_in(self, c: int):
        """(producer, input index, tensor) of node c's activation inputs that a node writes."""
        for k, name in enumerate(self.graph.nodes[c].inputs):
            if name in self.producer:
                yield self.producer[name], k, name


def _levels(f: _Facts, chains: bool = True) -> dict[int, set[int]]:
    """Steps 2-4: each node's levels (a set: more than one when it is recomputed)."""
    g = f.graph
    n = len(g.nodes)
    level = [0] * n
    for c in range(n):
        for p, k, _ in f.edges_in(c):
            level[c] = max(level[c], level[p] + (0 if f.row_edge(p, c, k) else 1))
    outputs = set(g.outputs)
    for p in reversed(range(n)):  # step 3
        node = g.nodes[p]
        if p not in f.tokens or f.facts[p].reduces or node.outputs[0] in outputs:
            continue
        readers = f.readers.get(node.outputs[0], [])
        if readers and all(f.row_edge(p, c, k) for c, k in readers):
            level[p] = max(level[p], min(level[c] for c, _ in readers))
    levels = {i: {level[i]} for i in range(n)}
    for p in range(n):  # step 4
        if not _recomputable(f, level, p):
            continue
        wanted = {level[c] for c, _ in f.readers[g.nodes[p].outputs[0]]}
        chain = _chain(f, level, p, wanted) if len(wanted) > 1 else None
        if chain is not None and len(chain) > 1 and not chains:
            chain = None
        for i in chain or ():
            levels[i] |= wanted
    return levels


def _recomputable(f: _Facts, level: list[int], p: int) -> bool:
    """Whether node p may run again at other levels: cheap, streamable, no reduction, nothing read whole, every
    reader a row edge."""
    g = f.graph
    node = g.nodes[p]
    if p not in f.tokens or f.facts[p].reduces or node.outputs[0] in g.outputs:
        return False
    readers = f.readers.get(node.outputs[0], [])
    cheap = f.macs(p) <= RECOMPUTE_MACS_PER_ELEMENT * g.tensor(node.outputs[0]).numel
    whole = any(k not in f.facts[p].row_inputs and n and not g.tensor(n).is_constant  # attention's k and v
                for k, n in enumerate(node.inputs))
    return bool(readers) and cheap and not whole and all(f.row_edge(p, c, k) for c, k in readers)


def _chain(f: _Facts, level: list[int], p: int, wanted: set[int]) -> set[int] | None:
    """The nodes to recompute at the `wanted` levels so that node p's output is made there: p, and back from it
    every cheap row node of p's level whose output is not otherwise at hand there (a LayerNorm spelt as seven
    tfl ops: MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL), so long as what the chain reads from outside is (step 4)."""
    g = f.graph
    chain, todo = {p}, [p]
    while todo:
        for name in g.nodes[todo.pop()].inputs:
            q = f.producer.get(name)
            if not name or q in chain or _read_there(f, level, chain, name, wanted, level[p]):
                continue
            if q is None or level[q] != level[p] or not _recomputable(f, level, q):
                return None
            chain.add(q)
            todo.append(q)
    inputs = {n for i in chain for n in g.nodes[i].inputs if n and f.producer.get(n) not in chain}
    return chain if all(_read_there(f, level, chain, n, wanted, level[p]) for n in inputs) else None


def _read_there(f: _Facts, level: list[int], chain: set[int], name: str, wanted: set[int], home: int) -> bool:
    """Whether recomputing the `chain` (at level `home`) at the `wanted` levels keeps its input `name` alive no
    longer: a constant, or a tensor something outside the chain reads at each of those levels anyway (LN1's input
    x, which the residual add reads)."""
    if f.graph.tensor(name).is_constant:
        return True
    at = {level[c] for c, _ in f.readers.get(name, []) if c not in chain}
    return wanted - {home} <= at


def _stored(f: _Facts, levels: dict[int, set[int]]) -> set[str]:
    """Step 5: the tensors kept whole in the arena."""
    g = f.graph
    stored = {n for n in g.inputs if not g.tensor(n).is_constant} | set(g.outputs)
    for name, p in f.producer.items():
        if p not in f.tokens or f.facts[p].reduces:
            stored.add(name)
            continue
        for c, k in f.readers.get(name, []):
            if not f.row_edge(p, c, k) or not levels[c] <= levels[p]:
                stored.add(name)
                break
    for name, readers in f.readers.items():
        if name in f.producer and any(not f.row_edge(f.producer[name], c, k) for c, k in readers):
            stored.add(name)
    return stored


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def _regions(f: _Facts, levels: dict[int, set[int]], stored: set[str]) -> list[list[tuple[int, int]]]:
    """Step 6: the regions, each a list of (node index, level) copies in graph order."""
    for cut in (True, False):
        uf = _UnionFind()
        copies = [(i, lv) for i in sorted(f.tokens) for lv in sorted(levels[i])]
        for i, lv in copies:
            uf.find((i, lv))
            for p, k, name in f.edges_in(i):
                if not f.row_edge(p, i, k) or lv not in levels[p]:
                    continue
                primary = lv == min(levels[p])
                if cut and primary and name in stored:
                    continue  # read back from the arena: the regions may be separate
                uf.union((p, lv), (i, lv))
        groups: dict = {}
        for copy in copies:
            groups.setdefault(uf.find(copy), []).append(copy)
        regions = sorted(groups.values(), key=lambda r: r[0])
        if _ordered(f, regions, levels, stored) is not None:
            return regions
    raise AssertionError("unreachable: regions of uncut row edges are always ordered")


@dataclass
class _Item:
    """One top-level node to be: a plain node, or a region's copies."""

    copies: list[tuple[int, int]]
    reads: set[str]
    writes: set[str]


def _items(f: _Facts, regions: list[list[tuple[int, int]]], levels: dict[int, set[int]],
           stored: set[str]) -> list[_Item]:
    g = f.graph
    items = [_Item([(i, min(levels[i]))], set(g.nodes[i].inputs), set(g.nodes[i].outputs))
             for i in range(len(g.nodes)) if i not in f.tokens]
    for region in regions:
        written = {n for i, _ in region for n in g.nodes[i].outputs}
        reads = {n for i, _ in region for n in g.nodes[i].inputs} - written
        kept = {n for i, lv in region if lv == min(levels[i]) for n in g.nodes[i].outputs} & stored
        items.append(_Item(region, reads, kept))
    return items


def _ordered(f: _Facts, regions, levels, stored) -> list[_Item] | None:
    """Kahn's order of the items (earliest original node first), or None when they wait on each other."""
    items = _items(f, regions, levels, stored)
    writer = {n: j for j, item in enumerate(items) for n in item.writes}
    waits = [0] * len(items)
    dependents: list[list[int]] = [[] for _ in items]
    for j, item in enumerate(items):
        for w in {writer[n] for n in item.reads if n in writer and writer[n] != j}:
            waits[j] += 1
            dependents[w].append(j)
    ready = [(items[j].copies[0], j) for j in range(len(items)) if not waits[j]]
    heapq.heapify(ready)
    done: list[_Item] = []
    while ready:
        _, j = heapq.heappop(ready)
        done.append(items[j])
        for d in dependents[j]:
            waits[d] -= 1
            if not waits[d]:
                heapq.heappush(ready, (items[d].copies[0], d))
    return done if len(done) == len(items) else None


def _in_place(graph: Graph, body: list[Node], inputs: list[str], outputs: list[str]) -> list[list[int]]:
    """Step 7's in_place pairs: [output index, input index]."""
    writer = {out: j for j, sub in enumerate(body) for out in sub.outputs}
    # input -> the latest body step that reads it, as a write at step w may follow it: a row read at step j
    # allows w > j, one by an input the op may overwrite (OpDef.in_place) w >= j, a whole read nothing
    last_read: dict[str, float] = {}
    facts = [graph_row_facts(graph, sub) for sub in body]
    for j, sub in enumerate(body):
        d = facts[j]
        for k, name in enumerate(sub.inputs):
            at = float("inf") if k not in d.row_inputs else j - 0.5 if k in d.in_place else j
            last_read[name] = max(last_read.get(name, -1.0), at)
    pairs, taken = [], set()
    for oi, out in enumerate(outputs):
        if facts[writer[out]].reduces:
            continue
        for ii, name in enumerate(inputs):
            t = graph.tensor(name)
            if t.is_constant or ii in taken or t.nbytes != graph.tensor(out).nbytes or name in graph.outputs:
                continue
            if last_read.get(name, float("inf")) < writer[out]:  # every row read before the same row is written
                pairs.append([oi, ii])
                taken.add(ii)
                break
    return pairs


def _region_name(body: list[Node], used: set[str]) -> str:
    parts = [n.name.split(".") for n in body]
    prefix: list[str] = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    base = "loop." + (".".join(prefix) or f"{body[0].name}..{body[-1].name}")
    name, i = base, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def schedule_token_loops(graph: Graph, tokens_per_step: int = 1, chains: bool = True) -> Graph:
    """The quantised `graph` with its streamable regions as token_loop nodes (pure); see the module docstring."""
    if isinstance(tokens_per_step, bool) or int(tokens_per_step) != tokens_per_step or tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be a positive integer, got {tokens_per_step!r}")
    g = split_hydra_attention(graph)
    f = _Facts(g)
    levels = _levels(f, chains)
    stored = _stored(f, levels)
    regions = _regions(f, levels, stored)
    items = _ordered(f, regions, levels, stored)
    used = {n.name for n in g.nodes}
    nodes: list[Node] = []
    for item in items:
        if len(item.copies) == 1:
            nodes.append(g.nodes[item.copies[0][0]])
            continue
        body = [g.nodes[i] for i, _ in item.copies]
        inputs = list(dict.fromkeys(n for sub in body for n in sub.inputs if n in item.reads))
        outputs = [n for sub in body for n in sub.outputs if n in item.writes]
        tokens = f.tokens[item.copies[0][0]]
        shapes = {sub.outputs[0]: [int(v) for v in g.tensor(sub.outputs[0]).shape] for sub in body}
        shapes = shapes if any(op_def(sub.op) is None for sub in body) else {}  # TFLite's shapes (token_loop.py)
        nodes.append(Node(
            _region_name(body, used), "token_loop", inputs, outputs,
            {"body": [node_to_dict(sub) for sub in body], "tokens": int(tokens),
             "tokens_per_step": min(int(tokens_per_step), int(tokens)),
             "in_place": _in_place(g, body, inputs, outputs), **({"shapes": shapes} if shapes else {})},
            next((sub.source for sub in body if sub.source), ""),
        ))
    g.nodes = nodes
    g.validate()
    return g
