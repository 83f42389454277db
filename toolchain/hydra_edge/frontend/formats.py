"""Which frontend reads a model file: recognised by its content first, then by its suffix.

Content wins where a format has a signature, so a file is read as what it is
whatever its name:

- a zip archive: a torch.export program (.pt2: ``archive_format`` or
  ``models/``), a TorchScript archive (torch.jit.save: ``code/`` or
  ``constants.pkl``), or a torch.save pickle (``data.pkl`` alone: a state_dict
  or a pickled nn.Module); a zip that fails to open or to check is damaged;
- a bare pickle (torch.save with the legacy format: protocol byte 0x80);
- a TFLite flatbuffer (file identifier ``TFL3`` at bytes 4..8).

ONNX has no signature (a protobuf), so ``.onnx`` is decided by the suffix, as
is any file whose content is not recognised: its suffix's loader then gives
its own error (``.pt2``, ``.onnx``, ``.tflite``). Nothing here unpickles.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from .errors import FrontendError

PT2 = "pt2"
TORCHSCRIPT = "torchscript"
PICKLE = "pickle"  # torch.save: a state_dict or a pickled object (frontend/pickled.py decides)
ONNX = "onnx"
TFLITE = "tflite"

FORMATS_HELP = (
    ".pt2 (torch.export.save), .pt/.pth/.ts (TorchScript from torch.jit.save), .onnx, .tflite"
)
_BY_SUFFIX = {".pt2": PT2, ".onnx": ONNX, ".tflite": TFLITE}
_TORCH_SUFFIXES = {".pt", ".pth", ".ts"}


def sniff(path: str | Path) -> str:
    """The format of the model file at `path` (one of the constants above), or a FrontendError."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise FrontendError(f"{name}: no such file; give a model file: {FORMATS_HELP}")
    if path.is_dir():
        raise FrontendError(f"{name} is a directory; give a model file: {FORMATS_HELP}")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise FrontendError(f"{name} is empty; give a model file: {FORMATS_HELP}")
    suffix = path.suffix.lower()
    if is_zip(path):
        return _zip_kind(path, suffix)
    if head.startswith(b"PK") and suffix not in _BY_SUFFIX:  # .pt2/.onnx/.tflite: their loader's message
        raise FrontendError(f"{name} is a damaged or truncated zip archive; copy it again or save it again")
    if head[4:8] == b"TFL3":
        return TFLITE
    if head[:1] == b"\x80" and suffix != ".onnx":  # a pickle's protocol byte (a protobuf could start so)
        return PICKLE
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if suffix in _TORCH_SUFFIXES:
        raise FrontendError(
            f"{name} is neither a TorchScript archive (torch.jit.save) nor a torch.save file; "
            f"hydra-edge reads {FORMATS_HELP}"
        )
    raise FrontendError(
        f"{name}: unknown model format ({suffix or 'no suffix'}, content not recognised); "
        f"hydra-edge reads {FORMATS_HELP}"
    )


# What zipfile raises on a damaged archive: bad headers, truncation, undecodable member names (a
# ValueError), unknown compression, encryption, a corrupt deflate stream.
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError, NotImplementedError, zlib.error)


def is_zip(path: Path) -> bool:
    """zipfile.is_zipfile, except that an end record zipfile refuses (a multi-disk archive) counts as a zip:
    zip_members then says it is damaged."""
    try:
        return zipfile.is_zipfile(path)
    except ZIP_ERRORS:
        return True


def zip_members(path: Path) -> list[str]:
    """The member names of a zip archive whose every member passes its checksum; else a FrontendError."""
    name = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            bad = z.testzip()
    except ZIP_ERRORS as exc:
        raise FrontendError(f"{name} is a damaged zip archive ({type(exc).__name__}); copy it again or save it "
                            f"again") from None
    if bad is not None:
        raise FrontendError(f"{name} is damaged (member {bad} fails its checksum); copy it again or save it again")
    return names


def torch_zip_kind(names: list[str]) -> str | None:
    """PT2, TORCHSCRIPT or PICKLE by the members of a torch zip archive (None: none of them)."""
    # Torch archives put every member under one top folder (the file's stem at save time).
    base = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "archive_format" in base or any(n.startswith("models/") for n in base):
        return PT2
    if "constants.pkl" in base or any(n.startswith("code/") for n in base):
        return TORCHSCRIPT
    if "data.pkl" in base:
        return PICKLE
    return None


def _zip_kind(path: Path, suffix: str) -> str:
    kind = torch_zip_kind(zip_members(path))
    if kind is not None:
        return kind
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]  # the loader names what is wrong
    raise FrontendError(f"{path} is a zip archive but no model hydra-edge knows; it reads {FORMATS_HELP}")


def parse_input_shape(text: str) -> tuple[int, ...]:
    """"3,32,32" -> (3, 32, 32): the model's input shape without the batch (ValueError if malformed)."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not a list of integers like 3,32,32") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{text!r}: every dimension must be a positive integer, like 3,32,32")
    return dims
