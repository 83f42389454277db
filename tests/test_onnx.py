"""The ONNX frontend: committed models from both torch exporters, onnxruntime as the float reference.

Each committed model (tests/models/onnx_*.onnx, made by `make_models.py onnx`) must

- give the lowered IR that the same torch module gives through torch.export (same ops, in order);
- run in the float interpreter as onnxruntime runs the file;
- lift its attention (hydra_attention / softmax_attention nodes, counted);
- compile and validate bit for bit on the host and on stm32f746 under QEMU.

Damaged files give a FrontendError and nothing else (a seeded fuzz over the committed files).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from hydra_edge import driver
from hydra_edge.cli import main
from hydra_edge.frontend.errors import FrontendError
from hydra_edge.frontend.module import from_module
from hydra_edge.frontend.onnx import load_onnx
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.reference.float_interp import run_float
from hydra_edge.boards import load_board
from hydra_edge.validate.bitexact import validate_build
from onnx import TensorProto, helper, numpy_helper

MODELS_DIR = Path(__file__).resolve().parent / "models"
sys.path.insert(0, str(MODELS_DIR))
from make_models import ONNX_MODELS, onnx_model  # noqa: E402  (the torch twin of each committed file)

# name -> (hydra_attention nodes, softmax_attention nodes) after lowering
ATTENTION = {
    "onnx_hydra_dynamo_norm": (2, 0),
    "onnx_hydra_dynamo_normalize": (2, 0),
    "onnx_hydra_legacy_norm": (2, 0),
    "onnx_hydra_legacy_normalize": (2, 0),
    "onnx_hydra_legacy_opset14": (1, 0),
    "onnx_softmax_dynamo_manual": (0, 1),
    "onnx_softmax_dynamo_sdpa": (0, 1),
    "onnx_softmax_legacy_manual": (0, 2),
    "onnx_mixed_dynamo": (1, 1),
}
STM32 = "stm32f746"


def model_path(name: str) -> Path:
    return MODELS_DIR / f"{name}.onnx"


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def test_every_committed_model_is_tested():
    committed = {p.stem for p in MODELS_DIR.glob("onnx_*.onnx")}
    assert committed == set(ATTENTION) == set(ONNX_MODELS)
    for name in committed:
        assert model_path(name).stat().st_size < 200 * 1024


def test_exporters_and_opsets_are_the_ones_claimed():
    seen = set()
    for name, (_, exporter, opset) in ONNX_MODELS.items():
        m = onnx.load(str(model_path(name)))
        assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [opset]
        ops = {n.op_type for n in m.graph.node}
        seen.add((exporter, opset))
        if opset == 14:  # the decomposed LayerNorm is what that model is for
            assert "LayerNormalization" not in ops and {"ReduceMean", "Pow", "Sqrt"} <= ops
    assert {("dynamo", 18), ("legacy", 17)} <= seen


# -- float: the same IR as torch.export, and onnxruntime's numbers ----------------------------------


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_same_lowered_ir_as_torch_export(name):
    model, cfg = onnx_model(name)
    from_torch = lower_to_ir(from_module(model, torch.zeros(1, 3, cfg.image_size, cfg.image_size)))
    from_onnx = lower_to_ir(load_onnx(model_path(name)))
    assert [n.op for n in from_onnx.nodes] == [n.op for n in from_torch.nodes]
    for a, b in zip(from_onnx.nodes, from_torch.nodes):  # float attrs: ONNX stores float32 (a softmax scale)
        assert a.attrs.keys() == b.attrs.keys(), (a.name, b.name)
        for key in a.attrs:
            want = b.attrs[key]
            assert a.attrs[key] == (pytest.approx(want, rel=1e-6) if isinstance(want, float) else want), (a.name, key)
    assert sorted(t.shape for t in from_onnx.constants()) == sorted(t.shape for t in from_torch.constants())


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_float_graph_matches_onnxruntime(name):
    graph = lower_to_ir(load_onnx(model_path(name)))
    x = _inputs(4, seed=7)
    x[0] = 0.0  # a constant image: flat LayerNorm inputs
    x[1] *= 8.0  # large activations
    expected = _onnxruntime(model_path(name), x)
    got = np.stack([run_float(graph, xi)[0] for xi in x])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_is_lifted(name):
    ops = [n.op for n in lower_to_ir(load_onnx(model_path(name))).nodes]
    assert (ops.count("hydra_attention"), ops.count("softmax_attention")) == ATTENTION[name]


def test_nodes_keep_readable_names_and_sources():
    g = load_onnx(model_path("onnx_hydra_legacy_norm"))
    by_name = {n.name: n for n in g.nodes}
    assert by_name["blocks.0.attn.q"].op == "matmul"
    assert by_name["blocks.0.norm1"].op == "layer_norm"
    assert by_name["patch_embed"].source == "patch_embed: onnx #0 Conv /patch_embed/Conv"
    assert all("onnx #" in n.source or n.source.startswith("onnx: #") for n in g.nodes)
    lowered = lower_to_ir(g)
    assert {n.name for n in lowered.nodes if n.op == "hydra_attention"} == {"blocks.0.attn", "blocks.1.attn"}
    assert "blocks.0.attn.q.weight" in lowered.tensors  # onnx::MatMul_NNN named after its module
    dyn = lower_to_ir(load_onnx(model_path("onnx_hydra_dynamo_norm")))
    assert {n.name for n in dyn.nodes if n.op == "hydra_attention"} == {"blocks.0.attn", "blocks.1.attn"}


# -- bit-exact on the host and the STM32F746 --------------------------------------------------------


def _compile(name: str, board: str, tmp_path: Path):
    graph = lower_to_ir(driver.load_model(model_path(name)))  # the suffix/content dispatch, as the CLI does
    return driver.compile_graph(graph, load_board(board), tmp_path / "build", _inputs(8, seed=1))


def _edge_inputs(result, n: int = 4) -> np.ndarray:
    shape = result.graph.tensor(result.graph.inputs[0]).shape
    x = np.random.default_rng(2).integers(-128, 128, size=(n, *shape), dtype=np.int8)
    x[0], x[1] = -128, 127
    return x


@pytest.mark.parametrize("board", ["host", STM32])
@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_bit_exact(name, board, tmp_path):
    result = _compile(name, board, tmp_path)
    inputs = np.concatenate([np.load(result.folder / driver.TEST_VECTORS), _edge_inputs(result)])
    check = validate_build(result.folder, result.graph, inputs)
    assert check.ok, check.mismatches
    assert check.bytes_compared == len(inputs) * 10


def test_cli_compiles_and_validates_an_onnx_file(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=_inputs(8, seed=3))
    out = tmp_path / "build"
    runner = CliRunner()
    result = runner.invoke(main, ["compile", str(model_path("onnx_hydra_dynamo_norm")), "--board", "host",
                                  "--calib", str(calib), "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["validate", str(out)])
    assert result.exit_code == 0, result.output


# -- conversions built by hand ------------------------------------------------------------------------


def _model(nodes, inits=(), opset=18, inputs=None, outputs=None) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _load(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return load_onnx(path)


def test_unsupported_ops_are_listed_together_before_any_work(tmp_path):
    nodes = [
        helper.make_node("Elu", ["x"], ["a"], name="ok_elu_is_not_ok"),
        helper.make_node("Sin", ["a"], ["b"], name="my_sin"),
        helper.make_node("Add", ["b", "b"], ["c"], name="fine_add"),
        helper.make_node("TopK", ["c", "k"], ["d", "i"], name="top", axis=-1),
        helper.make_node("FusedThing", ["d"], ["y"], name="custom", domain="com.example"),
    ]
    # No opset for com.example: the checker would refuse the file, so the list must come first.
    with pytest.raises(FrontendError) as err:
        _load(_model(nodes, [("k", np.array([2], np.int64))]), tmp_path)
    msg = str(err.value)
    assert "4 unsupported ONNX ops of 4 kinds" in msg
    for item in ("Elu x1 (#0 ok_elu_is_not_ok)", "Sin x1 (#1 my_sin)", "TopK x1 (#3 top)",
                 "com.example.FusedThing x1 (#4 custom)"):
        assert item in msg
    assert "fine_add" not in msg and "m.onnx" in msg


def test_layer_norm_decomposition_and_gelu_forms_fold(tmp_path):
    d = 8
    gamma, beta = np.linspace(0.5, 1.5, d).astype(np.float32), np.linspace(-0.2, 0.2, d).astype(np.float32)
    c = lambda name, v: (name, np.asarray(v, np.float32))  # noqa: E731
    nodes = [
        # LayerNorm, decomposed with d * d for the square and gamma first
        helper.make_node("ReduceMean", ["x", "ax"], ["m"]),
        helper.make_node("Sub", ["x", "m"], ["dx"]),
        helper.make_node("Mul", ["dx", "dx"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "ax"], ["var"]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["dx", "sd"], ["n"]),
        helper.make_node("Mul", ["gamma", "n"], ["ng"]),
        helper.make_node("Add", ["ng", "beta"], ["ln"]),
        # GELU, erf form: (x * 0.5) * (1 + erf(x * (1 / sqrt 2)))
        helper.make_node("Mul", ["ln", "rs2"], ["s"]),
        helper.make_node("Erf", ["s"], ["e"]),
        helper.make_node("Add", ["one", "e"], ["e1"]),
        helper.make_node("Mul", ["ln", "half"], ["h"]),
        helper.make_node("Mul", ["h", "e1"], ["g1"]),
        # GELU as the opset-20 op
        helper.make_node("Gelu", ["g1"], ["y"], approximate="tanh"),
    ]
    inits = [("ax", np.array([-1], np.int64)), c("eps", 1e-5), c("gamma", gamma), c("beta", beta),
             c("rs2", 1 / np.sqrt(2)), c("one", 1.0), c("half", 0.5)]
    g = _load(_model(nodes, inits, opset=20), tmp_path)
    assert [n.op for n in g.nodes] == ["layer_norm", "gelu", "gelu"]
    ln, g1, g2 = g.nodes
    assert ln.attrs["normalized_shape"] == [d] and ln.attrs["eps"] == pytest.approx(1e-5)
    assert [g.tensor(i).data.tolist() for i in ln.inputs[1:]] == [gamma.tolist(), beta.tolist()]
    assert g1.attrs["approximate"] == "none" and g1.inputs == ln.outputs
    assert g2.attrs["approximate"] == "tanh"


def test_a_decomposition_used_elsewhere_is_not_folded(tmp_path):
    nodes = [
        helper.make_node("Div", ["x", "s2"], ["s"]),
        helper.make_node("Erf", ["s"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["x", "e1"], ["p"]),
        helper.make_node("Mul", ["p", "half"], ["g"]),
        helper.make_node("Add", ["g", "e"], ["y"]),  # erf's output read outside the pattern
    ]
    inits = [("s2", np.float32(np.sqrt(2))), ("one", np.float32(1)), ("half", np.float32(0.5))]
    g = _load(_model(nodes, inits), tmp_path)
    assert "gelu" not in [n.op for n in g.nodes] and "erf" in [n.op for n in g.nodes]


def test_layout_and_inference_only_ops(tmp_path):
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Unsqueeze", ["i", "ax1"], ["u"]),  # [1, 1, 4, 8]
        helper.make_node("Squeeze", ["u", "ax1"], ["q"]),  # [1, 4, 8]
        helper.make_node("Flatten", ["q"], ["f"], axis=1),  # [1, 32]
        helper.make_node("Reshape", ["f", "shape"], ["r"]),  # [1, 4, 8]
        helper.make_node("Dropout", ["r", "ratio", "train"], ["d"]),
        helper.make_node("Transpose", ["d"], ["t"], perm=[0, 2, 1]),  # [1, 8, 4]
        helper.make_node("Softmax", ["t"], ["y"], axis=-1),
    ]
    inits = [("ax1", np.array([1], np.int64)), ("shape", np.array([0, 4, -1], np.int64)),
             ("ratio", np.float32(0.1)), ("train", np.array(False))]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])]
    g = _load(_model(nodes, inits, outputs=out), tmp_path)
    assert [(n.op, n.attrs) for n in g.nodes] == [
        ("reshape", {"shape": [1, 1, 4, 8]}), ("reshape", {"shape": [1, 4, 8]}), ("reshape", {"shape": [1, 32]}),
        ("reshape", {"shape": [1, 4, 8]}), ("permute", {"dims": [0, 2, 1]}), ("softmax", {"dim": -1, "dtype": None}),
    ]
    inits[-1] = ("train", np.array(True))
    with pytest.raises(FrontendError, match=r"#5 Dropout .* is in training mode"):
        _load(_model(nodes, inits, outputs=out), tmp_path, "train.onnx")
    old = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]  # opset 11: flattens to 2-d at axis 1
    with pytest.raises(FrontendError, match=r"opset 11\) flattens its input to 2-d at axis 1"):
        _load(_model(old, opset=11), tmp_path, "old.onnx")


def test_gemm_variants_convert_exactly(tmp_path):
    """transB = 0, alpha and beta are folded into the linear's constants: same numbers as onnxruntime."""
    src = onnx.load(str(model_path("onnx_hydra_legacy_norm")))
    head = next(n for n in src.graph.node if n.op_type == "Gemm")
    inits = {t.name: t for t in src.graph.initializer}
    w = numpy_helper.to_array(inits[head.input[1]])
    inits[head.input[1]].CopyFrom(numpy_helper.from_array((w.T / 2.0).astype(np.float32), head.input[1]))
    b = numpy_helper.to_array(inits[head.input[2]])
    inits[head.input[2]].CopyFrom(numpy_helper.from_array((b * 4.0).astype(np.float32), head.input[2]))
    del head.attribute[:]
    head.attribute.extend([helper.make_attribute("alpha", 2.0), helper.make_attribute("beta", 0.25)])
    path = tmp_path / "gemm.onnx"
    onnx.save(src, str(path))
    graph = lower_to_ir(load_onnx(path))
    x = _inputs(2, seed=5)
    got = np.stack([run_float(graph, xi)[0] for xi in x])
    np.testing.assert_allclose(got, _onnxruntime(path, x), rtol=1e-4, atol=1e-4)


