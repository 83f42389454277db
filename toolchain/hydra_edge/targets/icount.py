"""Exact instruction counts on the emulated targets, per op and per inference (`hydra-edge bench`).

QEMU runs the board's image with a small TCG plugin (plugin/insn_count.c,
built here from source with the host C compiler and cached per user) that
counts every executed guest instruction and records the count each time the
generated code calls `hydra_op_marker` (emit_c.OP_MARKER: once before each
kernel call and once after the last). Region k between marker calls k and
k+1 is op k of the build's graph (graph.json node order): the kernel, its
status check and the marker call itself.

QEMU counts instructions, not cycles: no pipeline, caches, flash wait states
or multi-cycle instructions. The counts are exact and repeatable (same image,
same input, same count), so they compare kernels and builds, not seconds.

    plugin_path()                       the built plugin (.so), cached by source hash
    elf_symbol(elf, name)               a symbol's address from the ELF symbol table
    count(cmd, marker, cwd=...)         run one emulator command under the plugin -> Counts
    bench(folder, runs=1)               build, run, map regions to ops -> JSON-able dict
                                        (functions=True: and instructions per function, functions.py)
    format_bench(result)                the tables `hydra-edge bench` prints
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..boards import Board, load_board
from ..build_manifest import REPORT_FILE, TEST_VECTORS, read_manifest
from ..codegen.emit_c import OP_MARKER
from ..errors import HydraEdgeError
from .elf import ElfError
from .functions import FunctionCountError, by_function, format_functions, parse_pc_counts

PLUGIN_SOURCE = Path(__file__).resolve().parent / "plugin" / "insn_count.c"
PLUGIN_CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-shared", "-fPIC",
                 "-fvisibility=hidden")
CACHE_ENV = "HYDRA_EDGE_CACHE"
HOST_CC_ENV = "HYDRA_EDGE_HOST_CC"
BENCH_JSON = "bench.json"
BENCH_PORTABLE_JSON = "bench-portable.json"
PORTABLE_CPPFLAGS = "-DHYDRA_PORTABLE_KERNELS"  # hydra_dot.c: the plain C loop on every target
COUNTS_MAGIC = "hydra-edge-insn-count"
DEFAULT_TIMEOUT = 600.0
NOTE = ("QEMU counts executed instructions, not cycles: no pipeline, cache, flash wait-state or "
        "multi-cycle effects. Counts are exact and repeatable; use them to compare kernels and builds.")


class IcountError(HydraEdgeError, RuntimeError):
    """The plugin cannot be built, the emulator or marker is missing, or the counted run failed."""


# -- the plugin ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Per-user cache: $HYDRA_EDGE_CACHE, else $XDG_CACHE_HOME/hydra-edge, else ~/.cache/hydra-edge."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hydra-edge"


def host_cc() -> str:
    """The host C compiler for the plugin: $HYDRA_EDGE_HOST_CC, else gcc, else cc ($CC may be a cross compiler)."""
    for name in (os.environ.get(HOST_CC_ENV), "gcc", "cc"):
        if name and shutil.which(name):
            return name
    raise IcountError("no host C compiler to build the QEMU plugin (apt-get install gcc, or set HYDRA_EDGE_HOST_CC)")


def plugin_path(cc: str | None = None, source: Path = PLUGIN_SOURCE, cache: Path | None = None,
                extra_flags: tuple[str, ...] = ()) -> Path:
    """Build the counting plugin once (keyed by source, compiler and flags); returns the .so's path."""
    cc = cc or host_cc()
    if not source.is_file():
        raise IcountError(f"the plugin source {source} is missing (a broken install?)")
    flags = PLUGIN_CFLAGS + tuple(extra_flags)
    key = hashlib.sha256(source.read_bytes() + "\0".join((cc, *flags)).encode()).hexdigest()[:16]
    folder = (cache or cache_dir()) / "qemu-plugin"
    so = folder / f"insn_count-{key}.so"
    if so.is_file():
        return so
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable home: a per-user temp folder still caches within this machine
        folder = Path(tempfile.gettempdir()) / f"hydra-edge-{os.getuid()}" / "qemu-plugin"
        folder.mkdir(parents=True, exist_ok=True)
        so = folder / so.name
        if so.is_file():
            return so
    tmp = folder / f".{so.name}.{os.getpid()}.tmp"
    cmd = [cc, *flags, "-o", str(tmp), str(source)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IcountError(f"building the QEMU plugin failed ({' '.join(cmd)}): {exc}") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise IcountError(f"building the QEMU plugin failed ({' '.join(cmd)}):\n{(proc.stdout + proc.stderr).strip()}")
    os.replace(tmp, so)  # atomic: parallel builders each write their own tmp
    return so


# -- ELF symbols ----------------------------------------------------------------------------------------

_EM_ARM = 40
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_STT_FUNC = 2


def elf_symbol(path: str | Path, name: str) -> int:
    """Address of symbol `name` in an ELF file (32 or 64 bit, little or big endian).

    For 32-bit ARM the Thumb bit of a function symbol is cleared: the address of its first instruction.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise IcountError(f"{path} is not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        e_machine, = struct.unpack_from(end + "H", data, 18)
        e_shoff, = struct.unpack_from(end + "Q", data, 40)
        e_shentsize, e_shnum = struct.unpack_from(end + "HH", data, 58)
    else:
        e_machine, = struct.unpack_from(end + "H", data, 18)
        e_shoff, = struct.unpack_from(end + "I", data, 32)
        e_shentsize, e_shnum = struct.unpack_from(end + "HH", data, 46)

    def section(i: int) -> tuple[int, int, int, int, int]:
        """(type, offset, size, link, entsize) of section i."""
        off = e_shoff + i * e_shentsize
        if is64:
            _, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize = struct.unpack_from(
                end + "IIQQQQIIQQ", data, off)
        else:
            _, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize = struct.unpack_from(
                end + "IIIIIIIIII", data, off)
        return sh_type, sh_offset, sh_size, sh_link, sh_entsize

    sections = [section(i) for i in range(e_shnum)]
    target = name.encode()
    for wanted in (_SHT_SYMTAB, _SHT_DYNSYM):
        for sh_type, off, size, link, entsize in sections:
            if sh_type != wanted or not entsize:
                continue
            _, str_off, str_size, _, _ = sections[link]
            strtab = data[str_off:str_off + str_size]
            for k in range(size // entsize):
                at = off + k * entsize
                if is64:
                    st_name, st_info, _, _, st_value, _ = struct.unpack_from(end + "IBBHQQ", data, at)
                else:
                    st_name, st_value, _, st_info, _, _ = struct.unpack_from(end + "IIIBBH", data, at)
                if strtab[st_name:strtab.find(b"\0", st_name)] != target or st_value == 0:
                    continue
                if e_machine == _EM_ARM and (st_info & 0xF) == _STT_FUNC:
                    st_value &= ~1
                return st_value
    raise IcountError(f"{path}: no symbol {name!r} (was the model emitted by an older hydra-edge, or stripped?)")


# -- counting one run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What the plugin wrote: all instructions of the run, and the count before each marker execution."""

    total: int
    marker: int
    hits: tuple[int, ...]

    def regions(self) -> list[int]:
        """Instructions between consecutive marker executions (len(hits) - 1 regions)."""
        return [b - a for a, b in zip(self.hits, self.hits[1:])]


def parse_counts(text: str) -> Counts:
    lines = text.split("\n")
    try:
        if lines[0].split()[0] != COUNTS_MAGIC:
            raise ValueError("not an instruction count file")
        fields = {}
        for line in lines[1:4]:
            key, value = line.split()
            fields[key] = value
        if any(line.startswith("error") for line in lines):
            raise ValueError(next(line for line in lines if line.startswith("error")))
        n = int(fields["hits"])
        hits = tuple(int(v) for v in lines[4:4 + n])
        if len(hits) != n:
            raise ValueError(f"{n} marker hits announced, {len(hits)} found")
        return Counts(int(fields["total"]), int(fields["marker"], 16), hits)
    except (ValueError, KeyError, IndexError) as exc:
        raise IcountError(f"unreadable instruction counts: {exc}") from None


def count(cmd: list[str], marker: int | None = None, cwd: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT,
          env: dict[str, str] | None = None, plugin: Path | None = None,
          pcs: Path | None = None) -> tuple[Counts, subprocess.CompletedProcess]:
    """Run a QEMU command line with the counting plugin; returns the counts and the finished process.

    `cmd[0]` must be a QEMU binary (qemu-system-*, qemu-<arch>); the plugin options go right after it,
    before the guest program of user-mode QEMU. A non-zero exit is an IcountError. `pcs`: where the plugin
    also writes each instruction address's count (functions.py reads it).
    """
    exe = shutil.which(cmd[0]) if cmd else None
    if exe is None:
        what = cmd[0] if cmd else "(empty command)"
        raise IcountError(f"the emulator {what!r} is not installed (apt-get install qemu-system-arm qemu-user)")
    plugin = plugin or plugin_path()
    with tempfile.TemporaryDirectory(prefix="hydra-icount-") as tmp:
        out = Path(tmp) / "counts.txt"
        opts = (f"{plugin},out={out}" + (f",marker={marker:#x}" if marker is not None else "")
                + (f",pcs={pcs}" if pcs is not None else ""))
        full = [exe, "-plugin", opts, "-d", "plugin", *cmd[1:]]
        try:
            proc = subprocess.run(full, cwd=cwd, capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise IcountError(f"the counted run took more than {timeout:g} s (a hang?): {' '.join(cmd)}") from None
        stderr = proc.stderr.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise IcountError(f"the counted run failed with exit code {proc.returncode}: {' '.join(cmd)}\n{stderr}")
        if not out.is_file():
            raise IcountError(f"the plugin wrote no counts (does this QEMU accept -plugin?): {' '.join(cmd)}\n{stderr}")
        return parse_counts(out.read_text()), proc


# -- a build folder -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How to run a build's image once: argv (QEMU first), run inside a folder that holds the files named."""

    argv: list[str]
    elf: Path           # the image whose symbols locate the marker
    env: dict[str, str] | None = None


def _board_binary(board: Board, manifest: dict[str, Any]) -> str:
    return str(board.raw.get("binary") or manifest.get("binary") or "model")


def _qemu_cpu(board: Board) -> str:
    emulator = board.raw.get("emulator") if isinstance(board.raw.get("emulator"), dict) else {}
    return str(board.raw.get("qemu_cpu") or emulator.get("cpu") or "max")


def _is_system(board: Board) -> bool:
    kind = str(getattr(board, "kind", "") or board.raw.get("kind", ""))
    return kind == "qemu-system" or board.arch.startswith("armv7") or board.arch.startswith("armv8-m")


def _split_env(argv: list[str]) -> tuple[list[str], dict[str, str] | None]:
    """`env [-i] [VAR=VALUE ...] PROGRAM ...` -> (PROGRAM ..., the environment it would get); else (argv, None)."""
    if not argv or Path(argv[0]).name != "env":
        return argv, None
    env, i = dict(os.environ), 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-i", "--ignore-environment", "-"):
            env = {}
        elif arg == "-u" and i + 1 < len(argv):
            env.pop(argv[i + 1], None)
            i += 1
        elif "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            env[key] = value
        else:
            break
        i += 1
    return argv[i:], env


_IO_PLACEHOLDERS = ("{input}", "{output}")


def launch(folder: Path, board: Board, binary: Path, in_name: str, out_name: str) -> Launch:
    """The emulator command for `binary` (a file inside the run folder) reading in_name, writing out_name.

    The command is targets.runner.emulator_command's (the board's `[emulator] command` of board.toml)
    when that module has one; else built here: qemu-system-arm mps2-an500 with semihosting for Cortex-M
    boards (the harness reads "fw IN OUT STATS" from its semihosting command line), `qemu-aarch64 -cpu
    <cpu> BINARY IN OUT` for aarch64 Linux boards. A leading `env -i` becomes the run's environment; a
    user-mode guest always gets an empty one (its environment changes libc start-up, so counts would
    differ between machines). The binary is named relative to the run folder, so that no path of this
    machine reaches the guest.
    """
    system = _is_system(board)
    if not system and not (board.arch in ("aarch64", "arm64") or board.name.startswith("jetson")):
        raise IcountError(
            f"board {board.name} ({board.arch}) runs natively, not under QEMU: instruction counts need an emulated "
            "board (stm32f746, jetson-*)")
    from . import runner

    try:
        argv = list(runner.emulator_command(folder, board, binary.name, in_name, out_name))
    except RuntimeError:  # a board.toml without an [emulator] command: the defaults below
        argv = []
    if not argv:
        emulator = board.raw.get("emulator") if isinstance(board.raw.get("emulator"), dict) else {}
        template = list(emulator.get("command") or ())
        if not template:
            if system:
                template = ["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-monitor", "none", "-serial",
                            "none", "-semihosting-config", "enable=on,target=native,arg=fw,arg={input},"
                            "arg={output},arg={stats}", "-kernel", "{binary}"]
            else:
                template = ["qemu-aarch64", "-cpu", _qemu_cpu(board), "{binary}", "{input}", "{output}"]
        names = {"{binary}": binary.name, "{input}": in_name, "{output}": out_name, "{stats}": "stats.txt"}
        argv = []
        for part in template:
            for key, value in names.items():
                part = part.replace(key, value)
            argv.append(part)
        if not system and not any(p in t for t in template for p in _IO_PLACEHOLDERS):
            argv += [in_name, out_name]
    argv, env = _split_env(argv)
    if not system:
        env = {}
    return Launch(argv, binary, env)


def build_image(folder: Path, board: Board, manifest: dict[str, Any], timeout: float = 600,
                extra_cppflags: str = "") -> Path:
    """`make` in the build folder (targets.runner.build); returns the image."""
    from . import runner

    try:
        return Path(runner.build(folder, board, timeout=timeout, extra_cppflags=extra_cppflags))
    except RuntimeError as exc:  # BuildError, ToolchainError
        raise IcountError(str(exc)) from None


def _input_row(folder: Path, manifest: dict[str, Any], x: np.ndarray | None) -> bytes:
    if x is None:
        vectors = folder / TEST_VECTORS
        if not vectors.is_file():
            raise IcountError(f"{folder} has no test_inputs.npy; pass an input")
        x = np.load(vectors)[:1]
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise IcountError(f"bench inputs must be int8, got {x.dtype}")
    raw = np.ascontiguousarray(x).reshape(-1)
    one = int(manifest["input"]["bytes"])
    if raw.size == 0 or raw.size % one:
        raise IcountError(f"inputs of {one} bytes each expected, got {raw.size} bytes")
    return raw.tobytes()


def count_build(folder: str | Path, x: np.ndarray | None = None, board: Board | None = None,
                timeout: float = DEFAULT_TIMEOUT, build: bool = True, extra_cppflags: str = "",
                image: Path | None = None, pcs: Path | None = None) -> Counts:
    """Build (make) and run a build folder once on its emulated board; returns the raw counts.

    `x`: int8 inputs, one or more (default: the build's first test vector); each is one inference.
    `image`: an image built already (a private copy, host.built_image): counted as it is, no make.
    `pcs`: a file for the per-address counts too (count's).

    The run happens in a fresh folder holding a copy of the image and the input under fixed names, so
    that nothing of the caller's paths or environment reaches the guest and the count is repeatable.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    board = board or load_board(manifest["board"])
    if image is None:
        image = (build_image(folder, board, manifest, timeout, extra_cppflags) if build
                 else folder / _board_binary(board, manifest))
    if not image.is_file():
        raise IcountError(f"{image} is missing; build it first (make -C {folder})")
    marker = elf_symbol(image, OP_MARKER)
    data = _input_row(folder, manifest, x)
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as tmp:
        run_dir = Path(tmp)
        local = run_dir / image.name
        shutil.copy2(image, local)
        (run_dir / "in.bin").write_bytes(data)
        how = launch(folder, board, local, "in.bin", "out.bin")
        counts, _ = count(how.argv, marker, cwd=run_dir, timeout=timeout, env=how.env, pcs=pcs)
    return counts


def map_ops(counts: Counts, graph, report_ops: list[dict] | None = None) -> dict[str, Any]:
    """Regions -> ops of `graph` (node order); the run must hold whole inferences (n + 1 marker hits each)."""
    from ..codegen.report import node_macs

    nodes = list(graph.nodes)
    per = len(nodes) + 1
    if not counts.hits or len(counts.hits) % per:
        raise IcountError(
            f"{len(counts.hits)} marker executions for a graph of {len(nodes)} ops (expected a multiple of {per}): "
            "the image does not match graph.json; re-run 'hydra-edge compile'")
    inferences = len(counts.hits) // per
    first = counts.hits[:per]  # the first inference; later ones are reported only as totals
    macs = {op["name"]: int(op["macs"]) for op in report_ops or ()}
    ops = []
    for i, node in enumerate(nodes):
        n_insn = first[i + 1] - first[i]
        m = macs.get(node.name, node_macs(graph, node))
        ops.append({"index": i, "name": node.name, "kind": node.op, "macs": m, "instructions": n_insn,
                    "macs_per_instruction": m / n_insn if n_insn else None,
                    "imported_op": node.attrs.get("imported_op")})
    total_ops = first[-1] - first[0]
    total_macs = sum(op["macs"] for op in ops)
    for op in ops:
        op["share"] = op["instructions"] / total_ops if total_ops else 0.0
    per_inference = [counts.hits[j * per + per - 1] - counts.hits[j * per] for j in range(inferences)]
    return {
        "ops": ops,
        "inference": {
            "instructions": total_ops,
            "macs": total_macs,
            "macs_per_instruction": total_macs / total_ops if total_ops else None,
            "inferences_in_run": inferences,
            "instructions_each": per_inference,
        },
        "run": {
            "instructions": counts.total,
            "before_first_op": first[0],  # start-up, harness, input I/O, the input copy into the arena
            "after_last_op": counts.total - counts.hits[-1],  # output copy, output I/O, exit
            "marker": f"{counts.marker:#x}",
        },
    }


def bench(folder: str | Path, runs: int = 1, x: np.ndarray | None = None, timeout: float = DEFAULT_TIMEOUT,
          write: bool = True, portable: bool = False, functions: bool = False) -> dict[str, Any]:
    """Instruction counts of a build on its emulated board: per op and per inference (see the module doc).

    Runs the emulator `runs` times (>= 1) on the same input; `repeatable` says whether all runs counted
    the same. `portable` builds the kernels' plain C paths (-DHYDRA_PORTABLE_KERNELS) instead of the
    target's SIMD ones: the same bits, to measure what the SIMD paths save. `functions` adds the first run's
    instructions per function of the image ("functions": targets/functions.py). Writes BUILD/bench.json
    (BUILD/bench-portable.json) unless write=False, atomically; a read-only folder is built in a private
    copy and nothing is written (the result's "not_written" says so).
    """
    from ..ir.serialize import load_graph
    from ..outdir import atomic_write
    from . import host

    if runs < 1:
        raise IcountError("runs must be at least 1")
    folder = Path(folder)
    manifest = read_manifest(folder)
    board = load_board(manifest["board"])
    graph = load_graph(folder)
    report_path = folder / REPORT_FILE
    report_ops = json.loads(report_path.read_text()).get("ops") if report_path.is_file() else None
    cppflags = PORTABLE_CPPFLAGS if portable else ""

    def make_image(f: Path) -> Path:
        return build_image(f, board, manifest, timeout, cppflags)

    with host.built_image(folder, make_image, "hydra-bench-") as built, \
            tempfile.TemporaryDirectory(prefix="hydra-pcs-") as tmp:  # one build, a private copy for every run
        pcs = Path(tmp) / "pcs.txt" if functions else None
        all_counts = [count_build(folder, x, board, timeout, extra_cppflags=cppflags, image=built.image,
                                  pcs=pcs if i == 0 else None) for i in range(runs)]
        try:
            per_function = by_function(parse_pc_counts(pcs.read_text()), built.image) if pcs is not None else None
        except (FunctionCountError, ElfError, OSError) as exc:
            raise IcountError(f"counting instructions per function: {exc}") from None
    result = {
        "format": "hydra-edge-bench",
        "version": 1,
        "board": board.name,
        "image": _board_binary(board, manifest),
        "counter": "QEMU TCG plugin (executed guest instructions)",
        "kernels": "portable" if portable else "target",
        "note": NOTE,
        "runs": runs,
        "repeatable": all(c == all_counts[0] for c in all_counts),
        "run_totals": [c.total for c in all_counts],
        **map_ops(all_counts[0], graph, report_ops),
    }
    if per_function is not None:
        result["functions"] = per_function
    if write and built.writable:
        with host.folder_lock(folder):
            atomic_write(folder / (BENCH_PORTABLE_JSON if portable else BENCH_JSON), json.dumps(result, indent=1) + "\n")
    elif write:
        result["not_written"] = f"{folder} is read-only: the results were not written there"
    return result


# -- text -----------------------------------------------------------------------------------------------


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_bench(result: dict[str, Any]) -> str:
    from ..codegen.report import text_table

    inf, run = result["inference"], result["run"]
    rows = [[op["index"], op["name"], op["kind"], f"{op['macs']:,}", f"{op['instructions']:,}",
             _ratio(op["macs_per_instruction"]), f"{100 * op['share']:.1f}%"] for op in result["ops"]]
    kernels = "portable C kernels" if result.get("kernels") == "portable" else "the target's kernels"
    lines = [f"board {result['board']} ({result['image']}, {kernels}), instructions counted by QEMU "
             f"({result['runs']} run{'s' if result['runs'] != 1 else ''}, "
             f"{'identical' if result['repeatable'] else 'NOT identical: ' + ', '.join(map(str, result['run_totals']))})",
             ""]
    lines += text_table(["#", "op", "kind", "MACs", "instructions", "MACs/instr", "share"], rows, right={0, 3, 4, 5, 6})
    lines += [
        "",
        f"per inference  {inf['instructions']:,} instructions (first op to last)   {inf['macs']:,} MACs   "
        f"{_ratio(inf['macs_per_instruction'])} MACs/instruction",
        f"whole run      {run['instructions']:,} instructions (with start-up and I/O: "
        f"{run['before_first_op']:,} before the first op, {run['after_last_op']:,} after the last)",
    ]
    if "functions" in result:
        lines += ["", *format_functions(result["functions"])]
    lines += ["", f"note: {result['note']}"]
    return "\n".join(lines)
