"""Where a run's instructions go, function by function (`hydra-edge bench --functions`).

The counting plugin (plugin/insn_count.c, `pcs=PATH`) counts every instruction address apart; this module adds
those counts up per function of the image, from its ELF symbol table (the image keeps its symbols: built with -g,
not stripped). A function is a named symbol inside an executable section (one without a size runs to the next);
static functions and the ones GCC made (`conv_locate.isra.0`) count under their own names, inlined code under its
caller, linker stubs under their section's name. The counts cover the
whole run (start-up and I/O included), so they add up to the run's total exactly.

    parse_pc_counts(text)           the plugin's file -> {address: instructions}
    by_function(pcs, elf)           -> rows {"function", "instructions", "share"}, most first
    format_functions(rows, top)     the table bench prints
"""

from __future__ import annotations

import bisect
from pathlib import Path

from ..errors import HydraEdgeError
from .elf import SHF_ALLOC, SHF_EXECINSTR, STT_FUNC, STT_NOTYPE, Elf

PC_COUNTS_MAGIC = "hydra-edge-pc-counts"
EM_ARM = 40  # e_machine of a 32-bit Arm image: Thumb function symbols have bit 0 set
OUTSIDE = "(outside any function)"


class FunctionCountError(HydraEdgeError, ValueError):
    """The plugin's per-address counts cannot be read."""


def parse_pc_counts(text: str) -> dict[int, int]:
    """{address: instructions executed there}; an address translated more than once has its lines added up."""
    lines = text.splitlines()
    if not lines or lines[0].split()[:1] != [PC_COUNTS_MAGIC]:
        raise FunctionCountError("not a per-address count file of the counting plugin")
    counts: dict[int, int] = {}
    for line in lines[1:]:
        if line.startswith("error"):
            raise FunctionCountError(f"the counting plugin: {line[len('error'):].strip()}")
        try:
            addr, n = line.split()
            counts[int(addr, 16)] = counts.get(int(addr, 16), 0) + int(n)
        except ValueError:
            raise FunctionCountError(f"unreadable line in the per-address counts: {line!r}") from None
    return counts


def _functions(elf: Elf) -> list[tuple[int, int, str]]:
    """(start, end, name) of every named code symbol inside an executable section, by start address: a symbol
    without a size (an assembly routine: libc's _init) runs to the next one; the bytes of a section before its
    first symbol are "(section NAME)" (linker stubs: .plt, .iplt)."""
    executable = {i for i, s in enumerate(elf.sections) if s.flags & SHF_ALLOC and s.flags & SHF_EXECINSTR and s.size}
    code = [elf.sections[i] for i in sorted(executable)]
    thumb = elf.machine == EM_ARM
    starts: dict[int, tuple[int, str]] = {}  # start -> (size, name): aliases keep the first name
    for sym in elf.symbols():  # functions and labels of a code section (not $t/$d mapping symbols, not absolutes)
        if sym.section in executable and sym.kind in (STT_FUNC, STT_NOTYPE) and not sym.name.startswith("$"):
            starts.setdefault(sym.value & ~1 if thumb else sym.value, (sym.size, sym.name))
    for sec in code:
        starts.setdefault(sec.addr, (0, f"({sec.name})"))
    spans = []
    ordered = sorted(starts.items())
    for i, (start, (size, name)) in enumerate(ordered):
        sec_end = next(s.addr + s.size for s in code if s.addr <= start < s.addr + s.size)
        following = ordered[i + 1][0] if i + 1 < len(ordered) else sec_end
        spans.append((start, start + size if size else min(following, sec_end), name))
    return spans


def by_function(pcs: dict[int, int], elf_path: str | Path) -> list[dict]:
    """The instructions of each function of the image (and of addresses in none), most first; share of the run."""
    functions = _functions(Elf(elf_path))
    starts = [f[0] for f in functions]
    totals: dict[str, int] = {}
    for addr, n in pcs.items():
        i = bisect.bisect_right(starts, addr) - 1
        name = functions[i][2] if i >= 0 and addr < functions[i][1] else OUTSIDE
        totals[name] = totals.get(name, 0) + n
    run = sum(totals.values())
    rows = [{"function": name, "instructions": n, "share": n / run if run else 0.0} for name, n in totals.items()]
    return sorted(rows, key=lambda r: (-r["instructions"], r["function"]))


def format_functions(rows: list[dict], top: int = 20) -> list[str]:
    """The `top` functions as a table, the rest in one line."""
    from ..codegen.report import text_table

    shown, rest = rows[:top], rows[top:]
    lines = [f"by function (the whole run; {len(rows)} functions ran):", ""]
    lines += text_table(["function", "instructions", "share"],
                        [[r["function"], f"{r['instructions']:,}", f"{100 * r['share']:.1f}%"] for r in shown],
                        right={1, 2})
    if rest:
        n, run = sum(r["instructions"] for r in rest), sum(r["instructions"] for r in rows)
        lines.append(f"... {len(rest)} more functions: {n:,} instructions ({100 * n / run:.1f}%)")
    return lines