def test_symbolic_batch_becomes_one_and_other_dynamic_sizes_are_refused(tmp_path):
    m = onnx.load(str(model_path("onnx_hydra_legacy_norm")))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    g = _load(m, tmp_path, "sym.onnx")
    assert g.tensor(g.inputs[0]).shape == (1, 3, 16, 16)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    with pytest.raises(FrontendError, match=r"batch 2; hydra-edge compiles batch-1"):
        _load(m, tmp_path, "b2.onnx")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(FrontendError, match=r"dynamic size in dimension 2 \(height\)"):
        _load(m, tmp_path, "h.onnx")


def test_external_data_only_beside_the_file(tmp_path):
    m = onnx.load(str(model_path("onnx_hydra_legacy_norm")))
    pos_embed = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "pos_embed"))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.weights", size_threshold=0)
    g = load_onnx(tmp_path / "ext.onnx")
    assert np.array_equal(g.tensor("pos_embed").data, pos_embed)
    (tmp_path / "sub").mkdir()
    moved = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    for t in moved.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../ext.weights"
    onnx.save(moved, str(tmp_path / "sub" / "moved.onnx"))
    with pytest.raises(FrontendError, match=r"external file '\.\./ext\.weights', which is not a file beside"):
        load_onnx(tmp_path / "sub" / "moved.onnx")
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(FrontendError, match="not a file beside the model"):
        load_onnx(tmp_path / "ext.onnx")


