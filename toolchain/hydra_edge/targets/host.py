"""Build and run an emitted project on this machine (the `host` board)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..codegen.emit_c import BINARY, SANITIZE_BINARY, read_manifest
from ..errors import HydraEdgeError

EXIT_CODES = {2: "usage error", 3: "I/O error", 4: "input size is not a multiple of the model's input"}


class BuildError(HydraEdgeError, RuntimeError):
    """The C compiler (or make) failed; the message holds its output."""


class RunError(HydraEdgeError, RuntimeError):
    """The model binary failed; the message holds its exit code and stderr."""


class ToolchainError(BuildError):
    """A compiler, library or emulator the board needs is not installed."""


def run_make(folder: Path, args: list[str], jobs: int, timeout: float, context: str = "") -> str:
    """make -C folder -jN ARGS; returns its output. `context` ("board X: ") prefixes every error."""
    if not (folder / "Makefile").is_file():
        raise BuildError(f"{folder} has no Makefile: not an emitted hydra-edge project")
    make = shutil.which("make")
    if make is None:
        raise ToolchainError("`make` is not installed; install it with: sudo apt-get install make")
    cmd = [make, "-C", str(folder), f"-j{max(1, jobs)}", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{context}building {folder} took more than {timeout} s") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"{context}building {folder} failed ({' '.join(cmd[1:])}, exit {proc.returncode}):\n{output}")
    return output


def build(folder: str | Path, sanitize: bool = False, jobs: int = 2, timeout: float = 600) -> Path:
    """Run make in `folder` (incremental); returns the binary's path."""
    folder = Path(folder)
    run_make(folder, ["SANITIZE=1"] if sanitize else [], jobs, timeout)
    binary = folder / (SANITIZE_BINARY if sanitize else BINARY)
    if not binary.is_file():
        raise BuildError(f"make succeeded but {binary} is missing")
    return binary


def check_inputs(manifest: dict, inputs: np.ndarray) -> np.ndarray:
    """int8 inputs, one sample per row, each row the model's input size."""
    in_bytes = int(manifest["input"]["bytes"])
    inputs = np.asarray(inputs)
    if inputs.dtype != np.int8:
        raise TypeError(f"inputs must be int8 (quantised), got {inputs.dtype}")
    per_row = int(np.prod(inputs.shape[1:], dtype=np.int64))
    if inputs.ndim < 2 or per_row != in_bytes:
        raise ValueError(
            f"inputs of shape {inputs.shape}: each of the N rows must hold {in_bytes} int8 values "
            f"(the model's input {manifest['input']['shape']})"
        )
    return np.ascontiguousarray(inputs)


def run(folder: str | Path, inputs: np.ndarray, sanitize: bool = False, timeout: float = 600) -> np.ndarray:
    """Run the model on each row of `inputs` (int8, shape (N, ...)); returns int8 (N, output bytes)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    out_bytes = int(manifest["output"]["bytes"])
    inputs = check_inputs(manifest, inputs)
    n = len(inputs)
    binary = build(folder, sanitize=sanitize)
    with tempfile.TemporaryDirectory(prefix="hydra-run-") as tmp:
        in_path, out_path = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        in_path.write_bytes(inputs.tobytes())
        env = dict(os.environ)
        if sanitize:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        try:
            proc = subprocess.run(
                [str(binary.resolve()), str(in_path), str(out_path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise RunError(f"{binary} ran for more than {timeout} s on {n} inputs") from None
        if proc.returncode != 0:
            code = proc.returncode
            meaning = EXIT_CODES.get(code) or (f"kernel status {code - 10}" if 10 <= code < 100 else "crash")
            if code < 0:
                meaning = f"killed by signal {-code}"
            raise RunError(f"{binary} failed with exit code {code} ({meaning}):\n{proc.stderr.strip()}")
        out = np.fromfile(out_path, dtype=np.int8)
    if out.size != n * out_bytes:
        raise RunError(f"{binary} wrote {out.size} bytes, expected {n} x {out_bytes}")
    return out.reshape(n, out_bytes)
