"""Exact instruction counts under QEMU (targets/icount.py and its TCG plugin): hand-written loops whose
counts are known instruction by instruction, on qemu-aarch64 and on the Cortex-M7 of qemu-system-arm
mps2-an500, then a compiled model (repeatable, per-op regions summing to the whole)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hydra_edge import driver
from hydra_edge.cli import main
from hydra_edge.build_manifest import read_manifest
from hydra_edge.codegen.emit_c import OP_MARKER
from hydra_edge.frontend.pt2 import load_pt2
from hydra_edge.ir.serialize import load_graph
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.targets import icount
from hydra_edge.targets.functions import OUTSIDE, FunctionCountError, by_function, parse_pc_counts
from hydra_edge.boards import load_board
from model_zoo import calibration_inputs, export_model

TINY = HydraViTConfig(image_size=8, patch_size=4, embed_dim=8, depth=1, mlp_ratio=2.0, num_classes=3)


def need(*tools: str) -> None:
    """Fail with the list of missing tools (.ci/run installs them all)."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"not installed: {', '.join(missing)} (run .ci/run or see docs/boards.md)"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    need("gcc")
    return icount.plugin_path(cache=tmp_path_factory.mktemp("cache"))


# Per iteration: add, add (the marker: mid-block, not a branch target), bl, nop, ret, subs, b.ne = 7.
# Before the loop: mov (1); after it: mov, mov, svc (3). Total 7N + 4; the marker first runs after 2.
AARCH64_LOOP = """
    .text
    .global _start
_start:
    mov x19, #ITER
1:  add x1, x1, #1
    .global mark
mark:
    add x2, x2, #1
    bl func
    subs x19, x19, #1
    b.ne 1b
    mov x0, #0
    mov x8, #93
    svc #0
    .type func, %function
func:
    nop
    ret
"""

# The same loop in Thumb-2 on the Cortex-M7: a vector table (SP, reset), then the loop and a
# semihosting SYS_EXIT (movs, ldr, bkpt 0xab: 3 after the loop). Total 7N + 4 again.
CORTEX_M_LOOP = """
    .syntax unified
    .thumb
    .text
    .word 0x20010000
    .word reset + 1
    .thumb_func
reset:
    ldr r4, =ITER
1:  adds r1, r1, #1
    .global mark
mark:
    adds r2, r2, #1
    bl func
    subs r4, r4, #1
    bne 1b
    movs r0, #0x18
    ldr r1, =0x20026
    bkpt 0xab
2:  b 2b
    .thumb_func
    .type func, %function
func:
    nop
    bx lr
"""


