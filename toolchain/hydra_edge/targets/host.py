"""Build and run an emitted project on this machine (the `host` board).

Also what every board's runs share about the build folder itself: make runs in it under a lock held
per folder (folder_lock: a lock file in the temp dir, never in the folder), and each run executes a
private copy of the image in a fresh temporary folder (built_image), so that two validates or runs on
one folder at once both work. A folder that cannot be written (read-only) is never written: it is
copied into the temporary folder and built there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..build_manifest import BINARY, SANITIZE_BINARY, read_manifest
from ..errors import HydraEdgeError

EXIT_CODES = {2: "usage error", 3: "I/O error", 4: "input size is not a multiple of the model's input"}


class BuildError(HydraEdgeError, RuntimeError):
    """The C compiler (or make) failed; the message holds its output."""


class RunError(HydraEdgeError, RuntimeError):
    """The model binary failed; the message holds its exit code and stderr."""


class ToolchainError(BuildError):
    """A compiler, library or emulator the board needs is not installed."""


# -- the build folder: lock, read-only copies, private images --------------------------------------------

_held = threading.local()  # the folder locks this thread holds (folder_lock is reentrant per thread)


def folder_writable(folder: str | Path) -> bool:
    """Whether make may write in the build folder: the folder and every folder inside it."""
    folder = Path(folder)
    dirs = [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]
    return all(os.access(d, os.W_OK | os.X_OK) for d in dirs)


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold the build folder's exclusive lock (across processes and threads; reentrant in one thread).

    The lock file is in the temp dir, named by a hash of the folder's real path: never in the folder."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32]
    held = _held.__dict__.setdefault("keys", set())
    if key in held:
        yield
        return
    locks = Path(tempfile.gettempdir()) / f"hydra-edge-locks-{os.getuid()}"
    locks.mkdir(mode=0o700, exist_ok=True)
    with open(locks / f"{key}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(f, fcntl.LOCK_UN)


def copy_build(folder: str | Path, dest: str | Path) -> Path:
    """A private, writable copy of a build folder (file times kept, so make stays incremental)."""
    dest = Path(dest)
    shutil.copytree(folder, dest, symlinks=True)
    for p in [dest, *dest.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IRUSR | stat.S_IWUSR | (stat.S_IXUSR if p.is_dir() else 0))
    return dest


@dataclass
class BuiltImage:
    run_dir: Path  # a fresh temporary folder to run in (removed afterwards)
    image: Path  # the private copy of the image, in run_dir
    built_in: Path  # where make ran: the build folder, or its copy when the folder is read-only
    writable: bool  # whether the build folder itself was built (and may take a report's "measured" section)


@contextlib.contextmanager
def built_image(folder: str | Path, make_image: Callable[[Path], Path], prefix: str = "hydra-run-"
                ) -> Iterator[BuiltImage]:
    """make_image(folder) under the folder's lock, then a copy of the image it returns in a fresh temporary
    folder: run that copy there, while other runs may rebuild the folder. A read-only folder is copied
    into the temporary folder and built there instead; nothing in it is written."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        run_dir = Path(tmp)
        writable = folder_writable(folder)
        if writable:
            with folder_lock(folder):
                image = Path(make_image(folder))
                local = run_dir / image.name
                shutil.copy2(image, local)
            built_in = folder
        else:
            built_in = copy_build(folder, run_dir / "build")
            image = Path(make_image(built_in))
            local = run_dir / image.name
            shutil.copy2(image, local)
        yield BuiltImage(run_dir, local, built_in, writable)


def read_only_error(folder: Path, what: str = "build in it") -> BuildError:
    return BuildError(f"{folder} is read-only: cannot {what} (validate and run work on a copy; "
                      "copy the folder somewhere writable for this)")


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
    """Run make in `folder` (incremental, under the folder's lock); returns the binary's path."""
    folder = Path(folder)
    if not folder_writable(folder):
        raise read_only_error(folder)
    with folder_lock(folder):
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
    with built_image(folder, lambda f: build(f, sanitize=sanitize)) as built:
        binary, shown = built.image, folder / built.image.name  # messages name the folder's binary
        in_path, out_path = built.run_dir / "in.bin", built.run_dir / "out.bin"
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
            raise RunError(f"{shown} ran for more than {timeout} s on {n} inputs") from None
        if proc.returncode != 0:
            code = proc.returncode
            meaning = EXIT_CODES.get(code) or (f"kernel status {code - 10}" if 10 <= code < 100 else "crash")
            if code < 0:
                meaning = f"killed by signal {-code}"
            raise RunError(f"{shown} failed with exit code {code} ({meaning}):\n{proc.stderr.strip()}")
        out = np.fromfile(out_path, dtype=np.int8)
    if out.size != n * out_bytes:
        raise RunError(f"{shown} wrote {out.size} bytes, expected {n} x {out_bytes}")
    return out.reshape(n, out_bytes)
