"""hydra-edge against TFLite Micro + CMSIS-NN on the STM32F746 (QEMU mps2-an500): instructions, RAM, bits.

    .venv/bin/python benchmarks/vs_tflm_cmsis.py [--models tests/models/tfl_small_cnn.tflite ...]
        [--pt2 examples/hydra_vit_cifar10.pt2=benchmarks/models/hydra_vit_cifar10.tflite ...]
        [--peer ../shared/peers/tflm_cmsis_nn] [--peer-build ~/.cache/hydra-edge/tflm_cmsis_nn]
        [--with-ref | --no-ref] [--per-op] [--inputs 4] [--jobs 2] [--out build/vs_tflm_cmsis]

The measuring stick of issue 18 (hydra-edge faster than TFLite Micro with Arm's CMSIS-NN kernels on the same
models). For each int8 .tflite (default: the committed tests/models/tfl_*.tflite and benchmarks/models/*.tflite,
MLPerf Tiny's architectures and the example ViT's twin) and the same seeded int8 inputs:

- the peer (../shared/peers/tflm_cmsis_nn, its README): TFLM's MicroInterpreter with OPTIMIZED_KERNEL_DIR=cmsis_nn,
  bare metal on QEMU mps2-an500 (Cortex-M7). Built once into a cache folder (build.sh with TFLM_PEER_BUILD; ~20 min
  at -j2; skipped when its outputs exist, `--rebuild` runs build.sh again and make does only what changed). Its
  run.py gives the instructions of each Invoke() (QEMU plugin, markers around Invoke), its exact smallest arena
  (bisected to the byte) and whether its outputs equal the tflite-micro Python interpreter's byte for byte.
  `--with-ref` builds and adds TFLM's portable reference kernels too (~12 min more); a ref build already in the
  cache is measured anyway.
- hydra-edge: driver.compile_model(model, "stm32f746", out); the same inputs run under QEMU (what `validate`
  does: the outputs compared with the reference interpreter byte for byte, the stack painted and measured);
  the images' RAM as `hydra-edge report` gives it (runner.measure_for_report, report.json "measured": RAM in use
  = data + bss + stack high-water mark, and the arena inside bss); instructions as `hydra-edge bench` counts them
  (targets.icount.bench on the same inputs: first op to last of each inference).
- bits: hydra-edge's output bytes against the peer's, input by input.

`--pt2 PT2=TFLITE` rows (default, when --models is not given either: examples/hydra_vit_cifar10.pt2 against
benchmarks/models/hydra_vit_cifar10.tflite) put what a PyTorch user would otherwise do beside hydra-edge: hydra-edge
compiles the .pt2 itself (as `hydra-edge compile` does with no --calib: ranges from its standard-normal fallback
inputs), the peer runs the model's int8 .tflite twin (benchmarks/tflite_models.py). The same int8 input bytes go to
both, but the two sides quantise differently, so their bits are not compared ("n/a (different quantisation)"):
instructions and RAM only.

Prints one table, writes benchmarks/results/vs_tflm_cmsis.json and benchmarks/results/vs_tflm_cmsis.png
(instructions ratio and RAM ratio per model). The two instruction counts cover slightly different regions:
TFLM's is the whole Invoke() (interpreter loop included), hydra-edge's is from the marker before its first kernel
call to the one after its last (the input copy into the arena and the output copy are outside, as TFLM's input and
output tensor writes are outside Invoke). TFLM's RAM figure is its arena only (no stack, no interpreter object,
no .data/.bss); hydra-edge's "RAM in use" is everything its image uses, arena included, so that comparison is
conservative for hydra-edge. QEMU counts instructions, not cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEST_MODELS = [ROOT / "tests" / "models" / f"{name}.tflite"
               for name in ("tfl_tiny_mlp", "tfl_small_cnn", "tfl_hydra_vit", "tfl_softmax_vit")]
# benchmarks/models/README.md: MLPerf Tiny's reference architectures (seeded weights) and the example ViT's twin
BENCH_MODELS = [ROOT / "benchmarks" / "models" / f"{name}.tflite"
                for name in ("resnet8", "ds_cnn", "mobilenet_v1_025", "autoencoder", "hydra_vit_cifar10")]
MODELS = TEST_MODELS + BENCH_MODELS
# (.pt2 that hydra-edge compiles, its int8 .tflite twin that TFLM runs): what a PyTorch user would otherwise do
PT2_PAIRS = [(ROOT / "examples" / "hydra_vit_cifar10.pt2", ROOT / "benchmarks" / "models" / "hydra_vit_cifar10.tflite")]
NOT_COMPARABLE = "n/a (different quantisation)"
RESULTS = ROOT / "benchmarks" / "results" / "vs_tflm_cmsis.json"
PLOT = RESULTS.with_suffix(".png")
BOARD = "stm32f746"
SEED = 20260101  # the peer's README made its inputs for these models with numpy default_rng(20260101)
N_INPUTS = 4
PEER_NAME = "tflm_cmsis_nn"
PEER_ENV = "TFLM_PEER_SRC"  # where the peer's sources are, if not ../shared/peers/tflm_cmsis_nn
VARIANTS = ("cmsis_nn", "ref")
VARIANT_LABEL = {"cmsis_nn": "TFLM+CMSIS-NN", "ref": "TFLM ref kernels"}


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    """A path as the results name it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------- the peer


