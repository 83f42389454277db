"""RAM of a family of Hydra ViTs: hydra-edge (streamed, greedy planner) against TFLite Micro's arena.

    .venv/bin/python benchmarks/memory_vs_tflm.py [--quick] [--budget 327680]

For each model of the family (patch 4: 32x32 -> 64 tokens, 64x64 -> 256, 96x96 -> 576; D 64..192;
depth 4..8, MLP ratio 2, one seed), side by side:

- hydra-edge streamed: the arena of `compile_graph(..., schedule="stream")` on board host, when the
  stream schedule exists in this checkout; "pending" otherwise.
- hydra-edge streamed on the emulated stm32f746: the same model compiled for board stm32f746 (schedule
  stream), built and run once under QEMU by `hydra_edge.targets.runner.measure_for_report` (what
  `hydra-edge report` uses); the arena from the linked ELF plus the stack high-water mark (stack painting),
  against the plan's lower bound (report ram.lower_bound_bytes); target: within 1.15x. A model the board
  refuses (RAM or flash) is "does not fit" with the compiler's byte count.
- hydra-edge greedy: `compile_graph(..., board=load_board("host")).plan.arena_bytes` (TFLM's algorithm on
  hydra-edge's fused graph).
- TFLM: the smallest arena with which TFLite Micro (python package tflite-micro) builds and runs the same
  network as a fully int8 .tflite (benchmarks/tflite_models.py, run in the converter venv .venv-tflite),
  found by bisection; with TFLM's own head/tail split and the .tflite graph's live-bytes peak.
- the largest square token grid that fits the budget (320 KB) at D=128, depth 6, for each.

Prints a table, writes benchmarks/results/memory_vs_tflm.json and the table into docs/memory.md (between
the BEGIN/END markers). Any failure exits non-zero before anything is written.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from fit_search import largest_grid  # benchmarks/ is on sys.path: the script's own folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory_vs_tflm.json"
DOC = ROOT / "docs" / "memory.md"
CONVERTER_VENV = ROOT / ".venv-tflite"
CONVERTER = ROOT / "benchmarks" / "tflite_models.py"
BEGIN, END = "<!-- BEGIN memory_vs_tflm -->", "<!-- END memory_vs_tflm -->"
SETUP = ("the converter venv is missing: run `make bench-tflm-setup`, or\n"
         "  python3 -m venv .venv-tflite && .venv-tflite/bin/pip install torch==2.13.0 && \\\n"
         "  .venv-tflite/bin/pip install -r benchmarks/requirements-tflite.txt")

PATCH = 4
MLP_RATIO = 2.0
# (image size, D, depth): 64, 256, 400 and 576 tokens.
FAMILY = [
    (32, 64, 4), (32, 128, 6),
    (64, 64, 4), (64, 128, 6), (64, 192, 8),
    (80, 128, 6),
    (96, 128, 6), (96, 192, 8),
]
QUICK = [(32, 64, 4), (64, 128, 6)]
FIT_DIM, FIT_DEPTH = 128, 6
BOARD = "stm32f746"
LB_TARGET, TFLM_TARGET, TFLM_TARGET_TOKENS, FIT_TARGET = 1.15, 3.0, 256, 4.0


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- hydra-edge

def has_stream_schedule() -> bool:
    from hydra_edge import driver

    return "schedule" in inspect.signature(driver.compile_graph).parameters


def model_graph(image: int, dim: int, depth: int):
    """The lowered float graph of the family's model (seed 0) and its calibration inputs."""
    import numpy as np
    import torch
    from hydra_edge.frontend.module import from_module
    from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig
    from hydra_edge.passes.pipeline import lower_to_ir

    cfg = HydraViTConfig(image_size=image, patch_size=PATCH, embed_dim=dim, depth=depth, mlp_ratio=MLP_RATIO)
    torch.manual_seed(0)  # the seed tflite_models.py uses: the same weights
    graph = lower_to_ir(from_module(HydraViT(cfg).eval(), torch.zeros(1, 3, image, image)))
    calib = np.random.default_rng(0).standard_normal((4, 3, image, image)).astype(np.float32)
    return graph, calib


