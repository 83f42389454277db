"""benchmarks/vs_tflm_cmsis.py without the peer build (20 minutes) or QEMU: on fake results, its table, the
byte-for-byte comparison, the per-op breakdown, the JSON and the plot, and that an existing peer build is
not rebuilt. benchmarks/flash_size.py without a build: its linker-map split and its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    """benchmarks/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vs():
    return _benchmark("vs_tflm_cmsis")


def _peer(insns, arena, outs, per_op=None):
    got = {"instructions_per_inference": insns, "instructions_mean": float(np.mean(insns)), "macs": 100,
           "smallest_arena_bytes": arena, "smallest_arena_verified": True, "arena_used_bytes": arena - 4,
           "bit_exact_vs_tflite_micro_python": True, "python_ref": "tflite_micro 0.dev", "outputs_hex": outs}
    if per_op:
        got["per_op"] = per_op
    return got


def _hydra(insns, ram, arena, outs, per_op=None):
    got = {"instructions_per_inference": insns, "instructions_mean": float(np.mean(insns)), "macs": 100,
           "arena_bytes": arena, "ram_in_use_bytes": ram, "bit_exact_vs_reference": True, "outputs_hex": outs}
    if per_op:
        got["per_op"] = per_op
    return got


def _rows(vs):
    same = ["00ff7f80", "01020304"]
    peer_ops = {"ops": [{"index": 0, "op": "CONV_2D", "instructions": 600, "macs": 90},
                        {"index": 1, "op": "CONV_2D", "instructions": 200, "macs": 10},
                        {"index": 2, "op": "SOFTMAX", "instructions": 150, "macs": 0}],
                "invoke_total_profiled": 1000, "outside_ops": 50}
    op_by_op = {"schedule": "greedy", "instructions": 1400,
                "per_op": [{"index": 0, "name": "c0", "kind": "tfl_conv_2d", "macs": 90, "instructions": 900},
                           {"index": 1, "name": "c1", "kind": "tfl_conv_2d", "macs": 10, "instructions": 300},
                           {"index": 2, "name": "fc", "kind": "linear", "imported_op": "tfl_fully_connected",
                            "macs": 0, "instructions": 200}]}
    a = vs.summarise(Path("/x/tfl_a.tflite"), {"cmsis_nn": _peer([1000, 1000], 5340, same, peer_ops)},
                     _hydra([1500, 1500], 4000, 2816, same), op_by_op)
    b = vs.summarise(Path("/x/tfl_b.tflite"),
                     {"cmsis_nn": _peer([4000, 4002], 26864, same), "ref": _peer([8000, 8000], 26348, same)},
                     _hydra([3000, 3000], 3256, 1536, ["00ff7f81", "01020304"]))
    return [a, b]


def test_bits_equal_names_the_inputs_and_bytes_that_differ(vs):
    assert vs.bits_equal(["0a0b", "0c0d"], ["0a0b", "0c0d"]) == {"equal": True, "inputs": 2, "differ": []}
    got = vs.bits_equal(["0a0b", "0c0d"], ["0a0b", "0c0e"])
    assert not got["equal"] and got["differ"] == [{"input": 1, "bytes_differ": 1, "of": 2}]


def test_table_has_one_row_per_model_with_ratios_and_verdicts(vs):
    rows = _rows(vs)
    assert rows[0]["instructions_ratio"] == pytest.approx(1.5)
    assert rows[1]["instructions_ratio"] == pytest.approx(3000 / 4001)
    assert rows[1]["ram_in_use_ratio"] == pytest.approx(3256 / 26864)
    table = vs.format_table(rows).splitlines()
    assert len(table) == 4  # header, rule, two models
    assert "TFLM+CMSIS-NN instructions/inference" in table[0] and "TFLM ref kernels" in table[0]
    a, b = table[2], table[3]
    assert a.startswith("| tfl_a | 1,000 | 1,500 | 1.50 | - | 5,340 | 4,000 (2,816) | yes |")
    assert b.startswith("| tfl_b | 4,001 | 3,000 | 0.75 | 8,000 | 26,864 | 3,256 (1,536) | no (input 0: 1 of 4 B) |")
    assert all(line.count("|") == table[0].count("|") for line in table)  # a well-formed Markdown table


