"""ViTs as timm, torchvision, Hugging Face and the Hydra paper write them compile (issue 17).

Built from the libraries themselves (tests/library_models.py: small configs, seeded weights), exported
the ways users export: every definition through .pt2, and through both ONNX exporters where their graphs
differ (Split, Slice, Mod, IsNaN, a qkv bias added after the MatMul). For each: the lowered float graph
computes what the torch module computes, the int8 build is bit-exact with the reference, and its logits stay
close to the float model's. benchmarks/library_models.py gives the full table after a short fine-tune.
"""

from __future__ import annotations

import warnings
from collections import Counter
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from c_build import have_compiler
from hydra_edge import driver
from hydra_edge.boards import load_board
from hydra_edge.build_manifest import TEST_VECTORS
from hydra_edge.ops.token_loop import body_nodes
from hydra_edge.reference.float_interp import run_float
from hydra_edge.validate.accuracy import int8_outputs
from hydra_edge.validate.bitexact import validate_build

import library_models as lm

_MISSING = [lib for lib in ("timm", "torchvision", "transformers", "onnxscript") if find_spec(lib) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"{_MISSING} missing: they are in the test extras, "
                                                       "pip install -e '.[test]'")

ALL = tuple(lm.VITS)
# The ONNX graphs that differ from the .pt2 path: timm's Split (legacy) and bias-after-MatMul (dynamo),
# torchvision's MultiheadAttention (Mod in the legacy shape arithmetic), HF sdpa's IsNaN guard (dynamo),
# the Hydra paper's chunk as Slice (legacy), DeiT's two tokens and averaged heads.
ONNX_CASES = [("timm_vit_token", "onnx_legacy"), ("timm_vit_token", "onnx_dynamo"),
              ("torchvision_vit", "onnx_legacy"), ("torchvision_vit", "onnx_dynamo"), ("hf_vit_sdpa", "onnx_dynamo"),
              ("hydra_paper", "onnx_legacy"), ("deit_tiny_distilled", "onnx_dynamo")]


# int8 logits against float, relative L2. Seeded untrained weights give small logits, so the error is larger
# than a trained model's (benchmarks/library_models.py: about 0.04 after a short fine-tune); unrelated logits
# would give about 1.4. The float graph is checked against torch to 1e-3 separately.
MAX_REL_L2 = 0.5


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, lm.IMAGE, lm.IMAGE)).astype(np.float32)


def _lowered(name: str, how: str, folder):
    model = lm.build(name)
    path = folder / f"model{'.pt2' if how == 'pt2' else '.onnx'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation chatter
        lm.export(model, how, path)
    return model, driver.lower_to_ir(driver.load_model(path))


def _float_matches(model, graph) -> None:
    x = _inputs(2)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    for i in range(len(x)):
        (got,) = run_float(graph, x[i])
        np.testing.assert_allclose(got.reshape(-1), want[i], rtol=1e-3, atol=1e-4)