def _main_checkout() -> Path | None:
    """The main checkout when this one is a git worktree (its shared/ sits beside that one), else None."""
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(common.stdout.strip()).parent if common.returncode == 0 and common.stdout.strip() else None


def default_peer() -> Path:
    """$TFLM_PEER_SRC, else shared/peers/tflm_cmsis_nn inside or beside the checkout (or beside the main
    checkout, from a git worktree)."""
    if os.environ.get(PEER_ENV):
        return Path(os.environ[PEER_ENV])
    bases = [ROOT / "shared", ROOT.parent / "shared"]
    main = _main_checkout()
    if main is not None:
        bases.append(main.parent / "shared")
    for base in bases:
        if (base / "peers" / PEER_NAME / "run.py").is_file():
            return base / "peers" / PEER_NAME
    return ROOT.parent / "shared" / "peers" / PEER_NAME


def default_peer_build() -> Path:
    from hydra_edge.targets.icount import cache_dir

    return cache_dir() / PEER_NAME


def peer_outputs(build: Path, variant: str) -> list[Path]:
    """What run.py needs of a variant's build (build.sh's outputs)."""
    return [build / f"fw_{variant}.elf", build / f"fw_{variant}.marker", build / "insn_count.so"]


def peer_built(build: Path, variant: str) -> bool:
    return all(p.is_file() for p in peer_outputs(build, variant))


