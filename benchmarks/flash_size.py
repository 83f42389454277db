"""Flash of every int8 .tflite model's stm32f746 image, split by where the bytes come from; optionally against an
older commit.

    python benchmarks/flash_size.py [--models M.tflite ...] [--optimize auto|speed|size] [--baseline REV] [--icount]
                                    [--json FILE]

Compiles each model (by default the test models tests/models/tfl_*.tflite and benchmarks/models/*.tflite) for
the stm32f746 with `hydra-edge compile`, builds the emulation image (`make`: fw-qemu.elf) and reads its flash, text +
data as `arm-none-eabi-size` gives them (targets/elf.py: text + rodata + data). The linker map (fw-qemu.map) splits
it by the object each input section came from:

    weights    model.o's constant data: weights, biases, per-channel multipliers, params structs, tables
    model      model.o's code (hydra_model_run)
    tfl        runtime/src/tfl_*.o: the imported-.tflite kernels and tfl_fixedpoint.c
    native     runtime/src/hydra_*.o: the native kernels a legalised op runs (linear, add, mean_pool, lut, ...)
    harness    main_qemu.o, startup_stm32f746.o, newlib-nano and libgcc, alignment

`--optimize` is passed to compile (default: compile's own, auto: size for a model under 16 KB of constants); the
table says what each build was for (report.json "code"). `--baseline REV` builds the same models with the compiler and runtime of REV (a temporary `git worktree`, removed
afterwards) and adds its flash and the ratio; `--icount` adds the instructions per inference (`hydra-edge bench`,
QEMU's instruction-counting plugin) on both sides. Prints a table and writes benchmarks/results/flash_size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "flash_size.json"
BOARD = "stm32f746"
GROUPS = ("weights", "model", "tfl", "native", "harness")

# `hydra-edge` of the tree on PYTHONPATH (an old worktree's has no console script of its own)
CLI = "import sys; from hydra_edge.cli import main; sys.argv[0] = 'hydra-edge'; sys.exit(main())"


def default_models() -> list[Path]:
    return sorted((ROOT / "tests" / "models").glob("tfl_*.tflite")) + sorted(
        (ROOT / "benchmarks" / "models").glob("*.tflite"))


def _shown(path: Path) -> str:
    """A path as the results file names it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


