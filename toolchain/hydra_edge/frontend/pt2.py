"""Read a torch.export archive (.pt2, from torch.export.save) into an aten-level Graph.

A .pt2 holds the graph and the weights, so it loads without the user's Python
class. Files that are not such an archive are recognised and refused with a
message that says what they are and how to make a .pt2:

- a torch.save'd state_dict (weights only, no graph): recognised with
  torch.load(weights_only=True), which unpickles tensors and plain containers
  only, never arbitrary code;
- a torch.save'd nn.Module (a pickle of Python objects): not loaded, since
  unpickling it would run code from the file;
- a TorchScript archive, a damaged or truncated zip, anything else.

torch.export.load trusts its archive: it unpickles weights and constants that
the archive marks `use_pickle`, custom (torchbind) and opaque objects, legacy
weight files, and falls back to torch.load(weights_only=False) on sample inputs
that do not load safely; it hands symbolic-shape strings to sympy.sympify
(Python's eval); it loads AOTInductor shared libraries. Each of these runs code
from the file. So before torch.export.load sees an archive, `check_untrusted`
reads its member list and JSON members (json.loads, bounded sizes; the sample
inputs with torch.load(weights_only=True)) and refuses any of them, naming the
first offending entry, unless the caller passes trust_pickle=True (the CLI's
--trust-pickle). torch.export.save writes none of them for a plain model.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..ir.graph import Graph
from .aten import exported_program_to_graph
from .errors import FrontendError, first_line
from .formats import PICKLE, PT2, TORCHSCRIPT, is_zip, torch_zip_kind, zip_members

EXPORT_HINT = (
    "build the model and export it with torch.export.export(model, (example,)) "
    "then torch.export.save(program, 'model.pt2')"
)


def load_pt2(path: str | os.PathLike, trust_pickle: bool = False) -> Graph:
    """Load a torch.export archive and convert it to an aten-level Graph.

    Unless trust_pickle, an archive that would make torch.export.load run code
    from the file (pickled payloads, sympy strings, AOTInductor libraries) is
    refused before torch reads it (check_untrusted).
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise FrontendError(f"{name}: no such file; give the path of a .pt2 written by torch.export.save")
    if path.is_dir():
        raise FrontendError(f"{name} is a directory; give the path of a .pt2 written by torch.export.save")
    _check_archive(path)
    if not trust_pickle:
        check_untrusted(path)
    try:
        with _weights_only_loads(not trust_pickle):
            program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on bad archives
        why = first_line(exc)
        raise FrontendError(
            f"{name}: torch.export.load failed ({why}); the file may be damaged or from another torch "
            f"version: re-export it with torch {torch.__version__}"
        ) from None
    return exported_program_to_graph(program, name, "pt2")


