"""`hydra-edge flash`: the exact commands, and every failure (no board flash, no tool, no probe) as one line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hydra_edge import driver
from hydra_edge.cli import main
from hydra_edge.build_manifest import BUILD_MANIFEST
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge import boards as board_mod
from hydra_edge.targets import flash as flash_mod
from hydra_edge.targets.flash import FlashError, flash, flash_command, run_flash_tool
from model_zoo import calibration_inputs, export_model

OPENOCD = 'openocd -f board/stm32f7discovery.cfg -c "program device.elf verify reset exit"'
ST_FLASH = "st-flash --reset write device.bin 0x08000000"
TINY = HydraViTConfig(image_size=8, patch_size=4, embed_dim=8, depth=1, mlp_ratio=2.0, num_classes=3)

MCU_TOML = """name = "{name}"
description = "A test microcontroller"
arch = "cortex-m7"
cc = "arm-none-eabi-gcc"
ram_bytes = 327680
flash_bytes = 1048576
"""
JETSON_TOML = """name = "{name}"
description = "A test aarch64 Linux board"
arch = "aarch64"
cc = "aarch64-linux-gnu-gcc"
ram_bytes = 4294967296
"""


@pytest.fixture
def boards(tmp_path, monkeypatch):
    """A boards folder of test boards, which flash.py looks boards up in (plus the real host board)."""
    root = tmp_path / "boards"

    def add(name: str, text: str) -> None:
        (root / name).mkdir(parents=True)
        (root / name / "board.toml").write_text(text.replace("{name}", name))

    add("mcu", MCU_TOML)
    add("jetson-test", JETSON_TOML)
    add("mcu-custom", MCU_TOML + 'device_binary = "fw.elf"\n[flash]\norigin = 0x08010000\n[flash_tool]\n'
                                 'default = "st-flash"\n'
                                 'openocd = ["openocd", "-f", "board/stm32f746g-disco.cfg", "-c", "program {elf} reset exit"]\n'
                                 'apt = { st-flash = "my-stlink" }\n')
    add("mcu-bad", MCU_TOML + '[flash_tool]\nopenocd = ["openocd", "-c", "program {image}"]\n')
    shutil.copytree(board_mod.BOARDS_DIR / "host", root / "host")
    monkeypatch.setattr(flash_mod, "load_board", lambda name: board_mod.load_board(name, root))
    return root


def fake_build(folder: Path, board: str, makefile: str | None = "device:\n\t@echo built > made.txt\n") -> Path:
    """A build folder holding only what flash needs: the manifest, a Makefile, the two images."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUILD_MANIFEST).write_text(json.dumps({"format": "hydra-edge-build", "board": board}))
    if makefile is not None:
        (folder / "Makefile").write_text(makefile)
    (folder / "device.elf").write_bytes(Path(shutil.which("true") or "/bin/true").read_bytes())
    (folder / "device.bin").write_bytes(b"\x00" * 16)
    return folder