def build_peer(peer: Path, build: Path, variant: str, jobs: int, rebuild: bool = False) -> float | None:
    """build.sh VARIANT into `build` unless its outputs are there (or `rebuild`: make redoes what changed).
    Returns the seconds it took, None when skipped."""
    if peer_built(build, variant) and not rebuild:
        return None
    script = peer / "build.sh"
    if not script.is_file():
        raise BenchError(f"the peer is not at {peer} (no build.sh): pass --peer or set {PEER_ENV}")
    build.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TFLM_PEER_BUILD=str(build), JOBS=str(jobs))
    log(f"building the peer ({variant}) into {build}: about 20 min for cmsis_nn, 12 for ref at -j2 ...")
    t0 = time.perf_counter()
    with open(build / f"build_{variant}.log", "w") as out:
        proc = subprocess.run(["nice", "-n", "10", "bash", str(script), variant], env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or not peer_built(build, variant):
        tail = (build / f"build_{variant}.log").read_text(errors="replace").splitlines()[-15:]
        raise BenchError(f"build.sh {variant} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    log(f"  built in {took / 60:.1f} min")
    return took


def run_peer(peer: Path, build: Path, variant: str, model: Path, inputs: Path, per_op: bool, work: Path) -> dict:
    """run.py on the model and inputs; its JSON. Exit 3 (outputs differ from the Python interpreter's) is a
    result, not a failure: the JSON says which."""
    out = work / f"peer_{variant}_{model.stem}.json"
    cmd = [sys.executable, str(peer / "run.py"), str(model), str(inputs), "--json", str(out), "--variant", variant,
           "--build-dir", str(build), "--quiet"] + (["--per-op"] if per_op else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 3) or not out.is_file():
        raise BenchError(f"the peer's run.py failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                         f"{(proc.stdout + proc.stderr).strip()[-3000:]}")
    return json.loads(out.read_text())


def peer_summary(r: dict) -> dict:
    """The figures the table and JSON keep of a run.py result."""
    ref = r.get("python_ref")
    got = {
        "instructions_per_inference": r["instructions_per_inference"],
        "instructions_mean": float(r["instructions_per_inference_mean"]),
        "macs": r.get("macs"),
        "smallest_arena_bytes": r.get("smallest_arena_bytes"),
        "smallest_arena_verified": r.get("smallest_arena_verified"),
        "arena_used_bytes": r.get("arena_used_bytes"),
        "bit_exact_vs_tflite_micro_python": ref.get("bit_exact") if isinstance(ref, dict) else None,
        "python_ref": ref.get("package") if isinstance(ref, dict) else ref,
        "outputs_hex": r["outputs_hex"],
    }
    if "per_op" in r:
        got["per_op"] = r["per_op"]
    return got


# ---------------------------------------------------------------- hydra-edge


def run_hydra(model: Path, x: np.ndarray, out: Path, per_op: bool) -> dict:
    """Compile for the stm32f746, run the inputs under QEMU (validate's check), measure RAM (report) and count
    instructions (bench) on the same inputs."""
    from hydra_edge import driver
    from hydra_edge.build_manifest import REPORT_FILE
    from hydra_edge.targets import runner
    from hydra_edge.targets.icount import bench
    from hydra_edge.validate.bitexact import compare, reference_outputs

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        driver.compile_model(model, BOARD, out)
    _, graph = driver.load_build(out)
    rows = x.reshape(len(x), -1)
    outputs = runner.run(out, rows)                     # as validate: built, run under QEMU, stack measured
    check = compare(reference_outputs(graph, x), outputs)
    note = runner.measure_for_report(out)               # as report: the ELF figures of both images
    if note:
        raise BenchError(note)
    report = json.loads((out / REPORT_FILE).read_text())
    measured = report["measured"]
    image = measured["image"]
    counted = bench(out, runs=1, x=rows)
    each = counted["inference"]["instructions_each"]
    got = {
        "build": shown(out),
        "instructions_per_inference": each,
        "instructions_mean": float(np.mean(each)),
        "macs": counted["inference"]["macs"],
        "arena_bytes": image.get("arena_bytes"),
        "ram_in_use_bytes": image["data_bytes"] + image["bss_bytes"] + measured["stack_used_bytes"],
        "ram_image_bytes": image["ram_bytes"],
        "stack_used_bytes": measured["stack_used_bytes"],
        "flash_bytes": image["flash_bytes"],
        "built_for": report["code"]["optimize"],  # compile's --optimize auto: size under 16 KB of constants
        "bit_exact_vs_reference": check.ok,
        "outputs_hex": [bytes(r.astype(np.int8).tobytes()).hex() for r in outputs],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if per_op:
        got["per_op"] = [{k: op[k] for k in ("index", "name", "kind", "macs", "instructions")}
                         for op in counted["ops"]]
    return got


def run_hydra_op_by_op(model: Path, x: np.ndarray, out: Path) -> dict:
    """The same model op by op (--schedule greedy: no token loops, each TFLite operator its own kernel call,
    the same bits), counted on the first input: where hydra-edge's instructions go per operator."""
    from hydra_edge import driver
    from hydra_edge.targets.icount import bench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        driver.compile_model(model, BOARD, out, schedule="greedy")
    counted = bench(out, runs=1, x=x[:1].reshape(1, -1))
    return {"build": shown(out), "schedule": "greedy", "instructions": counted["inference"]["instructions"],
            "per_op": [{k: op.get(k) for k in ("index", "name", "kind", "imported_op", "macs", "instructions")}
                       for op in counted["ops"]]}


# ---------------------------------------------------------------- inputs, comparison


def model_input(model: Path) -> tuple[int, ...]:
    """The input shape of an int8 .tflite as hydra-edge reads it (the file's, batch 1 included)."""
    from hydra_edge import driver

    graph = driver.load_model(model)
    t = graph.tensors[graph.inputs[0]]
    if str(t.dtype) != "int8":
        raise BenchError(f"{model}: the input is {t.dtype}; this benchmark feeds int8 inputs")
    return tuple(int(d) for d in t.shape)


def seeded_inputs(shape: tuple[int, ...], n: int = N_INPUTS, seed: int = SEED) -> np.ndarray:
    """n int8 inputs of `shape`, uniform over [-128, 127], the same for both sides."""
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *shape), dtype=np.int8)


def bits_equal(a_hex: list[str], b_hex: list[str]) -> dict:
    """Output bytes compared input by input."""
    differ = []
    for i, (a, b) in enumerate(zip(a_hex, b_hex)):
        ba, bb = bytes.fromhex(a), bytes.fromhex(b)
        if ba != bb:
            n = sum(x != y for x, y in zip(ba, bb)) + abs(len(ba) - len(bb))
            differ.append({"input": i, "bytes_differ": n, "of": max(len(ba), len(bb))})
    same = not differ and len(a_hex) == len(b_hex)
    return {"equal": same, "inputs": len(a_hex), "differ": differ}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summarise(model: Path, peer: dict[str, dict], hydra: dict, op_by_op: dict | None = None,
              twin: Path | None = None) -> dict:
    """One row. `twin`: the peer ran this .tflite while hydra-edge compiled `model` (a .pt2): two quantisations,
    so the bits are not compared."""
    base = peer["cmsis_nn"]
    if twin is None:
        bits = bits_equal(hydra["outputs_hex"], base["outputs_hex"])
    else:
        bits = {"equal": None, "inputs": len(hydra["outputs_hex"]), "differ": [], "note": NOT_COMPARABLE}
    row = {
        "model": model.stem if twin is None else model.name,
        "path": shown(model),
        "tflm": peer,
        "hydra_edge": hydra,
        "bits": bits,
        "instructions_ratio": ratio(hydra["instructions_mean"], base["instructions_mean"]),
        "ram_in_use_ratio": ratio(hydra["ram_in_use_bytes"], base["smallest_arena_bytes"]),
        "arena_ratio": ratio(hydra["arena_bytes"], base["smallest_arena_bytes"]),
    }
    if twin is not None:
        row["tflm_model"] = shown(twin)
    if op_by_op:
        row["hydra_edge_op_by_op"] = op_by_op
    if "ref" in peer:
        row["bits_ref"] = bits if twin is not None else bits_equal(hydra["outputs_hex"], peer["ref"]["outputs_hex"])
    return row


def bits_cell(bits: dict) -> str:
    """The table's verdict: yes, no (which inputs and bytes), or why the bits are not compared."""
    if bits["equal"] is None:
        return bits.get("note", "n/a")
    if bits["equal"]:
        return "yes"
    return "no (" + ", ".join(f"input {d['input']}: {d['bytes_differ']} of {d['of']} B" for d in bits["differ"]) + ")"


# ---------------------------------------------------------------- table, JSON, plot


def _n(v: float | None) -> str:
    return "-" if v is None else f"{round(v):,}"


def format_table(rows: list[dict]) -> str:
    """The one table: a Markdown table (docs/boards.md takes it as it is)."""
    with_ref = any("ref" in r["tflm"] for r in rows)
    head = ["model", "TFLM+CMSIS-NN instructions/inference", "hydra-edge instructions/inference", "ratio (hydra/TFLM)"]
    if with_ref:
        head.append("TFLM ref kernels instructions/inference")
    head += ["TFLM smallest arena (B)", "hydra-edge RAM in use (arena) (B)", "bits equal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for r in rows:
        t, h = r["tflm"]["cmsis_nn"], r["hydra_edge"]
        ratio_s = "-" if r["instructions_ratio"] is None else f"{r['instructions_ratio']:.2f}"
        size = " (built for size)" if h.get("built_for") == "size" else ""
        cells = [r["model"], _n(t["instructions_mean"]), _n(h["instructions_mean"]) + size, ratio_s]
        if with_ref:
            cells.append(_n(r["tflm"]["ref"]["instructions_mean"]) if "ref" in r["tflm"] else "-")
        cells += [_n(t["smallest_arena_bytes"]), f"{_n(h['ram_in_use_bytes'])} ({_n(h['arena_bytes'])})",
                  bits_cell(r["bits"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tflite_name(op: dict) -> str:
    """The TFLite operator a hydra-edge op runs: the tfl_* op a legalised native node replaced (its
    imported_op, e.g. lut from tfl_logistic), or its own kind (tfl_conv_2d -> CONV_2D); others as they are."""
    kind = op.get("imported_op") or op["kind"]
    return kind[4:].upper() if kind.startswith("tfl_") else kind


def kind_totals(ops: list[dict], name) -> dict[str, list[int]]:
    """{name(op): [instructions, ops]} summed per kind."""
    acc: dict[str, list[int]] = {}
    for op in ops:
        a = acc.setdefault(name(op), [0, 0])
        a[0] += int(op["instructions"])
        a[1] += 1
    return acc


def format_per_op(row: dict) -> str:
    """Where the instructions go on each side (first input), per TFLite operator: TFLM+CMSIS-NN's profiled
    Invoke against hydra-edge's op-by-op build (--schedule greedy; its default build fuses token loops,
    whose ops cannot be counted apart)."""
    t, h = row["tflm"]["cmsis_nn"].get("per_op"), row.get("hydra_edge_op_by_op")
    if not t or not h:
        return ""
    t_total = int(t["invoke_total_profiled"])
    h_total = sum(op["instructions"] for op in h["per_op"])
    tk = kind_totals(t["ops"], lambda op: op["op"])
    hk = kind_totals(h["per_op"], tflite_name)
    names = sorted(set(tk) | set(hk), key=lambda k: -max(tk.get(k, [0])[0], hk.get(k, [0])[0]))
    lines = [f"{row['model']} (first input): TFLM+CMSIS-NN {t_total:,} instructions (profiled Invoke); hydra-edge "
             f"{h_total:,} op by op, {row['hydra_edge']['instructions_per_inference'][0]:,} in its default build",
             "",
             *([f"(TFLM runs {row['tflm_model']}; hydra-edge compiled the .pt2, whose operators are its own IR's, "
                "not TFLite's)", ""] if "tflm_model" in row else []),
             "| operator | TFLM ops | TFLM+CMSIS-NN instructions | share | hydra-edge instructions (op by op) | share "
             "| hydra/TFLM |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k in names:
        ti, tn = tk.get(k, [None, 0])
        hi = hk.get(k, [None])[0]
        lines.append(f"| {k} | {tn or '-'} | {_n(ti)} | {'-' if ti is None else f'{100 * ti / t_total:.1f}%'} | "
                     f"{_n(hi)} | {'-' if hi is None else f'{100 * hi / h_total:.1f}%'} | "
                     f"{'-' if not ti or hi is None else f'{hi / ti:.2f}'} |")
    outside = int(t["outside_ops"])
    lines.append(f"| (interpreter, between ops) | | {outside:,} | {100 * outside / t_total:.1f}% | | | |")
    return "\n".join(lines)


def write_results(result: dict, path: Path = RESULTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def plot(rows: list[dict], path: Path = PLOT) -> Path:
    """Per model: instructions ratio (hydra/TFLM+CMSIS-NN) and RAM ratios (hydra RAM in use and arena against
    TFLM's smallest arena); 1.0 marked."""
    from matplotlib.figure import Figure

    names = [r["model"] for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.2), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    ins = [r["instructions_ratio"] or 0.0 for r in rows]
    bars = ax1.bar(x, ins, color=["#c44e52" if v > 1 else "#55a868" for v in ins])
    ax1.bar_label(bars, labels=[f"{v:.2f}" for v in ins], fontsize=8)
    ax1.set_title("instructions/inference: hydra-edge / TFLM+CMSIS-NN", fontsize=9)
    w = 0.38
    use = [r["ram_in_use_ratio"] or 0.0 for r in rows]
    arena = [r["arena_ratio"] or 0.0 for r in rows]
    b1 = ax2.bar(x - w / 2, use, w, color="#4c72b0", label="hydra-edge RAM in use")
    b2 = ax2.bar(x + w / 2, arena, w, color="#8172b2", label="hydra-edge arena")
    ax2.bar_label(b1, labels=[f"{v:.2f}" for v in use], fontsize=7)
    ax2.bar_label(b2, labels=[f"{v:.2f}" for v in arena], fontsize=7)
    ax2.set_title("RAM: hydra-edge / TFLM smallest arena", fontsize=9)
    ax2.legend(fontsize=7, loc="upper right")
    for ax in (ax1, ax2):
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20, fontsize=8, ha="right")
        ax.set_ylim(0, max([1.0, *(ins if ax is ax1 else use + arena)]) * 1.18)
    pt2 = " (a .pt2 row: hydra-edge compiles the .pt2, TFLM runs its .tflite twin)" if any(
        "tflm_model" in r for r in rows) else ""
    fig.suptitle(f"STM32F746 (QEMU mps2-an500), same int8 .tflite and inputs{pt2}; below 1 = hydra-edge better",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------- main


def parse_pairs(specs: list[str]) -> list[tuple[Path, Path]]:
    """--pt2 PT2=TFLITE arguments -> [(pt2, tflite)]."""
    pairs = []
    for spec in specs:
        pt2, sep, tflite = spec.partition("=")
        if not sep or not pt2 or not tflite:
            raise BenchError(f"--pt2 wants PT2=TFLITE (the .pt2 hydra-edge compiles, the .tflite TFLM runs), "
                             f"got {spec!r}")
        pairs.append((Path(pt2), Path(tflite)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", type=Path, default=None,
                    help="int8 .tflite files (default: tests/models/tfl_*.tflite and benchmarks/models/*.tflite)")
    ap.add_argument("--pt2", nargs="*", default=None, metavar="PT2=TFLITE",
                    help="hydra-edge compiles PT2, TFLM runs its int8 twin TFLITE; bits not compared (default: "
                         "examples/hydra_vit_cifar10.pt2=benchmarks/models/hydra_vit_cifar10.tflite when --models "
                         "is not given either; --pt2 with no pair: none)")
    ap.add_argument("--peer", type=Path, default=None, help=f"the peer's sources (default ${PEER_ENV}, else "
                    "shared/peers/tflm_cmsis_nn in or beside the checkout)")
    ap.add_argument("--peer-build", type=Path, default=None,
                    help="the peer's build cache (default ~/.cache/hydra-edge/tflm_cmsis_nn)")
    ref = ap.add_mutually_exclusive_group()
    ref.add_argument("--with-ref", action="store_true", help="also build and measure TFLM's reference kernels")
    ref.add_argument("--no-ref", action="store_true",
                     help="measure TFLM+CMSIS-NN only, even when the reference-kernel build is in the cache")
    ap.add_argument("--rebuild", action="store_true", help="run build.sh even when its outputs exist")
    ap.add_argument("--jobs", type=int, default=2, help="make -j for the peer build")
    ap.add_argument("--inputs", type=int, default=N_INPUTS, help="seeded int8 inputs per model")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--per-op", action="store_true", help="per-op counts on both sides (first input)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "vs_tflm_cmsis", help="hydra-edge build folders")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=PLOT)
    args = ap.parse_args(argv)
    models = MODELS if args.models is None else args.models
    pairs = parse_pairs(args.pt2) if args.pt2 is not None else (PT2_PAIRS if args.models is None else [])

    peer = (args.peer or default_peer()).resolve()
    if not (peer / "run.py").is_file():
        raise BenchError(f"the peer is not at {peer} (no run.py): pass --peer or set {PEER_ENV}")
    build = (args.peer_build or default_peer_build()).expanduser().resolve()
    variants = ["cmsis_nn"] + (["ref"] if args.with_ref or (peer_built(build, "ref") and not args.no_ref) else [])
    build_s = {}
    for v in variants:
        took = build_peer(peer, build, v, args.jobs, args.rebuild)
        if took is not None:
            build_s[v] = round(took, 1)

    rows = []
    with tempfile.TemporaryDirectory(prefix="vs_tflm_") as tmp:
        work = Path(tmp)
        for model, twin in [(m, None) for m in models] + pairs:
            model = model.resolve()
            tflite = (twin or model).resolve()
            shape = model_input(tflite)
            x = seeded_inputs(shape, args.inputs, args.seed)
            npy = work / f"{tflite.stem}.inputs.npy"
            np.save(npy, x)
            log(f"{model.name if twin else model.stem}: input {shape}, {len(x)} inputs"
                + (f"; TFLM runs {shown(tflite)}" if twin else ""))
            peer_res = {}
            for v in variants:
                t0 = time.perf_counter()
                peer_res[v] = peer_summary(run_peer(peer, build, v, tflite, npy, args.per_op and v == "cmsis_nn", work))
                log(f"  peer {v}: {peer_res[v]['instructions_mean']:,.0f} instructions, "
                    f"arena {peer_res[v]['smallest_arena_bytes']} B ({time.perf_counter() - t0:.0f} s)")
            build_name = model.stem + (".pt2" if twin else "")
            hydra = run_hydra(model, x, args.out / build_name, args.per_op)
            log(f"  hydra-edge: {hydra['instructions_mean']:,.0f} instructions, RAM in use "
                f"{hydra['ram_in_use_bytes']} B ({hydra['seconds']} s)")
            op_by_op = run_hydra_op_by_op(model, x, args.out / f"{build_name}.op_by_op") if args.per_op else None
            rows.append(summarise(model, peer_res, hydra, op_by_op, tflite if twin else None))

    table = format_table(rows)
    print(table)
    per_op = [s for s in (format_per_op(r) for r in rows) if s]
    for s in per_op:
        print()
        print(s)
    result = {
        "format": "hydra-edge-vs-tflm-cmsis",
        "version": 1,
        "board": BOARD,
        "command": "python benchmarks/vs_tflm_cmsis.py" + (" " + shlex.join(argv) if argv else
                                                          (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")),
        "counter": "QEMU TCG plugin: executed guest instructions (not cycles)",
        "inputs": {"n": args.inputs, "seed": args.seed,
                   "how": "numpy default_rng(seed).integers(-128, 128, (n, *input shape), int8)"},
        "peer": {"source": str(peer), "build": str(build), "variants": variants, "build_seconds": build_s},
        "models": rows,
        "table": table,
    }
    print(f"\nwrote {shown(write_results(result, args.json))}, {shown(plot(rows, args.plot))}", file=sys.stderr)
    return 0 if all(r["bits"]["equal"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "toolchain"))  # run from a checkout without an installed hydra_edge
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
