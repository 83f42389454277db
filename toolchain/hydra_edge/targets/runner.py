"""Build and run a build folder on its board, whatever the board: the one entry point for validate and run.

The board comes from the folder's build.json; its board.toml `kind` says how:

    host          make, then ./model in.bin out.bin             (targets/host.py)
    qemu-user     cross make (static), then
                  env -i qemu-aarch64 -cpu <the board's core> ./model in.bin out.bin
    qemu-system   cross make (fw-qemu.elf), then qemu-system-arm -M mps2-an500 ...
                  with semihosting: the image reads in.bin, writes out.bin and
                  stats.txt (the painted stack's high-water mark) in a
                  temporary folder, and exits with a code of boards/<b>/hydra_board.h

Every failure names the board and its cause: a missing toolchain or emulator
(with the Debian package to install), a fault (which one, where), a hang (the
timeout was hit), a kernel error. After a run on an emulated board the
folder's report.json gets a "measured" section: flash and RAM from the linked
ELF and, on a bare-metal board, the stack high-water mark (written atomically;
skipped, with a note in RunResult.note, when the folder is read-only).

make runs in the folder under a per-folder lock and every run executes a private
copy of the image in a temporary folder (host.built_image): two validates or
runs on one folder at once both work, and a read-only folder is built in a
temporary copy, never written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..boards import Board, load_board
from ..build_manifest import REPORT_FILE, TEST_VECTORS, read_manifest
from ..outdir import atomic_write
from . import host
from .elf import ElfError, image_sizes
from .host import BuildError, RunError, ToolchainError

DEFAULT_TIMEOUT = 600.0

# Exit codes shared by every harness (boards/host/main.c, boards/stm32f746/hydra_board.h).
EXIT_MEANINGS = {
    2: "usage error",
    3: "I/O error",
    4: "input size is not a multiple of the model's input",
    37: "stack overflow (the stack guard words were overwritten)",
}
FAULT_CODES = {32: "HardFault", 33: "MemManage fault", 34: "BusFault", 35: "UsageFault", 36: "unexpected exception"}
SIGNAL_FAULTS = {signal.SIGSEGV: "segmentation fault (SIGSEGV)", signal.SIGBUS: "bus error (SIGBUS)",
                 signal.SIGILL: "illegal instruction (SIGILL)", signal.SIGFPE: "arithmetic exception (SIGFPE)",
                 signal.SIGABRT: "abort (SIGABRT)"}


class TargetFault(RunError):
    """The program faulted on the target (a CPU exception, or a signal under qemu-user)."""


class TargetHang(RunError):
    """The program did not finish within the timeout."""


@dataclass
class RunResult:
    outputs: np.ndarray  # int8 (N, output bytes)
    board: str
    wall_s: float
    stack_used_bytes: int | None = None  # painted high-water mark (bare-metal boards)
    stack_reserved_bytes: int | None = None
    note: str | None = None  # e.g. why report.json did not get the run's measurements


def board_of(folder: str | Path) -> Board:
    return load_board(read_manifest(folder)["board"])


# -- tools ---------------------------------------------------------------------------------------


def _apt_hint(packages: list[str]) -> str:
    return f"install it with: sudo apt-get install {' '.join(packages)}" if packages else ""


def check_toolchain(board: Board, emulator: bool = True) -> None:
    """Raise ToolchainError naming what is missing and the Debian package(s) that provide it."""
    if not board.cross:
        return
    tc = board.raw.get("toolchain", {})
    apt = list(tc.get("apt", []))
    for tool in [board.cc, *tc.get("tools", [])]:
        if shutil.which(tool) is None:
            raise ToolchainError(f"board {board.name}: the cross compiler `{tool}` is not installed; {_apt_hint(apt)}")
    for name in tc.get("needs_files", []):  # libraries the link needs (newlib's nano.specs, a static libc.a)
        proc = subprocess.run([board.cc, f"-print-file-name={name}"], capture_output=True, text=True)
        found = proc.stdout.strip()
        if proc.returncode != 0 or not os.path.isabs(found) or not os.path.exists(found):
            raise ToolchainError(f"board {board.name}: `{board.cc}` finds no {name}; {_apt_hint(apt)}")
    if emulator:
        emu = board.raw.get("emulator", {})
        program = emu.get("program")
        if program and shutil.which(program) is None:
            raise ToolchainError(
                f"board {board.name}: the emulator `{program}` is not installed; {_apt_hint(list(emu.get('apt', [])))}"
            )


# -- build ---------------------------------------------------------------------------------------


def build(folder: str | Path, board: Board | None = None, sanitize: bool = False, extra_cppflags: str = "",
          target: str | None = None, jobs: int = 2, timeout: float = 600) -> Path:
    """Run make in `folder` for its board (incremental); returns the image validate/run execute.

    `extra_cppflags` (cross boards) goes to the harness and kernels, e.g. -DHYDRA_PLANT_FAULT; the
    objects are rebuilt when it changes. `target` names another make target (e.g. "device").
    """
    folder = Path(folder)
    board = board or board_of(folder)
    if not board.cross:
        if extra_cppflags or target:
            raise BuildError(f"board {board.name}: extra preprocessor flags and make targets are for cross boards")
        return host.build(folder, sanitize=sanitize, jobs=jobs, timeout=timeout)
    if sanitize:
        raise BuildError(f"board {board.name}: --sanitize (ASan/UBSan) runs on the host board only; "
                         "compile for --board host to use it")
    check_toolchain(board, emulator=False)
    if not host.folder_writable(folder):
        raise host.read_only_error(folder)
    try:
        with host.folder_lock(folder):
            host.run_make(folder, [f"EXTRA_CPPFLAGS={extra_cppflags}", *([target] if target else [])], jobs,
                          timeout, context=f"board {board.name}: ")
    except BuildError as exc:
        if "region `RAM' overflowed" in str(exc) or "region `FLASH' overflowed" in str(exc):
            raise BuildError(f"{exc}\nthe image does not fit the {board.name}'s memory "
                             "(see the linker's byte counts above)") from None
        raise
    image = folder / (board.raw.get("device_binary", board.binary) if target == "device" else board.binary)
    if not image.is_file():
        raise BuildError(f"board {board.name}: make succeeded but {image} is missing")
    return image


# -- run -----------------------------------------------------------------------------------------


def emulator_command(folder: str | Path, board: Board, binary: str | Path, in_name: str = "in.bin",
                     out_name: str = "out.bin", stats_name: str = "stats.txt") -> list[str]:
    """The argv that runs `binary` on the board's emulator (board.toml `[emulator] command`).

    Run it inside a folder that holds `in_name`; the program writes `out_name` there (and, bare metal,
    `stats_name`). Placeholders: {binary}, {input}, {output}, {stats}.
    """
    template = board.raw.get("emulator", {}).get("command")
    if not template:
        raise BuildError(f"board {board.name}: board.toml has no [emulator] command")
    names = {"binary": str(binary), "input": in_name, "output": out_name, "stats": stats_name}
    return [part.format(**names) for part in template]


def _describe_exit(board: Board, code: int, stderr: str, n: int, timeout: float) -> RunError:
    where = f"board {board.name}"
    detail = f":\n{stderr.strip()}" if stderr.strip() else ""
    if code < 0:
        sig = -code
        try:
            name = SIGNAL_FAULTS.get(signal.Signals(sig)) or f"signal {signal.Signals(sig).name}"
        except ValueError:
            name = f"signal {sig}"
        return TargetFault(f"{where}: FAULT: the program was killed by {name}{detail}")
    if code in FAULT_CODES:
        return TargetFault(f"{where}: FAULT: {FAULT_CODES[code]} (exit code {code}){detail}")
    if 10 <= code < 32:
        return RunError(f"{where}: kernel error: a kernel returned status {code - 10} (exit code {code}){detail}")
    meaning = EXIT_MEANINGS.get(code, "unexpected exit code")
    return RunError(f"{where}: the program failed with exit code {code} ({meaning}) on {n} inputs{detail}")


def _run_process(cmd: list[str], cwd: Path, timeout: float, board: Board, n: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the emulator and anything it started
        proc.communicate()
        raise TargetHang(
            f"board {board.name}: HANG: no result after {timeout:g} s (timeout hit) on {n} inputs; "
            f"the program was killed ({' '.join(cmd[:3])} ...)"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_detailed(folder: str | Path, inputs: np.ndarray, sanitize: bool = False, timeout: float | None = None,
                 extra_cppflags: str = "") -> RunResult:
    """Build (incrementally) and run the model on each row of `inputs` on the folder's board."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    board = load_board(manifest["board"])
    inputs = host.check_inputs(manifest, inputs)
    n, out_bytes = len(inputs), int(manifest["output"]["bytes"])
    if timeout is None:
        timeout = float(board.raw.get("emulator", {}).get("timeout_s", DEFAULT_TIMEOUT))
    t0 = time.perf_counter()
    if not board.cross:
        outputs = host.run(folder, inputs, sanitize=sanitize, timeout=timeout)
        return RunResult(outputs, board.name, time.perf_counter() - t0)
    def make_image(f: Path) -> Path:
        return build(f, board, sanitize=sanitize, extra_cppflags=extra_cppflags)

    with host.built_image(folder, make_image) as built:
        check_toolchain(board)
        tmp_path = built.run_dir
        (tmp_path / "in.bin").write_bytes(inputs.tobytes())
        t0 = time.perf_counter()
        proc = _run_process(emulator_command(folder, board, built.image.resolve()), tmp_path, timeout, board, n)
        wall = time.perf_counter() - t0
        stats = _read_stats(tmp_path / "stats.txt")
        if proc.returncode != 0:
            raise _describe_exit(board, proc.returncode, proc.stderr, n, timeout)
        out_path = tmp_path / "out.bin"
        out = np.fromfile(out_path, dtype=np.int8) if out_path.is_file() else np.zeros(0, np.int8)
    if out.size != n * out_bytes:
        raise RunError(f"board {board.name}: the program wrote {out.size} output bytes, expected {n} x {out_bytes}")
    result = RunResult(out.reshape(n, out_bytes), board.name, wall, stats.get("stack_used_bytes"),
                       stats.get("stack_reserved_bytes"))
    if not extra_cppflags:
        if built.writable:
            record_measurement(folder, board, folder / built.image.name, result)
        else:
            result.note = f"{folder} is read-only: report.json was not updated with this run's measurements"
    return result


