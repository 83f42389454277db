"""The build folder's manifest (build.json) and report (report.json): their names, and reading them checked.

codegen/emit_c.py writes build.json, codegen/report.py report.json; the targets (host, QEMU, flash,
instruction counts), validate and the CLI read them. Both sides import this module, not each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import HydraEdgeError

BINARY = "model"
SANITIZE_BINARY = "model-asan"
BUILD_MANIFEST = "build.json"  # the mark of a hydra-edge build folder (outdir.py)


class BuildFileError(HydraEdgeError, ValueError):
    """A file of a build folder (build.json, report.json) that is not what `hydra-edge compile` wrote."""


REPORT_FILE = "report.json"
TEST_VECTORS = "test_inputs.npy"  # the inputs compile draws for validate (int8, N x input)
COMPILE_AGAIN = "compile the model again with 'hydra-edge compile'"


def damaged(path: Path, why: str) -> BuildFileError:
    """The one message for a build folder's file that is not what compile wrote."""
    return BuildFileError(f"{path} is damaged ({why}): {COMPILE_AGAIN}")


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise damaged(path, "not a JSON object")
    return doc


class _Entries(dict):
    """build.json as a dict whose missing entries raise BuildFileError (naming the file), not KeyError."""

    def __init__(self, data: dict, path: Path, where: str = "") -> None:
        super().__init__(data)
        self._path, self._where = path, where

    def __missing__(self, key: str) -> Any:
        raise damaged(self._path, f"no {self._where + str(key)!r} entry")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_io(d: Any, path: Path, key: str) -> _Entries:
    if not isinstance(d, dict):
        raise damaged(path, f"{key!r} is not a JSON object")
    checks = {
        "name": (lambda v: isinstance(v, str), "a string"),
        "shape": (lambda v: isinstance(v, list) and all(_is_int(s) and s > 0 for s in v), "a list of positive ints"),
        "bytes": (lambda v: _is_int(v) and v > 0, "a positive int"),
        "scale": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                          and 0 < v < float("inf")), "a positive number or null"),
        "zero_point": (lambda v: v is None or _is_int(v), "an int or null"),
    }
    for k, (ok, what) in checks.items():
        if k in d and not ok(d[k]):
            raise damaged(path, f"{key}.{k} is {d[k]!r}, not {what}")
    return _Entries(d, path, f"{key}.")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """build.json, checked: a damaged one is a BuildFileError naming it (so is an entry missing when read)."""
    path = Path(folder) / BUILD_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a hydra-edge build folder (no {BUILD_MANIFEST}); run 'hydra-edge compile' first")
    doc = _read_json_object(path)
    if doc.get("format", "hydra-edge-build") != "hydra-edge-build":
        raise damaged(path, f"format {doc['format']!r}, not 'hydra-edge-build'")
    for key in ("board", "rounding", "binary", "sanitize_binary", "schedule", "board_kind", "source"):
        if key in doc and not isinstance(doc[key], str):
            raise damaged(path, f"{key!r} is {doc[key]!r}, not a string")
    if "arena_bytes" in doc and not (_is_int(doc["arena_bytes"]) and doc["arena_bytes"] >= 0):
        raise damaged(path, f"'arena_bytes' is {doc['arena_bytes']!r}, not a non-negative int")
    for key in ("input", "output"):
        if key in doc:
            doc[key] = _check_io(doc[key], path, key)
    return _Entries(doc, path)


def read_report(folder: str | Path, required: bool = False) -> dict[str, Any] | None:
    """report.json as a dict (None when absent and not `required`); a damaged one is a BuildFileError."""
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{folder}: no {REPORT_FILE} in the build folder; {COMPILE_AGAIN}")
        return None
    doc = _read_json_object(path)
    for key, kind in (("ram", dict), ("flash", dict), ("budget", dict), ("measured", dict), ("ops", list)):
        if key in doc and not isinstance(doc[key], kind):
            raise damaged(path, f"{key!r} is not a JSON {'object' if kind is dict else 'list'}")
    return doc

