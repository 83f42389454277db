"""Memory figures of a linked image, from its ELF section headers and symbol table.

A small reader (ELF32 and ELF64, little-endian: Cortex-M and aarch64) so that
the figures need no binutils for the target. What goes where:

    text     allocated, executable sections (.text)
    rodata   allocated, read-only, not executable (.isr_vector, .rodata, .ARM.exidx):
             the weights live here
    data     allocated, writable, with contents (.data): in RAM, and its
             initial values in flash
    bss      allocated, writable, no contents (.bss): the arena lives here
    stack    the section named .stack (the reserved stack region), if any

    flash = text + rodata + data        RAM = data + bss + stack

the same split as `arm-none-eabi-size` (text = text + rodata).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import HydraEdgeError

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_SYMTAB, SHT_NOBITS = 2, 8
STT_NOTYPE, STT_FUNC = 0, 2
ARENA_SYMBOL = "hydra_arena"


class ElfError(HydraEdgeError, ValueError):
    """Not an ELF file this reader understands."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    size: int
    offset: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: int = 0  # STT_*: the low nibble of st_info
    section: int = 0  # st_shndx: the index of its section (SHN_ABS for an absolute value)


class Elf:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data = self.path.read_bytes()
        d = self.data
        if d[:4] != b"\x7fELF":
            raise ElfError(f"{self.path}: not an ELF file")
        if d[5] != 1:
            raise ElfError(f"{self.path}: big-endian ELF is not supported")
        self.is64 = d[4] == 2
        self.machine = struct.unpack_from("<H", d, 18)[0]
        if self.is64:
            shoff, = struct.unpack_from("<Q", d, 40)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 58)
        else:
            shoff, = struct.unpack_from("<I", d, 32)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 46)
        raw = []
        for i in range(shnum):
            o = shoff + i * shentsize
            if self.is64:
                name, typ, flags, addr, off, size, link, _info, _align, entsize = struct.unpack_from("<IIQQQQIIQQ", d, o)
            else:
                name, typ, flags, addr, off, size, link, _info, _align, entsize = struct.unpack_from("<IIIIIIIIII", d, o)
            raw.append((name, typ, flags, addr, off, size, link, entsize))
        strtab = raw[shstrndx] if shnum else None
        self.sections = [
            Section(self._str(strtab[4], r[0]) if strtab else "", r[1], r[2], r[3], r[5], r[4], r[6], r[7]) for r in raw
        ]

    def _str(self, table_offset: int, index: int) -> str:
        start = table_offset + index
        end = self.data.index(b"\0", start)
        return self.data[start:end].decode("utf-8", "replace")

    def symbols(self) -> list[Symbol]:
        out = []
        for sec in self.sections:
            if sec.type != SHT_SYMTAB:
                continue
            strtab = self.sections[sec.link]
            fmt, step = ("<IBBHQQ", 24) if self.is64 else ("<IIIBBH", 16)
            for o in range(sec.offset, sec.offset + sec.size, sec.entsize or step):
                if self.is64:
                    name, info, _other, shndx, value, size = struct.unpack_from(fmt, self.data, o)
                else:
                    name, value, size, info, _other, shndx = struct.unpack_from(fmt, self.data, o)
                if name:
                    out.append(Symbol(self._str(strtab.offset, name), value, size, info & 0xF, shndx))
        return out

    def symbol(self, name: str) -> Symbol | None:
        return next((s for s in self.symbols() if s.name == name), None)


def image_sizes(path: str | Path) -> dict:
    """Flash and RAM of a linked image (see the module docstring); a JSON-able dict."""
    elf = Elf(path)
    parts = {"text": 0, "rodata": 0, "data": 0, "bss": 0, "stack": 0}
    sections = []
    for s in elf.sections:
        if not s.flags & SHF_ALLOC or s.size == 0:
            continue
        if s.name == ".stack":
            kind = "stack"
        elif s.flags & SHF_EXECINSTR:
            kind = "text"
        elif not s.flags & SHF_WRITE:
            kind = "rodata"
        elif s.type == SHT_NOBITS:
            kind = "bss"
        else:
            kind = "data"
        parts[kind] += s.size
        sections.append({"name": s.name, "kind": kind, "addr": s.addr, "bytes": s.size})
    arena = elf.symbol(ARENA_SYMBOL)
    return {
        "elf": Path(path).name,
        **{f"{k}_bytes": v for k, v in parts.items()},
        "flash_bytes": parts["text"] + parts["rodata"] + parts["data"],
        "ram_bytes": parts["data"] + parts["bss"] + parts["stack"],
        "arena_bytes": arena.size if arena else None,
        "sections": sections,
    }