def _compile_and_check(model, graph, folder, board: str = "host") -> float:
    """Compile, validate bit-exact on `board`; the int8 logits' relative L2 error against the float model."""
    calib = _inputs(16, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = driver.compile_graph(graph, load_board(board), folder / board, calib=calib, force=True)
    vectors = np.load(folder / board / TEST_VECTORS)
    check = validate_build(folder / board, result.graph, vectors.reshape(len(vectors), -1))
    assert check.ok, check.mismatches
    if board != "host":
        return float("nan")
    x = _inputs(8, seed=3)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = int8_outputs(folder / board, x).dequantized.reshape(want.shape)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_torchvision_imports_beside_the_cpu_torch():
    tv = lm.import_torchvision()
    assert hasattr(tv.models, "vision_transformer")


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
@pytest.mark.parametrize("name", ALL)
def test_every_library_vit_compiles_from_pt2(name, tmp_path):
    model, graph = _lowered(name, "pt2", tmp_path)
    ops = Counter(n.op for n in graph.nodes)
    hydra = name in ("hydra_paper", "timm_hydra")
    assert ops["hydra_attention" if hydra else "softmax_attention"] == lm.DEPTH
    assert ops["linear"] == lm.DEPTH * 6 + (2 if name == "deit_tiny_distilled" else 1)  # q, k, v split out
    tokens = graph.tensor(next(n for n in graph.nodes if n.op == "patch_embed").outputs[0]).shape[0]
    class_tokens = {"timm_vit_avg": 0, "timm_vit_avg_fcnorm": 0, "hydra_paper": 0, "timm_hydra": 0,
                    "deit_tiny_distilled": 2}.get(name, 1)
    assert tokens == (lm.IMAGE // lm.PATCH) ** 2 + class_tokens
    assert ops["select_token"] == min(class_tokens, 2)
    _float_matches(model, graph)
    assert _compile_and_check(model, graph, tmp_path) < MAX_REL_L2


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
@pytest.mark.parametrize("name,how", ONNX_CASES)
def test_onnx_exports_lower_to_what_pt2_does(name, how, tmp_path):
    model, graph = _lowered(name, how, tmp_path)
    _, from_pt2 = _lowered(name, "pt2", tmp_path)
    assert Counter(n.op for n in graph.nodes) == Counter(n.op for n in from_pt2.nodes)
    _float_matches(model, graph)
    assert _compile_and_check(model, graph, tmp_path) < MAX_REL_L2


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
def test_a_class_token_vit_is_bit_exact_on_the_cortex_m7(tmp_path):
    """The class token (patch_embed's prefix row) and x[:, 0] (select_token in the last token loop) on QEMU."""
    model, graph = _lowered("deit_tiny_distilled", "pt2", tmp_path)
    _compile_and_check(model, graph, tmp_path, board="stm32f746")


# -- CNNs and conv stems (issue 17 part 2) ------------------------------------------------------------
# what each CNN lowers to: convolutions (BatchNorm folded, ReLU / ReLU6 fused), residual adds, pools
CNN_OPS = {
    "resnet8": {"conv2d": 9, "add": 3, "activation": 3, "mean_pool": 1, "linear": 1},
    "mobilenetv2": {"conv2d": 17, "add": 3, "mean_pool": 1, "linear": 1},
    "cct": {"conv2d": 2, "max_pool2d": 2, "softmax_attention": 2, "mean_pool": 1},
    "lenet": {"conv2d": 3, "max_pool2d": 1, "avg_pool2d": 1, "activation": 2, "flatten": 1, "linear": 2},
}


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
@pytest.mark.parametrize("name", tuple(lm.CNNS))
def test_every_cnn_compiles_from_pt2(name, tmp_path):
    """BatchNorm folds into the convolutions and ReLU / ReLU6 into their clamps; bit-exact on the host."""
    model, graph = _lowered(name, "pt2", tmp_path)
    ops = Counter(n.op for n in graph.nodes)
    assert {op: ops[op] for op in CNN_OPS[name]} == CNN_OPS[name]
    _float_matches(model, graph)
    assert _compile_and_check(model, graph, tmp_path) < 0.1


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
@pytest.mark.parametrize("name,how", [("resnet8", "onnx_legacy"), ("mobilenetv2", "onnx_legacy"),
                                      ("cct", "onnx_legacy"), ("lenet", "onnx_legacy"),
                                      ("mobilenetv2", "onnx_dynamo")])
def test_onnx_cnns_lower_to_what_pt2_does(name, how, tmp_path):
    model, graph = _lowered(name, how, tmp_path)
    _, from_pt2 = _lowered(name, "pt2", tmp_path)
    assert Counter(n.op for n in graph.nodes) == Counter(n.op for n in from_pt2.nodes)
    _float_matches(model, graph)
    assert _compile_and_check(model, graph, tmp_path) < 0.1


def test_a_conv_tokenizer_vit_streams_its_transformer_blocks(tmp_path):
    """CCT: the tokenizer's convolutions and pools run whole before the token loops of the blocks."""
    model, graph = _lowered("cct", "pt2", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = driver.compile_graph(graph, load_board("host"), tmp_path / "b", calib=_inputs(4, seed=2),
                                      force=True)
    ops = [n.op for n in result.graph.nodes]
    assert ops[:4] == ["conv2d", "max_pool2d", "conv2d", "max_pool2d"]
    assert ops.count("token_loop") >= 2
    body = Counter(b.op for n in result.graph.nodes if n.op == "token_loop" for b in body_nodes(n))
    assert body["softmax_attention"] == 2 and body["linear"] >= 8  # both blocks, their projections and MLPs


def test_training_mode_batchnorm_is_refused(tmp_path):
    """A .pt2 of a model in training mode updates BatchNorm's running statistics: the frontend says so."""
    from hydra_edge.errors import HydraEdgeError

    model = lm.build("resnet8").train()
    path = tmp_path / "m.pt2"
    lm.export(model, "pt2", path)
    with pytest.raises(HydraEdgeError, match=r"model\.eval\(\)"):
        driver.lower_to_ir(driver.load_model(path))


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
def test_resnet8_is_bit_exact_on_the_cortex_m7(tmp_path):
    """conv2d (CHW image input, padding, strides, 1x1 shortcut), the residual adds and global pooling on QEMU."""
    model, graph = _lowered("resnet8", "pt2", tmp_path)
    _compile_and_check(model, graph, tmp_path, board="stm32f746")