# -- malformed files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"is empty"),
        (b"\xff\xff\xff\xff\xff", r"is not an ONNX model \(its protobuf does not parse: DecodeError"),
        (b"PK\x03\x04 not really a zip", r"is a zip archive \(a \.pt2 or TorchScript file\?\)"),
        (b"\x1c\x00\x00\x00TFL3\x00\x00", r"is a TFLite flatbuffer, not an ONNX model"),
        (b"hello, I am a text file\n", r"not an ONNX model|holds no ONNX graph"),
        (b"\x08\x07", r"holds no ONNX graph"),  # a valid ModelProto (ir_version 7) without a graph
    ],
)
def test_malformed_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(FrontendError, match=message):
        load_onnx(path)
    with pytest.raises(FrontendError):  # and through the driver's dispatch
        driver.load_model(path)


def test_missing_file_directory_truncated_and_renamed_pt2(tmp_path, example_pt2):
    with pytest.raises(FrontendError, match="no such file"):
        load_onnx(tmp_path / "nothing.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(FrontendError, match="is a directory"):
        load_onnx(tmp_path / "dir.onnx")
    data = model_path("onnx_hydra_legacy_norm").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(FrontendError, match="cut.onnx"):
        load_onnx(tmp_path / "cut.onnx")
    (tmp_path / "renamed.onnx").write_bytes(example_pt2.read_bytes())
    with pytest.raises(FrontendError, match="zip archive"):
        load_onnx(tmp_path / "renamed.onnx")


FUZZ_ATTEMPTS = 300


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.choice(("flip", "bit", "head", "truncate", "zero"))
    if kind == "flip":
        for _ in range(rng.randint(1, 20)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == "bit":
        j = rng.randrange(len(out))
        out[j] ^= 1 << rng.randrange(8)
    elif kind == "head":  # the graph's structure comes before the weights
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(max(1, len(out) // 5))] = rng.randrange(256)
    elif kind == "truncate":
        out = out[: rng.randrange(len(out))]
    else:
        a = rng.randrange(len(out))
        b = min(len(out), a + rng.randint(1, 4096))
        out[a:b] = bytes(b - a)
    return bytes(out)


def test_fuzzed_files_give_a_graph_or_a_frontend_error(tmp_path):
    """Seeded random corruptions of the committed files: every outcome is a Graph or a FrontendError."""
    rng = random.Random(20261124)
    sources = [model_path(n).read_bytes() for n in sorted(ATTENTION)]
    outcomes = {"graph": 0, "error": 0}
    path = tmp_path / "fuzzed.onnx"
    for attempt in range(FUZZ_ATTEMPTS):
        data = _corrupt(rng.choice(sources), rng)
        assert len(data) <= max(len(s) for s in sources)  # each attempt is bounded by a small file
        path.write_bytes(data)
        try:
            graph = load_onnx(path)
        except FrontendError as exc:
            assert str(exc).startswith(str(path)), (attempt, str(exc))
            outcomes["error"] += 1
        else:
            graph.validate()
            outcomes["graph"] += 1
    assert outcomes["error"] > FUZZ_ATTEMPTS // 4 and outcomes["graph"] > 0, outcomes


def test_shape_arithmetic_folds_and_a_huge_range_is_refused_before_it_is_made(tmp_path):
    """Mod (nn.MultiheadAttention's head arithmetic) and Range (Hugging Face's mask) fold into constants; a Range
    whose length would be gigantic is refused by its size, computed from start, limit and delta first."""
    ints = lambda v: np.asarray(v, np.int64)  # noqa: E731
    nodes = [
        helper.make_node("Mod", ["seven", "four"], ["three"], fmod=0),
        helper.make_node("Range", ["zero", "three", "one"], ["r"]),  # [0, 1, 2]
        helper.make_node("Concat", ["one", "four", "eight"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [("seven", ints(7)), ("four", ints([4])), ("zero", ints(0)), ("one", ints([1])), ("eight", ints([8]))]
    graph = _load(_model(nodes, inits), tmp_path)
    assert [n.op for n in graph.nodes] == ["reshape"]
    huge = [helper.make_node("Range", ["zero", "big", "one1"], ["r"]), helper.make_node("Identity", ["x"], ["y"])]
    with pytest.raises(FrontendError, match="would make a constant of shape"):
        _load(_model(huge, [("zero", ints(0)), ("big", ints(10**12)), ("one1", ints(1))]), tmp_path)
