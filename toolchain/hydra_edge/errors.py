"""The base of every error meant for the user (the CLI prints its message as one line), and the one format
every frontend and pass uses to list the ops it cannot take."""

from __future__ import annotations

import os
from dataclasses import dataclass


class HydraEdgeError(Exception):
    """A problem with the user's input, model, board or tools, with a message that says what to do."""


# -- the one format for "these ops are not supported", whatever the model's format ---------------------------

SHOWN_PER_KIND = 3  # locations listed per kind of op; the rest are counted


@dataclass(frozen=True)
class UnsupportedNode:
    """One node a frontend or pass cannot take."""

    kind: str  # the op as the model's format names it: "aten.silu", "Sigmoid", "HARD_SWISH"
    index: int  # its position in the file's node list
    where: str  # its module path or node name
    line: str = ""  # the user's source line ("model.py:12") when the file records one
    why: str = ""  # what is unsupported about it, when the op itself is known


def unsupported_summary(nodes: list[UnsupportedNode], noun: str = "op") -> str:
    """One line: 'N unsupported ops of K kinds: KIND xC (#i where at line, ...); ...', kinds in first-seen order.

    A hybrid CNN-ViT has hundreds of such nodes: grouped by kind with a count and the first few locations,
    the message says what to change (one kind of layer) instead of listing every call of it.
    """
    groups: dict[str, list[UnsupportedNode]] = {}
    for node in nodes:
        groups.setdefault(node.kind, []).append(node)
    parts = []
    for kind, items in groups.items():
        shown = []
        for n in items[:SHOWN_PER_KIND]:
            text = f"#{n.index} {n.where}" + (f" at {n.line}" if n.line else "") + (f": {n.why}" if n.why else "")
            shown.append(text)
        more = len(items) - len(shown)
        parts.append(f"{kind} x{len(items)} ({', '.join(shown)}{f', +{more} more' if more else ''})")
    n, k = len(nodes), len(groups)
    head = f"{n} unsupported {noun}{'s' if n != 1 else ''}"
    if k > 1:
        head += f" of {k} kinds"
    return f"{head}: {'; '.join(parts)}"


def display_path(path: str) -> str:
    """A path as the user would type it: relative to the working folder when inside it; a library's file
    from its package down ("timm/models/vision_transformer.py"); else as given."""
    full = os.path.abspath(path)
    here = os.getcwd()
    if full == here or full.startswith(here + os.sep):
        return os.path.relpath(full, here)
    for marker in ("site-packages", "dist-packages"):
        head, sep, tail = full.partition(os.sep + marker + os.sep)
        if sep:
            return tail
    return path
