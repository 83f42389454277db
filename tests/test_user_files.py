"""The user's files: what `compile -o` may write over, builds swapped in whole, runs that share a folder.

hydra-edge writes only inside its own build folders, whole or not at all, and never deletes or
overwrites a file it did not make (toolchain/hydra_edge/outdir.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hydra_edge import driver, outdir
from hydra_edge.codegen import emit_c
from hydra_edge.build_manifest import read_manifest
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.targets import host, runner
from hydra_edge.boards import load_board
from model_zoo import calibration_inputs, export_model
from cli_helpers import assert_clean_error, invoke

CFG = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=1, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("userfiles")
    pt2 = export_model(CFG, d)
    np.savez(d / "calib.npz", x=calibration_inputs(CFG))
    return d, pt2


@pytest.fixture(scope="module")
def graph(workdir):
    return lower_to_ir(load_pt2(workdir[1]))


@pytest.fixture(scope="module")
def host_build(workdir, graph, tmp_path_factory):
    """A compiled host build (copy it before changing it)."""
    out = tmp_path_factory.mktemp("hostbuild") / "build"
    driver.compile_graph(graph, load_board("host"), out, calibration_inputs(CFG))
    return out


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path in `folder` with its kind, content hash and modification time."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_dir():
            snap[rel] = ("dir",)
        else:
            snap[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return snap


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name and p.name.startswith(f".{out.name}."))


# -- -o refused before any work -----------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Loading the model is work: a refused -o must be refused before it."""

    def fail(*a, **k):
        raise AssertionError("the model was loaded before -o was checked")

    monkeypatch.setattr(driver, "load_model", fail)


