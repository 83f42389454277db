"""Build the elementwise int8 TFLite kernels (runtime_c/src/tfl_*.c) into a shared library for ctypes.

A helper for the tests, not a test module. Only the sources these kernels need are compiled
(``hydra_requantize.c``, ``tfl_fixedpoint.c`` and the op files), so that a file another engineer
is editing cannot break these tests; with the same strict flags as ``c_build.py``. The
``Structure`` classes mirror the ``hydra_tfl_<op>_params`` structs of ``hydra_tfl.h`` field for
field (``test_tfl_elementwise.py`` checks their sizes against the compiler), and ``call_kernel``
turns a prepare dict (``frontend/tflite_prepare_elementwise.py``) and a rounding into a call: rounding is
not a build option, each struct's ``single_rounding`` field picks it per call (as the emitter writes it
from the node's rounding).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
from hydra_edge.reference.tfl_elementwise import softmax_exp_table
from c_build import (
    EXTRA_WARNINGS,
    INCLUDE_DIR,
    SRC_DIR,
    STRICT_FLAGS,
    run_cc,
)

OPS = ("add", "sub", "mul", "squared_difference", "rsqrt", "logistic", "tanh", "softmax", "l2_normalization",
       "quantize")
SOURCES = ["hydra_requantize.c", "tfl_fixedpoint.c", *(f"tfl_{op}.c" for op in OPS)]
_CACHE: dict[bool, ctypes.CDLL] = {}

_i32, _p = ctypes.c_int32, ctypes.c_void_p
D6 = _i32 * 6
_ROUNDING = ("single_rounding", _i32)  # every kernel here requantises: 0 double, 1 single


def _binary_fields(with_rescale: bool) -> list:
    fields = [("input1_shape", D6), ("input2_shape", D6), ("output_shape", D6),
              ("input1_offset", _i32), ("input2_offset", _i32), ("output_offset", _i32)]
    if with_rescale:
        fields += [("left_shift", _i32), ("input1_multiplier", _i32), ("input1_shift", _i32),
                   ("input2_multiplier", _i32), ("input2_shift", _i32)]
    return fields + [("output_multiplier", _i32), ("output_shift", _i32),
                     ("output_activation_min", _i32), ("output_activation_max", _i32), _ROUNDING]


def _struct(name: str, fields: list) -> type[ctypes.Structure]:
    return type(name, (ctypes.Structure,), {"_fields_": fields})


_SIGMOID = [("size", _i32), ("input_zero_point", _i32), ("input_range_radius", _i32),
            ("input_multiplier", _i32), ("input_left_shift", _i32), _ROUNDING]

# op -> mirror of hydra_tfl_<op>_params
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "add": _struct("TflAddParams", _binary_fields(True)),
    "sub": _struct("TflSubParams", _binary_fields(True)),
    "squared_difference": _struct("TflSquaredDifferenceParams", _binary_fields(True)),
    "mul": _struct("TflMulParams", _binary_fields(False)),
    "rsqrt": _struct("TflRsqrtParams", [("size", _i32), ("input_zero_point", _i32), ("output_zero_point", _i32),
                                        ("multiplier", _i32), ("shift", _i32), _ROUNDING]),
    "logistic": _struct("TflLogisticParams", _SIGMOID),
    "tanh": _struct("TflTanhParams", _SIGMOID),
    "softmax": _struct("TflSoftmaxParams", [("outer_size", _i32), ("depth", _i32), ("input_multiplier", _i32),
                                            ("input_left_shift", _i32), ("diff_min", _i32), _ROUNDING,
                                            ("exp_table", ctypes.POINTER(_i32))]),
    "l2_normalization": _struct("TflL2NormalizationParams", [("outer_size", _i32), ("depth", _i32),
                                                             ("input_zero_point", _i32), _ROUNDING]),
    "quantize": _struct("TflQuantizeParams", [("size", _i32), ("input_zero_point", _i32),
                                              ("output_zero_point", _i32), ("multiplier", _i32), ("shift", _i32),
                                              _ROUNDING]),
}
BINARY = ("add", "sub", "squared_difference", "mul")


def build_tfl_lib(tmpdir: str | os.PathLike, sanitize: bool = True) -> ctypes.CDLL:
    """Compile the kernels into ``tmpdir`` (once per process and ``sanitize`` value) and load them.

    ``sanitize`` adds UBSan with ``-fno-sanitize-recover=all``: undefined behaviour aborts the test.
    """
    if sanitize in _CACHE:
        return _CACHE[sanitize]
    flags = [*STRICT_FLAGS, *EXTRA_WARNINGS, "-fPIC", "-shared", f"-I{INCLUDE_DIR}"]
    if sanitize:
        flags += ["-fsanitize=undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    name = f"libhydra_tfl{'_san' if sanitize else ''}.so"
    out = Path(tmpdir) / name
    run_cc([*flags, *(str(SRC_DIR / s) for s in SOURCES), "-o", str(out)])
    lib = ctypes.CDLL(str(out))
    for op, struct in STRUCTS.items():
        fn = getattr(lib, f"hydra_tfl_{op}_s8")
        fn.restype = ctypes.c_int
        n_in = 2 if op in BINARY else 1
        fn.argtypes = [ctypes.POINTER(struct), *([_p] * n_in), _p]
    _CACHE[sanitize] = lib
    return lib


def params_struct(op: str, attrs: dict, rounding: str = "double") -> ctypes.Structure:
    """The C params struct for ``op`` from its prepare dict (every field must be present) and the node's rounding
    ("double" or "single", the ``single_rounding`` field)."""
    if rounding not in ("double", "single"):
        raise ValueError(f"rounding {rounding!r}")
    struct = STRUCTS[op]()
    for field, ctype in struct._fields_:
        if field == "exp_table":  # the compiler's table (codegen/emit_tfl.py TABLES), kept alive by the struct
            struct.table = np.ascontiguousarray(softmax_exp_table(attrs, rounding), dtype=np.int32)
            struct.exp_table = struct.table.ctypes.data_as(ctypes.POINTER(_i32))
            continue
        value = int(rounding == "single") if field == "single_rounding" else attrs[field]
        if isinstance(value, (tuple, list, np.ndarray)):
            setattr(struct, field, ctype(*[int(v) for v in value]))
        else:
            setattr(struct, field, int(value))
    return struct


def call_kernel(lib: ctypes.CDLL, op: str, attrs: dict, inputs: list[np.ndarray], out_shape: tuple[int, ...],
                rounding: str = "double") -> tuple[int, np.ndarray]:
    """Run ``hydra_tfl_<op>_s8`` in ``rounding``: ``(status, int8 output)``."""
    struct = params_struct(op, attrs, rounding)
    arrays = [np.ascontiguousarray(x, dtype=np.int8) for x in inputs]
    out = np.zeros(out_shape, dtype=np.int8)
    status = getattr(lib, f"hydra_tfl_{op}_s8")(ctypes.byref(struct), *(a.ctypes.data for a in arrays),
                                                 out.ctypes.data)
    return status, out
