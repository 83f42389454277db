"""Put a compiled model on a real microcontroller board: `make device`, then openocd or st-flash.

    flash_command(folder, tool)   the flash tool's argv (run inside the build folder)
    flash(folder, tool, dry_run)  build the device image and program it; returns the FlashPlan

The flash settings come from the board's board.toml, where it has them:

    device_binary = "device.elf"              # what `make device` links (device.bin beside it)
    [flash]
    origin = 0x08000000                       # where st-flash writes device.bin, if no command below
    [flash_tool]
    default = "openocd"                       # used when --tool is not given
    openocd = ["openocd", "-f", "board/stm32f7discovery.cfg", "-c", "program {elf} verify reset exit"]
    st-flash = ["st-flash", "--reset", "write", "{bin}", "0x08000000"]
    apt = { openocd = "openocd", st-flash = "stlink-tools" }

({elf}, {bin} and {address} are filled in.) Every one of these is optional; the
defaults are the values above (an STM32F7 Discovery board behind its ST-LINK).
A board with no [flash_tool] table is flashable only if it is a microcontroller
(it has a flash_bytes budget and is no Linux machine): host and jetson-* are
refused with a FlashError.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..boards import Board, load_board
from ..build_manifest import read_manifest
from ..errors import HydraEdgeError

TOOLS = ("openocd", "st-flash")
DEFAULT_TOOL = "openocd"
DEFAULT_OPENOCD_CFG = "board/stm32f7discovery.cfg"
DEFAULT_FLASH_ADDRESS = 0x08000000
DEFAULT_COMMANDS = {
    "openocd": ["openocd", "-f", DEFAULT_OPENOCD_CFG, "-c", "program {elf} verify reset exit"],
    "st-flash": ["st-flash", "--reset", "write", "{bin}", "{address}"],
}
DEFAULT_APT = {"openocd": "openocd", "st-flash": "stlink-tools"}
DEVICE_ELF = "device.elf"
MAKE_TARGET = "device"
MAKE_TIMEOUT = 600.0
FLASH_TIMEOUT = 120.0

# What the tools print when no debug probe is attached (or it cannot be opened).
_NO_PROBE = re.compile(
    r"open failed|unable to find|no device found|couldn't find any st-?link|no st-?link|"
    r"libusb_error_(access|no_device|not_found)",
    re.IGNORECASE,
)
_LINUX_ARCHES = ("x86", "x86-64", "x86_64", "amd64", "aarch64", "arm64")


class FlashError(HydraEdgeError, RuntimeError):
    """The board cannot be flashed, the flash tool is missing, or it failed (no probe, timeout, ...)."""


@dataclass(frozen=True)
class FlashSettings:
    default_tool: str
    commands: dict[str, list[str]]  # tool -> argv, placeholders filled in
    images: dict[str, str]  # tool -> the file it writes (device.elf / device.bin)
    apt: dict[str, str]  # tool -> Debian package
    address: int

    def install_hint(self, tool: str) -> str:
        return f"apt-get install {self.apt.get(tool, DEFAULT_APT.get(tool, tool))}"


@dataclass(frozen=True)
class FlashPlan:
    """What `flash` runs (or, for a dry run, would run): `make` then `command`, both inside `folder`."""

    folder: Path
    board: str
    tool: str
    make: list[str]
    command: list[str]
    image: str  # the file the tool writes to the board, relative to folder
    install_hint: str
    output: str = ""  # the flash tool's output, after a real run

    def lines(self) -> list[str]:
        """The commands as a user would type them in a shell."""
        return [f"cd {shlex.quote(str(self.folder))}", _shell_join(self.make), _shell_join(self.command)]


def _shell_join(argv: list[str]) -> str:
    """Like shlex.join, but `"a b"` rather than `'a b'` where double quotes are safe."""
    out = []
    for arg in argv:
        quoted = shlex.quote(arg)
        if quoted != arg and not re.search(r'["$`\\!\']', arg):
            quoted = f'"{arg}"'
        out.append(quoted)
    return " ".join(out)


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _is_flashable(board: Board) -> bool:
    if _table(board.raw, "flash_tool"):
        return True
    # No flash tool settings: a microcontroller (it has a flash budget) that is not a Linux machine.
    return board.flash_bytes is not None and board.arch.lower() not in _LINUX_ARCHES


def flash_settings(board: Board) -> FlashSettings:
    """The board's flash settings (board.toml), the defaults where it has none."""
    if not _is_flashable(board):
        raise FlashError(
            f"board {board.name} ({board.description}) cannot be flashed: it has no on-chip flash; "
            f"flashing is for microcontroller boards such as stm32f746 (use 'hydra-edge run' for this board)"
        )
    where = board.folder / "board.toml"
    raw, table = board.raw, _table(board.raw, "flash_tool")
    address = _table(raw, "flash").get("origin", DEFAULT_FLASH_ADDRESS)
    if isinstance(address, str):
        try:
            address = int(address, 0)
        except ValueError:
            raise FlashError(f"{where}: [flash] origin {address!r} is not a number") from None
    if not isinstance(address, int) or isinstance(address, bool) or address < 0:
        raise FlashError(f"{where}: [flash] origin {address!r} is not a non-negative integer")
    elf = raw.get("device_binary", DEVICE_ELF)
    if not isinstance(elf, str) or not elf or "/" in elf:
        raise FlashError(f"{where}: device_binary {elf!r} is not a file name")
    images = {"openocd": elf, "st-flash": str(Path(elf).with_suffix(".bin"))}
    values = {"elf": images["openocd"], "bin": images["st-flash"], "address": f"0x{address:08x}"}
    commands = {}
    for tool in TOOLS:
        template = table.get(tool, DEFAULT_COMMANDS[tool])
        if (not isinstance(template, list) or not template or template[0] != tool
                or not all(isinstance(a, str) for a in template)):
            raise FlashError(f"{where}: [flash_tool] {tool} must be a list of strings starting with {tool!r}")
        try:
            commands[tool] = [a.format(**values) for a in template]
        except (KeyError, IndexError, ValueError) as exc:
            raise FlashError(f"{where}: [flash_tool] {tool}: bad placeholder {exc} "
                             f"(known: {{elf}}, {{bin}}, {{address}})") from None
    default = table.get("default", DEFAULT_TOOL)
    if default not in TOOLS:
        raise FlashError(f"{where}: [flash_tool] default {default!r} is not one of {', '.join(TOOLS)}")
    apt = {**DEFAULT_APT, **{k: v for k, v in _table(table, "apt").items() if isinstance(v, str)}}
    return FlashSettings(default_tool=default, commands=commands, images=images, apt=apt, address=address)


