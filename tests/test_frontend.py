"""Frontends: .pt2 and nn.Module to an aten-level Graph, and clear errors for files that are not .pt2."""

from __future__ import annotations

import io
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra_edge.frontend.errors import FrontendError
from hydra_edge.frontend.module import from_module
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig, export_pt2
from torch import nn

torch.set_num_threads(1)

CFG = HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=1, mlp_ratio=2.0, num_classes=5)


def _model(cfg: HydraViTConfig = CFG, seed: int = 0) -> HydraViT:
    torch.manual_seed(seed)
    return HydraViT(cfg).eval()


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    export_pt2(_model(), str(path))
    return path


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


# -- reading a good file ------------------------------------------------------


def test_load_pt2_aten_graph(pt2):
    g = load_pt2(pt2)
    g.validate()
    assert g.meta == {"source_file": str(pt2), "frontend": "pt2"}
    assert len(g.inputs) == 1 and g.tensor(g.inputs[0]).shape == (1, 3, 16, 16)
    assert [g.tensor(o).shape for o in g.outputs] == [(1, 5)]
    counts = Counter(_ops(g))
    assert counts["conv2d"] == 1 and counts["linear"] == 7 and counts["layer_norm"] == 3
    assert counts["linalg_vector_norm"] == 2 and counts["div"] == 2 and counts["sum"] == 1
    # Batch kept; attrs by schema name, defaults filled in.
    conv = next(n for n in g.nodes if n.op == "conv2d")
    assert conv.attrs == {"stride": [8, 8], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
    ln = next(n for n in g.nodes if n.op == "layer_norm")
    assert ln.attrs["eps"] == pytest.approx(1e-5) and ln.attrs["normalized_shape"] == [12]
    assert next(n for n in g.nodes if n.op == "gelu").attrs["approximate"] == "none"
    # Named by module path; the user's line, not torch's: nn.Linear's own frame is skipped.
    linear = next(n for n in g.nodes if n.op == "linear")
    assert linear.name == "blocks.0.attn.q"
    # the user's line, its path relative to the working folder (or from the package down when installed)
    assert linear.source.startswith("blocks.0.attn.q: linear (") and "hydra_edge/models/hydra_vit.py:" in linear.source


def test_constants_are_the_weights(pt2):
    model = _model()
    g = load_pt2(pt2)
    consts = {t.name: t for t in g.constants()}
    assert all(t.dtype == "float32" and t.data.dtype == np.float32 for t in consts.values())
    assert sum(t.numel for t in consts.values()) == sum(p.numel() for p in model.parameters())
    np.testing.assert_array_equal(consts["p_pos_embed"].data, model.pos_embed.detach().numpy())
    np.testing.assert_array_equal(consts["p_head_weight"].data, model.head.weight.detach().numpy())


def test_from_module_matches_pt2(pt2):
    model = _model().train()
    g = from_module(model, torch.zeros(1, 3, 16, 16))
    assert model.training, "from_module must leave the module's mode as it found it"
    assert g.meta["frontend"] == "module"
    assert _ops(g) == _ops(load_pt2(pt2))


def test_phi_spellings_in_aten():
    """x / x.norm(...) and F.normalize export as different aten chains."""
    norm = from_module(_model(), torch.zeros(1, 3, 16, 16))
    normalize = from_module(_model(HydraViTConfig(**{**CFG.to_dict(), "phi_style": "normalize"})), torch.zeros(1, 3, 16, 16))
    assert "clamp_min" not in _ops(norm) and "expand" not in _ops(norm)
    ops = _ops(normalize)
    i = ops.index("linalg_vector_norm")
    assert ops[i : i + 4] == ["linalg_vector_norm", "clamp_min", "expand", "div"]
    clamp = normalize.nodes[i + 1]
    assert clamp.attrs["min"] == pytest.approx(1e-12)


def test_dynamic_batch_is_fixed_to_one(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=32)
    program = torch.export.export(_model(), (torch.zeros(2, 3, 16, 16),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, tmp_path / "dyn.pt2")
    g = load_pt2(tmp_path / "dyn.pt2")
    assert g.tensor(g.inputs[0]).shape == (1, 3, 16, 16)
    assert all(t.shape[0] == 1 for t in g.activations())
    assert not any(n.op == "sym_size" for n in g.nodes)  # folded into attrs


# -- refusing bad inputs ----------------------------------------------------------


def _refused(path, *words: str) -> str:
    with pytest.raises(FrontendError) as info:
        load_pt2(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert path.name in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.pt2", "no such file")


def test_directory_and_empty_file(tmp_path):
    (tmp_path / "dir.pt2").mkdir()
    _refused(tmp_path / "dir.pt2", "directory")
    (tmp_path / "empty.pt2").write_bytes(b"")
    _refused(tmp_path / "empty.pt2", "empty")


def test_random_bytes(tmp_path):
    f = tmp_path / "junk.pt2"
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(f, "not a torch.export archive", "torch.export.save")


def test_truncated_pt2(pt2, tmp_path):
    data = pt2.read_bytes()
    f = tmp_path / "truncated.pt2"
    f.write_bytes(data[: len(data) // 2])
    _refused(f, "truncated")


def test_state_dict(tmp_path):
    f = tmp_path / "weights.pt2"
    torch.save(_model().state_dict(), f)
    msg = _refused(f, "state_dict (weights only, no graph)", "torch.export.export(model, (example,))")
    assert "torch.export.save(program, 'model.pt2')" in msg


def test_legacy_state_dict(tmp_path):
    f = tmp_path / "old.pt"
    torch.save(_model().state_dict(), f, _use_new_zipfile_serialization=False)
    _refused(f, "state_dict")


def test_pickled_module(tmp_path):
    f = tmp_path / "module.pt"
    torch.save(_model(), f)
    _refused(f, "pickle", "not loaded", "torch.export.export")


class _Evil:
    """Unpickling this would create a file: the frontend must never do it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.pt2"
    torch.save({"model": _Evil(str(marker))}, f)
    _refused(f, "pickle")
    assert not marker.exists()


def test_torchscript(tmp_path):
    f = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2)), str(f))
    _refused(f, "TorchScript")


def test_zip_that_is_not_an_export(tmp_path):
    f = tmp_path / "other.pt2"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("hello.txt", "hi")
    _refused(f, "not a torch.export archive")


class _TwoInputs(nn.Module):
    def forward(self, a, b):
        return a + b


class _Flat(nn.Module):
    def forward(self, x):
        return F.relu(x)


@pytest.mark.parametrize(
    "model, example, words",
    [
        (_Flat(), torch.zeros(2, 3, 8, 8), "batch 2"),
        (_Flat(), torch.zeros(()), "float32 tensor [1, C, H, W]"),
        (_Flat(), torch.zeros(1, 3, 8, 8, dtype=torch.float64), "float64"),
    ],
)
def test_from_module_bad_example(model, example, words):
    with pytest.raises(FrontendError, match=words.replace("[", r"\[").replace("]", r"\]")):
        from_module(model, example)


def test_program_with_two_inputs(tmp_path):
    program = torch.export.export(_TwoInputs(), (torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    f = tmp_path / "two.pt2"
    f.write_bytes(buf.getvalue())
    _refused(f, "2 inputs", "exactly one")