def run(folder: str | Path, inputs: np.ndarray, sanitize: bool = False, timeout: float | None = None,
        extra_cppflags: str = "") -> np.ndarray:
    """As run_detailed; returns the int8 outputs (N, output bytes)."""
    return run_detailed(folder, inputs, sanitize, timeout, extra_cppflags).outputs


def _read_stats(path: Path) -> dict[str, int]:
    stats: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                stats[parts[0]] = int(parts[1])
    return stats


# -- measured memory -------------------------------------------------------------------------------


def measure_images(folder: str | Path, board: Board | None = None) -> dict:
    """ELF figures of the board's images present in `folder` (emulation image, device image)."""
    folder = Path(folder)
    board = board or board_of(folder)
    images = {}
    for key, name in (("image", board.binary), ("device", board.raw.get("device_binary"))):
        if name and (folder / name).is_file():
            try:
                images[key] = image_sizes(folder / name)
            except ElfError:
                pass
    return images


def record_measurement(folder: Path, board: Board, image: Path, result: RunResult | None = None) -> dict:
    """Refresh report.json's "measured" section from the linked image(s) and the last run's stack
    (under the folder's lock, written atomically)."""
    with host.folder_lock(folder):
        return _record_measurement(Path(folder), board, result)


def _record_measurement(folder: Path, board: Board, result: RunResult | None) -> dict:
    path = folder / REPORT_FILE
    report = json.loads(path.read_text()) if path.is_file() else {}
    measured = report.get("measured", {})
    measured.update(measure_images(folder, board))
    if result is not None and result.stack_used_bytes is not None:
        measured["stack_used_bytes"] = result.stack_used_bytes
        measured["stack_reserved_bytes"] = result.stack_reserved_bytes
    measured["board_kind"] = board.kind
    measured["budget"] = {"flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes}
    report["measured"] = measured
    atomic_write(path, json.dumps(report, indent=2) + "\n")
    return measured


def measure_for_report(folder: str | Path) -> str | None:
    """Before `hydra-edge report` on a cross board: build the images (incremental), take their ELF figures
    and, the first time on a bare-metal board, measure the stack on one test vector. Returns a note when
    nothing could be measured (a missing toolchain, a failed build), else None; host builds: None."""
    folder = Path(folder)
    board = board_of(folder)
    if not board.cross:
        return None
    if not host.folder_writable(folder):
        return f"flash/RAM not measured on board {board.name}: {folder} is read-only (make writes its images there)"
    try:
        image = build(folder, board)
        if board.raw.get("device_binary") and (folder / "test_vector.h").is_file():
            build(folder, board, target="device")
        report = json.loads((folder / REPORT_FILE).read_text()) if (folder / REPORT_FILE).is_file() else {}
        vectors = folder / TEST_VECTORS
        if board.kind == "qemu-system" and "stack_used_bytes" not in report.get("measured", {}) and vectors.is_file():
            x = np.load(vectors)[:1]
            run_detailed(folder, x.reshape(len(x), -1))
        else:
            record_measurement(folder, board, image)
    except (BuildError, RunError) as exc:
        return f"flash/RAM not measured on board {board.name}: {exc}"
    return None