def test_output_that_is_a_file_is_refused(workdir, tmp_path, no_work):
    d, pt2 = workdir
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    r = invoke("compile", pt2, "--calib", d / "calib.npz", "-o", target)
    assert_clean_error(r, f"-o {target} is a file, not a folder")
    assert r.exit_code == 1 and target.read_text() == "mine"
    r = invoke("compile", pt2, "-o", target / "sub")
    assert_clean_error(r, f"{target} is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_output_that_holds_the_model_is_refused(workdir, tmp_path, no_work):
    model = tmp_path / "models" / "net.pt2"
    model.parent.mkdir()
    shutil.copyfile(workdir[1], model)
    for out in (model.parent, tmp_path):  # the model's own folder, and a parent of it
        r = invoke("compile", model, "-o", out, "--force")  # not even with --force
        assert_clean_error(r, f"-o {out} holds the model {model}", "would delete it")
        assert r.exit_code == 1
    assert model.read_bytes() == workdir[1].read_bytes()
    # The model inside an old build is refused too (replacing the build would delete it).
    build = tmp_path / "oldbuild"
    build.mkdir()
    (build / "build.json").write_text("{}")
    shutil.copyfile(workdir[1], build / "net.pt2")
    assert_clean_error(invoke("compile", build / "net.pt2", "-o", build), "holds the model")


def test_non_empty_user_folder_is_refused_without_force(workdir, tmp_path, no_work):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    before = snapshot(user)
    r = invoke("compile", workdir[1], "-o", user)
    text = assert_clean_error(r, f"-o {user} is a non-empty folder that is not a hydra-edge build", "--force")
    assert r.exit_code == 1 and "internal error" not in text
    assert snapshot(user) == before and siblings(user) == []


def test_force_replaces_only_the_builds_files(workdir, tmp_path):
    d, pt2 = workdir
    user = tmp_path / "work"
    (user / "runtime").mkdir(parents=True)
    (user / "cat.jpg").write_bytes(b"a cat")
    (user / "runtime" / "mine.txt").write_text("mine")
    (user / "model.c").write_text("/* the user's, replaced by the build's model.c */")
    r = invoke("compile", pt2, "--calib", d / "calib.npz", "-o", user, "--force")
    assert r.exit_code == 0, r.output
    assert (user / "cat.jpg").read_bytes() == b"a cat"
    assert (user / "runtime" / "mine.txt").read_text() == "mine"
    assert "hydra_model_run" in (user / "model.c").read_text()
    assert read_manifest(user)["board"] == "host" and siblings(user) == []
    assert "BIT-EXACT" in invoke("validate", user).output
    # Now it is a build: a compile without --force replaces it and keeps the files the user put there.
    r = invoke("compile", pt2, "--calib", d / "calib.npz", "-o", user, "--schedule", "greedy")
    assert r.exit_code == 0, r.output
    assert (user / "cat.jpg").read_bytes() == b"a cat" and read_manifest(user)["schedule"] == "greedy"
    assert siblings(user) == []


def test_recompile_replaces_an_old_build_and_keeps_the_users_files(workdir, host_build, tmp_path):
    out = tmp_path / "build"
    shutil.copytree(host_build, out)
    assert "BIT-EXACT" in invoke("validate", out).output  # leaves model, obj/ behind
    (out / "y.npy").write_bytes(b"the user's run -o output")
    (out / "bench.json").write_text("{}")  # hydra-edge's: describes the old build, goes with it
    r = invoke("compile", workdir[1], "--board", "stm32f746", "-o", out)
    assert r.exit_code == 0, r.output
    assert read_manifest(out)["board"] == "stm32f746"
    assert (out / "y.npy").read_bytes() == b"the user's run -o output"
    for stale in ("model", "obj", "main.c", "bench.json"):
        assert not (out / stale).exists(), stale
    assert siblings(out) == []


# -- interrupted and failed compiles --------------------------------------------------------------------


def _raise(exc):
    def boom(*a, **k):
        raise exc

    return boom


def _nth_call(real, n, exc):
    calls = []

    def wrapper(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return real(*a, **k)

    return wrapper


INTERRUPTIONS = {
    "first source file": lambda mp: mp.setattr(emit_c, "_write", _nth_call(emit_c._write, 1, KeyboardInterrupt())),
    "runtime sources": lambda mp: mp.setattr(emit_c, "_write", _nth_call(emit_c._write, 8, KeyboardInterrupt())),
    "graph.json": lambda mp: mp.setattr(emit_c, "save_graph", _raise(KeyboardInterrupt())),
    "test vector header": lambda mp: mp.setattr(driver, "write_test_vector", _raise(OSError(28, "No space left"))),
    "report": lambda mp: mp.setattr(driver, "build_report", _raise(RuntimeError("a bug"))),
    "memory plot": lambda mp: mp.setattr(driver, "plot_memory", _raise(KeyboardInterrupt())),
    "swap": lambda mp: mp.setattr(outdir, "_install", _raise(KeyboardInterrupt())),
    "rename in": lambda mp: mp.setattr(outdir.os, "rename", _nth_call(os.rename, 2, KeyboardInterrupt())),
}


@pytest.mark.parametrize("point", list(INTERRUPTIONS))
def test_interrupted_compile_leaves_the_old_build(point, graph, host_build, tmp_path, monkeypatch):
    out = tmp_path / "build"
    shutil.copytree(host_build, out)
    before = snapshot(out)
    INTERRUPTIONS[point](monkeypatch)
    with pytest.raises((KeyboardInterrupt, OSError, RuntimeError)):  # a new model, for another board
        driver.compile_graph(graph, load_board("stm32f746"), out, calibration_inputs(CFG, seed=5), schedule="greedy")
    monkeypatch.undo()
    assert snapshot(out) == before, point  # the old build, every byte and time as it was
    assert read_manifest(out)["board"] == "host"
    assert siblings(out) == [], point  # no partial build beside it
    assert [p.name for p in tmp_path.iterdir()] == ["build"]


def test_interrupted_first_compile_leaves_nothing(graph, tmp_path, monkeypatch):
    out = tmp_path / "new" / "build"
    monkeypatch.setattr(driver, "plot_memory", _raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        driver.compile_graph(graph, load_board("host"), out, calibration_inputs(CFG))
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_leftovers_of_a_killed_compile_are_swept_only_when_safe(graph, host_build, tmp_path):
    """kill -9 leaves .DIR.tmp-PID-* / .DIR.old-PID-*: the next compile into DIR removes those whose process
    is gone and that hold only files hydra-edge makes; a live process's, or one holding a user's file, stay."""
    out = tmp_path / "build"
    shutil.copytree(host_build, out)
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is now free: the process that made the leftovers is gone
    stale_tmp = tmp_path / f".build.tmp-{gone.pid}-a1"
    (stale_tmp / "runtime").mkdir(parents=True)
    (stale_tmp / "model.c").write_text("/* half written */")
    stale_old = tmp_path / f".build.old-{gone.pid}-b2"
    (stale_old / "build").mkdir(parents=True)
    (stale_old / "build" / "build.json").write_text("{}")
    users = tmp_path / f".build.tmp-{gone.pid}-c3"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    live = tmp_path / f".build.tmp-{os.getpid()}-d4"  # a compile still running (this process)
    live.mkdir()
    (live / "model.c").write_text("/* being written */")
    driver.compile_graph(graph, load_board("host"), out, calibration_inputs(CFG))
    assert siblings(out) == sorted([users.name, live.name])
    assert (users / "notes.txt").read_text() == "mine"


# -- runs that share a folder -----------------------------------------------------------------------------


def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hydra_edge.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_parallel_validates_on_one_fresh_folder(graph, tmp_path):
    out = tmp_path / "build"
    driver.compile_graph(graph, load_board("host"), out, calibration_inputs(CFG))  # nothing built yet
    procs = [_cli("validate", out) for _ in range(3)]
    x = np.load(out / "test_inputs.npy")
    np.save(tmp_path / "x.npy", x)
    procs += [_cli("run", out, "--input", tmp_path / "x.npy", "-o", tmp_path / f"y{i}.npy") for i in range(2)]
    results = [(p.wait(timeout=600), p.stdout.read()) for p in procs]
    for code, text in results:
        assert code == 0, text
    assert all("BIT-EXACT" in text for _, text in results[:3])
    assert np.array_equal(np.load(tmp_path / "y0.npy"), np.load(tmp_path / "y1.npy"))


def test_parallel_runs_in_threads(host_build, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "build"
    shutil.copytree(host_build, out)
    x = np.load(out / "test_inputs.npy")
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: runner.run(out, x.reshape(len(x), -1)), range(4)))
    assert all(np.array_equal(o, outs[0]) for o in outs)


# -- a read-only build folder ------------------------------------------------------------------------------


def test_read_only_folder_validates_and_is_not_written(host_build, tmp_path, monkeypatch):
    """A folder that cannot be written (forced here: tests run as root, where permissions do not bite)."""
    out = tmp_path / "build"
    shutil.copytree(host_build, out)
    real = host.folder_writable
    monkeypatch.setattr(host, "folder_writable", lambda f: False if Path(f).resolve() == out.resolve() else real(f))
    before = snapshot(out)
    r = invoke("validate", out)
    assert r.exit_code == 0 and "BIT-EXACT" in r.output, r.output
    r = invoke("run", out, "--input", out / "test_inputs.npy", "-o", tmp_path / "y.npy")
    assert r.exit_code == 0, r.output
    assert snapshot(out) == before  # not one file made, changed or touched (no model, no obj/)
    with pytest.raises(host.BuildError, match="is read-only"):
        runner.build(out)


def _as_nobody() -> list[str] | None:
    """argv prefix that runs a command as an unprivileged user (as root), [] when not root, None if impossible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    ok = subprocess.run([*prefix, sys.executable, "-c", "import hydra_edge"], capture_output=True)
    return prefix if ok.returncode == 0 else None


def test_really_read_only_folder_validates(host_build):
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("cannot run as an unprivileged user here")
    root = Path(tempfile.mkdtemp(prefix="hydra-ro-"))
    try:
        os.chmod(root, 0o755)
        home = root / "home"
        home.mkdir()
        if prefix:
            os.chown(home, 65534, 65534)
        out = root / "build"
        shutil.copytree(host_build, out)
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        before = snapshot(out)
        env = {**os.environ, "HOME": str(home), "TMPDIR": "/tmp"}
        proc = subprocess.run([*prefix, sys.executable, "-m", "hydra_edge.cli", "validate", str(out)],
                              capture_output=True, text=True, env=env, cwd="/", timeout=600)
        assert proc.returncode == 0 and "BIT-EXACT" in proc.stdout, proc.stdout + proc.stderr
        assert snapshot(out) == before
    finally:
        for p in [root, *root.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(root)
