"""Post-training calibration: the float range of every activation of the IR.

The calibration file comes from outside, so it is checked, not trusted (docs/quantization.md):
load_calibration reads the .npy header of the array first (dtype, shape, size against what the
member holds), then exactly the bytes of the first `max_samples` samples and nothing more, so a
file that claims a huge array or decompresses to gigabytes costs no more than the cap; NaN and
inf are refused naming the sample. calibrate() records min/max (or, with `percentile`, the P and
100 - P percentiles) of every activation and warns when a range is dominated by a few samples.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np
from numpy.lib import format as npy_format

from ..errors import HydraEdgeError
from ..ir.graph import Graph
from ..reference.float_interp import run_float

FALLBACK_SAMPLES = 32
DEFAULT_MAX_SAMPLES = 1024  # the first N samples of a larger file are used, with a warning
MAX_CALIB_BYTES = 256 * 2**20  # whatever the sample cap, never more than this is read (file dtype or float32)
MAX_HEADER_BYTES = 10000  # numpy's own limit for a .npy header it parses without allow_pickle
OUTLIER_FACTOR = 20.0  # a range this many times the median sample's peak |value| is "dominated by outliers"
OUTLIER_MIN_SAMPLES = 3  # the median of fewer per-sample peaks says nothing
PERCENTILE_MIN = 90.0
MAX_TAIL_VALUES = 8 * 2**20  # values kept for percentile calibration, all tensors together (float64)
_READ_CHUNK = 2**20
_SUGGESTED_PERCENTILES = (99.99, 99.9, 99.0, 98.0, 95.0, 90.0)


class CalibrationError(HydraEdgeError, ValueError):
    """Calibration data that does not fit the model."""


class CalibrationWarning(UserWarning):
    """Calibration data that was used, but not all of it, or whose ranges look wrong."""


@dataclass
class Range:
    lo: float = np.inf
    hi: float = -np.inf

    def update(self, value: np.ndarray) -> None:
        self.lo = min(self.lo, float(value.min()))
        self.hi = max(self.hi, float(value.max()))


# --- reading the file ------------------------------------------------------------------------------


def load_calibration(path: str | Path, graph: Graph, max_samples: int | None = DEFAULT_MAX_SAMPLES) -> np.ndarray:
    """Read a .npz of float inputs (key `x`, or its only array), shaped (N, *input) or (N, 1, *input).

    At most the first `max_samples` samples are read (None: no cap but MAX_CALIB_BYTES), with a
    CalibrationWarning when the file holds more. A bare .npy file is accepted too. Returns float32.
    """
    path = Path(path)
    shape = tuple(int(d) for d in graph.tensor(graph.inputs[0]).shape)
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) != max_samples or max_samples < 1):
        raise CalibrationError(f"the calibration sample cap must be a positive integer, got {max_samples!r}")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the zip member
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read the calibration file ({exc.strerror or exc})") from None
    try:
        with f:
            if f.read(6) == npy_format.MAGIC_PREFIX:
                f.seek(0, io.SEEK_END)
                size = f.tell()
                f.seek(0)
                return _read_samples(f, size, f"{path}", shape, max_samples)
            f.seek(0)
            if not zipfile.is_zipfile(f):
                raise CalibrationError(f"{path}: not an .npz file (a zip of .npy arrays, as np.savez writes)")
            with zipfile.ZipFile(f) as zf:
                info, key = _member(zf, path)
                with zf.open(info) as member:
                    return _read_samples(member, info.file_size, f"{path}: array '{key}'", shape, max_samples)
    except CalibrationError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError,
            NotImplementedError, zlib.error, struct.error) as exc:
        raise CalibrationError(f"{path}: not a readable .npz file ({exc})") from None


def _member(zf: zipfile.ZipFile, path: Path) -> tuple[zipfile.ZipInfo, str]:
    """The array `x` of the archive, or its only array, as np.load would name it."""
    members = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        members.setdefault(name, info)
    key = "x" if "x" in members else (next(iter(members)) if len(members) == 1 else None)
    if key is None:
        raise CalibrationError(f"{path}: expected an array named 'x' (found {', '.join(members) or 'none'})")
    info = members[key]
    if info.flag_bits & 0x1:
        raise CalibrationError(f"{path}: array '{key}' is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and lzma streams cannot be decompressed in bounded steps by zipfile: refused, not risked
        raise CalibrationError(f"{path}: array '{key}' uses zip compression method {info.compress_type}; "
                               "save it with np.savez or np.savez_compressed")
    return info, key


def _read_exact(stream: IO[bytes], n: int, what: str, label: str) -> bytearray:
    """Exactly n bytes from the stream, read in bounded chunks (never more than n decompressed)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        chunk = stream.read(min(_READ_CHUNK, n - got))
        if not chunk:
            raise CalibrationError(f"{label}: truncated: the {what} needs {n} bytes, the file holds {got}")
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
    return buf


