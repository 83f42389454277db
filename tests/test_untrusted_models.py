""".pt2 archives built the way an attacker would: none of them may run code unless --trust-pickle.

torch.export.load unpickles weights and constants marked use_pickle, custom and
opaque objects, and sample inputs (retrying with weights_only=False), and hands
symbolic-shape strings to sympy.sympify (eval). Each test plants a payload that
would create a marker file, and checks that `inspect` and `compile` refuse the
file with one error line and that the marker never appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import Counter

import pytest
import torch
from cli_helpers import assert_clean_error, invoke
from hydra_edge.frontend.errors import FrontendError
from hydra_edge.frontend.pt2 import check_untrusted, load_pt2
from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig, export_pt2

torch.set_num_threads(1)

CFG = HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=1, mlp_ratio=2.0, num_classes=5)


class _Touch:
    """A pickle whose loading creates a file: what an attacker's payload does, harmlessly."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker) -> bytes:
    return pickle.dumps(_Touch(str(marker)), protocol=2)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    torch.manual_seed(0)
    export_pt2(HydraViT(CFG).eval(), str(path))
    return path


def _rewrite(src, dst, edit=None, extra: dict[str, bytes] | None = None):
    """Copy the archive member by member; edit(rel, data) -> data changes members; extra adds some."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            data = zin.read(info.filename)
            if edit is not None:
                data = edit(rel, data)
            zout.writestr(info.filename, data)
        for rel, data in (extra or {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def _edit_json(rel_wanted, change):
    def edit(rel, data):
        if rel != rel_wanted:
            return data
        tree = json.loads(data)
        change(tree)
        return json.dumps(tree).encode()

    return edit


def _first_weight(tree):
    fqn = next(iter(tree["config"]))
    return fqn, tree["config"][fqn]


WEIGHTS_CONFIG = "data/weights/model_weights_config.json"


def _first_weight_of(path):
    """(fqn, file name) of the archive's first weight."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(WEIGHTS_CONFIG))
        fqn, meta = _first_weight(json.loads(z.read(name)))
    return fqn, meta["path_name"]


def _pickle_first_weight(tree):
    _first_weight(tree)[1]["use_pickle"] = True


def _assert_refused(path, marker, *fragments):
    for args in (("inspect", path), ("compile", path, "-o", path.parent / "build")):
        result = invoke(*args)
        text = assert_clean_error(result, str(path), "--trust-pickle", *fragments)
        assert "internal error" not in text
        assert not os.path.exists(marker), f"{args[0]} ran code from the file"
    with pytest.raises(FrontendError):
        check_untrusted(path)


def test_good_archive_passes_the_check(good):
    check_untrusted(good)
    load_pt2(good)


def test_sample_inputs_payload(good, tmp_path):
    marker = tmp_path / "ran"
    bad = _rewrite(good, tmp_path / "evil.pt2",
                   edit=lambda rel, d: _payload(marker) if rel == "data/sample_inputs/model.pt" else d)
    _assert_refused(bad, marker, "data/sample_inputs/model.pt")


def test_weight_marked_use_pickle(good, tmp_path):
    marker = tmp_path / "ran"
    _, file = _first_weight_of(good)
    edit_cfg = _edit_json(WEIGHTS_CONFIG, _pickle_first_weight)

    def edit(rel, data):
        data = edit_cfg(rel, data)
        return _payload(marker) if rel == f"data/weights/{file}" else data

    bad = _rewrite(good, tmp_path / "evil.pt2", edit)
    _assert_refused(bad, marker, "use_pickle", "pos_embed")


def test_use_pickle_not_plainly_false(good, tmp_path):
    def change(tree):
        _first_weight(tree)[1]["use_pickle"] = "false"  # truthy for torch's `if payload_meta.use_pickle`

    bad = _rewrite(good, tmp_path / "odd.pt2", _edit_json(WEIGHTS_CONFIG, change))
    with pytest.raises(FrontendError, match="use_pickle"):
        load_pt2(bad)


@pytest.mark.parametrize("prefix, what", [("opaque_obj_", "opaque Python object"),
                                          ("custom_obj_", "custom (torchbind) object")])
def test_constant_objects(good, tmp_path, prefix, what):
    marker = tmp_path / "ran"

    def change(tree):
        tree["config"]["evil"] = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                  "tensor_meta": None}

    bad = _rewrite(good, tmp_path / "evil.pt2", _edit_json("data/constants/model_constants_config.json", change),
                   extra={f"data/constants/{prefix}0": _payload(marker)})
    _assert_refused(bad, marker, what, "'evil'")


def test_sympy_expression(good, tmp_path):
    marker = tmp_path / "ran"
    expr = {"as_expr": {"expr_str": f"__import__('builtins').open({str(marker)!r}, 'w')", "hint": {"as_int": 12}}}

    def edit(rel, data):
        if rel != "models/model.json":
            return data
        return data.decode().replace('{"as_int": 12}', json.dumps(expr), 1).encode()

    bad = _rewrite(good, tmp_path / "evil.pt2", edit)
    with zipfile.ZipFile(bad) as z:
        assert any(b"__import__" in z.read(n) for n in z.namelist() if n.endswith("models/model.json"))
    _assert_refused(bad, marker, "sympy", "__import__")


def test_aoti_library_and_legacy_weights(good, tmp_path):
    bad = _rewrite(good, tmp_path / "aoti.pt2", extra={"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(FrontendError, match="compiled code"):
        load_pt2(bad)
    bad = _rewrite(good, tmp_path / "legacy.pt2", extra={"data/weights/model.pt": _payload(tmp_path / "ran")})
    with pytest.raises(FrontendError, match="legacy"):
        load_pt2(bad)
    assert not (tmp_path / "ran").exists()


def test_duplicate_member(good, tmp_path):
    with pytest.warns(UserWarning):
        bad = _rewrite(good, tmp_path / "dup.pt2", extra={"data/sample_inputs/model.pt": _payload(tmp_path / "r")})
    with pytest.raises(FrontendError, match="twice"):
        load_pt2(bad)
    assert not (tmp_path / "r").exists()


def test_pickled_weight_loads_only_when_trusted(good, tmp_path):
    """A legitimate use_pickle weight (a torch.save'd tensor): refused, then loaded with --trust-pickle."""
    fqn, file = _first_weight_of(good)
    edit_cfg = _edit_json(WEIGHTS_CONFIG, _pickle_first_weight)
    state = torch.export.load(str(good)).state_dict

    def edit(rel, data):
        data = edit_cfg(rel, data)
        if rel == f"data/weights/{file}":
            buf = io.BytesIO()
            torch.save(torch.nn.Parameter(state[fqn].detach().clone()), buf)
            return buf.getvalue()
        return data

    pickled = _rewrite(good, tmp_path / "pickled.pt2", edit)
    assert_clean_error(invoke("inspect", pickled), "use_pickle", "--trust-pickle")
    result = invoke("inspect", pickled, "--trust-pickle")
    assert result.exit_code == 0, result.output
    ops = Counter(n.op for n in load_pt2(pickled, trust_pickle=True).nodes)
    assert ops == Counter(n.op for n in load_pt2(good).nodes)


def test_dynamic_batch_symbols_pass(tmp_path):
    """Symbols torch writes for a dynamic batch are plain arithmetic: not refused."""
    torch.manual_seed(0)
    model = HydraViT(CFG).eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(model, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "dyn.pt2")
    text = zipfile.ZipFile(tmp_path / "dyn.pt2").read("dyn/models/model.json").decode()
    assert "expr_str" in text
    check_untrusted(tmp_path / "dyn.pt2")
