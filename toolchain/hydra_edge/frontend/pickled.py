"""torch.save files: a state_dict is refused with how to export; a pickled nn.Module only when trusted.

1. The file is first read with torch.load(weights_only=True), which builds
   tensors and plain containers only and never runs code from the file. If that
   works, the file holds weights without a graph (a state_dict, usually):
   refused with a message that says how to export the model.
2. Otherwise it is a pickle of Python objects (torch.save(model)), and
   unpickling it runs whatever code the file names. It is refused unless the
   caller passes trust_pickle=True (the CLI's --trust-pickle) AND the class's
   import path "pkg.module:ClassName" (--module-class). Then the module is
   imported (so that unpickling finds the class; a class pickled from a
   script's __main__ is found there too), the file is loaded with
   torch.load(weights_only=False), the object must be an instance of that
   class, and it is exported with torch.export on a zero input of
   input_shape (--input-shape C,H,W, required: a pickle records no shape).
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..ir.graph import Graph
from .errors import FrontendError, first_line
from .module import from_module

EXPORT_HINT = (
    "build the model in Python and export it: torch.export.save(torch.export.export(model, (example,)), "
    "'model.pt2'), or torch.jit.save(torch.jit.script(model), 'model.pt')"
)
TRUST_FLAGS = "--trust-pickle --module-class pkg.module:ClassName --input-shape C,H,W"


def load_pickle(
    path: str | os.PathLike,
    input_shape: tuple[int, ...] | None = None,
    trust_pickle: bool = False,
    module_class: str | None = None,
) -> Graph:
    """A torch.save'd nn.Module -> aten-level Graph, only if trusted; any other torch.save file is refused."""
    path = Path(path)
    name = str(path)
    weights = _weights_only(path)
    if weights is not _NOT_WEIGHTS:
        what = "a state_dict" if isinstance(weights, dict) else f"a pickled {type(weights).__name__}"
        raise FrontendError(f"{name} is {what} (weights only, no graph): {EXPORT_HINT}")
    if not trust_pickle:
        raise FrontendError(
            f"{name} is a pickled Python object (e.g. torch.save(model)); it is not loaded, since unpickling runs "
            f"code from the file. If you trust the file, pass {TRUST_FLAGS}; better, {EXPORT_HINT}"
        )
    if not module_class:
        raise FrontendError(
            f"{name}: --trust-pickle needs --module-class pkg.module:ClassName, the class of the saved module"
        )
    cls = import_class(module_class)
    if input_shape is None:
        raise FrontendError(
            f"{name}: a pickled module records no input shape; pass --input-shape C,H,W (without the batch)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_main_finder(cls))
    except Exception as exc:  # noqa: BLE001 - unpickling can raise anything the file's code raises
        raise FrontendError(f"{name}: unpickling failed ({first_line(exc)}); {EXPORT_HINT}") from None
    if not isinstance(obj, cls):
        raise FrontendError(f"{name} holds a {type(obj).__name__}, not the {module_class} named by --module-class")
    try:
        graph = from_module(obj, torch.zeros(1, *input_shape))
    except FrontendError as exc:
        raise FrontendError(f"{name}: {exc}") from None
    graph.meta.update({"source_file": name, "frontend": "pickle"})
    return graph


_NOT_WEIGHTS = object()


def _weights_only(path: Path) -> Any:
    """The file's content if torch's weights-only unpickler can build it (no code runs), else _NOT_WEIGHTS."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError):
        return _NOT_WEIGHTS


def import_class(spec: str) -> type:
    """"pkg.module:ClassName" -> the nn.Module subclass (FrontendError if it cannot be found)."""
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise FrontendError(f"--module-class {spec!r}: write it as pkg.module:ClassName")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - importing runs the module's code
        raise FrontendError(
            f"--module-class {spec}: cannot import {module_name} ({first_line(exc)}); "
            "make it importable (PYTHONPATH)"
        ) from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise FrontendError(f"--module-class {spec}: {module_name} has no {qualname}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise FrontendError(f"--module-class {spec}: {qualname} is not an nn.Module class")
    return obj


def _main_finder(cls: type) -> SimpleNamespace:
    """A pickle module for torch.load that also finds `cls` where a script pickled it as __main__.<name>."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "__main__" and name == cls.__qualname__:
                return cls
            return super().find_class(module, name)

    return SimpleNamespace(Unpickler=Unpickler, load=pickle.load, __name__="pickle")
