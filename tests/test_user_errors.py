"""Every user mistake is one clear line: a bad --input, a damaged build folder, a bad --timeout, a damaged
checkpoint or curve.json on resume. Exit 1 with one `error:` line naming the file (2 for usage errors), never
"internal error"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from hydra_edge.errors import HydraEdgeError
from hydra_edge.models.hydra_vit import HydraViTConfig
from model_zoo import calibration_inputs, export_model
from cli_helpers import invoke

CFG = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=1, mlp_ratio=2.0)
SHAPE = (3, 16, 16)


def assert_one_line(result: Result, *fragments: str, code: int = 1) -> str:
    """Exit `code`, the output one `error:` line that says each fragment; no traceback, no internal error."""
    text = result.output
    assert result.exit_code == code, text
    assert "internal error" not in text and "Traceback" not in text, text
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for f in fragments:
        assert f in text, text
    return lines[0]


def assert_last_line(result: Result, *fragments: str) -> str:
    """For commands that log progress first (train): exit 1, the last line the one error line."""
    text = result.output
    assert result.exit_code == 1, text
    assert "internal error" not in text and "Traceback" not in text, text
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and sum(ln.startswith("error") for ln in lines) == 1, text
    for f in fragments:
        assert f in lines[-1], text
    return lines[-1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("user_errors")
    pt2 = export_model(CFG, d)
    np.savez(d / "calib.npz", x=calibration_inputs(CFG))
    result = invoke("compile", pt2, "--board", "host", "--calib", d / "calib.npz", "-o", d / "build")
    assert result.exit_code == 0, result.output
    return d / "build"


@pytest.fixture
def build(compiled, tmp_path) -> Path:
    """A copy of the compiled build that a test may damage."""
    return Path(shutil.copytree(compiled, tmp_path / "build"))


# -- --input -------------------------------------------------------------------------------------------------


def _save(path: Path, make) -> Path:
    make(path)
    return path


BAD_INPUTS = {
    # name: (writer, what the message says)
    "npz": (lambda p: np.savez(p, x=np.zeros((2, *SHAPE), np.int8)), "is a .npz archive, not a .npy file"),
    "text": (lambda p: p.write_text("hello"), "is not a .npy file"),
    "objects": (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickled object array"),
    "truncated": (lambda p: p.write_bytes(_npy_bytes(p, np.zeros((4, *SHAPE), np.int8))[:200]), "truncated"),
    "shape": (lambda p: np.save(p, np.zeros((2, 3, 8, 8), np.int8)), "the model takes (N, 3, 16, 16)"),
    "scalar": (lambda p: np.save(p, np.int8(3)), "inputs have shape ()"),
    "empty": (lambda p: np.save(p, np.zeros((0, *SHAPE), np.int8)), "holds no inputs"),
    "uint8": (lambda p: np.save(p, np.zeros((2, *SHAPE), np.uint8)), "holds uint8 values"),
    "int32": (lambda p: np.save(p, np.zeros((2, *SHAPE), np.int32)), "holds int32 values"),
}


def _npy_bytes(path: Path, a: np.ndarray) -> bytes:
    np.save(path, a)
    return path.read_bytes()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_input_is_one_line(build, tmp_path, command, case):
    write, says = BAD_INPUTS[case]
    name = f"in_{case}" + (".npz" if case == "npz" else ".npy")
    x = _save(tmp_path / name, write)
    if case == "npz":
        x = x.with_suffix(".npz")
    args = ["run", build, "--input", x, "-o", tmp_path / "y.npy"] if command == "run" else ["validate", build, "--input", x]
    assert_one_line(invoke(*args), name, says)


def test_validate_refuses_float_inputs_and_points_to_run(build, tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, *SHAPE), np.float32))
    assert_one_line(invoke("validate", build, "--input", tmp_path / "f.npy"), "f.npy", "float32", "hydra-edge run")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_run_refuses_non_finite_float_input_with_its_index(build, tmp_path, bad):
    x = np.zeros((2, *SHAPE), np.float32)
    x[1, 2, 3, 4] = bad
    np.save(tmp_path / "x.npy", x)
    line = assert_one_line(invoke("run", build, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy"),
                           "x.npy", "input[1, 2, 3, 4]")
    assert str(bad) in line


def test_run_refuses_an_empty_float_array(build, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((0, *SHAPE), np.float32))
    assert_one_line(invoke("run", build, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy"), "x.npy",
                    "holds no inputs")


def test_run_and_validate_still_take_good_inputs(build, tmp_path):
    np.save(tmp_path / "f.npy", calibration_inputs(CFG, n=2))
    r = invoke("run", build, "--input", tmp_path / "f.npy", "-o", tmp_path / "y.npy")
    assert r.exit_code == 0, r.output
    np.save(tmp_path / "one.npy", np.zeros(SHAPE, np.int8))  # one input without the batch axis
    r = invoke("validate", build, "--input", tmp_path / "one.npy")
    assert r.exit_code == 0 and "BIT-EXACT: 1 inputs" in r.output, r.output


def test_missing_input_and_a_folder(build, tmp_path):
    assert_one_line(invoke("validate", build, "--input", tmp_path / "nope.npy"), "nope.npy", "not found")
    assert_one_line(invoke("run", build, "--input", tmp_path, "-o", tmp_path / "y.npy"), "is a folder")


def test_damaged_test_vectors(build):
    (build / "test_inputs.npy").write_bytes(b"\x93NUMPY\x01\x00")
    assert_one_line(invoke("validate", build), "test_inputs.npy", "compile the model again")


# -- --timeout ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e300"])
@pytest.mark.parametrize("command", ["validate", "run", "bench"])
def test_timeout_must_be_a_positive_finite_number(build, tmp_path, command, value):
    args = {"validate": ["validate", build], "bench": ["bench", build],
            "run": ["run", build, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy"]}[command]
    r = invoke(*args, f"--timeout={value}")
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--timeout'" in r.output and "above 0" in r.output, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output


# -- a damaged build folder -----------------------------------------------------------------------------------


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


DAMAGED_MANIFESTS = {
    "not json": (lambda p: p.write_text("{\"board\": "), "not JSON"),
    "binary": (lambda p: p.write_bytes(b"\xff\xfe\x00"), "not JSON"),
    "a list": (lambda p: p.write_text("[]"), "not a JSON object"),
    "no entries": (lambda p: p.write_text('{"format": "hydra-edge-build"}'), "no '"),
    "shape a string": (lambda p: _edit_json(p, lambda d: d["input"].update(shape="abc")), "input.shape"),
    "board a number": (lambda p: _edit_json(p, lambda d: d.update(board=7)), "'board'"),
    "other format": (lambda p: _edit_json(p, lambda d: d.update(format="x")), "format 'x'"),
}
COMMANDS = {
    "validate": lambda b, t: ["validate", b],
    "run": lambda b, t: ["run", b, "--input", _int8(t), "-o", t / "y.npy"],
    "report": lambda b, t: ["report", b],
    "bench": lambda b, t: ["bench", b],
    "flash": lambda b, t: ["flash", b, "--dry-run"],
}


def _int8(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", np.zeros((1, *SHAPE), np.int8))
    return tmp_path / "x.npy"


@pytest.mark.parametrize("case", sorted(DAMAGED_MANIFESTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_damaged_build_json(build, tmp_path, command, case):
    damage, says = DAMAGED_MANIFESTS[case]
    damage(build / "build.json")
    assert_one_line(invoke(*COMMANDS[command](build, tmp_path)), "build.json is damaged", says,
                    "compile the model again")


def test_build_json_entry_missing_when_read(build, tmp_path):
    _edit_json(build / "build.json", lambda d: d["output"].pop("bytes"))
    assert_one_line(invoke("run", build, "--input", _int8(tmp_path), "-o", tmp_path / "y.npy"),
                    "build.json is damaged", "'output.bytes'")


def _fake_cifar(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 8),
             x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 8))
    return path


def _first_constant(build: Path) -> str:
    return next(t["name"] for t in json.loads((build / "graph.json").read_text())["tensors"] if t["constant"])


def _resave_constants(build: Path, edit) -> None:
    with np.load(build / "constants.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays, _first_constant(build))
    np.savez(build / "constants.npz", **arrays)


DAMAGED_GRAPHS = {
    "graph.json truncated": (lambda b: b.joinpath("graph.json").write_text(b.joinpath("graph.json").read_text()[:500]),
                             "graph.json is damaged (not valid JSON"),
    "graph.json no inputs": (lambda b: _edit_json(b / "graph.json", lambda d: d.pop("inputs")),
                             "graph.json is damaged (no 'inputs' entry)"),
    "graph.json bad shape": (lambda b: _edit_json(b / "graph.json", lambda d: d["tensors"][0].update(shape="x")),
                             "graph.json is damaged (tensor"),
    "graph.json bad quant": (lambda b: _edit_json(b / "graph.json", lambda d: d["tensors"][0].update(quant=5)),
                             "graph.json is damaged (tensor"),
    "graph.json unknown tensor": (lambda b: _edit_json(b / "graph.json",
                                                       lambda d: d["nodes"][0].update(inputs=["nosuch"])),
                                  "'nosuch'"),
    "constants.npz truncated": (lambda b: b.joinpath("constants.npz").write_bytes(
        b.joinpath("constants.npz").read_bytes()[:300]), "constants.npz is damaged"),
    "constants.npz text": (lambda b: b.joinpath("constants.npz").write_text("hello"),
                           "constants.npz is damaged (not a .npz archive)"),
    "constant missing": (lambda b: _resave_constants(b, lambda a, k: a.pop(k)), "do not match"),
    "constant reshaped": (lambda b: _resave_constants(b, lambda a, k: a.update({k: a[k].reshape(-1)[:1]})),
                          "do not match"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_GRAPHS))
@pytest.mark.parametrize("command", ["validate", "eval"])
def test_damaged_graph_files(build, tmp_path, command, case):
    damage, says = DAMAGED_GRAPHS[case]
    damage(build)
    args = ["validate", build] if command == "validate" else ["eval", build, "--data", _fake_cifar(tmp_path / "d.npz")]
    result = invoke(*args)
    line = assert_one_line(result, says, "compile the model again") if command == "validate" else \
        assert_last_line(result, says, "compile the model again")
    assert str(build) in line


DAMAGED_REPORTS = {
    "not json": (lambda p: p.write_text("{"), "not JSON"),
    "a list": (lambda p: p.write_text("[1]"), "not a JSON object"),
    "ram a number": (lambda p: _edit_json(p, lambda d: d.update(ram=3)), "'ram' is not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_REPORTS))
@pytest.mark.parametrize("command", ["validate", "run", "report", "bench"])
def test_damaged_report_json(build, tmp_path, command, case):
    damage, says = DAMAGED_REPORTS[case]
    damage(build / "report.json")
    assert_one_line(invoke(*COMMANDS[command](build, tmp_path)), "report.json is damaged", says)


def test_report_json_missing_an_entry_or_missing(build):
    _edit_json(build / "report.json", lambda d: d.pop("flash"))
    assert_one_line(invoke("report", build), "report.json is damaged (no 'flash' entry)")
    (build / "report.json").unlink()
    assert_one_line(invoke("report", build), "no report.json", "compile the model again")


# -- train / search resume -------------------------------------------------------------------------------------


def _train_args(out: Path, data: Path) -> list:
    return ["train", "i16-p4-d16-L1-m2-h", "--board", "host", "--data", data, "-o", out, "--epochs", "1",
            "--batch-size", "4", "--test-limit", "4", "--threads", "1"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "no keys"])
def test_train_resume_from_a_damaged_checkpoint(tmp_path, damage):
    from hydra_edge.search.model import SearchedViT
    from hydra_edge.search.space import Candidate
    from hydra_edge.search.train import TrainConfig, _optimizer, save_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "train.pt"
    net = SearchedViT(Candidate(16, 4, 16, 1, 2.0, ("hydra",)))
    save_checkpoint(ckpt, net, _optimizer(net, TrainConfig()), 1, TrainConfig())
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "text":
        ckpt.write_text("hello")
    else:
        torch.save({"a": 1}, ckpt)
    line = assert_last_line(invoke(*_train_args(out, _fake_cifar(tmp_path / "d.npz"))), str(ckpt),
                            "delete it to start the training over")
    assert "train.pt" in line


def test_train_resume_with_a_checkpoint_of_another_config(tmp_path):
    from hydra_edge.search.model import SearchedViT
    from hydra_edge.search.space import Candidate
    from hydra_edge.search.train import TrainConfig, _optimizer, save_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    net = SearchedViT(Candidate(16, 4, 32, 1, 2.0, ("hydra",)))
    cfg = TrainConfig(epochs=1, batch_size=4)
    save_checkpoint(out / "train.pt", net, _optimizer(net, cfg), 1, cfg)
    assert_last_line(invoke(*_train_args(out, _fake_cifar(tmp_path / "d.npz"))), "train.pt does not fit this model",
                     "use a new output folder")


@pytest.mark.parametrize("curve", ['[{"step": 1, "epoch"', '{"a": 1}', '[{"step": 1}]', '[5]',
                                   '[{"step": "x", "epoch": 1, "float_top1": 0.5}]'])
def test_train_resume_with_a_damaged_curve(tmp_path, curve):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.pt").write_bytes(b"")  # the curve is read first (only when resuming)
    (out / "curve.json").write_text(curve)
    assert_last_line(invoke(*_train_args(out, _fake_cifar(tmp_path / "d.npz"))), "curve.json is damaged",
                     "delete it")


def test_curve_json_is_written_whole(tmp_path, monkeypatch):
    """An interrupted write leaves the old curve.json, not half a file."""
    from hydra_edge.search.curve import LearningCurve

    curve = LearningCurve(tmp_path / "curve.json")
    curve.record(1, 0.5, 0.25)
    before = (tmp_path / "curve.json").read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("hydra_edge.search.curve.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        curve.record(2, 1.0, 0.5)
    assert (tmp_path / "curve.json").read_text() == before
    assert LearningCurve.load(tmp_path / "curve.json").points == {1: (0.5, 0.25)}


def test_search_resume_with_damaged_state_files(tmp_path):
    from hydra_edge.search.constraint import FitCache
    from hydra_edge.search.evolution import Evolution, EvolutionConfig
    from hydra_edge.search.run import _resumed
    from hydra_edge.search.space import SearchSpace
    from hydra_edge.search.train import CHECKPOINT, load_checkpoint
    from hydra_edge.search.supernet import Supernet
    from hydra_edge.boards import load_board

    (tmp_path / "fits.json").write_text('{"a": ')
    with pytest.raises(HydraEdgeError, match=r"fits\.json is damaged .*delete it"):
        _resumed(tmp_path / "fits.json", lambda: FitCache(tmp_path / "fits.json", load_board("host")))
    (tmp_path / "evolution.json").write_text('{"generation": 1}')
    with pytest.raises(HydraEdgeError, match=r"evolution\.json is damaged \(no 'population' entry\)"):
        _resumed(tmp_path / "evolution.json",
                 lambda: Evolution(SearchSpace(), None, None, EvolutionConfig(), tmp_path))
    (tmp_path / CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(HydraEdgeError, match=r"supernet\.pt is damaged or not a training checkpoint.*delete it"):
        load_checkpoint(tmp_path / CHECKPOINT, Supernet(SearchSpace()))


def test_run_output_must_be_a_writable_file_checked_before_the_run(build, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(SHAPE, np.int8))
    assert_one_line(invoke("run", build, "--input", x, "-o", tmp_path), "is a folder")
    assert_one_line(invoke("run", build, "--input", x, "-o", tmp_path / "no" / "y.npy"), "does not exist")
    out = tmp_path / "y"  # no suffix: written under exactly that name (np.save would add .npy)
    r = invoke("run", build, "--input", x, "-o", out)
    assert r.exit_code == 0, r.output
    assert np.load(out).shape[0] == 1 and not (tmp_path / "y.npy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