def _read_header(stream: IO[bytes], label: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The .npy header (shape, fortran_order, dtype) and its length, its size checked before it is read."""
    magic = _read_exact(stream, 8, ".npy magic", label)
    if magic[:6] != npy_format.MAGIC_PREFIX:
        raise CalibrationError(f"{label}: not a .npy array")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise CalibrationError(f"{label}: .npy format version {version[0]}.{version[1]} is not supported "
                               "(a structured array?): save a plain float array")
    length_format = "<H" if version == (1, 0) else "<I"
    length_bytes = _read_exact(stream, struct.calcsize(length_format), ".npy header length", label)
    length = struct.unpack(length_format, length_bytes)[0]
    if length > MAX_HEADER_BYTES:
        raise CalibrationError(f"{label}: .npy header of {length} bytes (at most {MAX_HEADER_BYTES}): not a plain array")
    header = _read_exact(stream, length, ".npy header", label)
    buf = io.BytesIO(magic + length_bytes + header)
    npy_format.read_magic(buf)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    try:
        shape, fortran, dtype = read(buf, max_header_size=MAX_HEADER_BYTES)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise CalibrationError(f"{label}: unreadable .npy header ({str(exc).splitlines()[0]})") from None
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype), len(magic) + len(length_bytes) + length


def _read_samples(stream: IO[bytes], available: int | None, label: str, shape: tuple[int, ...],
                  max_samples: int | None) -> np.ndarray:
    """Check the header against the model input, then read the first samples and check them."""
    file_shape, fortran, dtype, header_bytes = _read_header(stream, label)
    expected = f"expected (N, {', '.join(map(str, shape))})"
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise CalibrationError(f"{label}: calibration data must be a plain float array, got dtype {dtype}")
    if not np.issubdtype(dtype, np.floating):
        raise CalibrationError(f"{label}: calibration data must be float (the model's preprocessed input), got {dtype}")
    sample_shape = file_shape[1:]
    if len(file_shape) == len(shape) + 2 and file_shape[1] == 1:
        sample_shape = file_shape[2:]
    if len(file_shape) < 1 or sample_shape != shape:
        raise CalibrationError(f"{label}: calibration array has shape {file_shape}, the model input is {shape}: {expected}")
    total = file_shape[0]
    if total == 0:
        raise CalibrationError(f"{label}: calibration array is empty")
    elems = math.prod(shape)
    sample_bytes = elems * dtype.itemsize
    if available is not None and available - header_bytes < total * sample_bytes:
        raise CalibrationError(
            f"{label}: truncated: the header declares {total} samples of {shape} {dtype} "
            f"({total * sample_bytes} bytes), the file holds {max(available - header_bytes, 0)}")
    cap = max(1, MAX_CALIB_BYTES // max(sample_bytes, elems * 4))
    n = min(total, cap if max_samples is None else min(max_samples, cap))
    if fortran and n < total:  # column-major: the first samples are not the first bytes
        raise CalibrationError(f"{label}: the array is stored in Fortran order and holds {total} samples, more than "
                               f"the {n} read: save np.ascontiguousarray(x), or fewer samples")
    raw = _read_exact(stream, n * sample_bytes, f"first {n} samples", label)
    data = np.frombuffer(raw, dtype).reshape((n, *shape), order="F" if fortran else "C")
    if n < total:
        why = "--calib-samples" if max_samples is not None and n == max_samples else f"{MAX_CALIB_BYTES >> 20} MiB"
        warnings.warn(f"{label}: using the first {n} of {total} calibration samples (the cap is {why})",
                      CalibrationWarning, stacklevel=3)
    _check_finite(data, label, "NaN or inf")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused just below
        out = np.ascontiguousarray(data, dtype=np.float32)
    if dtype.itemsize > 4:
        _check_finite(out, label, "a value beyond float32's range (|x| > 3.4e38)")
    lo, hi = float(out.min()), float(out.max())
    if lo == hi:  # a range of zero width: no scale can be derived from it (an all-zero file, say)
        raise CalibrationError(f"{label}: every calibration value is {lo:g} (first {n} samples): "
                               "these are not preprocessed inputs")
    return out


def _check_finite(data: np.ndarray, label: str, what: str) -> None:
    bad = ~np.isfinite(data.reshape(len(data), -1)).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        value = data[i][~np.isfinite(data[i])].flat[0] if what.startswith("NaN") else None
        kind = what if value is None else ("NaN" if np.isnan(value) else "inf")
        raise CalibrationError(f"{label}: calibration sample {i} holds {kind} "
                               f"({int(bad.sum())} of {len(data)} samples do): every sample must be finite")


def fallback_calibration(graph: Graph, samples: int = FALLBACK_SAMPLES) -> np.ndarray:
    """Standard-normal inputs: the range of a normalised image, nothing more (see docs/quantization.md)."""
    shape = graph.tensor(graph.inputs[0]).shape
    return np.random.default_rng(0).standard_normal((samples, *shape)).astype(np.float32)


# --- ranges ----------------------------------------------------------------------------------------


class _Tails:
    """The k smallest and k largest of `count` values seen, enough for their exact percentiles.

    Percentiles are numpy's default (linear interpolation between order statistics): with
    q = P / 100 the upper one needs the values of rank floor((count - 1) q) and the one above,
    i.e. the top count - floor((count - 1) q) values; the lower one likewise from the bottom.
    """

    def __init__(self, count: int, percentile: float) -> None:
        q = percentile / 100.0
        self.count = count
        self.k_hi = min(count, count - math.floor((count - 1) * q))
        self.k_lo = min(count, math.floor((count - 1) * (1.0 - q)) + 2)
        self.lo = np.empty(0)
        self.hi = np.empty(0)
        self.pending: list[np.ndarray] = []
        self.npending = 0
        self.seen = 0

    def add(self, value: np.ndarray) -> None:
        flat = np.array(value, np.float64).ravel()
        self.pending.append(flat)
        self.npending += flat.size
        self.seen += flat.size
        if self.npending >= max(self.k_hi, self.k_lo, 2**16):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        new = np.concatenate(self.pending)
        self.pending, self.npending = [], 0
        lo = np.concatenate([self.lo, new])
        self.lo = np.partition(lo, self.k_lo - 1)[:self.k_lo] if lo.size > self.k_lo else lo
        hi = np.concatenate([self.hi, new])
        self.hi = np.partition(hi, hi.size - self.k_hi)[hi.size - self.k_hi:] if hi.size > self.k_hi else hi

    def percentiles(self, percentile: float) -> tuple[float, float]:
        """The (100 - P)th and Pth percentiles of every value seen."""
        self._flush()
        assert self.seen == self.count, (self.seen, self.count)
        lo, hi = np.sort(self.lo), np.sort(self.hi)

        def rank(i: int) -> float:  # the i-th smallest value (0-based)
            return float(lo[i]) if i < lo.size else float(hi[i - (self.count - hi.size)])

        def at(q: float) -> float:
            pos = (self.count - 1) * q
            i = math.floor(pos)
            a, b = rank(i), rank(min(i + 1, self.count - 1))
            return a + (b - a) * (pos - i)

        q = percentile / 100.0
        return at(1.0 - q), at(q)


def calibrate(graph: Graph, data: np.ndarray, progress: Callable[[int], None] | None = None,
              percentile: float | None = None, check_outliers: bool = True) -> dict[str, Range]:
    """Run the float graph on every sample and record the range of every activation.

    percentile None: min/max. percentile P (90 <= P <= 100): each range is [the (100 - P)th, the Pth]
    percentile of all the values the tensor took (exact; memory bounded by MAX_TAIL_VALUES), which
    clips a few outliers instead of spending the int8 steps on them. check_outliers: warn
    (CalibrationWarning) when a range is over OUTLIER_FACTOR times the median sample's peak |value|.
    """
    if percentile is not None:
        if isinstance(percentile, bool) or not (PERCENTILE_MIN <= float(percentile) <= 100.0):
            raise CalibrationError(f"the calibration percentile must be between {PERCENTILE_MIN:g} and 100, "
                                   f"got {percentile!r}")
        percentile = float(percentile)
    acts = list(graph.activations())
    ranges: dict[str, Range] = {t.name: Range() for t in acts}
    peaks = {t.name: np.zeros(len(data)) for t in acts}
    tails: dict[str, _Tails] = {}
    if percentile is not None and percentile < 100.0:
        tails = {t.name: _Tails(len(data) * math.prod(t.shape), percentile) for t in acts}
        kept = sum(t.k_lo + t.k_hi for t in tails.values())
        if kept > MAX_TAIL_VALUES:
            raise CalibrationError(
                f"percentile {percentile:g} over {len(data)} samples keeps {kept} values (at most {MAX_TAIL_VALUES}): "
                "use a percentile nearer 100 or fewer calibration samples (--calib-samples)")
    index = 0

    def observe(name: str, value: np.ndarray) -> None:
        lo, hi = float(value.min()), float(value.max())
        r = ranges[name]
        r.lo, r.hi = min(r.lo, lo), max(r.hi, hi)
        peaks[name][index] = max(abs(lo), abs(hi))
        if tails:
            tails[name].add(value)

    for index, x in enumerate(data):
        run_float(graph, x, observe)
        if progress:
            progress(index + 1)
    for name, t in tails.items():
        lo, hi = t.percentiles(percentile)
        ranges[name] = Range(lo, hi)
    if check_outliers and len(data) >= OUTLIER_MIN_SAMPLES:
        _warn_outliers(graph, ranges, peaks, percentile)
    return ranges


def _dominated(r: Range, peaks: np.ndarray) -> bool:
    typical = float(np.median(peaks))
    extent = max(abs(r.lo), abs(r.hi))
    return bool(np.isfinite(extent) and typical > 0 and extent > OUTLIER_FACTOR * typical)


def _suggest_percentile(outlier_samples: int, samples: int, current: float | None) -> float | None:
    """The largest usual percentile that clips a share of values above the outlier samples' share."""
    share = outlier_samples / samples
    for p in _SUGGESTED_PERCENTILES:
        if (100.0 - p) / 100.0 >= 1.2 * share and (current is None or p < current):
            return p
    return None


def _warn_outliers(graph: Graph, ranges: dict[str, Range], peaks: dict[str, np.ndarray],
                   percentile: float | None) -> None:
    flagged = [name for name, r in ranges.items() if _dominated(r, peaks[name])]
    if not flagged:
        return
    name = graph.inputs[0] if graph.inputs[0] in flagged else flagged[0]
    p, r = peaks[name], ranges[name]
    typical = float(np.median(p))
    culprits = np.flatnonzero(p > OUTLIER_FACTOR * typical)
    samples = ", ".join(map(str, culprits[:5])) + (f" and {len(culprits) - 5} more" if len(culprits) > 5 else "")
    noun = "sample" if len(culprits) == 1 else "samples"
    what = "calibration input" if name == graph.inputs[0] else "activation"
    others = len(flagged) - 1
    also = f" ({others} other activation range{'s' if others != 1 else ''} too)" if others else ""
    how = f"at percentile {percentile:g}, " if percentile is not None else ""
    suggestion = _suggest_percentile(len(culprits), len(p), percentile)
    fix = f"check {noun} {samples}"
    if name == graph.inputs[0]:
        fix += " and remove it" if len(culprits) == 1 else " and remove them"
    if suggestion is not None:
        fix += f", or clip ranges with --calib-percentile {suggestion:g}"
    warnings.warn(
        f"{what} '{name}': {how}its range [{r.lo:.3g}, {r.hi:.3g}] is dominated by {noun} {samples}: "
        f"{max(abs(r.lo), abs(r.hi)):.3g}, {max(abs(r.lo), abs(r.hi)) / typical:.3g} times the median sample's "
        f"peak |value| ({typical:.3g}){also}; int8 steps are wasted on it and ordinary inputs get nearly "
        f"the same codes: {fix}",
        CalibrationWarning, stacklevel=3)
