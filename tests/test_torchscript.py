"""TorchScript archives and torch.save pickles: loaded, compiled and validated bit-exact, or refused clearly.

The committed models (tests/models/ts_*.pt, made by `tests/models/make_models.py torchscript`) are read
as files from an earlier save; fresh scripted and traced modules check the conversion against torch.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_edge import driver
from hydra_edge.frontend import formats
from hydra_edge.frontend.errors import FrontendError
from hydra_edge.frontend.pickled import load_pickle
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.frontend.torchscript import (
    SHAPE_FILE,
    load_torchscript,
    traced_input_shapes,
)
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.reference.float_interp import run_float
from hydra_edge.validate.bitexact import validate_build
from model_zoo import calibration_inputs, export_model, make_model
from torch import nn
from cli_helpers import assert_clean_error, invoke

torch.set_num_threads(1)

MODELS = Path(__file__).resolve().parent / "models"
COMMITTED = {"ts_hydra_vit_scripted": MODELS / "ts_hydra_vit_scripted.pt",
             "ts_hydra_vit_traced": MODELS / "ts_hydra_vit_traced.pt"}
COMMITTED_CFG = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=2, mlp_ratio=2.0, num_classes=10)
CFG = HydraViTConfig(image_size=16, patch_size=8, embed_dim=12, depth=2, mlp_ratio=2.0, num_classes=5)
SHAPE = (3, 16, 16)


def _save(model: nn.Module, path: Path, how: str, extra: dict | None = None) -> Path:
    x = torch.zeros(1, *SHAPE)
    ts = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    torch.jit.save(ts, str(path), _extra_files=extra or {})
    return path


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def _float_matches(graph, reference, n: int = 3, seed: int = 0) -> None:
    """The lowered float graph computes what the torch callable computes."""
    lowered = lower_to_ir(graph)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.standard_normal((1, *SHAPE)).astype(np.float32)
        want = reference(torch.from_numpy(x)).detach().numpy()[0]
        got = run_float(lowered, x[0])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _random_int8(graph, n: int = 4, seed: int = 3) -> np.ndarray:
    shape = graph.tensor(graph.inputs[0]).shape
    x = np.random.default_rng(seed).integers(-128, 128, size=(n, *shape), dtype=np.int8)
    x[0], x[1] = -128, 127  # the extremes too
    return x


# -- fresh scripted and traced modules ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("phi_style", ["norm", "normalize"])
def test_scripted_and_traced_match_torch(how, phi_style, tmp_path):
    cfg = HydraViTConfig(**{**CFG.to_dict(), "phi_style": phi_style})
    model = make_model(cfg)
    path = _save(model, tmp_path / "m.pt", how)
    graph = load_torchscript(path, SHAPE if how == "script" else None)
    assert graph.meta == {"source_file": str(path), "frontend": "torchscript"}
    assert graph.tensor(graph.inputs[0]).shape == (1, *SHAPE)
    _float_matches(graph, model)
    # The same lowered graph as through torch.export: Hydra lifted, nothing left over.
    via_pt2 = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    assert _ops(lower_to_ir(graph)) == _ops(via_pt2)
    assert _ops(via_pt2).count("hydra_attention") == cfg.depth


def test_traced_inputs_give_the_shape(tmp_path):
    path = _save(make_model(CFG), tmp_path / "traced.pt", "trace")
    assert traced_input_shapes(path) == [(1, *SHAPE)]
    assert traced_input_shapes(_save(make_model(CFG), tmp_path / "scripted.pt", "script")) is None


def test_shape_from_the_extra_file_and_the_option(tmp_path):
    model = make_model(CFG)
    with_extra = _save(model, tmp_path / "with.pt", "script", {SHAPE_FILE: "3,16,16"})
    assert load_torchscript(with_extra).tensor("x_1").shape == (1, *SHAPE)
    bare = _save(model, tmp_path / "bare.pt", "script")
    with pytest.raises(FrontendError, match=r"bare.pt: a TorchScript archive records no input shape; pass --input-shape"):
        load_torchscript(bare)
    assert load_torchscript(bare, SHAPE).tensor("x_1").shape == (1, *SHAPE)
    bad = _save(model, tmp_path / "bad.pt", "script", {SHAPE_FILE: "three"})
    with pytest.raises(FrontendError, match=f"bad.pt: the archive's {SHAPE_FILE} is malformed"):
        load_torchscript(bad)


def test_wrong_input_shape_is_a_clear_error(tmp_path):
    path = _save(make_model(CFG), tmp_path / "m.pt", "script")
    with pytest.raises(FrontendError) as info:
        load_torchscript(path, (5, 16, 16))  # the conv wants 3 channels
    msg = str(info.value)
    assert "\n" not in msg and "m.pt" in msg and "[1, 5, 16, 16]" in msg and "from --input-shape" in msg
    assert "torch.export.save" in msg


class _TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def test_two_input_module_is_refused(tmp_path):
    path = tmp_path / "two.pt"
    torch.jit.save(torch.jit.script(_TwoInputs()), str(path))
    with pytest.raises(FrontendError, match="forward takes 2 inputs; hydra-edge needs exactly one"):
        load_torchscript(path, SHAPE)


# -- the committed models ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_model_matches_torch(name):
    path = COMMITTED[name]
    graph = driver.load_model(path)  # shape from the archive (extra file, or traced inputs)
    assert graph.meta["frontend"] == "torchscript"
    _float_matches(graph, torch.jit.load(str(path)))


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, x=calibration_inputs(COMMITTED_CFG))
    return path


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_model_bit_exact_on_host(name, calib, tmp_path):
    build = tmp_path / "build"
    result = invoke("compile", COMMITTED[name], "--calib", calib, "-o", build)
    assert result.exit_code == 0, result.output
    result = invoke("validate", build)
    assert result.exit_code == 0 and "BIT-EXACT" in result.output, result.output
    _, graph = driver.load_build(build)
    assert graph.meta["schedule"] == "stream"  # Hydra found: the blocks are fused
    check = validate_build(build, graph, _random_int8(graph))
    assert check.ok, check.mismatches


def test_committed_model_bit_exact_on_stm32(calib, tmp_path):
    result = driver.compile_model(COMMITTED["ts_hydra_vit_traced"], "stm32f746", tmp_path / "build", calib)
    x = np.concatenate([np.load(result.folder / driver.TEST_VECTORS), _random_int8(result.graph)])
    check = validate_build(result.folder, result.graph, x)
    assert check.ok, check.mismatches
    assert check.bytes_compared == len(x) * COMMITTED_CFG.num_classes


# -- damaged files ----------------------------------------------------------------------------------


def _load_error(path: Path, *words: str) -> str:
    with pytest.raises(FrontendError) as info:
        driver.load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_truncated_torchscript(tmp_path):
    data = COMMITTED["ts_hydra_vit_traced"].read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        f = tmp_path / f"cut{cut}.pt"
        f.write_bytes(data[:cut])
        _load_error(f, "damaged")


def test_corrupted_torchscript(tmp_path):
    src = COMMITTED["ts_hydra_vit_scripted"]
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    data = bytearray(src.read_bytes())
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    data[at] ^= 0xFF  # one flipped byte inside a member: its CRC no longer matches
    f = tmp_path / "flipped.pt"
    f.write_bytes(bytes(data))
    _load_error(f, "damaged")


def test_garbage_and_empty_pt(tmp_path):
    f = tmp_path / "junk.pt"
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _load_error(f, "neither a TorchScript archive")
    (tmp_path / "empty.pth").write_bytes(b"")
    _load_error(tmp_path / "empty.pth", "empty")


# -- pickles ----------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this creates a file: refused loads must never do it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_module_is_refused_without_the_flag(tmp_path):
    f = tmp_path / "module.pt"
    torch.save(make_model(CFG), f)
    msg = _load_error(f, "pickled Python object", "not loaded", "unpickling runs code from the file",
                      "--trust-pickle --module-class", "torch.export.save")
    assert "state_dict" not in msg


def test_evil_pickle_is_never_unpickled_without_the_flag(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.pt"
    torch.save({"model": _Evil(str(marker))}, f)
    _load_error(f, "not loaded")
    # --module-class alone is not trust.
    with pytest.raises(FrontendError, match="not loaded"):
        driver.load_model(f, driver.LoadOptions(SHAPE, trust_pickle=False, module_class="torch.nn:Linear"))
    assert_clean_error(invoke("compile", f, "--module-class", "torch.nn:Linear", "-o", tmp_path / "b"), "not loaded")
    legacy = tmp_path / "evil_legacy.pth"
    torch.save({"model": _Evil(str(marker))}, legacy, _use_new_zipfile_serialization=False)
    _load_error(legacy, "not loaded")
    assert not marker.exists()
    # The test pickle is a real threat: trusting it runs its code (so the checks above can fail).
    with pytest.raises(FrontendError):
        driver.load_model(f, driver.LoadOptions(SHAPE, trust_pickle=True, module_class="torch.nn:Linear"))
    assert marker.exists()


def test_state_dict_gets_the_export_message(tmp_path):
    for legacy in (False, True):
        f = tmp_path / f"weights{int(legacy)}.pth"
        torch.save(make_model(CFG).state_dict(), f, _use_new_zipfile_serialization=not legacy)
        _load_error(f, "a state_dict (weights only, no graph)", "torch.export.save", "torch.jit.save")
        # The flags change nothing for weights: there is no graph to trust.
        with pytest.raises(FrontendError, match="state_dict"):
            load_pickle(f, SHAPE, True, "hydra_edge.models.hydra_vit:HydraViT")


def test_trusted_pickle_loads_and_compiles(tmp_path, calib):
    model = make_model(CFG)
    f = tmp_path / "module.pt"
    torch.save(model, f)
    options = driver.LoadOptions(SHAPE, trust_pickle=True, module_class="hydra_edge.models.hydra_vit:HydraViT")
    graph = driver.load_model(f, options)
    assert graph.meta == {"source_file": str(f), "frontend": "pickle"}
    _float_matches(graph, model)
    build = tmp_path / "build"
    np.savez(tmp_path / "calib.npz", x=calibration_inputs(CFG))
    result = invoke("compile", f, "--trust-pickle", "--module-class", "hydra_edge.models.hydra_vit:HydraViT",
                    "--input-shape", "3,16,16", "--calib", tmp_path / "calib.npz", "-o", build)
    assert result.exit_code == 0, result.output
    result = invoke("validate", build)
    assert result.exit_code == 0 and "BIT-EXACT" in result.output, result.output


@pytest.mark.parametrize(
    "module_class, shape, words",
    [
        (None, SHAPE, "--trust-pickle needs --module-class"),
        ("hydra_edge.models.hydra_vit.HydraViT", SHAPE, "write it as pkg.module:ClassName"),
        ("hydra_edge.no_such_module:Net", SHAPE, "cannot import hydra_edge.no_such_module"),
        ("hydra_edge.models.hydra_vit:NoSuchClass", SHAPE, "has no NoSuchClass"),
        ("hydra_edge.models.hydra_vit:HydraViTConfig", SHAPE, "is not an nn.Module class"),
        ("torch.nn:Linear", SHAPE, "holds a HydraViT, not the torch.nn:Linear"),
        ("hydra_edge.models.hydra_vit:HydraViT", None, "pass --input-shape C,H,W"),
    ],
)
def test_trusted_pickle_needs_the_right_class_and_shape(module_class, shape, words, tmp_path):
    f = tmp_path / "module.pt"
    torch.save(make_model(CFG), f)
    with pytest.raises(FrontendError, match=words.replace(".", r"\.")):
        load_pickle(f, shape, True, module_class)


_NET_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    """A patch embedding, mean pool and head: a model a script might define in __main__."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.patch(x).flatten(2).transpose(1, 2).mean(dim=1))
'''


def test_class_pickled_from_a_script_is_found(tmp_path, monkeypatch):
    """torch.save(model) in a training script records __main__.Net: --module-class says where Net lives now."""
    (tmp_path / "hydra_ts_netmod.py").write_text(_NET_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import hydra_ts_netmod

    net = hydra_ts_netmod.Net().eval()
    f = tmp_path / "net.pt"
    with monkeypatch.context() as m:
        m.setattr(hydra_ts_netmod.Net, "__module__", "__main__")
        m.setattr(sys.modules["__main__"], "Net", hydra_ts_netmod.Net, raising=False)
        torch.save(net, f)
    assert b"__main__" in zipfile.ZipFile(f).read(f"{f.stem}/data.pkl")
    graph = load_pickle(f, SHAPE, True, "hydra_ts_netmod:Net")
    _float_matches(graph, net)


# -- the format dispatch ----------------------------------------------------------------------------


def test_sniff_by_content_then_suffix(tmp_path):
    assert formats.sniff(COMMITTED["ts_hydra_vit_traced"]) == formats.TORCHSCRIPT
    renamed = tmp_path / "model.bin"
    shutil.copy(COMMITTED["ts_hydra_vit_scripted"], renamed)
    assert formats.sniff(renamed) == formats.TORCHSCRIPT  # content wins over the name
    pt2 = export_model(CFG, tmp_path)
    assert formats.sniff(pt2) == formats.PT2
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt2")
    assert formats.sniff(tmp_path / "w.pt2") == formats.PICKLE
    tfl = tmp_path / "int8.model"
    shutil.copy(MODELS / "tfl_tiny_mlp.tflite", tfl)
    assert formats.sniff(tfl) == formats.TFLITE
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    assert formats.sniff(tmp_path / "m.onnx") == formats.ONNX  # no signature: the suffix decides


def test_unknown_format_lists_the_formats(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("hello")
    msg = _load_error(f, "unknown model format")
    for fmt in (".pt2", "TorchScript", ".onnx", ".tflite"):
        assert fmt in msg


def test_onnx_and_tflite_branches(tmp_path):
    """Dispatched to their frontends (imported lazily): a TFLite file under any name, junk .onnx refused."""
    tfl = tmp_path / "tiny.bin"
    shutil.copy(MODELS / "tfl_tiny_mlp.tflite", tfl)
    assert driver.load_model(tfl).meta["frontend"] == "tflite"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    with pytest.raises(FrontendError, match="junk.onnx"):
        driver.load_model(junk)


def test_input_shape_must_agree_with_a_pt2(tmp_path):
    pt2 = export_model(CFG, tmp_path)
    assert driver.load_model(pt2, driver.LoadOptions(input_shape=SHAPE)).tensor("x").shape == (1, *SHAPE)
    with pytest.raises(FrontendError, match=r"input is \[3, 16, 16\] .* --input-shape says \[3, 32, 32\]"):
        driver.load_model(pt2, driver.LoadOptions(input_shape=(3, 32, 32)))


# -- the command line -------------------------------------------------------------------------------


def test_cli_scripted_needs_and_takes_the_input_shape(tmp_path):
    path = _save(make_model(CFG), tmp_path / "scripted.pt", "script")
    assert_clean_error(invoke("inspect", path), "scripted.pt", "--input-shape")
    result = invoke("inspect", path, "--input-shape", "3,16,16")
    assert result.exit_code == 0, result.output
    assert "hydra_attention" in result.output and "patch_embed" in result.output
    result = invoke("inspect", path, "--input-shape", "3,a,16")
    assert result.exit_code == 2 and "Invalid value for '--input-shape'" in result.output


def test_cli_pickle_refused_and_help_says_the_risk(tmp_path):
    f = tmp_path / "module.pt"
    torch.save(make_model(CFG), f)
    assert_clean_error(invoke("compile", f, "-o", tmp_path / "b"), "module.pt", "--trust-pickle")
    assert not (tmp_path / "b").exists()
    help_text = " ".join(invoke("compile", "--help").output.split())
    assert "--trust-pickle" in help_text and "unpickling runs arbitrary code" in help_text
    assert "--module-class" in help_text and "--input-shape" in help_text


def test_a_zip_with_undecodable_member_names_is_a_frontend_error(tmp_path):
    """Found by benchmarks/fuzz_parsers.py: zipfile raises UnicodeDecodeError for a name flagged UTF-8."""
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/code/x.py", "pass")
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the central directory entry: flags at +8, name at +46
    data[central + 9] |= 0x08  # flags bit 11: the name is UTF-8
    data[central + 46] = 0xFF  # not UTF-8
    path.write_bytes(bytes(data))
    with pytest.raises(FrontendError, match="damaged zip"):
        driver.load_model(path)


def test_a_zip_whose_end_record_claims_several_disks_is_a_frontend_error(tmp_path):
    """Found by benchmarks/fuzz_parsers.py: zipfile.is_zipfile itself raises BadZipFile when a zip64 locator
    before the end record names more than one disk."""
    import struct

    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/code/x.py", "pass")
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 2)  # zip64 end locator: 2 disks
    path.write_bytes(bytes(data[:end]) + locator + bytes(data[end:]))
    with pytest.raises(zipfile.BadZipFile):
        zipfile.is_zipfile(path)  # what the fuzz run found escaping
    with pytest.raises(FrontendError, match="damaged"):
        driver.load_model(path)
