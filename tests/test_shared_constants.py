"""Identical constant arrays are defined once in model.c (the softmax exp table of every layer), and the
flash figures (the report's and the budget estimate's) count them once."""

from __future__ import annotations

import re

import numpy as np
from hydra_edge.ops.token_loop import body_nodes
from hydra_edge import driver
from hydra_edge.codegen.emit_c import shared_key
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.ops.softmax_attention import softmax_exp_table
from hydra_edge.boards import load_board
from hydra_edge.targets.budget import estimate
from hydra_edge.validate.bitexact import validate_build
from model_zoo import calibration_inputs, export_model

_SIZES = {"int8_t": 1, "int32_t": 4, "int64_t": 8}
_DEF = re.compile(r"^static const (int8_t|int32_t|int64_t) (\w+)\[(\d+)\]", re.M)


def test_shared_key():
    a = np.arange(5)
    assert shared_key(a, "int32_t") == shared_key(a.astype(np.int32))  # an attr (int64) and an int32 constant
    assert shared_key(a.astype(np.int8)) != shared_key(a.astype(np.int32))  # another C type
    assert shared_key(np.array([300]), "int8_t") != shared_key(np.array([44], np.int8))  # no wrap-around


def test_three_softmax_layers_share_one_exp_table(tmp_path):
    cfg = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=3, mlp_ratio=2.0, attention="softmax",
                         heads=2)
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    result = driver.compile_graph(graph, load_board("host"), tmp_path / "build", calibration_inputs(cfg))
    g = result.graph
    every = [*g.nodes, *(sub for n in g.nodes if n.op == "token_loop" for sub in body_nodes(n))]
    tables = [n.inputs[3] for n in every if n.op == "softmax_attention"]
    assert len(tables) == 3 and len(set(tables)) == 3  # three constants in the graph ...
    assert all(np.array_equal(g.tensor(t).data, softmax_exp_table()) for t in tables)
    source = (result.folder / "model.c").read_text()
    defs = _DEF.findall(source)
    exp_defs = [d for d in defs if "exp_table" in d[1]]
    assert len(exp_defs) == 1, exp_defs  # ... one array in model.c, named after the first layer
    ident = exp_defs[0][1]
    assert source.count(f".exp_table = {ident},") == 3  # every layer's params point at it
    assert "/* also blocks.1.attn.exp_table" in source and "/* also blocks.2.attn.exp_table" in source
    names = [d[1] for d in defs]
    assert len(names) == len(set(names))
    # the report's flash figures are the bytes of model.c's arrays, a shared one once
    in_c = sum(_SIZES[t] * int(n) for t, _, n in defs)
    flash = result.report["flash"]
    assert flash["total_bytes"] == flash["weights_bytes"] + flash["params_bytes"] == in_c
    est = estimate(g, result.plan, load_board("stm32f746"))
    code = dict(est.flash_parts)["code (kernels, harness, libc; estimate)"]
    assert est.flash_bytes - code == in_c
    # and the build is still bit-exact
    x = np.random.default_rng(2).integers(-128, 128, size=(2, *g.tensor(g.inputs[0]).shape), dtype=np.int8)
    check = validate_build(result.folder, g, np.concatenate([np.load(result.folder / driver.TEST_VECTORS), x]))
    assert check.ok, check.mismatches