def _check_archive(path: Path) -> None:
    """Raise FrontendError unless `path` looks like a torch.export archive."""
    name = str(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise FrontendError(f"{name} is empty; {EXPORT_HINT}")
    if not is_zip(path):
        if head.startswith(b"PK"):
            raise FrontendError(
                f"{name} is a damaged or truncated zip archive; copy it again or re-export it "
                "with torch.export.save(program, 'model.pt2')"
            )
        if head[:1] == b"\x80":  # a pickle protocol marker: torch.save(..., _use_new_zipfile_serialization=False)
            _refuse_pickle(path)
        raise FrontendError(f"{name} is not a torch.export archive (not a zip file); {EXPORT_HINT}")
    kind = torch_zip_kind(zip_members(path))
    if kind == PT2:
        return
    if kind == TORCHSCRIPT:
        raise FrontendError(
            f"{name} is a TorchScript archive (torch.jit.save), not a torch.export program; {EXPORT_HINT}"
        )
    if kind == PICKLE:
        _refuse_pickle(path)
    raise FrontendError(f"{name} is a zip file but not a torch.export archive; {EXPORT_HINT}")


def _refuse_pickle(path: Path) -> None:
    """A torch.save'd file: say whether it is weights only or a pickled object. Always raises."""
    name = str(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError):
        raise FrontendError(
            f"{name} is a Python pickle (e.g. a whole nn.Module saved with torch.save(model)); it is not "
            f"loaded, since unpickling runs code from the file: {EXPORT_HINT}"
        ) from None
    if isinstance(obj, dict):
        raise FrontendError(f"{name} is a state_dict (weights only, no graph): {EXPORT_HINT}")
    raise FrontendError(f"{name} holds a pickled {type(obj).__name__} (weights only, no graph): {EXPORT_HINT}")


# --- untrusted archives ------------------------------------------------------------------------------

TRUST_HINT = (
    "torch.export.load would run code from the file, so it is not loaded "
    "(--trust-pickle loads it and runs that code: only for a file you trust)"
)
MAX_JSON_BYTES = 256 << 20  # a model JSON of this size is far beyond any model hydra-edge compiles
MAX_MEMBERS = 100_000
_PAYLOAD_PREFIXES = ("data/weights/", "data/constants/")


class _Refusal(Exception):
    """One offending entry of an archive (message without the file name)."""


def check_untrusted(path: str | os.PathLike) -> None:
    """Raise FrontendError if torch.export.load would run code from the archive at `path`.

    Reads the zip's member list and its JSON members only (no pickle but the
    sample inputs, with torch.load(weights_only=True)). Refused: a member list
    that torch's own reader sees differently (duplicates, members outside the
    archive's one top folder); AOTInductor members (shared libraries); legacy
    pickled weight/constant files; a weight or constant whose config says
    use_pickle (or is not plainly False); a constant that is a custom or opaque
    object; a symbolic expression that is not plain arithmetic on shape symbols
    (torch parses them with sympy.sympify, i.e. eval); sample inputs that do not
    load with weights_only=True (torch would retry with weights_only=False).
    """
    name = str(path)
    try:
        _check_untrusted(Path(path))
    except _Refusal as exc:
        raise FrontendError(f"{name}: {exc}; {TRUST_HINT}") from None


def _check_untrusted(path: Path) -> None:
    from torch.export.pt2_archive import constants as pc

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _Refusal(f"not a readable zip archive ({first_line(exc)})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _Refusal(f"{len(infos)} archive members (at most {MAX_MEMBERS} are read)")
        members: dict[str, zipfile.ZipInfo] = {}
        roots = set()
        for info in infos:
            root, sep, rel = info.filename.partition("/")
            if not sep or not rel:
                raise _Refusal(f"archive member {info.filename!r} is outside the archive's top folder")
            roots.add(root)
            if rel in members:
                raise _Refusal(f"archive member {rel!r} appears twice")
            members[rel] = info
        if len(roots) != 1:
            raise _Refusal(f"archive members under {len(roots)} top folders ({', '.join(sorted(roots)[:3])})")
        _same_names_as_torch(path, set(members))

        def read(rel: str, limit: int = MAX_JSON_BYTES) -> bytes:
            info = members[rel]
            if info.file_size > limit:
                raise _Refusal(f"archive member {rel!r} has {info.file_size} bytes (at most {limit} are read)")
            with zf.open(info) as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise _Refusal(f"archive member {rel!r} is larger than its header says")
            return data

        def load_json(rel: str):
            try:
                return json.loads(read(rel))
            except (ValueError, RecursionError) as exc:
                raise _Refusal(f"archive member {rel!r} is not valid JSON ({first_line(exc)})") from None

        for rel in sorted(members):
            if rel.startswith(pc.AOTINDUCTOR_DIR) or rel.startswith(pc.EXECUTORCH_DIR) or rel.startswith(pc.MTIA_DIR):
                raise _Refusal(f"archive member {rel!r} is compiled code (AOTInductor/ExecuTorch)")

        prefix, suffix = pc.MODELS_FILENAME_FORMAT.split("{}")
        models = [rel[len(prefix):-len(suffix)] for rel in sorted(members)
                  if rel.startswith(pc.MODELS_DIR) and rel.endswith(suffix) and len(rel) > len(prefix) + len(suffix)]
        for rel in sorted(members):
            if rel.startswith(pc.MODELS_DIR) and not (rel.endswith(suffix) and len(rel) > len(prefix) + len(suffix)):
                raise _Refusal(f"archive member {rel!r} is not a model JSON")  # torch would misread its name
        for model in models:
            for legacy in (f"{pc.WEIGHTS_DIR}{model}.pt", f"{pc.CONSTANTS_DIR}{model}.pt"):
                if legacy in members:
                    raise _Refusal(f"archive member {legacy!r} holds pickled weights (the legacy .pt2 format)")
            weights = pc.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)
            if weights in members:
                _check_payloads(load_json(weights), weights, pc, constants=False)
            consts = pc.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model)
            if consts in members:
                _check_payloads(load_json(consts), consts, pc, constants=True)
            model_json = prefix + model + suffix
            _check_expressions(load_json(model_json), model_json)
            sample = pc.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
            if sample in members:
                _check_sample_inputs(read(sample, max(MAX_JSON_BYTES, members[sample].file_size)), sample)