_OUTPUT = re.compile(r"^(\.\S+|\S+)\s+0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+")
_INPUT = re.compile(r"^ (\S+)?\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_FILL = re.compile(r"^ \*fill\*\s+0x[0-9a-fA-F]+\s+0x([0-9a-fA-F]+)")


def map_objects(text: str, flash_sections: set[str]) -> dict[str, int]:
    """Bytes per input object, by file name (an archive member: its archive's), in the output sections named, from a
    GNU ld map; '*fill*' for the alignment padding between input sections."""
    sizes: dict[str, int] = {}
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Linker script and memory map"))
    except StopIteration:
        raise ValueError("not a GNU ld map: no 'Linker script and memory map'") from None
    current = None
    pending = None  # an input section's name alone on its line: its address, size and file follow on the next
    for line in lines[start + 1:]:
        if line and not line[0].isspace():
            m = _OUTPUT.match(line)
            current = m.group(1) if m else line.split()[0]
            pending = None
            continue
        if current not in flash_sections:
            continue
        fill = _FILL.match(line)
        if fill:
            sizes["*fill*"] = sizes.get("*fill*", 0) + int(fill.group(1), 16)
            continue
        if re.match(r"^ \.\S+$", line) or re.match(r"^ COMMON$", line):
            pending = line.strip()
            continue
        m = _INPUT.match(line)
        if m and (m.group(1) or pending):
            obj = m.group(4).strip()
            obj = re.sub(r"\(.*\)$", "", obj).replace("\\", "/").rsplit("/", 1)[-1]  # libc_nano.a(lib_a-memcpy.o)
            sizes[obj] = sizes.get(obj, 0) + int(m.group(3), 16)
        pending = None
    return sizes


def group_of(obj: str, section_kind: str = "") -> str:
    """The group (GROUPS) of an object file's bytes in sections of that kind (text, rodata, data)."""
    name = obj.replace("\\", "/").rsplit("/", 1)[-1]
    if name == "model.o":
        return "model" if section_kind == "text" else "weights"
    if name.startswith("tfl_") and name.endswith(".o"):
        return "tfl"
    if name.startswith("hydra_") and name.endswith(".o"):
        return "native"
    return "harness"


def breakdown(folder: Path) -> dict:
    """The image's flash (targets/elf.py) and its split by group and by object, from the linker map."""
    from hydra_edge.targets.elf import image_sizes

    sizes = image_sizes(folder / "fw-qemu.elf")
    kinds = {s["name"]: s["kind"] for s in sizes["sections"]}
    text = (folder / "fw-qemu.map").read_text(errors="replace")
    groups = dict.fromkeys(GROUPS, 0)
    objects: dict[str, int] = {}
    for kind in ("text", "rodata", "data"):
        for obj, n in map_objects(text, {name for name, k in kinds.items() if k == kind}).items():
            objects[obj] = objects.get(obj, 0) + n
            groups[group_of(obj, kind)] += n
    # what the map does not attribute (section alignment between output sections) goes with the harness
    groups["harness"] += sizes["flash_bytes"] - sum(groups.values())
    return {"flash_bytes": sizes["flash_bytes"], "text_bytes": sizes["text_bytes"],
            "rodata_bytes": sizes["rodata_bytes"], "data_bytes": sizes["data_bytes"],
            "groups": groups, "objects": dict(sorted(objects.items(), key=lambda kv: -kv[1]))}


def hydra_edge(tree: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`hydra-edge ARGS` with the compiler (and so the runtime C it copies) of `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree / "toolchain"))
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def measure(tree: Path, model: Path, folder: Path, icount: bool, jobs: int, optimize: str | None = None) -> dict:
    extra = ["--optimize", optimize] if optimize else []
    done = hydra_edge(tree, "compile", str(model), "--board", BOARD, "-o", str(folder), "--force", *extra)
    if done.returncode != 0:
        raise RuntimeError(f"compile {model.name} at {tree}: {done.stderr.strip()[-2000:]}")
    done = subprocess.run(["make", "-s", "-C", str(folder), f"-j{jobs}", "fw-qemu.elf"], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"make {model.name} at {tree}: {done.stderr.strip()[-2000:]}")
    row = breakdown(folder)
    code = json.loads((folder / "report.json").read_text()).get("code")
    row["built_for"] = code["optimize"] if code else "speed"  # before --optimize: the fast paths, -O2
    if icount:
        done = hydra_edge(tree, "bench", str(folder), "--json")
        if done.returncode != 0:
            raise RuntimeError(f"bench {model.name} at {tree}: {done.stderr.strip()[-2000:]}")
        row["instructions"] = int(json.loads(done.stdout)["inference"]["instructions"])
    return row


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one row per model."""
    base = any("baseline" in r for r in rows)
    icount = any("instructions" in r for r in rows)
    head = ["model", "built for", "flash (B)", *[f"{g} (B)" for g in GROUPS]]
    if base:
        head += ["baseline flash (B)", "ratio"]
    if icount:
        head += ["instructions"] + (["baseline instructions"] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["model"], r["built_for"], f"{r['flash_bytes']:,}", *[f"{r['groups'][g]:,}" for g in GROUPS]]
        b = r.get("baseline")
        if base:
            cells += [f"{b['flash_bytes']:,}", f"{r['flash_bytes'] / b['flash_bytes']:.2f}"] if b else ["-", "-"]
        if icount:
            cells.append(f"{r['instructions']:,}" if "instructions" in r else "-")
            if base:
                cells.append(f"{b['instructions']:,}" if b and "instructions" in b else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", type=Path, default=None,
                    help="int8 .tflite files (default: tests/models/tfl_*.tflite and benchmarks/models/*.tflite)")
    ap.add_argument("--optimize", choices=("auto", "speed", "size"), default=None,
                    help="what to build the code for (default: compile's, auto); the baseline gets no such option")
    ap.add_argument("--baseline", metavar="REV", default=None, help="also build them at this commit (git worktree)")
    ap.add_argument("--icount", action="store_true", help="also count instructions per inference (hydra-edge bench)")
    ap.add_argument("--jobs", type=int, default=2, help="make -j")
    ap.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "toolchain"))
    models = args.models or default_models()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="flash_size-") as tmp:
        tmp = Path(tmp)
        base_tree = None
        if args.baseline:
            base_tree = tmp / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.baseline],
                           check=True, capture_output=True)
        try:
            for model in models:
                t0 = time.perf_counter()
                row = {"model": model.stem, "file": _shown(model),
                       **measure(ROOT, model, tmp / model.stem, args.icount, args.jobs, args.optimize)}
                if base_tree is not None:
                    row["baseline"] = measure(base_tree, model, tmp / f"{model.stem}-baseline", args.icount,
                                              args.jobs)
                    row["ratio"] = row["flash_bytes"] / row["baseline"]["flash_bytes"]
                print(f"{model.stem}: flash {row['flash_bytes']:,} B"
                      + (f" ({row['ratio']:.2f}x {args.baseline})" if base_tree else "")
                      + f"  [{time.perf_counter() - t0:.0f} s]", file=sys.stderr)
                rows.append(row)
        finally:
            if base_tree is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                               capture_output=True)
    print(format_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "board": BOARD, "commit": head,
                                     "optimize": args.optimize or "auto", "baseline": args.baseline, "flash": "text + rodata + data of fw-qemu.elf",
                                     "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
