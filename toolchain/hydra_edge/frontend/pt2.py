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

Note that torch.export.load itself trusts its archive (custom objects in it
are unpickled): load .pt2 files from sources you trust.
"""

from __future__ import annotations

import os
import pickle
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


def load_pt2(path: str | os.PathLike) -> Graph:
    """Load a torch.export archive and convert it to an aten-level Graph."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise FrontendError(f"{name}: no such file; give the path of a .pt2 written by torch.export.save")
    if path.is_dir():
        raise FrontendError(f"{name} is a directory; give the path of a .pt2 written by torch.export.save")
    _check_archive(path)
    try:
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
