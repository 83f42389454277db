"""RAM of a family of Hydra ViTs: hydra-edge (streamed, greedy planner) against TFLite Micro's arena.

    .venv/bin/python benchmarks/memory_vs_tflm.py [--quick] [--budget 327680]

For each model of the family (patch 4: 32x32 -> 64 tokens, 64x64 -> 256, 96x96 -> 576; D 64..192;
depth 4..8, MLP ratio 2, one seed), side by side:

- hydra-edge streamed: the arena of `compile_graph(..., schedule="stream")` on board host, when the
  stream schedule exists in this checkout; "pending" otherwise.
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


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- hydra-edge

def has_stream_schedule() -> bool:
    from hydra_edge import driver

    return "schedule" in inspect.signature(driver.compile_graph).parameters


def hydra_edge_ram(image: int, dim: int, depth: int, schedule: str | None, workdir: Path) -> dict:
    """Compile for board host; the arena (and the report's RAM figures)."""
    import numpy as np
    import torch
    from hydra_edge import driver
    from hydra_edge.frontend.module import from_module
    from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig
    from hydra_edge.passes.pipeline import lower_to_ir
    from hydra_edge.targets.board import load_board

    cfg = HydraViTConfig(image_size=image, patch_size=PATCH, embed_dim=dim, depth=depth, mlp_ratio=MLP_RATIO)
    torch.manual_seed(0)  # the seed tflite_models.py uses: the same weights
    graph = lower_to_ir(from_module(HydraViT(cfg).eval(), torch.zeros(1, 3, image, image)))
    calib = np.random.default_rng(0).standard_normal((4, 3, image, image)).astype(np.float32)
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

def largest_grid(arena_of, budget: int) -> tuple[int, dict[int, int]]:
    """The largest n such that an n x n token grid fits `budget`; arena_of(n) is about linear in n*n."""
    seen: dict[int, int] = {}

    def arena(n: int) -> int:
        if n not in seen:
            seen[n] = arena_of(n)
        return seen[n]

    a4, a8 = arena(4), arena(8)
    per_token = max(1.0, (a8 - a4) / (64 - 16))
    n = max(1, int(max(1.0, (budget - a4) / per_token + 16) ** 0.5))
    if arena(n) <= budget:
        while arena(n + 1) <= budget:
            n += 1
    else:
        while n > 1 and arena(n) > budget:
            n -= 1
        if arena(n) > budget:
            n = 0
    return n, seen


# ---------------------------------------------------------------- output

def fmt_kb(b: int | None) -> str:
    return "pending" if b is None else f"{b / 1024:,.1f}"


def ratio(a: int | None, b: int | None) -> str:
    return "-" if not a or not b else f"{b / a:.2f}x"


def table(result: dict) -> list[str]:
    head = ["image", "tokens", "D", "depth", "hydra-edge stream KB", "hydra-edge greedy KB", "TFLM arena KB",
            "TFLM head KB", ".tflite live peak KB", "TFLM / stream", "TFLM / greedy", "live peak / stream"]
    rows = []
    for m in result["models"]:
        s, g, t = m["hydra_edge_stream"], m["hydra_edge_greedy"], m["tflm"]
        rows.append([f"{m['image_size']}x{m['image_size']}", m["tokens"], m["dim"], m["depth"],
                     fmt_kb(s and s["arena_bytes"]), fmt_kb(g["arena_bytes"]), fmt_kb(t["arena_bytes"]),
                     fmt_kb(t["head_bytes"]), fmt_kb(t["live_peak_bytes"]),
                     ratio(s and s["arena_bytes"], t["arena_bytes"]), ratio(g["arena_bytes"], t["arena_bytes"]),
                     ratio(s and s["arena_bytes"], t["live_peak_bytes"])])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
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
    return lines


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
        t = tflm[(image, dim, depth)]
        rows.append({"image_size": image, "patch_size": PATCH, "tokens": (image // PATCH) ** 2, "dim": dim,
                     "depth": depth, "mlp_ratio": MLP_RATIO, "hydra_edge_stream": streamed,
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
        "tflm_note": ("smallest arena with which TFLM's Python interpreter (RecordingMicroAllocator) builds and runs "
                      "once, to resolution_bytes; head = planned activations and scratch, tail = persistent "
                      "(TfLiteEvalTensor and node structs, per-channel multipliers, op data); live_peak_bytes = "
                      "most activation bytes live at once in the .tflite's op order"),
        "models": rows,
        "fit": fit,
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