def _same_names_as_torch(path: Path, names: set[str]) -> None:
    """torch.export.load reads the zip with its own (C++) reader: it must see the same members."""
    try:
        theirs = set(torch._C.PyTorchFileReader(str(path)).get_all_records())
    except Exception as exc:  # noqa: BLE001 - torch's reader raises RuntimeError and others
        raise _Refusal(f"torch's archive reader cannot read it ({first_line(exc)})") from None
    if theirs != names:
        odd = sorted(theirs ^ names)[0]
        raise _Refusal(f"python's zip reader and torch's disagree on the archive members (e.g. {odd!r})")


def _check_payloads(config, rel: str, pc, constants: bool) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _Refusal(f"archive member {rel!r} has no 'config' object")
    what = "constant" if constants else "weight"
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise _Refusal(f"{rel!r}: entry {fqn!r} is not an object")
        path_name = meta.get("path_name")
        if constants and isinstance(path_name, str):
            if path_name.startswith(pc.CUSTOM_OBJ_FILENAME_PREFIX):
                raise _Refusal(f"{what} {fqn!r} is a pickled custom (torchbind) object ({path_name!r})")
            if path_name.startswith(pc.OPAQUE_OBJ_FILENAME_PREFIX):
                raise _Refusal(f"{what} {fqn!r} is a pickled opaque Python object ({path_name!r})")
        if meta.get("use_pickle", False) is not False:
            raise _Refusal(f"{what} {fqn!r} is marked use_pickle ({path_name!r} is a pickle)")


# Symbolic shapes: torch parses each expr_str with sympy.sympify, which evaluates it as Python.
# torch writes sympy's srepr, e.g. "Symbol('s77', positive=True, integer=True)" or
# "Mul(Integer(2), Symbol('s0', ...))". Accepted: numbers, operators, the sympy and torch function
# names below, symbol names (s0, u1, ...), quoted only as a Symbol's name, and the assumption
# keywords; no attribute access, no other names, no other strings: nothing Python could run.
_SYM_FUNCTIONS = frozenset(
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift "
    "PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt "
    "RoundToInt RoundDecimal ToFloat Identity Max Min Eq Ne Lt Le Gt Ge And Or Not Abs oo zoo nan True False "
    "Symbol Integer Rational Float Add Mul Pow Equality Unequality StrictLessThan LessThan StrictGreaterThan "
    "GreaterThan Infinity NegativeInfinity BooleanTrue BooleanFalse true false "
    "positive negative nonnegative nonpositive integer real finite zero nonzero even odd commutative".split()
)
_SYM_SYMBOL = re.compile(r"[a-z]{1,4}[0-9]+\Z")
_SYM_TOKEN = re.compile(r"\s*(?:([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)|([A-Za-z_][A-Za-z0-9_]*)|"
                        r"'([a-z]{1,4}[0-9]+)'|\"([a-z]{1,4}[0-9]+)\"|"
                        r"(\*\*|//|==|!=|<=|>=|[-+*/%(),<>&|~^=]))")
MAX_EXPR_CHARS = 4096


def _check_expressions(tree, rel: str) -> None:
    """Every "expr_str" in the model JSON must be plain arithmetic (iterative walk: no recursion limit)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    _check_expression(value, rel)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def _check_expression(text, rel: str) -> None:
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        raise _Refusal(f"{rel!r}: a symbolic shape expression that is not a short string")
    pos = 0
    while pos < len(text):
        m = _SYM_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                return
            raise _Refusal(f"{rel!r}: symbolic shape expression {text[:60]!r} is not plain arithmetic "
                           f"(torch evaluates it with sympy.sympify)")
        ident = m.group(2)
        if ident is not None and ident not in _SYM_FUNCTIONS and not _SYM_SYMBOL.match(ident):
            raise _Refusal(f"{rel!r}: symbolic shape expression {text[:60]!r} names {ident[:40]!r} "
                           f"(torch evaluates it with sympy.sympify)")
        pos = m.end()


def _check_sample_inputs(data: bytes, rel: str) -> None:
    """torch loads sample inputs with weights_only=True and, if that fails, again with weights_only=False."""
    if not data:
        return
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refusals and damaged pickles raise many kinds
        raise _Refusal(f"archive member {rel!r} is a pickle of more than plain tensors "
                       f"({type(exc).__name__} with weights_only=True)") from None


@contextlib.contextmanager
def _weights_only_loads(force: bool):
    """While torch.export.load runs on an untrusted archive, every torch.load is weights_only (defence in depth)."""
    if not force:
        yield
        return
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
