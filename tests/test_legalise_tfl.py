"""passes/legalise_tfl.py: an int8 .tflite's ops with a native twin become native ops, with TFLite Micro's bits.

The committed models (tests/models/tfl_*.tflite) and single-operator models (tfl_single_op.py) are legalised,
checked to hold native linear / add / mean_pool nodes where the pass says they map (and tfl_* nodes where it
says they do not), then run on the reference interpreter and, compiled, in C on the host: both must give
TFLM's bytes. test_tflite.py runs the same compiles on stm32f746 too, unchanged.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.boards import load_board
from hydra_edge.frontend.tflite import litert_rounding, load_tflite, tflite_from_bytes
from hydra_edge.ops import check_shapes, node_rounding, op_def
from hydra_edge.passes.legalise_tfl import legalise_tfl
from hydra_edge.quant.tabulate_tfl import tabulate_tfl
from hydra_edge.passes.lift_tfl_hydra import lift_tfl_hydra
from hydra_edge.reference.int_interp import run_int
from hydra_edge.targets import runner
from tfl_single_op import TensorSpec, run_tflm, single_op_model

MODELS_DIR = Path(__file__).resolve().parent / "models"
# model -> the native ops its legalised graph must hold (at least), and whether any tfl_* op may remain
NATIVE = {
    "tfl_tiny_mlp": ({"linear": 2, "mean_pool": 1}, False),
    "tfl_small_cnn": ({"linear": 2}, True),  # the FC and the 1x1 conv
    "tfl_hydra_vit": ({"linear": 13, "add": 5, "mean_pool": 1, "lut": 7}, True),
    "tfl_softmax_vit": ({"linear": 13, "add": 5, "mean_pool": 1, "lut": 7}, True),
}


def _inputs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    extremes = np.stack([np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)])
    return np.concatenate([extremes, rng.integers(-128, 128, (3, *shape)).astype(np.int8)])


def _tflm(model: bytes, xs: np.ndarray) -> np.ndarray:
    return np.stack([run_tflm(model, [x])[0].reshape(-1) for x in xs])


def _reference(graph, xs: np.ndarray) -> np.ndarray:
    return np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_models_legalise_to_native_ops_with_tflm_bits(name):
    path = MODELS_DIR / f"{name}.tflite"
    graph = lift_tfl_hydra(load_tflite(path))
    before = [n.op for n in graph.nodes]
    legal = tabulate_tfl(legalise_tfl(graph))  # as compile_prequantised does
    assert [n.op for n in graph.nodes] == before  # pure
    check_shapes(legal)
    ops = Counter(n.op for n in legal.nodes)
    want, tfl_left = NATIVE[name]
    assert all(ops[op] == count for op, count in want.items()), ops
    assert "tfl_fully_connected" not in ops
    assert any(op.startswith("tfl_") for op in ops) == tfl_left, ops
    xs = _inputs(graph.tensor(graph.inputs[0]).shape)
    np.testing.assert_array_equal(_reference(legal, xs), _tflm(path.read_bytes(), xs))


def test_tiny_mlp_compiles_without_tfl_kernels(tmp_path):
    path = MODELS_DIR / "tfl_tiny_mlp.tflite"
    res = driver.compile_model(path, "host", tmp_path / "build")
    ops = [s["op"] for n in res.graph.nodes for s in (n.attrs["body"] if n.op == "token_loop" else [vars(n)])]
    assert ops == ["linear", "mean_pool", "linear"]  # the first two in a token loop (schedule stream)
    model_c = (res.folder / "model.c").read_text()
    assert "hydra_tfl" not in model_c and not list((res.folder / "runtime" / "src").glob("tfl_*.c"))
    xs = _inputs(res.graph.tensor(res.graph.inputs[0]).shape, seed=3)
    got = runner.run(res.folder, xs.reshape(len(xs), -1)).reshape(len(xs), -1)
    np.testing.assert_array_equal(got, _tflm(path.read_bytes(), xs))


def test_litert_single_rounding_fully_connected_is_a_per_node_rounding():
    graph = legalise_tfl(litert_rounding(load_tflite(MODELS_DIR / "tfl_tiny_mlp.tflite")))
    assert {n.attrs["rounding"] for n in graph.nodes if n.op == "linear"} == {"single"}
    assert {n.attrs["rounding"] for n in graph.nodes if n.op == "mean_pool"} == {"double"}
    assert graph.meta["rounding"] == "double"


def _w(shape, seed):
    return np.random.default_rng(seed).integers(-127, 128, shape).astype(np.int8)


# name -> (op, inputs, outputs, options, the op after legalisation)
SINGLE = {
    "add_same_shape": ("ADD", [TensorSpec((1, 4, 6), 0.05, 3), TensorSpec((1, 4, 6), 0.02, -7)],
                       [TensorSpec((1, 4, 6), 0.06, 2)], {"fused_activation_function": "NONE"}, "add"),
    "add_broadcast": ("ADD", [TensorSpec((1, 4, 6), 0.05, 3), TensorSpec((1, 1, 6), 0.02, -7)],
                      [TensorSpec((1, 4, 6), 0.06, 2)], {"fused_activation_function": "NONE"}, "tfl_add"),
    "add_relu": ("ADD", [TensorSpec((1, 4, 6), 0.05, 3), TensorSpec((1, 4, 6), 0.02, -7)],
                 [TensorSpec((1, 4, 6), 0.06, 2)], {"fused_activation_function": "RELU"}, "tfl_add"),  # clamps at 2
    "sub": ("SUB", [TensorSpec((1, 4, 6), 0.05, 3), TensorSpec((1, 4, 6), 0.02, -7)],
            [TensorSpec((1, 4, 6), 0.06, 2)], {"fused_activation_function": "NONE"}, "tfl_sub"),
    "mean_over_tokens": ("MEAN", [TensorSpec((1, 5, 7), 0.05, 10), TensorSpec((1,), dtype="int32", data=np.array([1]))],
                         [TensorSpec((1, 7), 0.03, -4)], {"keep_dims": False}, "mean_pool"),
    "mean_over_features": ("MEAN", [TensorSpec((1, 5, 7), 0.05, 10),
                                    TensorSpec((1,), dtype="int32", data=np.array([-1]))],
                           [TensorSpec((1, 5), 0.05, 10)], {"keep_dims": False}, "tfl_mean"),
    "fc_relu6_per_tensor": ("FULLY_CONNECTED", [TensorSpec((3, 6), 0.05, 3),
                                                TensorSpec((4, 6), 0.02, 0, data=_w((4, 6), 1)),
                                                TensorSpec((4,), 0.001, 0, "int32",
                                                           np.array([300, -2000, 5, 900], np.int32))],
                            [TensorSpec((3, 4), 0.01, -100)], {"fused_activation_function": "RELU6"}, "linear"),
    "conv_1x1": ("CONV_2D", [TensorSpec((1, 3, 4, 6), 0.05, -9), TensorSpec((5, 1, 1, 6), 0.02, 0, data=_w((5, 1, 1, 6), 2)),
                             TensorSpec((5,), 0.001, 0, "int32", np.array([70, -900, 3, 400, -5], np.int32))],
                 [TensorSpec((1, 3, 4, 5), 0.03, 11)],
                 {"padding": "VALID", "stride_w": 1, "stride_h": 1, "fused_activation_function": "RELU"}, "linear"),
    "conv_1x1_stride_2": ("CONV_2D", [TensorSpec((1, 3, 4, 6), 0.05, -9),
                                      TensorSpec((5, 1, 1, 6), 0.02, 0, data=_w((5, 1, 1, 6), 2)),
                                      TensorSpec((5,), 0.001, 0, "int32", np.array([70, -900, 3, 400, -5], np.int32))],
                          [TensorSpec((1, 2, 2, 5), 0.03, 11)],
                          {"padding": "VALID", "stride_w": 2, "stride_h": 2, "fused_activation_function": "NONE"},
                          "tfl_conv_2d"),
}


@pytest.mark.parametrize("case", sorted(SINGLE))
def test_single_ops_legalise_only_where_the_bits_are_the_same(case, tmp_path):
    op, inputs, outputs, options, want = SINGLE[case]
    model = single_op_model(op, inputs, outputs, options)
    graph = legalise_tfl(tflite_from_bytes(model, f"{case}.tflite"))
    assert [n.op for n in graph.nodes] == [want]
    if want.startswith("tfl_"):  # left as it is: test_tflite.py and test_tfl_elementwise.py run those
        return
    if len(graph.inputs) == 2:  # a binary op alone has two model inputs: its reference kernel against TFLM
        rng = np.random.default_rng(len(case))
        for _ in range(4):
            a, b = (rng.integers(-128, 128, graph.tensor(n).shape).astype(np.int8) for n in graph.inputs)
            node = graph.nodes[0]
            got = op_def(node.op).int_ref(node, a, b, node_rounding(node, "double"))
            np.testing.assert_array_equal(got.reshape(-1), run_tflm(model, [a, b])[0].reshape(-1))
        return
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=len(case))
    expected = _tflm(model, xs)
    np.testing.assert_array_equal(_reference(graph, xs), expected)
    res = driver.compile_prequantised(graph, load_board("host"), tmp_path / "build")
    np.testing.assert_array_equal(runner.run(res.folder, xs.reshape(len(xs), -1)).reshape(len(xs), -1), expected)


# Unary ops whose output depends on the element alone: name -> (op, input, output, the op after legalisation)
UNARY = {
    "logistic": ("LOGISTIC", TensorSpec((1, 256), 0.07, 5), TensorSpec((1, 256), 1 / 256, -128), "lut"),
    "tanh": ("TANH", TensorSpec((1, 256), 0.03, -9), TensorSpec((1, 256), 1 / 128, 0), "lut"),
    "rsqrt": ("RSQRT", TensorSpec((1, 256), 0.01, -128), TensorSpec((1, 256), 0.05, -100), "lut"),
    "rsqrt_zero_point_inside": ("RSQRT", TensorSpec((1, 256), 0.01, -20), TensorSpec((1, 256), 0.05, -100),
                                "tfl_rsqrt"),  # TFLM fails inputs below -20, which a table cannot
    "requantize": ("QUANTIZE", TensorSpec((1, 256), 0.02, 7), TensorSpec((1, 256), 0.05, -3), "lut"),
}


@pytest.mark.parametrize("case", sorted(UNARY))
def test_unary_ops_become_tables_with_tflm_bytes_on_every_input(case, tmp_path):
    """quant/tabulate_tfl.py: each of the 256 int8 inputs once, the table (reference, and C on the host) gives
    TFLite Micro's byte."""
    op, x, y, want = UNARY[case]
    model = single_op_model(op, [x], [y], {})
    graph = tabulate_tfl(tflite_from_bytes(model, f"{case}.tflite"))
    assert [n.op for n in graph.nodes] == [want]
    if want != "lut":
        return
    assert graph.nodes[0].attrs["imported_op"] == f"tfl_{op.lower()}"
    every = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 256)
    expected = _tflm(model, every)
    np.testing.assert_array_equal(graph.tensor(graph.nodes[0].inputs[1]).data.reshape(1, -1), expected)
    np.testing.assert_array_equal(_reference(graph, every), expected)
    res = driver.compile_prequantised(graph, load_board("host"), tmp_path / "build")
    np.testing.assert_array_equal(runner.run(res.folder, every.reshape(1, -1)).reshape(1, -1), expected)
