"""Boards are data: `boards/<name>/board.toml` plus a few files (the harness main.c, ...).

board.toml keys read here: name, description, arch, cc, cflags (a list of
extra compiler flags), ram_bytes and flash_bytes (budgets; absent means none),
kind (how validate/run execute a build: "host", "qemu-system" or "qemu-user"),
files (copied into every build folder; default ["main.c"]), makefile (the
board's build rules, appended to the generated Makefile; default "board.mk"),
ldflags, binary (what `make` builds and validate/run execute; default
"model"), stack_bytes. Paths are relative to the board's folder. Other keys
(sram, flash, toolchain, emulator, flash_tool, ...) are kept in `Board.raw` for
the targets that need them. docs/boards.md describes them all.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HydraEdgeError

# toolchain/hydra_edge/boards.py -> repository root
BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


KINDS = ("host", "qemu-system", "qemu-user")


class BoardError(HydraEdgeError, ValueError):
    """An unknown board or a board.toml that is missing keys."""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    arch: str
    cc: str
    folder: Path
    cflags: tuple[str, ...] = ()
    ram_bytes: int | None = None
    flash_bytes: int | None = None
    kind: str = "host"
    files: tuple[str, ...] = ("main.c",)
    makefile: str = "board.mk"
    binary: str = "model"
    ldflags: tuple[str, ...] = ()
    stack_bytes: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def harness(self) -> Path:
        """The board's main.c, copied into every build folder for this board."""
        return self.folder / "main.c"

    def file_paths(self) -> list[Path]:
        """The files copied into a build folder (each under its own base name)."""
        return [(self.folder / f).resolve() for f in self.files]

    @property
    def makefile_path(self) -> Path:
        return (self.folder / self.makefile).resolve()

    @property
    def cross(self) -> bool:
        """Built with a cross compiler and run under an emulator."""
        return self.kind != "host"


def list_boards(boards_dir: Path = BOARDS_DIR) -> list[str]:
    """Names of the boards that have a board.toml, sorted."""
    if not boards_dir.is_dir():
        return []
    return sorted(p.parent.name for p in boards_dir.glob("*/board.toml"))


def load_board(name: str, boards_dir: Path = BOARDS_DIR) -> Board:
    path = boards_dir / name / "board.toml"
    if not name or "/" in name or "\\" in name or not path.is_file():
        known = ", ".join(list_boards(boards_dir)) or "(none)"
        raise BoardError(f"unknown board {name!r}; known boards: {known}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BoardError(f"{path}: invalid TOML: {e}") from None
    missing = [k for k in ("name", "description", "arch", "cc") if k not in raw]
    if missing:
        raise BoardError(f"{path}: missing key(s) {', '.join(missing)}")
    if raw["name"] != name:
        raise BoardError(f"{path}: name = {raw['name']!r} does not match its folder {name!r}")
    kind = raw.get("kind", "host")
    if kind not in KINDS:
        raise BoardError(f"{path}: kind = {kind!r}; expected one of {', '.join(KINDS)}")
    return Board(
        name=raw["name"],
        description=raw["description"],
        arch=raw["arch"],
        cc=raw["cc"],
        folder=path.parent,
        cflags=tuple(raw.get("cflags", ())),
        ram_bytes=raw.get("ram_bytes"),
        flash_bytes=raw.get("flash_bytes"),
        kind=kind,
        files=tuple(raw.get("files", ("main.c",))),
        makefile=raw.get("makefile", "board.mk"),
        binary=raw.get("binary", "model"),
        ldflags=tuple(raw.get("ldflags", ())),
        stack_bytes=raw.get("stack_bytes"),
        raw=raw,
    )


def get_board(board: "Board | str") -> Board:
    """A Board as is, or the board of that name."""
    return board if isinstance(board, Board) else load_board(board)