def test_table_says_which_builds_are_for_size(vs):
    rows = _rows(vs)
    rows[0]["hydra_edge"]["built_for"] = "size"
    rows[1]["hydra_edge"]["built_for"] = "speed"
    table = vs.format_table(rows).splitlines()
    assert table[2].startswith("| tfl_a | 1,000 | 1,500 (built for size) | 1.50 |")
    assert table[3].startswith("| tfl_b | 4,001 | 3,000 | 0.75 |")


def test_table_without_the_ref_variant_has_no_ref_column(vs):
    rows = _rows(vs)[:1]
    assert "ref kernels" not in vs.format_table(rows)


def test_per_op_breakdown_lines_up_tflite_operators(vs):
    text = vs.format_per_op(_rows(vs)[0])
    assert "TFLM+CMSIS-NN 1,000 instructions" in text and "hydra-edge 1,400 op by op, 1,500 in its default" in text
    lines = text.splitlines()
    assert "| CONV_2D | 2 | 800 | 80.0% | 1,200 | 85.7% | 1.50 |" in lines
    assert "| SOFTMAX | 1 | 150 | 15.0% | - | - | - |" in lines
    assert "| FULLY_CONNECTED | - | - | - | 200 | 14.3% | - |" in lines  # hydra-edge's linear
    assert lines[-1].startswith("| (interpreter, between ops) | | 50 | 5.0% |")
    assert vs.format_per_op(_rows(vs)[1]) == ""  # no per-op counts: nothing printed