def hydra_edge_ram(image: int, dim: int, depth: int, schedule: str | None, workdir: Path) -> dict:
    """Compile for board host; the arena (and the report's RAM figures)."""
    from hydra_edge import driver
    from hydra_edge.boards import load_board

    graph, calib = model_graph(image, dim, depth)
    kwargs = {"schedule": schedule} if schedule else {}
    out = workdir / f"he_{image}_{dim}_{depth}_{schedule or 'default'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = driver.compile_graph(graph, load_board("host"), out, calib, **kwargs)
    ram = result.report["ram"]
    got = {"arena_bytes": int(result.plan.arena_bytes), "peak_bytes": ram.get("peak_bytes")}
    for key in ("lower_bound_bytes", "schedule"):
        if key in ram:
            got[key] = ram[key]
    if schedule and ram.get("schedule") not in (None, schedule):
        raise BenchError(f"asked for schedule {schedule!r}, the report says {ram.get('schedule')!r}")
    return got


def hydra_edge_board(image: int, dim: int, depth: int, workdir: Path) -> dict:
    """Compile for the stm32f746 (schedule stream), build and run once under QEMU (runner.measure_for_report,
    stack painting); arena (linked ELF) + stack high-water mark against the plan's lower bound."""
    import re

    from hydra_edge import driver
    from hydra_edge.targets import runner
    from hydra_edge.boards import load_board
    from hydra_edge.targets.budget import BudgetError

    graph, calib = model_graph(image, dim, depth)
    out = workdir / f"he_{image}_{dim}_{depth}_{BOARD}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = driver.compile_graph(graph, load_board(BOARD), out, calib, schedule="stream")
    except BudgetError as exc:
        over = [{"what": w, "need_bytes": int(n.replace(",", "")), "budget_bytes": int(b.replace(",", ""))}
                for w, n, b in re.findall(r"(RAM|flash) needs ([\d,]+) B of ([\d,]+) B", str(exc))]
        return {"board": BOARD, "fits": False, "over": over, "error": str(exc)}
    note = runner.measure_for_report(out)
    if note:
        raise BenchError(f"{image}x{image} D={dim} depth {depth} on {BOARD}: {note}")
    measured = json.loads((out / "report.json").read_text()).get("measured", {})
    stack = measured.get("stack_used_bytes")
    if stack is None:
        raise BenchError(f"{image}x{image} D={dim} depth {depth} on {BOARD}: no stack high-water mark measured")
    ram = result.report["ram"]
    arena = int(measured.get("image", {}).get("arena_bytes") or result.plan.arena_bytes)
    lb = int(ram["lower_bound_bytes"])
    return {"board": BOARD, "fits": True, "schedule": ram.get("schedule"), "arena_bytes": arena,
            "stack_used_bytes": int(stack), "stack_reserved_bytes": measured.get("stack_reserved_bytes"),
            "arena_plus_stack_bytes": arena + int(stack), "lower_bound_bytes": lb,
            "ratio_to_lower_bound": round((arena + int(stack)) / lb, 4),
            "within_target": (arena + int(stack)) <= LB_TARGET * lb,
            "image_ram_bytes": measured.get("image", {}).get("ram_bytes")}


# ---------------------------------------------------------------- TFLM (converter venv)

def converter_python() -> Path:
    py = CONVERTER_VENV / "bin" / "python"
    if not py.is_file():
        raise BenchError(SETUP)
    probe = subprocess.run([str(py), "-c", "import litert_torch, ai_edge_quantizer, tflite_micro, ai_edge_litert"],
                           capture_output=True, text=True, check=False)
    if probe.returncode:
        raise BenchError(f"{py} lacks a converter package ({probe.stderr.strip().splitlines()[-1]})\n{SETUP}")
    return py