def fake_tool(bindir: Path, name: str, script: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def probe_attached() -> bool:
    """An ST-LINK (USB vendor 0483) is plugged in: never write a fake image to a real board."""
    return any(p.read_text().strip() == "0483" for p in Path("/sys/bus/usb/devices").glob("*/idVendor"))


# ------------------------------------------------------------------ dry run: the exact commands


def test_dry_run_openocd_prints_exact_commands(tmp_path, boards):
    build = fake_build(tmp_path / "build", "mcu")
    result = invoke("flash", build, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"cd {build}", "make device", OPENOCD]
    assert not (build / "made.txt").exists()  # a dry run runs nothing, not even make


def test_dry_run_st_flash_prints_exact_commands(tmp_path, boards):
    build = fake_build(tmp_path / "build", "mcu")
    result = invoke("flash", build, "--tool", "st-flash", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"cd {build}", "make device", ST_FLASH]


def test_flash_command_argv(tmp_path, boards):
    build = fake_build(tmp_path / "build", "mcu")
    assert flash_command(build, "openocd") == [
        "openocd", "-f", "board/stm32f7discovery.cfg", "-c", "program device.elf verify reset exit"]
    assert flash_command(build, "st-flash") == ["st-flash", "--reset", "write", "device.bin", "0x08000000"]
    plan = flash(build, "openocd", dry_run=True)
    assert plan.make == ["make", "device"] and plan.board == "mcu"


def test_board_toml_settings_are_used(tmp_path, boards, monkeypatch):
    build = fake_build(tmp_path / "build", "mcu-custom")
    # [flash_tool] default, its openocd command, [flash] origin and device_binary; st-flash's command is the default.
    assert flash_command(build, None) == ["st-flash", "--reset", "write", "fw.bin", "0x08010000"]
    assert flash_command(build, "openocd") == ["openocd", "-f", "board/stm32f746g-disco.cfg", "-c",
                                               "program fw.elf reset exit"]
    result = invoke("flash", build, "--dry-run")  # no --tool: the board's tool
    assert result.output.splitlines()[-1] == "st-flash --reset write fw.bin 0x08010000"
    monkeypatch.setenv("PATH", str(tmp_path))  # its apt package name is the install hint
    assert_one_line_error(invoke("flash", build), "(apt-get install my-stlink)")


def test_bad_board_toml_flash_command(tmp_path, boards):
    build = fake_build(tmp_path / "build", "mcu-bad")
    assert_one_line_error(invoke("flash", build, "--dry-run"), "mcu-bad/board.toml", "[flash_tool] openocd",
                          "bad placeholder 'image'")


def test_dry_run_quotes_a_folder_with_spaces(tmp_path, boards):
    build = fake_build(tmp_path / "my build", "mcu")
    result = invoke("flash", build, "--dry-run")
    assert result.output.splitlines()[0] == f"cd '{build}'"


# ------------------------------------------------------------------ boards that cannot be flashed


def test_host_build_is_refused(tmp_path):
    pt2 = export_model(TINY, tmp_path)
    graph = lower_to_ir(load_pt2(pt2))
    result = driver.compile_graph(graph, board_mod.load_board("host"), tmp_path / "build", calibration_inputs(TINY))
    with pytest.raises(FlashError, match="board host .*cannot be flashed"):
        flash(result.folder, "openocd", dry_run=True)
    assert_one_line_error(invoke("flash", result.folder, "--dry-run"), "board host", "cannot be flashed")


def test_jetson_board_is_refused(tmp_path, boards):
    build = fake_build(tmp_path / "build", "jetson-test")
    assert_one_line_error(invoke("flash", build, "--tool", "st-flash"), "jetson-test", "cannot be flashed")


def test_not_a_build_folder(tmp_path):
    assert_one_line_error(invoke("flash", tmp_path, "--dry-run"), "not a hydra-edge build folder")


# ------------------------------------------------------------------ missing tool: the install hint


@pytest.mark.parametrize("tool, hint", [("openocd", "apt-get install openocd"),
                                        ("st-flash", "apt-get install stlink-tools")])
def test_missing_tool_gives_install_hint(tmp_path, boards, monkeypatch, tool, hint):
    build = fake_build(tmp_path / "build", "mcu")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FlashError, match=hint):
        flash(build, tool)
    assert not (build / "made.txt").exists()  # checked before the (long) build
    with pytest.raises(FlashError, match=hint):
        run_flash_tool(build, flash_command(build, tool))
    line = assert_one_line_error(invoke("flash", build, "--tool", tool), hint)
    assert line == f"error: {tool} is not installed or not on PATH ({hint})"
    # A dry run needs no tool.
    assert invoke("flash", build, "--tool", tool, "--dry-run").exit_code == 0


# ------------------------------------------------------------------ the real tools, no probe attached


@pytest.mark.skipif(probe_attached(), reason="an ST-LINK is attached: not writing a fake image to it")
@pytest.mark.parametrize("tool, key", [("openocd", "open failed"),
                                       ("st-flash", "Couldn't find any ST-Link devices")])
def test_real_tool_without_probe_is_one_clear_line(tmp_path, boards, tool, key):
    build = fake_build(tmp_path / "build", "mcu")
    with pytest.raises(FlashError, match="found no debug probe") as err:
        flash(build, tool)
    assert (build / "made.txt").is_file()  # make device ran first
    assert key in str(err.value) and "\n" not in str(err.value)
    assert_one_line_error(invoke("flash", build, "--tool", tool), f"{tool} found no debug probe", key)


# ------------------------------------------------------------------ fake tools: success, failure, timeout


