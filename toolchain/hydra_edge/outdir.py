"""The build folder on disk: what `compile -o DIR` may write over, and how it writes it.

hydra-edge writes only inside its own build folders and never deletes or overwrites a file it did
not make. `compile -o DIR`:

    DIR missing or empty           the build is written into a temporary sibling (.DIR.tmp-PID-XXXX, same
                                   parent) and renamed into place when it is complete
    DIR a hydra-edge build         (it has build.json) the same, then the old build is renamed aside and
                                   the new one in; files in the old build that hydra-edge did not make
                                   (an output of `run -o`, notes) are moved into the new one, then the
                                   old build is removed
    DIR anything else, non-empty   refused, unless --force: the build's files are then moved into DIR
                                   one by one (build.json last), replacing only files of the same name;
                                   every other file in DIR is left alone
    DIR a file, or the folder      refused before any work
    that holds the model

An interrupted or failed compile removes its temporary folder and leaves DIR as it was, so no
folder that `validate` or `flash` accept ever describes a model other than its own. One killed
outright (kill -9) leaves its hidden sibling; the next compile into DIR removes it once its process
is gone, if it holds only files hydra-edge makes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .build_manifest import BUILD_MANIFEST  # the mark of a hydra-edge build
from .errors import HydraEdgeError

# What `make`, `bench` and `compile` put in a build folder besides the emitted sources (boards/*/board.mk,
# targets/icount.py, driver.py, validate/tflm.py); with the boards' own files these are hydra-edge's.
MADE_NAMES = frozenset({
    "Makefile", "model.c", "model.h", "main.c", "runtime", "build.json", "graph.json", "constants.npz",
    "report.json", "memory.png", "test_inputs.npy", "test_vector.h", "source.tflite",
    "obj", "obj-asan", "model", "model-asan", "fw-qemu.elf", "fw-qemu.map", "device.elf", "device.map",
    "device.bin", "bench.json", "bench-portable.json",
})
BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


class OutputFolderError(HydraEdgeError, ValueError):
    """`-o` names something hydra-edge must not write over (a file, the model's folder, a user's folder)."""


def is_build(folder: str | Path) -> bool:
    return (Path(folder) / BUILD_MANIFEST).is_file()


def _made_by_hydra_edge(name: str) -> bool:
    if name in MADE_NAMES:
        return True
    return BOARDS_DIR.is_dir() and any((b / name).is_file() for b in BOARDS_DIR.iterdir() if b.is_dir())


def check_output(out: str | Path, model: str | Path | None = None, force: bool = False) -> Path:
    """Refuse an `-o` that compile must not write (OutputFolderError, one line); returns it absolute."""
    out = Path(out)
    target = Path(os.path.abspath(out))
    shown = str(out)
    if target.exists() and not target.is_dir():
        raise OutputFolderError(f"-o {shown} is a file, not a folder: name a new folder (or an old build folder)")
    for parent in target.parents:  # a file where a parent folder should be
        if parent.exists() and not parent.is_dir():
            raise OutputFolderError(f"-o {shown}: {parent} is a file, not a folder")
    real = target.resolve()
    if model is not None and str(model):
        m = Path(model).resolve()
        if m == real or real in m.parents:
            raise OutputFolderError(
                f"-o {shown} holds the model {model}: replacing that folder would delete it; "
                "write the build to another folder"
            )
    if real.is_dir() and not force and not is_build(real) and any(real.iterdir()):
        raise OutputFolderError(
            f"-o {shown} is a non-empty folder that is not a hydra-edge build (no {BUILD_MANIFEST}); "
            "name a new folder, or pass --force to write the build's files into it (other files are left alone)"
        )
    return target


@contextlib.contextmanager
def staged_build(out: str | Path, model: str | Path | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `out` to write the whole build into; on a clean exit it takes
    the place of `out` (see the module doc). On any exception (KeyboardInterrupt too) it is removed and
    `out` is left as it was."""
    target = check_output(out, model, force)
    real = target.resolve()
    parent = real.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(parent, real.name)
        stage = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise OutputFolderError(f"-o {out}: cannot create a folder in {parent}: {exc.strerror or exc}") from None
    try:
        yield stage
        _install(stage, real, force)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _sweep_stale(parent: Path, name: str) -> None:
    """Remove what a compile killed outright (kill -9) left beside DIR: a .DIR.tmp-PID-* or .DIR.old-PID-*
    folder whose process is gone and that holds only files hydra-edge makes. Anything else stays."""
    for entry in parent.iterdir():
        if not entry.name.startswith(f".{name}."):
            continue
        kind, _, rest = entry.name[len(name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or not entry.is_dir() or _alive(int(pid)):
            continue
        inner = [entry / "build"] if kind == "old" and (entry / "build").is_dir() else []
        files = [e for folder in (entry, *inner) for e in folder.iterdir() if e not in inner]
        if all(_made_by_hydra_edge(e.name) for e in files):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _install(stage: Path, real: Path, force: bool) -> None:
    stage.chmod(0o755 & ~_umask())  # mkdtemp makes it 0700; a folder made by mkdir would not be
    if not real.exists():
        os.rename(stage, real)
        return
    if not any(real.iterdir()):
        os.rename(stage, real)  # over an empty folder: one atomic rename
        return
    if is_build(real):
        old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-{os.getpid()}-", dir=real.parent))
        os.rename(real, old / "build")  # aside, then the new one in: two renames
        try:
            os.rename(stage, real)
        except BaseException:
            os.rename(old / "build", real)  # the old build back where it was
            old.rmdir()
            raise
        keep = [e for e in (old / "build").iterdir() if not _made_by_hydra_edge(e.name)]
        for entry in keep:  # the user's own files in the old build move into the new one
            if not (real / entry.name).exists():
                os.rename(entry, real / entry.name)
        if not any(not _made_by_hydra_edge(e.name) for e in (old / "build").iterdir()):
            shutil.rmtree(old)  # else a file of the user's is still there: the old build stays aside
        return
    if not force:  # checked before, but the folder may have changed since
        raise OutputFolderError(f"-o {real} is a non-empty folder that is not a hydra-edge build; pass --force")
    _merge(stage, real)


def _merge(stage: Path, real: Path) -> None:
    """--force into a user's folder: move each file of the build into place, build.json last."""
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(stage) == Path(BUILD_MANIFEST))
    for path in files:
        rel = path.relative_to(stage)
        dest = real / rel
        for parent in reversed(rel.parents[:-1]):
            if (real / parent).exists() and not (real / parent).is_dir():
                raise OutputFolderError(f"--force: {real / parent} is a file where the build needs a folder")
        if dest.is_dir():
            raise OutputFolderError(f"--force: {dest} is a folder where the build writes a file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `path` whole or not at all: a temporary file beside it, then os.replace."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