def run_converter(args: list[str], logfile: Path) -> list[dict]:
    py = converter_python()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    with open(logfile, "a") as err:
        proc = subprocess.run([str(py), str(CONVERTER), *args], stdout=subprocess.PIPE, stderr=err, text=True,
                              env=env, cwd=ROOT, check=False)
    if proc.returncode:
        tail = "\n".join(logfile.read_text(errors="replace").strip().splitlines()[-15:])
        raise BenchError(f"tflite_models.py {args[0]} failed (exit {proc.returncode}); log {logfile}:\n{tail}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def tflm_family(models: list[tuple[int, int, int]], workdir: Path, logfile: Path) -> dict:
    configs = [{"image_size": i, "patch_size": PATCH, "dim": d, "depth": L, "mlp_ratio": MLP_RATIO}
               for i, d, L in models]
    path = workdir / "configs.json"
    path.write_text(json.dumps(configs))
    rows = run_converter(["measure", str(path)], logfile)
    if len(rows) != len(configs):
        raise BenchError(f"tflite_models.py measured {len(rows)} of {len(configs)} models")
    out = {}
    for row in rows:
        c = row["config"]
        if row["unexpected_ops"]:
            raise BenchError(f"{row['key']}: ops outside TFLM's int8 set for this network: {row['unexpected_ops']}")
        out[(c["image_size"], c["dim"], c["depth"])] = row
    return out


# ---------------------------------------------------------------- fit search

# ---------------------------------------------------------------- output

def fmt_kb(b: int | None) -> str:
    return "pending" if b is None else f"{b / 1024:,.1f}"


def ratio(a: int | None, b: int | None) -> str:
    return "-" if not a or not b else f"{b / a:.2f}x"


def board_cells(b: dict | None) -> list[str]:
    """stm32f746 columns: arena KB, stack B, arena + stack KB, lower bound KB, ratio, the 1.15x check."""
    if b is None:
        return ["pending"] * 5 + ["-"]
    if not b["fits"]:
        over = "; ".join(f"{o['what']} {o['need_bytes']:,} B > {o['budget_bytes']:,} B" for o in b["over"])
        return [f"does not fit ({over})", "-", "-", "-", "-", "n/a"]
    return [fmt_kb(b["arena_bytes"]), f"{b['stack_used_bytes']:,}", fmt_kb(b["arena_plus_stack_bytes"]),
            fmt_kb(b["lower_bound_bytes"]), f"{b['ratio_to_lower_bound']:.3f}x",
            "yes" if b["within_target"] else "NO"]


def table(result: dict) -> list[str]:
    head = ["image", "tokens", "D", "depth", "hydra-edge stream KB", f"{BOARD} arena KB", f"{BOARD} stack HWM B",
            f"{BOARD} arena + stack KB", "lower bound KB", "(arena + stack) / lower bound", f"<= {LB_TARGET}x",
            "hydra-edge greedy KB", "TFLM arena KB",
            "TFLM head KB", ".tflite live peak KB", "TFLM / stream", "TFLM / greedy", "live peak / stream"]
    rows = []
    for m in result["models"]:
        s, g, t = m["hydra_edge_stream"], m["hydra_edge_greedy"], m["tflm"]
        rows.append([f"{m['image_size']}x{m['image_size']}", m["tokens"], m["dim"], m["depth"],
                     fmt_kb(s and s["arena_bytes"]), *board_cells(m.get("hydra_edge_stream_board")),
                     fmt_kb(g["arena_bytes"]), fmt_kb(t["arena_bytes"]),
                     fmt_kb(t["head_bytes"]), fmt_kb(t["live_peak_bytes"]),
                     ratio(s and s["arena_bytes"], t["arena_bytes"]), ratio(g["arena_bytes"], t["arena_bytes"]),
                     ratio(s and s["arena_bytes"], t["live_peak_bytes"])])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    lines += ["", (f"{BOARD} columns: built for the board (schedule stream) and run once under QEMU; arena from the "
                   "linked ELF, stack high-water mark by stack painting, lower bound = report ram.lower_bound_bytes. "
                   "A model the board refuses shows the compiler's byte count.")]
    f = result["fit"]
    lines += ["", (f"Largest token count that fits {f['budget_bytes']:,} B ({f['budget_bytes'] // 1024} KB) at "
                   f"D={f['dim']}, depth {f['depth']}, patch {PATCH} (square grids):"), "",
              "| runtime | max tokens | grid | arena at max, KB |", "|---|---:|---:|---:|"]
    for name in ("hydra_edge_stream", "hydra_edge_greedy", "tflm"):
        r = f[name]
        if r is None:
            lines.append(f"| {name} | pending | - | - |")
        else:
            lines.append(f"| {name} | {r['max_tokens']} | {r['grid']}x{r['grid']} | {fmt_kb(r['arena_at_max'])} |")
    tg = result.get("targets")
    if tg:
        lines += ["", "Targets:", ""]
        for key in ("lower_bound", "tflm_ratio", "fit"):
            t = tg[key]
            verdict = {True: "holds", False: "does not hold", None: "not measured"}[t["holds"]]
            if t.get("partial"):
                verdict = t["partial"]
            lines.append(f"- {t['text']}: **{verdict}** ({t['detail']})")
    return lines


def targets(rows: list[dict], fit: dict) -> dict:
    """The issue's three targets, checked on this run."""
    boards = [(m, m.get("hydra_edge_stream_board")) for m in rows]
    measured = [(m, b) for m, b in boards if b and b["fits"]]
    refused = [m for m, b in boards if b and not b["fits"]]
    lb = {"text": f"measured RAM on {BOARD} (arena + stack) within {LB_TARGET}x of the lower bound, every model",
          "holds": (all(b["within_target"] for _, b in measured) and not refused) if measured else None,
          "detail": ", ".join(f"{m['image_size']}/D{m['dim']}/L{m['depth']} {b['ratio_to_lower_bound']:.3f}x"
                              for m, b in measured)
                    + "".join(f"; {m['image_size']}/D{m['dim']}/L{m['depth']} does not fit {BOARD}, not measured "
                              f"(host stream arena / lower bound "
                              f"{m['hydra_edge_stream']['arena_bytes'] / m['hydra_edge_stream']['lower_bound_bytes']:.3f}x)"
                              for m in refused)}
    if measured and refused and all(b["within_target"] for _, b in measured):
        lb["partial"] = (f"holds on the {len(measured)} models that fit {BOARD}; "
                         f"{len(refused)} do not fit the board and are not measured")
    big = []
    for m, b in boards:
        if m["tokens"] >= TFLM_TARGET_TOKENS:
            ours = b["arena_plus_stack_bytes"] if b and b["fits"] else (m["hydra_edge_stream"] or {}).get("arena_bytes")
            big.append((m, ours, "board" if b and b["fits"] else "host arena"))
    tf = {"text": f"at >= {TFLM_TARGET_TOKENS} tokens, >= {TFLM_TARGET}x less RAM than TFLM's arena",
          "holds": bool(big) and all(o and m["tflm"]["arena_bytes"] / o >= TFLM_TARGET for m, o, _ in big),
          "detail": ", ".join(f"{m['tokens']} tok D{m['dim']}: {m['tflm']['arena_bytes'] / o:.2f}x ({src})"
                              for m, o, src in big if o)}
    s, t = fit.get("hydra_edge_stream"), fit.get("tflm")
    ft = {"text": f"at D={FIT_DIM}, depth {FIT_DEPTH}: >= {FIT_TARGET}x more tokens in {fit['budget_bytes'] // 1024} KB "
                  "than TFLM",
          "holds": (s["max_tokens"] >= FIT_TARGET * t["max_tokens"]) if s and t and t["max_tokens"] else None,
          "detail": (f"{s['max_tokens']} vs {t['max_tokens']} tokens, {s['max_tokens'] / t['max_tokens']:.2f}x "
                     "(host arenas)") if s and t and t["max_tokens"] else "not measured"}
    return {"lower_bound": lb, "tflm_ratio": tf, "fit": ft}


def write_doc(lines: list[str], result: dict) -> None:
    stamp = (f"Measured by `benchmarks/memory_vs_tflm.py` on {result['date']} "
             f"({result['versions']['tflite-micro']}, {result['versions']['litert-torch']}, "
             f"{result['versions']['ai-edge-quantizer']}). Sizes in KB (1024 B).")
    block = "\n".join([BEGIN, "", stamp, "", *lines, "", END])
    text = DOC.read_text() if DOC.exists() else f"# Memory\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Measured\n\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    DOC.write_text(pre + block + post)


def converter_versions() -> dict:
    py = converter_python()
    code = ("import importlib.metadata as m, json; print(json.dumps({p: p + ' ' + m.version(p) for p in "
            "['tflite-micro', 'litert-torch', 'ai-edge-quantizer', 'ai-edge-litert', 'torch']}))")
    return json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout)


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two models and no fit search (a smoke run)")
    ap.add_argument("--budget", type=int, default=320 * 1024, help="RAM budget in bytes for the fit search")
    ap.add_argument("--no-write", action="store_true", help="print only; write neither JSON nor docs")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    models = QUICK if args.quick else FAMILY
    stream = has_stream_schedule()
    versions = converter_versions()  # fails early, with the setup line, when the converter venv is missing
    work = Path(tempfile.mkdtemp(prefix="memory_vs_tflm_"))
    logfile = work / "converter.log"
    log(f"converter log: {logfile}")
    log(f"stream schedule: {'yes' if stream else 'not in this checkout: pending'}")

    log(f"TFLM: converting and measuring {len(models)} models ...")
    tflm = tflm_family(models, work, logfile)
    rows = []
    for image, dim, depth in models:
        log(f"hydra-edge: {image}x{image} D={dim} depth {depth}")
        greedy = hydra_edge_ram(image, dim, depth, "greedy" if stream else None, work)
        streamed = hydra_edge_ram(image, dim, depth, "stream", work) if stream else None
        on_board = None
        if stream:
            log(f"hydra-edge: {image}x{image} D={dim} depth {depth} on {BOARD} (build, QEMU)")
            on_board = hydra_edge_board(image, dim, depth, work)
        t = tflm[(image, dim, depth)]
        rows.append({"image_size": image, "patch_size": PATCH, "tokens": (image // PATCH) ** 2, "dim": dim,
                     "depth": depth, "mlp_ratio": MLP_RATIO, "hydra_edge_stream": streamed,
                     "hydra_edge_stream_board": on_board,
                     "hydra_edge_greedy": greedy,
                     "tflm": {k: t[k] for k in ("arena_bytes", "resolution_bytes", "printed_total_bytes",
                                                "head_bytes", "tail_bytes", "tail_parts", "live_peak_bytes",
                                                "live_peak_op", "n_ops", "ops", "tflite", "bytes")}})

    fit: dict = {"budget_bytes": args.budget, "dim": FIT_DIM, "depth": FIT_DEPTH, "patch_size": PATCH,
                 "hydra_edge_stream": None, "hydra_edge_greedy": None, "tflm": None}
    if not args.quick:
        for name, schedule in (("hydra_edge_greedy", "greedy" if stream else None),
                               ("hydra_edge_stream", "stream" if stream else None)):
            if name == "hydra_edge_stream" and not stream:
                continue
            log(f"fit search: {name}")
            def arena_of(n: int, schedule: str | None = schedule) -> int:
                return hydra_edge_ram(n * PATCH, FIT_DIM, FIT_DEPTH, schedule, work)["arena_bytes"]

            n, seen = largest_grid(arena_of, args.budget)
            fit[name] = {"grid": n, "max_tokens": n * n, "arena_at_max": seen.get(n), "arena_next": seen.get(n + 1),
                         "probes": {str(k * k): v for k, v in sorted(seen.items())}}
        log("fit search: tflm")
        (t,) = run_converter(["fit", "--dim", str(FIT_DIM), "--depth", str(FIT_DEPTH), "--patch", str(PATCH),
                              "--mlp-ratio", str(MLP_RATIO), "--budget", str(args.budget)], logfile)
        fit["tflm"] = {k: t[k] for k in ("grid", "max_tokens", "arena_at_max", "arena_next", "probes")}
        for name in ("hydra_edge_greedy", "hydra_edge_stream", "tflm"):
            r = fit[name]
            if r is not None and (r["arena_at_max"] is None and r["grid"] > 0 or r["arena_next"] is None):
                raise BenchError(f"fit search for {name} did not bracket the budget: {r}")

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "versions": versions,
        "stream_schedule": "measured" if stream else "pending (no schedule= keyword in hydra_edge.driver.compile_graph)",
        "board": "host (arena only: planned activations and scratch; no stack, no static data)",
        "board_note": (f"hydra_edge_stream_board: compiled for {BOARD} (schedule stream), built and run once under "
                       "QEMU (runner.measure_for_report); arena_bytes from the linked ELF, stack_used_bytes = stack "
                       "high-water mark by painting; ratio_to_lower_bound = (arena + stack) / ram.lower_bound_bytes; "
                       "image_ram_bytes = the whole linked RAM image (arena, harness I/O buffers, stack reserve)"),
        "tflm_note": ("smallest arena with which TFLM's Python interpreter (RecordingMicroAllocator) builds and runs "
                      "once, to resolution_bytes; head = planned activations and scratch, tail = persistent "
                      "(TfLiteEvalTensor and node structs, per-channel multipliers, op data); live_peak_bytes = "
                      "most activation bytes live at once in the .tflite's op order"),
        "models": rows,
        "fit": fit,
        "targets": targets(rows, fit),
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    lines = table(result)
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        write_doc(lines, result)
        log(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)} in {result['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"memory_vs_tflm: {exc}", file=sys.stderr)
        sys.exit(2)