def test_flash_runs_make_device_then_the_tool_in_the_build_folder(tmp_path, boards, monkeypatch):
    build = fake_build(tmp_path / "build", "mcu")
    bindir = tmp_path / "bin"
    fake_tool(bindir, "openocd", 'pwd > "$0.cwd"; for a in "$@"; do echo "$a"; done > "$0.args"; '
                                 'test -f made.txt || exit 9; echo "** Verified OK **"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    plan = flash(build, "openocd")
    assert (bindir / "openocd.args").read_text().splitlines() == [
        "-f", "board/stm32f7discovery.cfg", "-c", "program device.elf verify reset exit"]
    assert Path((bindir / "openocd.cwd").read_text().strip()) == build.resolve()
    assert "Verified OK" in plan.output
    result = invoke("flash", build)
    assert result.exit_code == 0, result.output
    assert "flashed" in result.output and "mcu" in result.output


def test_tool_failure_quotes_its_key_line(tmp_path, boards, monkeypatch):
    build = fake_build(tmp_path / "build", "mcu")
    bindir = tmp_path / "bin"
    fake_tool(bindir, "st-flash", 'echo "st-flash 1.7.0"; echo "2026-01-01T00:00:00 ERROR common.c: '
                                  'Flash memory is write protected" >&2; echo done; exit 255')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    line = assert_one_line_error(invoke("flash", build, "--tool", "st-flash"))
    assert line == 'error: st-flash failed (exit 255): "ERROR common.c: Flash memory is write protected"'


def test_tool_timeout(tmp_path, boards, monkeypatch):
    build = fake_build(tmp_path / "build", "mcu")
    bindir = tmp_path / "bin"
    fake_tool(bindir, "openocd", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(FlashError, match="openocd did not finish within 1 s"):
        run_flash_tool(build, flash_command(build, "openocd"), timeout=1)
    monkeypatch.setattr(flash_mod, "FLASH_TIMEOUT", 1.0)
    assert_one_line_error(invoke("flash", build), "did not finish within 1 s")


def test_make_without_device_target(tmp_path, boards):
    build = fake_build(tmp_path / "build", "mcu", makefile="all:\n\t@true\n")
    assert_one_line_error(invoke("flash", build), "has no 'device' target", "--board stm32f746")


def test_make_failure_is_one_line(tmp_path, boards):
    build = fake_build(tmp_path / "build", "mcu", makefile="device:\n\t@echo 'main.c:3: error: boom' >&2; exit 1\n")
    assert_one_line_error(invoke("flash", build), "building the device image failed", "main.c:3: error: boom")


def test_missing_image(tmp_path, boards, monkeypatch):
    build = fake_build(tmp_path / "build", "mcu", makefile="device:\n\t@true\n")
    (build / "device.bin").unlink()
    bindir = tmp_path / "bin"
    fake_tool(bindir, "st-flash", "exit 0")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert_one_line_error(invoke("flash", build, "--tool", "st-flash"), "device.bin is missing")


# ------------------------------------------------------------------ the real stm32f746 board


def test_stm32f746_build_dry_run_and_no_probe(tmp_path):
    pt2 = export_model(TINY, tmp_path)
    graph = lower_to_ir(load_pt2(pt2))
    board = board_mod.load_board("stm32f746")
    result = driver.compile_graph(graph, board, tmp_path / "build", calibration_inputs(TINY))
    has_target = subprocess.run(["make", "-n", "device"], cwd=result.folder, capture_output=True, text=True)
    assert has_target.returncode == 0, has_target.stderr  # the Makefile has a device target
    for tool, expected in (("openocd", OPENOCD), ("st-flash", ST_FLASH)):
        out = invoke("flash", result.folder, "--tool", tool, "--dry-run")
        assert out.exit_code == 0, out.output
        assert out.output.splitlines() == [f"cd {result.folder}", "make device", expected]
    out = invoke("flash", result.folder, "--dry-run")  # the board's default tool
    assert out.output.splitlines()[-1] == OPENOCD
    # With the cross compiler and the real tools here, and no probe: make device links the image, the tool
    # then finds no probe, one line.
    if probe_attached() or not all(shutil.which(t) for t in ("arm-none-eabi-gcc", "make", "openocd", "st-flash")):
        return
    assert_one_line_error(invoke("flash", result.folder), 'openocd found no debug probe: "Error: open failed"')
    assert (result.folder / "device.elf").is_file() and (result.folder / "device.bin").is_file()
    assert_one_line_error(invoke("flash", result.folder, "--tool", "st-flash"),
                          'st-flash found no debug probe: "WARN usb.c: Couldn\'t find any ST-Link devices"')


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-orin"])
def test_real_jetson_boards_are_refused(tmp_path, name):
    build = fake_build(tmp_path / "build", name)
    assert_one_line_error(invoke("flash", build, "--dry-run"), f"board {name}", "cannot be flashed")