def _board_of(folder: Path) -> Board:
    return load_board(read_manifest(folder)["board"])


def _pick_tool(tool: str | None, settings: FlashSettings) -> str:
    tool = settings.default_tool if tool is None else tool
    if tool not in TOOLS:
        raise FlashError(f"unknown flash tool {tool!r}; choose one of {', '.join(TOOLS)}")
    return tool


def flash_command(folder: str | Path, tool: str | None = DEFAULT_TOOL) -> list[str]:
    """The flash tool's command line for the build in `folder`, to run inside that folder.

    tool None means the board's own choice (board.toml `[flash_tool] default`, else openocd).
    """
    settings = flash_settings(_board_of(Path(folder)))
    return list(settings.commands[_pick_tool(tool, settings)])


def _key_line(text: str) -> str:
    """The line of a tool's output that says what went wrong (timestamps stripped)."""
    lines = [re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+\s+", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    for pattern in (_NO_PROBE, re.compile(r"^(error|fatal)\b|\*\*\*|\berror\b", re.IGNORECASE),
                    re.compile(r"fail|cannot|can't|unable|not found", re.IGNORECASE)):
        for ln in lines:
            if pattern.search(ln):
                return ln
    return lines[-1] if lines else "(no output)"


def _missing_tool(tool: str, install_hint: str) -> FlashError:
    return FlashError(f"{tool} is not installed or not on PATH ({install_hint})")


