"""The user's path of issue 7 end to end at a tiny size, on real data (Fashion-MNIST from Debian's
dataset-fashion-mnist, which .ci/run installs): search -> compile -> validate -> eval, a resumed search, and
`train` on the winner's config."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hydra_edge.cli import main
from hydra_edge.models.data import FASHION_MNIST_DIR


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    assert FASHION_MNIST_DIR.is_dir(), f"{FASHION_MNIST_DIR} missing: apt-get install dataset-fashion-mnist"
    out = tmp_path_factory.mktemp("search") / "run"
    args = ["search", "--board", "stm32f746", "--data", str(FASHION_MNIST_DIR), "--preset", "tiny",
            "--threads", "1", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, args, result.output


def test_search_writes_a_model_that_fits_and_its_report(run):
    out, _, output = run
    report = json.loads((out / "search.json").read_text())
    best = report["rows"][0]
    assert best["name"] == "best" and best["ram_bytes"] <= report["ram_budget_bytes"]
    assert best["flash_bytes"] <= report["flash_budget_bytes"]
    assert 0.0 <= best["int8_top1"] <= 1.0 and best["test_images"] == 200
    assert (out / "best.pt2").is_file() and (out / "best_calib.npz").is_file()
    assert "rules over" in output and "hydra-edge compile" in output


def test_compile_validate_eval_the_winner(run, tmp_path):
    out, _, _ = run
    runner = CliRunner()
    build = tmp_path / "build"
    r = runner.invoke(main, ["compile", str(out / "best.pt2"), "--board", "stm32f746", "--calib",
                             str(out / "best_calib.npz"), "-o", str(build)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["validate", str(build)])
    assert r.exit_code == 0 and "BIT-EXACT" in r.output, r.output
    r = runner.invoke(main, ["eval", str(build), "--data", str(FASHION_MNIST_DIR), "--limit", "200", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    report = json.loads((out / "search.json").read_text())
    # the same 200 seeded test images as the search's own measurement of the compiled winner
    assert got["images"] == 200 and got["top1"] == pytest.approx(report["rows"][0]["int8_top1"], abs=1e-4)


def test_search_resumes_without_retraining(run):
    out, args, _ = run
    before = (out / "supernet.pt").stat().st_mtime_ns
    fits = json.loads((out / "fits.json").read_text())
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "supernet.pt").stat().st_mtime_ns == before  # the checkpoint was complete: not retrained
    assert json.loads((out / "fits.json").read_text()).keys() == fits.keys()  # no candidate compiled twice


def test_train_the_winner_from_scratch_then_resume(run, tmp_path):
    out, _, _ = run
    long = tmp_path / "long"
    args = ["train", str(out / "best.json"), "--board", "stm32f746", "--data", str(FASHION_MNIST_DIR),
            "--epochs", "0.02", "--batch-size", "64", "--mix", "0.5", "--test-limit", "200", "--threads", "1",
            "--curve-every", "0.01", "-o", str(long)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((long / "train.json").read_text())
    row = report["rows"][0]
    assert report["training_images"] == 60000 and row["test_images"] == 200  # every training image, none held out
    assert report["config"]["mix"] == 0.5
    # 937 steps an epoch at batch 64: 19 steps, a curve point every 9 and one at the end
    assert [p["step"] for p in report["curve"]] == [9, 18, 19] and (long / "curve.png").is_file()
    assert all(0.0 <= p["float_top1"] <= 1.0 for p in report["curve"])
    assert row["config"] == json.loads((out / "search.json").read_text())["rows"][0]["config"]
    assert row["ram_bytes"] <= report["ram_budget_bytes"] and row["flash_bytes"] <= report["flash_budget_bytes"]
    assert (long / "model.pt2").is_file() and (long / "build_model" / "model.c").is_file()
    before = (long / "train.pt").stat().st_mtime_ns
    r = CliRunner().invoke(main, args)  # the checkpoint is complete: measured again, not retrained
    assert r.exit_code == 0, r.output
    assert (long / "train.pt").stat().st_mtime_ns == before
    again = json.loads((long / "train.json").read_text())["rows"][0]
    assert again["train_seconds"] == row["train_seconds"] and again["int8_top1"] == row["int8_top1"]
    assert json.loads((long / "train.json").read_text())["curve"] == report["curve"]
    r = CliRunner().invoke(main, [*args, "--lr", "0.001"])  # resuming under another schedule is refused
    assert r.exit_code == 1 and "train.pt was written by a run with other settings: lr 0.002 (now 0.001)" in r.output
    # a warm restart from the finished run's weights, which train.json credits to that run
    warm = [*args[:-1], str(tmp_path / "warm"), "--init", str(long / "train.pt"), "--epochs", "0.01"]
    r = CliRunner().invoke(main, warm)
    assert r.exit_code == 0, r.output
    started = json.loads((tmp_path / "warm" / "train.json").read_text())["started_from"]
    assert started["steps"] == 19 and started["train_seconds"] == pytest.approx(row["train_seconds"], abs=0.1)
    other = ["train", "i28-p7-d32-L1-m2-h", *warm[2:-5], str(tmp_path / "other"), "--init", str(long / "train.pt")]
    r = CliRunner().invoke(main, other)
    assert r.exit_code == 1 and "train.pt holds the weights of another config" in r.output, r.output


def test_train_refuses_a_file_that_is_no_config_and_a_bad_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"embed_dim": 32}')
    common = ["--board", "stm32f746", "--data", str(FASHION_MNIST_DIR), "-o", str(tmp_path / "o")]
    r = CliRunner().invoke(main, ["train", str(bad), *common])
    assert r.exit_code == 1 and "bad.json: not a candidate config (no 'attention' field)" in r.output, r.output
    r = CliRunner().invoke(main, ["train", "i32-p4-d64-L3-m2-hh", *common])
    assert r.exit_code == 1 and "attention has 2 entries for depth 3" in r.output, r.output
    r = CliRunner().invoke(main, ["train", "d64-L4", *common])
    assert r.exit_code == 1 and "no such file" in r.output and "not a config name" in r.output, r.output


def test_eval_and_search_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = CliRunner().invoke(main, ["search", "--board", "stm32f746", "--data", str(bad), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "error:" in r.output and "bad.npz" in r.output