def test_json_and_plot_are_written(vs, tmp_path):
    rows = _rows(vs)
    path = vs.write_results({"format": "hydra-edge-vs-tflm-cmsis", "models": rows}, tmp_path / "r" / "vs.json")
    back = json.loads(path.read_text())
    assert [m["model"] for m in back["models"]] == ["tfl_a", "tfl_b"]
    assert back["models"][1]["bits"]["equal"] is False
    png = vs.plot(rows, tmp_path / "vs.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_existing_peer_build_is_not_rebuilt(vs, tmp_path):
    for p in vs.peer_outputs(tmp_path, "cmsis_nn"):
        p.write_text("x")
    # the peer's sources do not exist: a build would fail, a skip returns None
    assert vs.build_peer(tmp_path / "no-peer", tmp_path, "cmsis_nn", jobs=1) is None
    with pytest.raises(vs.BenchError, match="no build.sh"):
        vs.build_peer(tmp_path / "no-peer", tmp_path, "ref", jobs=1)


def test_seeded_inputs_are_int8_and_repeatable(vs):
    a, b = vs.seeded_inputs((1, 3, 4), 3), vs.seeded_inputs((1, 3, 4), 3)
    assert a.dtype == np.int8 and a.shape == (3, 1, 3, 4) and np.array_equal(a, b)


def test_a_pt2_row_against_its_tflite_twin_compares_no_bits(vs):
    same = ["00ff7f80", "01020304"]
    row = vs.summarise(Path("/x/vit.pt2"), {"cmsis_nn": _peer([4000, 4000], 30000, same),
                                            "ref": _peer([9000, 9000], 29000, same)},
                       _hydra([2000, 2000], 9000, 4096, ["7f7f7f7f", "00000000"]), twin=Path("/x/vit_twin.tflite"))
    assert row["model"] == "vit.pt2" and row["tflm_model"] == "/x/vit_twin.tflite"
    assert row["bits"] == {"equal": None, "inputs": 2, "differ": [], "note": "n/a (different quantisation)"}
    assert row["bits_ref"]["equal"] is None
    assert row["instructions_ratio"] == pytest.approx(0.5)
    line = vs.format_table([_rows(vs)[0], row]).splitlines()[3]
    assert line == "| vit.pt2 | 4,000 | 2,000 | 0.50 | 9,000 | 30,000 | 9,000 (4,096) | n/a (different quantisation) |"


def test_pt2_pairs_parse_and_default_only_without_models(vs):
    assert vs.parse_pairs(["a.pt2=b.tflite"]) == [(Path("a.pt2"), Path("b.tflite"))]
    with pytest.raises(vs.BenchError, match="PT2=TFLITE"):
        vs.parse_pairs(["a.pt2"])
    assert all(p.is_file() and t.is_file() for p, t in vs.PT2_PAIRS)  # the committed example and its twin
    assert all(m.is_file() for m in vs.MODELS)
    assert vs.bits_cell({"equal": True, "differ": []}) == "yes"
    assert vs.bits_cell({"equal": False, "differ": [{"input": 2, "bytes_differ": 3, "of": 10}]}) == \
        "no (input 2: 3 of 10 B)"


@pytest.fixture(scope="module")
def fs():
    return _benchmark("flash_size")


MAP = """Discarded input sections

 .text.unused   0x00000000       0x40 obj/runtime/src/tfl_pad.o

Linker script and memory map

LOAD obj/model.o
.isr_vector     0x00000000      0x1c8
 .isr_vector    0x00000000      0x1c8 obj/startup_stm32f746.o
                0x00000000                hydra_vector_table

.text           0x00000200      0x1f0
 *(.text .text.*)
 .text.hydra_model_run
                0x00000200       0x60 obj/model.o
                0x00000200                hydra_model_run
 .text.hydra_tfl_conv_walk_s8
                0x00000260       0x80 obj/runtime/src/tfl_fixedpoint.o
 *fill*         0x000002e0        0x4 
 .text.hydra_linear_s8
                0x000002e4       0x50 obj/runtime/src/hydra_linear.o
 .text          0x00000334       0xbc /usr/lib/arm-none-eabi/lib/thumb/v7e-m+fp/hard/libc_nano.a(libc_a-memcpy.o)

.rodata         0x000003f0      0x110
 .rodata.op0_weights
                0x000003f0      0x100 obj/model.o
 .rodata.barrel.0
                0x000004f0       0x10 obj/runtime/src/tfl_fixedpoint.o

.bss            0x20000000      0x400
 .bss.hydra_arena
                0x20000000      0x400 obj/model.o
"""


def test_flash_map_split_by_object_and_group(fs):
    text = fs.map_objects(MAP, {".text"})
    assert text == {"model.o": 0x60, "tfl_fixedpoint.o": 0x80, "*fill*": 4, "hydra_linear.o": 0x50,
                    "libc_nano.a": 0xBC}
    assert fs.map_objects(MAP, {".rodata"}) == {"model.o": 0x100, "tfl_fixedpoint.o": 0x10}
    assert fs.map_objects(MAP, {".bss"}) == {"model.o": 0x400}  # asked for by name only: breakdown asks for flash's
    assert [fs.group_of("obj/model.o", "text"), fs.group_of("obj/model.o", "rodata")] == ["model", "weights"]
    assert [fs.group_of(o) for o in ("obj/runtime/src/tfl_pad.o", "hydra_dot.o", "libc_nano.a", "main_qemu.o")] == \
        ["tfl", "native", "harness", "harness"]
    with pytest.raises(ValueError, match="GNU ld map"):
        fs.map_objects("not a map", {".text"})


def test_flash_table_with_a_baseline_and_instructions(fs):
    groups = dict(weights=5000, model=400, tfl=9000, native=6000, harness=3400)
    row = {"model": "tfl_small_cnn", "built_for": "size", "flash_bytes": 23800, "groups": groups,
           "instructions": 561000, "baseline": {"flash_bytes": 15980, "groups": groups, "instructions": 1750000}}
    lines = fs.format_table([row, {"model": "tfl_tiny_mlp", "built_for": "speed", "flash_bytes": 11388,
                                   "groups": groups}]).splitlines()
    assert lines[0].startswith("| model | built for | flash (B) | weights (B) |") and "| ratio |" in lines[0]
    assert lines[2] == ("| tfl_small_cnn | size | 23,800 | 5,000 | 400 | 9,000 | 6,000 | 3,400 | 15,980 | 1.49 "
                        "| 561,000 | 1,750,000 |")
    assert lines[3].endswith("| - | - | - | - |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert all(m.is_file() and m.suffix == ".tflite" for m in fs.default_models()) and len(fs.default_models()) >= 9

