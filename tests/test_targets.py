"""The boards: STM32F746 under QEMU mps2-an500, Jetson boards under qemu-aarch64, memory measured from the ELF.

These need the cross toolchains and emulators (.ci/run installs them:
gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm, qemu-user,
gcc-aarch64-linux-gnu); they fail, not skip, without them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from hydra_edge import driver
from hydra_edge.cli import main
from hydra_edge.codegen.emit_c import emit_project, kernel_scratch
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.memory.planner import plan_memory
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.quant.calibrate import calibrate
from hydra_edge.quant.quantize import quantize_graph
from hydra_edge.targets import runner
from hydra_edge.boards import list_boards, load_board
from hydra_edge.targets.budget import BudgetError, check_fits
from hydra_edge.targets.elf import image_sizes
from hydra_edge.validate.bitexact import reference_outputs, validate_build
from model_zoo import EXAMPLES, calibration_inputs, export_model
from test_codegen import tiny_graph
from test_end_to_end import SHAPES, _random_inputs

STM32 = "stm32f746"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _compile(cfg: HydraViTConfig, tmp_path, board: str, rounding: str = "double"):
    graph = lower_to_ir(load_pt2(export_model(cfg, tmp_path)))
    return driver.compile_graph(graph, load_board(board), tmp_path / "build", calibration_inputs(cfg), rounding)


def _emit(graph, folder, board: str):
    emit_project(graph, plan_memory(graph, kernel_scratch(graph)), folder, board)
    return folder


# -- the boards ------------------------------------------------------------------------------------


def test_boards_are_listed_with_their_kinds():
    assert {"host", STM32, "jetson-nano", "jetson-orin"} <= set(list_boards())
    stm = load_board(STM32)
    assert stm.kind == "qemu-system" and stm.ram_bytes == 320 * 1024 and stm.flash_bytes == 1024 * 1024
    assert sum(r["bytes"] for r in stm.raw["sram"]) == stm.ram_bytes
    assert "-mfpu=fpv5-sp-d16" in stm.cflags and "-mfloat-abi=hard" in stm.cflags
    assert load_board("jetson-nano").kind == load_board("jetson-orin").kind == "qemu-user"
    assert "-march=armv8.2-a+dotprod" in load_board("jetson-orin").cflags
    result = invoke("boards")
    assert result.exit_code == 0 and STM32 in result.output and "jetson-orin" in result.output


def test_missing_toolchain_names_the_package():
    board = replace(load_board(STM32), cc="arm-none-eabi-gcc-not-installed")
    with pytest.raises(runner.ToolchainError, match=r"board stm32f746: .*gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        runner.check_toolchain(board)
    jetson = load_board("jetson-nano")
    emu = {**jetson.raw["emulator"], "program": "qemu-aarch64-not-installed"}
    with pytest.raises(runner.ToolchainError, match=r"emulator .*qemu-user"):
        runner.check_toolchain(replace(jetson, raw={**jetson.raw, "emulator": emu}))


# -- end-to-end models, bit-exact on the emulated boards -------------------------------------------


@pytest.mark.parametrize(
    "name, board, rounding",
    [
        ("d36-t36-depth1-mlp2", STM32, "double"),
        ("d48-t49-depth3-mlp4", STM32, "double"),
        ("d20-t16-depth6-mlp2.5", STM32, "double"),
        ("d27-t25-depth2-mlp3", STM32, "single"),
        ("d33-t9-depth4-c1", STM32, "double"),
        ("d27-t25-depth2-mlp3", "jetson-nano", "double"),
        ("d33-t9-depth4-c1", "jetson-orin", "double"),
    ],
)
def test_bit_exact_on_board(name, board, rounding, tmp_path):
    """Every end-to-end model on stm32f746, streamed (the default schedule), and two on Jetson."""
    result = _compile(SHAPES[name], tmp_path, board, rounding)
    assert result.report["ram"]["schedule"] == "stream"
    inputs = np.concatenate([np.load(result.folder / driver.TEST_VECTORS), _random_inputs(result, n=4)])
    check = validate_build(result.folder, result.graph, inputs)
    assert check.ok, check.mismatches
    assert check.bytes_compared == len(inputs) * SHAPES[name].num_classes
    measured = json.loads((result.folder / driver.REPORT_FILE).read_text())["measured"]
    assert measured["image"]["arena_bytes"] == result.plan.arena_bytes
    if board == STM32:
        assert 0 < measured["stack_used_bytes"] < measured["stack_reserved_bytes"]


# -- the bundled example on the STM32F746 ----------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("example") / "build"
    result = invoke("compile", EXAMPLES / "hydra_vit_cifar10.pt2", "--board", STM32,
                    "--calib", EXAMPLES / "calib_cifar10.npz", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_example_validates_on_stm32(example):
    result = invoke("validate", example)
    assert result.exit_code == 0, result.output
    assert "BIT-EXACT: 8 inputs, 80 output bytes compared, 0 differ (board stm32f746" in result.output
    assert "stack high-water mark" in result.output


def test_example_run_on_stm32_matches_the_reference(example, tmp_path):
    _, graph = driver.load_build(example)
    x = np.random.default_rng(5).integers(-128, 128, (3, 3, 32, 32), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", example, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 10) and np.array_equal(y, reference_outputs(graph, x))


def test_example_device_image_links_within_the_chip(example):
    elf = runner.build(example, target="device")
    sizes = image_sizes(elf)
    assert 0 < sizes["flash_bytes"] <= 1024 * 1024
    assert sizes["arena_bytes"] <= sizes["ram_bytes"] <= 320 * 1024
    sections = {s["name"]: s["addr"] for s in sizes["sections"]}
    assert sections[".isr_vector"] == 0x08000000 and sections[".stack"] == 0x20000000
    # device.bin starts with the vector table: the initial SP at the top of the stack, a Thumb reset vector in flash.
    sp, reset = struct.unpack_from("<II", (example / "device.bin").read_bytes())
    assert sp == 0x20000000 + load_board(STM32).stack_bytes
    assert reset & 1 and 0x08000000 < reset < 0x08000000 + sizes["flash_bytes"]
    assert (example / "device.bin").stat().st_size <= 1024 * 1024
    # The device harness checks itself against the reference output of a built-in test vector.
    assert "hydra_test_expected" in (example / "test_vector.h").read_text()


def test_example_report_has_measured_memory(example):
    result = invoke("report", example, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    m = report["measured"]
    for key in ("image", "device"):
        e = m[key]
        assert e["flash_bytes"] == e["text_bytes"] + e["rodata_bytes"] + e["data_bytes"]
        assert e["ram_bytes"] == e["data_bytes"] + e["bss_bytes"] + e["stack_bytes"]
        assert e["arena_bytes"] == report["ram"]["arena_bytes"]
        # the weights are in flash: rodata holds at least every constant
        assert e["rodata_bytes"] >= report["flash"]["weights_bytes"]
    assert m["stack_used_bytes"] > 0 and m["budget"] == {"flash_bytes": 1048576, "ram_bytes": 327680}
    text = invoke("report", example).output
    assert "emulation image fw-qemu.elf: flash" in text and "of 327,680 B" in text
    assert "device image device.elf" in text and "stack high-water mark" in text


# -- faults, hangs, budgets ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_stm32(tmp_path_factory):
    g = tiny_graph()
    folder = _emit(g, tmp_path_factory.mktemp("tiny") / "build", STM32)
    x = np.random.default_rng(0).integers(-128, 128, (3, 6, 10), dtype=np.int8)
    return folder, g, x


def test_planted_fault_is_a_fault_not_a_mismatch(tiny_stm32):
    folder, g, x = tiny_stm32
    with pytest.raises(runner.TargetFault, match=r"(?s)board stm32f746: FAULT: BusFault .*BFAR 0xf0000000"):
        runner.run(folder, x.reshape(3, -1), extra_cppflags="-DHYDRA_PLANT_FAULT")
    # The objects follow the flags: the next plain run is the normal harness again, and bit-exact.
    assert validate_build(folder, g, x).ok


def test_hang_hits_the_timeout(tiny_stm32):
    folder, _, x = tiny_stm32
    with pytest.raises(runner.TargetHang, match=r"board stm32f746: HANG: no result after 2 s \(timeout hit\)"):
        runner.run(folder, x.reshape(3, -1), extra_cppflags="-DHYDRA_PLANT_HANG", timeout=2)


def test_hang_through_the_cli_is_one_clean_line(tiny_stm32, tmp_path):
    folder, _, x = tiny_stm32
    np.save(tmp_path / "x.npy", x)
    result = invoke("validate", folder, "--input", tmp_path / "x.npy", "--timeout", "0.001")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: board stm32f746: HANG: no result after 0.001 s")


def test_exit_codes_are_named():
    board = load_board("jetson-nano")
    assert isinstance(runner._describe_exit(board, -4, "", 1, 5), runner.TargetFault)
    assert "illegal instruction" in str(runner._describe_exit(board, -4, "", 1, 5))
    stm = load_board(STM32)
    assert "UsageFault" in str(runner._describe_exit(stm, 35, "", 1, 5))
    assert "kernel error" in str(runner._describe_exit(stm, 11, "", 1, 5))


def test_flash_budget_names_the_largest_layers():
    g = tiny_graph()
    board = replace(load_board(STM32), flash_bytes=16_500)
    with pytest.raises(BudgetError, match=r"flash needs 16,\d{3} B of 16,500 B, \d+ bytes over \(largest: code "
                                          r"\(kernels, harness, libc; estimate\) 16,384 B; weights of gelu 256 B; "
                                          r"weights of blocks.0.fc 220 B\)"):
        check_fits(g, plan_memory(g, kernel_scratch(g)), board)
    assert check_fits(g, plan_memory(g, kernel_scratch(g)), load_board(STM32)).ram_bytes < 320 * 1024


BIG = HydraViTConfig(image_size=64, patch_size=4, embed_dim=160, depth=1, mlp_ratio=4.0)  # 256 tokens x 640 MLP


def test_too_big_for_320k_fails_at_compile_time(tmp_path):
    pt2 = export_model(BIG, tmp_path)
    out = tmp_path / "build"
    graph = lower_to_ir(load_pt2(pt2))
    calib = calibration_inputs(BIG, n=2)
    # Under TFLM's greedy planner (unfused ops, no in-place reuse) it does not fit ...
    with pytest.raises(BudgetError, match=r"RAM needs [\d,]+ B of 327,680 B, [\d,]+ bytes over \(largest: arena.*"
                                          r"the peak is at op \S+ \(\w+\).*suggestion: the streaming schedule"):
        driver.compile_graph(graph, load_board(STM32), out, calib, schedule="greedy")
    assert not out.exists()  # nothing emitted
    np.savez(tmp_path / "calib.npz", x=calib)
    result = invoke("compile", pt2, "--board", STM32, "--calib", tmp_path / "calib.npz", "-o", out, "--schedule", "greedy")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: the model does not fit board stm32f746: RAM needs" in result.output
    assert "bytes over" in result.output
    # ... streamed (the default for a Hydra ViT), it does, with room to spare.
    streamed = driver.compile_graph(graph, load_board(STM32), tmp_path / "streamed", calib)
    assert streamed.report["ram"]["schedule"] == "stream" and streamed.plan.arena_bytes < 100 * 1024
    # The same model compiles for the host (no budget) ...
    result = driver.compile_graph(graph, load_board("host"), out, calib, schedule="greedy")
    assert result.plan.arena_bytes > 320 * 1024
    # ... and emitted for the STM32F746 despite the check, the link refuses it: the budget holds at link time too.
    qgraph = quantize_graph(graph, calibrate(graph, calib), "double")
    big = _emit(qgraph, tmp_path / "forced", STM32)
    with pytest.raises(runner.BuildError, match=r"region `RAM' overflowed(.|\n)*does not fit the stm32f746"):
        runner.build(big)