def _run_make(folder: Path, make: list[str]) -> None:
    make_exe = shutil.which(make[0])
    if make_exe is None:
        raise FlashError("make is not installed or not on PATH (apt-get install make)")
    try:
        proc = subprocess.run([make_exe, *make[1:]], cwd=folder, capture_output=True, text=True,
                              timeout=MAKE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FlashError(f"building the device image in {folder} took more than {MAKE_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if re.search(rf"No rule to make target '?{MAKE_TARGET}'?", output):
            raise FlashError(f"{folder}/Makefile has no '{MAKE_TARGET}' target: recompile the model for a "
                             f"flashable board (hydra-edge compile MODEL --board stm32f746 -o {folder})")
        raise FlashError(f"building the device image failed ({_shell_join(make)} in {folder}, "
                         f"exit {proc.returncode}): {_key_line(output)}")


def run_flash_tool(folder: str | Path, command: list[str], image: str | None = None,
                   install_hint: str | None = None, timeout: float | None = None) -> str:
    """Run the flash tool `command` inside `folder`; returns its output, or raises a one-line FlashError.

    image: the file it writes (checked to exist first); timeout: FLASH_TIMEOUT seconds by default.
    """
    folder = Path(folder)
    timeout = FLASH_TIMEOUT if timeout is None else timeout
    tool = command[0]
    install_hint = install_hint or f"apt-get install {DEFAULT_APT.get(tool, tool)}"
    exe = shutil.which(tool)
    if exe is None:
        raise _missing_tool(tool, install_hint)
    if image and not (folder / image).is_file():
        raise FlashError(f"{folder / image} is missing: build it first ({_shell_join(['make', MAKE_TARGET])} "
                         f"in {folder})")
    try:
        proc = subprocess.run([exe, *command[1:]], cwd=folder, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FlashError(f"{tool} did not finish within {timeout:.0f} s (is the board powered and its "
                         f"ST-LINK connected? is another debugger holding the probe?)") from None
    except OSError as exc:
        raise FlashError(f"{tool} could not be started: {exc.strerror or exc}") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        key = _key_line(output)
        if _NO_PROBE.search(key):
            raise FlashError(f'{tool} found no debug probe: "{key}" (connect the board\'s ST-LINK USB port; on '
                             f"Linux the udev rules installed by '{install_hint}' grant access to it)")
        raise FlashError(f'{tool} failed (exit {proc.returncode}): "{key}"')
    return output


def flash(folder: str | Path, tool: str | None = DEFAULT_TOOL, dry_run: bool = False) -> FlashPlan:
    """Build the device image of the build in `folder` (`make device`) and program the board.

    tool None means the board's default. With dry_run nothing is run (neither make nor the
    tool): the returned plan holds the exact commands. Every failure (a board without
    flash, the tool or the probe missing, a failed build, a timeout) is a one-line FlashError.
    """
    folder = Path(folder)
    board = _board_of(folder)
    settings = flash_settings(board)
    tool = _pick_tool(tool, settings)
    plan = FlashPlan(folder=folder, board=board.name, tool=tool, make=["make", MAKE_TARGET],
                     command=list(settings.commands[tool]), image=settings.images[tool],
                     install_hint=settings.install_hint(tool))
    if dry_run:
        return plan
    if not (folder / "Makefile").is_file():
        raise FlashError(f"{folder} has no Makefile: not an emitted hydra-edge project")
    if shutil.which(tool) is None:  # before a long build
        raise _missing_tool(tool, plan.install_hint)
    from .host import folder_lock, folder_writable

    if not folder_writable(folder):
        raise FlashError(f"{folder} is read-only: `make {MAKE_TARGET}` writes the device image there; "
                         "copy the build folder somewhere writable and flash that")
    with folder_lock(folder):  # no validate or bench relinks the image while it is built and written
        _run_make(folder, plan.make)
        output = run_flash_tool(folder, plan.command, plan.image, plan.install_hint)
    return replace(plan, output=output)