def _assemble(cc: str, source: str, flags: list[str], folder: Path, n: int) -> Path:
    src = folder / "loop.S"
    src.write_text(source)
    out = folder / f"loop{n}.elf"
    subprocess.run([cc, *flags, f"-DITER={n}", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def _check_loop(counts: icount.Counts, n: int) -> None:
    assert counts.total == 7 * n + 4
    assert len(counts.hits) == n
    assert counts.hits[0] == 2  # mov + the add before the marker, which sits mid-block
    assert counts.regions() == [7] * (n - 1)
    assert counts.total - counts.hits[-1] == 6 + 3  # the last iteration from the marker on, then the exit


def test_plugin_builds_with_strict_warnings(plugin):
    assert {"-Wall", "-Wextra", "-Werror"} <= set(icount.PLUGIN_CFLAGS)
    assert plugin.is_file()
    # The two symbols QEMU looks up, exported from the shared object.
    assert icount.elf_symbol(plugin, "qemu_plugin_install") > 0
    assert icount.elf_symbol(plugin, "qemu_plugin_version") > 0
    # Cached: the same source, compiler and flags give the same file without rebuilding.
    before = plugin.stat().st_mtime_ns
    assert icount.plugin_path(cache=plugin.parents[1]) == plugin
    assert plugin.stat().st_mtime_ns == before


def test_aarch64_loop_counts_are_exact(plugin, tmp_path):
    need("aarch64-linux-gnu-gcc", "qemu-aarch64")
    totals = {}
    for n in (10, 1000):
        elf = _assemble("aarch64-linux-gnu-gcc", AARCH64_LOOP, ["-nostdlib", "-static"], tmp_path, n)
        marker = icount.elf_symbol(elf, "mark")
        counts, _ = icount.count(["qemu-aarch64", "-cpu", "cortex-a57", str(elf)], marker, env={}, plugin=plugin)
        assert counts.marker == marker
        _check_loop(counts, n)
        totals[n] = counts.total
    assert totals[1000] - totals[10] == 990 * 7


def test_cortex_m7_loop_counts_are_exact(plugin, tmp_path):
    need("arm-none-eabi-gcc", "qemu-system-arm")
    flags = ["-mcpu=cortex-m7", "-mthumb", "-nostdlib", "-Wl,-Ttext=0", "-Wl,-e,reset"]
    totals = {}
    for n in (10, 1000):
        elf = _assemble("arm-none-eabi-gcc", CORTEX_M_LOOP, flags, tmp_path, n)
        marker = icount.elf_symbol(elf, "mark")
        assert marker % 2 == 0  # a Thumb address: the instruction, not the interworking address
        cmd = ["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
        counts, _ = icount.count(cmd, marker, plugin=plugin, timeout=60)
        _check_loop(counts, n)
        totals[n] = counts.total
    assert totals[1000] - totals[10] == 990 * 7


def test_thumb_function_symbols_lose_the_thumb_bit(tmp_path):
    need("arm-none-eabi-gcc", "arm-none-eabi-nm")
    flags = ["-mcpu=cortex-m7", "-mthumb", "-nostdlib", "-Wl,-Ttext=0", "-Wl,-e,reset"]
    elf = _assemble("arm-none-eabi-gcc", CORTEX_M_LOOP, flags, tmp_path, 3)
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], check=True, capture_output=True, text=True).stdout
    want = {line.split()[2]: int(line.split()[0], 16) for line in nm.splitlines() if len(line.split()) == 3}
    assert icount.elf_symbol(elf, "func") == want["func"] and want["func"] % 2 == 0
    assert icount.elf_symbol(elf, "mark") == want["mark"]
    with pytest.raises(icount.IcountError, match="no symbol 'nope'"):
        icount.elf_symbol(elf, "nope")


def test_parse_counts_rejects_garbage():
    c = icount.parse_counts("hydra-edge-insn-count 1\ntotal 9\nmarker 0x10\nhits 2\n3\n5\n")
    assert c == icount.Counts(9, 0x10, (3, 5)) and c.regions() == [2]
    for bad in ("", "something else\n", "hydra-edge-insn-count 1\ntotal 9\nmarker 0x10\nhits 3\n1\n"):
        with pytest.raises(icount.IcountError):
            icount.parse_counts(bad)


# -- a compiled model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aarch64_model(tmp_path_factory):
    """A tiny model compiled for the Cortex-A57 board and built (static aarch64, run under qemu-aarch64)."""
    need("aarch64-linux-gnu-gcc", "qemu-aarch64", "make")
    tmp = tmp_path_factory.mktemp("model")
    graph = lower_to_ir(load_pt2(export_model(TINY, tmp)))
    result = driver.compile_graph(graph, load_board("jetson-nano"), tmp / "build", calibration_inputs(TINY))
    icount.build_image(result.folder, load_board("jetson-nano"), read_manifest(result.folder))
    return result.folder


def test_model_c_calls_the_marker_around_every_op(aarch64_model):
    n = len(load_graph(aarch64_model).nodes)
    model_c = (aarch64_model / "model.c").read_text()
    calls = [line.strip() for line in model_c.splitlines() if line.strip().startswith(f"{OP_MARKER}(")]
    assert [c.split(")")[0] + ")" for c in calls] == [f"{OP_MARKER}({i})" for i in range(n + 1)]


def test_model_counts_are_repeatable_and_regions_sum_up(aarch64_model, plugin):
    folder = aarch64_model
    graph = load_graph(folder)
    board = load_board("jetson-nano")
    how = icount.launch(folder, board, folder / "model", "in.bin", "out.bin")
    assert how.argv[:3] == ["qemu-aarch64", "-cpu", "cortex-a57"] and how.env == {}  # env -i, the board's core
    x = np.load(folder / driver.TEST_VECTORS)[:1]
    first = icount.count_build(folder, x, board=board, build=False)
    second = icount.count_build(folder, x, board=board, build=False)
    assert first == second  # the same image and input: the same count, marker hit for marker hit
    assert len(first.hits) == len(graph.nodes) + 1
    bench = icount.map_ops(first, graph)
    ops = bench["ops"]
    assert [op["name"] for op in ops] == [node.name for node in graph.nodes]
    assert all(op["instructions"] > 0 for op in ops)
    assert sum(op["instructions"] for op in ops) == bench["inference"]["instructions"] == first.hits[-1] - first.hits[0]
    run = bench["run"]
    assert run["before_first_op"] + bench["inference"]["instructions"] + run["after_last_op"] == first.total
    report = json.loads((folder / driver.REPORT_FILE).read_text())
    assert [op["macs"] for op in ops] == [op["macs"] for op in report["ops"]]
    assert bench["inference"]["macs"] == report["macs"]
    # Two inputs in one run: two inferences, each with its own n + 1 markers.
    two = icount.count_build(folder, np.concatenate([x, x]), board=board, build=False)
    assert len(two.hits) == 2 * len(first.hits)
    both = icount.map_ops(two, graph)
    assert both["inference"]["inferences_in_run"] == 2
    assert both["inference"]["instructions_each"] == [bench["inference"]["instructions"]] * 2
    assert both["ops"] == ops


def test_functions_add_up_to_the_run_on_aarch64(aarch64_model, plugin, tmp_path):
    """qemu-aarch64 (a static Linux image): the per-address counts of one run, mapped to the image's functions
    (libc's start-up and I/O among them), add up to the run's total."""
    board = load_board("jetson-nano")
    x = np.load(aarch64_model / driver.TEST_VECTORS)[:1]
    pcs = tmp_path / "pcs.txt"
    counts = icount.count_build(aarch64_model, x, board=board, build=False, pcs=pcs)
    rows = by_function(parse_pc_counts(pcs.read_text()), aarch64_model / "model")
    names = {r["function"]: r["instructions"] for r in rows}
    assert sum(names.values()) == counts.total and OUTSIDE not in names
    assert {"main", "hydra_model_run", OP_MARKER, "hydra_linear_rows_s8"} <= set(names)
    assert names[OP_MARKER] % len(counts.hits) == 0  # the same instructions at every call
    assert rows == sorted(rows, key=lambda r: -r["instructions"])


def test_pc_counts_are_added_up_per_address_and_bad_files_refused():
    assert parse_pc_counts("hydra-edge-pc-counts 1\n10 3\n14 1\n10 2\n") == {0x10: 5, 0x14: 1}
    with pytest.raises(FunctionCountError, match="not a per-address count file"):
        parse_pc_counts("hydra-edge-insn-count 1\n")
    with pytest.raises(FunctionCountError, match="out of memory"):
        parse_pc_counts("hydra-edge-pc-counts 1\nerror out of memory counting instruction addresses\n")
    with pytest.raises(FunctionCountError, match="unreadable line"):
        parse_pc_counts("hydra-edge-pc-counts 1\n10\n")


def test_bench_refuses_a_native_board(aarch64_model):
    with pytest.raises(icount.IcountError, match="runs natively"):
        icount.launch(aarch64_model, load_board("host"), aarch64_model / "model", "in.bin", "out.bin")


def test_env_prefix_becomes_the_environment():
    assert icount._split_env(["env", "-i", "A=1", "qemu-aarch64", "x"]) == (["qemu-aarch64", "x"], {"A": "1"})
    assert icount._split_env(["qemu-aarch64", "x"]) == (["qemu-aarch64", "x"], None)


def test_bench_cli_on_stm32f746(tmp_path, monkeypatch):
    need("arm-none-eabi-gcc", "qemu-system-arm", "make")
    graph = lower_to_ir(load_pt2(export_model(TINY, tmp_path)))
    folder = driver.compile_graph(graph, load_board("stm32f746"), tmp_path / "build", calibration_inputs(TINY)).folder
    result = CliRunner().invoke(main, ["bench", str(folder), "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert "QEMU counts executed instructions, not cycles" in result.output
    data = json.loads((folder / icount.BENCH_JSON).read_text())
    assert data["board"] == "stm32f746" and data["runs"] == 2 and data["repeatable"]
    assert data["run_totals"][0] == data["run_totals"][1]
    assert [op["name"] for op in data["ops"]] == [node.name for node in load_graph(folder).nodes]
    assert sum(op["instructions"] for op in data["ops"]) == data["inference"]["instructions"]
    assert data["inference"]["macs_per_instruction"] > 0
    as_json = CliRunner().invoke(main, ["bench", str(folder), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["inference"] == data["inference"]
    # The portable kernels: a different image (the plain dot loop instead of SMLAD), counted the same way, then
    # the next bench rebuilds the target's kernels and counts what it counted first.
    plain = CliRunner().invoke(main, ["bench", str(folder), "--portable-kernels"])
    assert plain.exit_code == 0, plain.output
    assert "portable C kernels" in plain.output
    portable = json.loads((folder / icount.BENCH_PORTABLE_JSON).read_text())
    assert portable["kernels"] == "portable" and data["kernels"] == "target"
    assert portable["inference"]["macs"] == data["inference"]["macs"]
    assert portable["inference"]["instructions"] != data["inference"]["instructions"]
    again = CliRunner().invoke(main, ["bench", str(folder), "--json"])
    assert json.loads(again.output)["inference"] == data["inference"]
    # Per function (the plugin's per-address counts, the image's symbols): the whole run, every instruction in a
    # function, the same per-op counts as without
    by_fn = CliRunner().invoke(main, ["bench", str(folder), "--functions"])
    assert by_fn.exit_code == 0, by_fn.output
    assert "by function (the whole run;" in by_fn.output
    counted = json.loads((folder / icount.BENCH_JSON).read_text())
    names = {f["function"]: f["instructions"] for f in counted["functions"]}
    assert sum(names.values()) == counted["run"]["instructions"] and OUTSIDE not in names
    assert {OP_MARKER, "hydra_model_run", "hydra_linear_rows_s8", "Reset_Handler"} <= set(names)
    assert counted["inference"] == data["inference"]

    def unreadable(text):
        raise FunctionCountError("the counting plugin: out of memory counting instruction addresses")

    monkeypatch.setattr(icount, "parse_pc_counts", unreadable)  # a plugin file it cannot use: one error line
    failed = CliRunner().invoke(main, ["bench", str(folder), "--functions"])
    assert failed.exit_code == 1 and "error: counting instructions per function: the counting plugin: out of memory" \
        in failed.output and "Traceback" not in failed.output
