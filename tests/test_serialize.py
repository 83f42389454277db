"""graph.json + constants.npz: an exact round trip, and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hydra_edge.ir.graph import Graph, Node, QuantParams, Tensor
from hydra_edge.ir.serialize import (
    SerializeError,
    decode_value,
    encode_value,
    load_graph,
    save_graph,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def assert_same(a, b, where="value"):
    """Equal values of the same types, numpy dtypes and shapes included (NaN equals NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    else:
        assert a == b, where


def assert_same_graph(g: Graph, h: Graph) -> None:
    assert g.inputs == h.inputs and g.outputs == h.outputs
    assert_same(g.meta, h.meta, "meta")
    assert list(g.tensors) == list(h.tensors)
    for name, t in g.tensors.items():
        u = h.tensors[name]
        assert (t.name, t.shape, t.dtype) == (u.name, u.shape, u.dtype)
        assert type(u.shape) is tuple and all(type(s) is int for s in u.shape)
        assert_same(t.data, u.data, f"{name}.data")
        if t.quant is None:
            assert u.quant is None
        else:
            assert_same(t.quant.scale, u.quant.scale, f"{name}.scale")
            assert_same(t.quant.zero_point, u.quant.zero_point, f"{name}.zero_point")
            assert t.quant.axis == u.quant.axis
    assert len(g.nodes) == len(h.nodes)
    for n, m in zip(g.nodes, h.nodes):
        assert (n.name, n.op, n.inputs, n.outputs, n.source) == (m.name, m.op, m.inputs, m.outputs, m.source)
        assert_same(n.attrs, m.attrs, f"{n.name}.attrs")


def quantised_graph() -> Graph:
    rng = np.random.default_rng(1)
    g = Graph(meta={"rounding": "single", "model": {"depth": 2, "ratio": 2.5}, "calib": (1, 2.0, None)})
    g.add_tensor(Tensor("x", (5, 8), "int8", QuantParams.per_tensor(0.0123456789012345, -128)))
    g.add_constant("blocks.0/fc1.weight", rng.integers(-127, 128, (6, 8)).astype(np.int8),
                   QuantParams(rng.random(6) / 127, np.zeros(6, np.int32), axis=0))
    g.add_constant("fc1 bias", rng.integers(-(2**31), 2**31 - 1, 6).astype(np.int32))
    g.tensors["ln.beta"] = Tensor("ln.beta", (6,), "int64", None, np.array([-(2**63), 2**63 - 1, 0, 1, -1, 2**40]))
    g.add_constant("f", np.array([[np.nan, -0.0], [np.inf, 1e-45]], np.float32))
    g.add_tensor(Tensor("y", (5, 6), "int8", QuantParams.per_tensor(0.5, 127)))
    g.add_node(
        Node(
            "fc1",
            "linear",
            ["x", "blocks.0/fc1.weight", "fc1 bias"],
            ["y"],
            {
                "multiplier": np.array([2**31 - 1, 2**30, 0, 1, 5, 7], np.int32),
                "shift": np.array([-31, 0, 30, -1, -5, -7], np.int32),
                "out_zp": np.int32(127),
                "eps_q": np.int64(2**62),
                "scale": np.float64(0.1),
                "ratio": 1 / 3,
                "nan": float("nan"),
                "neg_zero": -0.0,
                "flag": True,
                "np_flag": np.bool_(False),
                "none": None,
                "approximate": "tanh",
                "pair": (1, (2.5, "a")),
                "lst": [np.int8(-128), [1, 2]],
                "nested": {"__tuple__": 1, 3: "int key", (1, 2): [0.5]},
                "empty": np.zeros((0, 3), np.float32),
                "scalar_array": np.array(3.25),
            },
            source="model.blocks[0].fc1 (hydra_vit.py:88)",
        )
    )
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_round_trip_is_exact(tmp_path):
    g = quantised_graph()
    save_graph(g, tmp_path / "build")
    assert (tmp_path / "build" / "graph.json").is_file() and (tmp_path / "build" / "constants.npz").is_file()
    h = load_graph(tmp_path / "build")
    assert_same_graph(g, h)
    # A second round trip gives the same files.
    save_graph(h, tmp_path / "again")
    assert (tmp_path / "build" / "graph.json").read_text() == (tmp_path / "again" / "graph.json").read_text()


def test_graph_json_is_plain_json(tmp_path):
    save_graph(quantised_graph(), tmp_path)
    doc = json.loads((tmp_path / "graph.json").read_text())  # strict JSON: no NaN literals
    assert doc["format"] == "hydra-edge-graph"
    assert all(set(t) == {"name", "shape", "dtype", "quant", "constant"} for t in doc["tensors"])  # data: npz only


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.float32, np.float64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    )
)
def test_any_array_attr_round_trips(a):
    back = decode_value(json.loads(json.dumps(encode_value({"a": a, "s": a.reshape(-1)[:1]}), allow_nan=False)))
    assert_same(back["a"], a)


def test_missing_files_name_the_folder(tmp_path):
    with pytest.raises(SerializeError, match=f"{tmp_path}.*not a hydra-edge build.*graph.json"):
        load_graph(tmp_path)
    (tmp_path / "graph.json").write_text('{"hello": 1}')
    (tmp_path / "constants.npz").write_bytes(b"")
    with pytest.raises(SerializeError, match="not a hydra-edge build"):
        load_graph(tmp_path)
    (tmp_path / "graph.json").write_text("not json")
    with pytest.raises(SerializeError, match="not valid JSON"):
        load_graph(tmp_path)


def test_unsupported_values_are_refused(tmp_path):
    g = quantised_graph()
    g.nodes[0].attrs["bad"] = object()
    with pytest.raises(SerializeError, match="fc1.*bad.*object"):
        save_graph(g, tmp_path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_nan_keeps_its_sign(dtype):
    """float.hex() writes every NaN as 'nan': the sign bit needs its own care (found by hypothesis)."""
    for a in (np.array(-np.nan, dtype), np.array([np.nan, -np.nan], dtype)):
        back = decode_value(json.loads(json.dumps(encode_value({"a": a}))))["a"]
        assert_same(back, a)
    back = decode_value(json.loads(json.dumps(encode_value(-math.nan))))
    assert math.isnan(back) and math.copysign(1.0, back) < 0


def test_a_graph_without_constants_round_trips(tmp_path):
    """A one-op .tflite (LOGISTIC) has no constant: its constants.npz is an empty archive, not a damaged one."""
    g = Graph(inputs=["x"], outputs=["y"])
    g.add_tensor(Tensor("x", (1, 4), "int8"))
    g.add_tensor(Tensor("y", (1, 4), "int8"))
    g.add_node(Node("sig", "lut", ["x"], ["y"], {"table": np.arange(-128, 128, dtype=np.int8)}))
    loaded = load_graph(save_graph(g, tmp_path / "b"))
    assert [n.op for n in loaded.nodes] == ["lut"] and not any(t.data is not None for t in loaded.tensors.values())


def test_a_scalar_constant_stored_with_one_element_loads(tmp_path):
    """.tflite scalars are declared with shape () and stored as (1,): the same values, so not a mismatch."""
    g = Graph(inputs=["x"], outputs=["y"])
    g.add_tensor(Tensor("x", (1, 4), "int8"))
    g.add_tensor(Tensor("eps", (), "int32", data=np.array([7], dtype=np.int32)))
    g.add_tensor(Tensor("y", (1, 4), "int8"))
    g.add_node(Node("add", "add", ["x", "eps"], ["y"]))
    loaded = load_graph(save_graph(g, tmp_path / "b"))
    assert loaded.tensor("eps").data.tolist() == [7]
