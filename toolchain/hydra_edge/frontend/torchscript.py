"""Read a TorchScript archive (torch.jit.save: scripted or traced) into an aten-level Graph.

    torch.jit.load -> TS2EPConverter -> torch.export.export -> aten.exported_program_to_graph

torch.jit.load reads TorchScript code and tensors only: it does not unpickle
arbitrary Python objects. torch._export.converter.TS2EPConverter turns the
module into an ExportedProgram by running it on an example input; it leaves
every dimension symbolic, so the program's module is exported once more on
the same example for the fixed shapes the compiler needs.

TorchScript records no input shape, so the example's shape (without the batch
of 1) comes from, first to last:

1. ``input_shape`` (the CLI's ``--input-shape C,H,W``);
2. the archive's extra file ``hydra_edge.input_shape`` ("3,32,32"), written by
   ``torch.jit.save(m, path, _extra_files={"hydra_edge.input_shape": "3,32,32"})``;
3. the inputs a traced module was traced with (torch.jit.trace stores them in
   the archive as ``traced_inputs.pkl``; read here with an unpickler that
   builds nothing but shapes);

else a FrontendError asks for --input-shape. Node sources are the fx node
names: the converter keeps no user source lines.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..ir.graph import Graph
from .aten import exported_program_to_graph
from .errors import FrontendError, first_line
from .formats import ZIP_ERRORS, parse_input_shape

SHAPE_FILE = "hydra_edge.input_shape"
EXPORT_INSTEAD = (
    "export the model with torch.export.export(model, (example,)) and torch.export.save(program, 'model.pt2') "
    "instead"
)
# The converter's chatter (Dim.AUTO specialisations) on stderr: not the user's concern.
_QUIET_LOGGERS = ("torch._export", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")


def load_torchscript(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Load a torch.jit.save archive and convert it; `input_shape` excludes the batch (e.g. (3, 32, 32))."""
    path = Path(path)
    name = str(path)
    extra = {SHAPE_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on bad archives
        raise FrontendError(
            f"{name}: torch.jit.load failed ({first_line(exc)}); the file may be damaged or from another "
            f"torch version: save it again with torch {torch.__version__}"
        ) from None
    module.eval()  # an inference compiler: dropout and friends off, as for torch.export
    n_inputs = len(list(module.graph.inputs())) - 1  # the first is the module itself
    if n_inputs != 1:
        raise FrontendError(
            f"{name}: the TorchScript module's forward takes {n_inputs} inputs; hydra-edge needs exactly one, "
            "a float32 image tensor [1, C, H, W]"
        )
    shape, origin = _input_shape(path, input_shape, extra[SHAPE_FILE])
    example = torch.zeros(1, *shape)
    try:
        with _quiet():
            from torch._export.converter import (
                TS2EPConverter,  # private: its failure is an error like any
            )

            program = TS2EPConverter(module, (example,)).convert()
            program = torch.export.export(program.module(), (example,))
    except Exception as exc:  # noqa: BLE001 - the converter and export raise many kinds
        raise FrontendError(
            f"{name}: could not convert the TorchScript module with an input of shape {list(example.shape)} "
            f"({origin}): {first_line(exc)}; check the input shape, or {EXPORT_INSTEAD}"
        ) from None
    return exported_program_to_graph(program, name, "torchscript")


def _input_shape(path: Path, given: tuple[int, ...] | None, extra: bytes | str) -> tuple[tuple[int, ...], str]:
    """The example's shape without the batch, and where it came from (for messages)."""
    if given is not None:
        return tuple(int(d) for d in given), "from --input-shape"
    text = extra.decode("utf-8", "replace") if isinstance(extra, bytes) else str(extra)
    if text.strip():
        try:
            return parse_input_shape(text), f"from the archive's {SHAPE_FILE}"
        except ValueError as exc:
            raise FrontendError(f"{path}: the archive's {SHAPE_FILE} is malformed ({exc}); pass --input-shape") from None
    traced = traced_input_shapes(path)
    if traced is not None:
        if len(traced) != 1 or len(traced[0]) < 1 or traced[0][0] != 1:
            raise FrontendError(
                f"{path}: the module was traced on inputs of shapes {[list(s) for s in traced]}; hydra-edge needs "
                "one input of batch 1: pass --input-shape C,H,W"
            )
        return tuple(traced[0][1:]), "the shape it was traced with"
    raise FrontendError(
        f"{path}: a TorchScript archive records no input shape; pass --input-shape C,H,W (without the batch), "
        f"or save the model with torch.jit.save(m, path, _extra_files={{'{SHAPE_FILE}': '3,32,32'}})"
    )


# -- the inputs a traced module was traced with -------------------------------------------------------


class _Shape(tuple):
    """What a tensor in traced_inputs.pkl unpickles to here: its size, nothing else."""


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *rest: Any) -> _Shape:
    return _Shape(int(d) for d in size)


class _ShapeUnpickler(pickle.Unpickler):
    """Builds shapes from traced_inputs.pkl; any global outside the few it knows is refused, so no code runs."""

    _GLOBALS: ClassVar[dict[tuple[str, str], Any]] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch.jit._pickle", "restore_type_tag"): lambda value, tag: value,
        ("collections", "OrderedDict"): dict,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return name  # a storage type tag: only the size matters
        raise pickle.UnpicklingError(f"{module}.{name} is not expected in traced_inputs.pkl")

    def persistent_load(self, pid: Any) -> None:
        return None  # the tensor data is never read


def traced_input_shapes(path: str | os.PathLike) -> list[tuple[int, ...]] | None:
    """The shapes of forward's traced inputs stored in a torch.jit.trace archive (None if none)."""
    try:
        with zipfile.ZipFile(path) as z:
            member = next((n for n in z.namelist() if n.split("/", 1)[-1] == "traced_inputs.pkl"), None)
            if member is None:
                return None
            data = z.read(member)
        stored = _ShapeUnpickler(io.BytesIO(data)).load()
    except (*ZIP_ERRORS, pickle.UnpicklingError, TypeError, AttributeError):
        return None
    inputs = stored.get("forward") if isinstance(stored, dict) else None
    if not inputs or not all(isinstance(s, _Shape) for s in inputs):
        return None
    return [tuple(s) for s in inputs]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
