"""Build the elementwise int8 TFLite kernels (runtime_c/src/tfl_*.c) into a shared library for ctypes.

A helper for the tests, not a test module. Only the sources these kernels need are compiled
(``hydra_requantize.c``, ``tfl_fixedpoint.c`` and the op files), so that a file another engineer
is editing cannot break these tests; with the same strict flags as ``c_build.py``. The
``Structure`` classes mirror the ``hydra_tfl_<op>_params`` structs of ``hydra_tfl.h`` field for
field (``test_tfl_elementwise.py`` checks their sizes against the compiler), and ``call_kernel``
turns a prepare dict (``frontend/tflite_prepare_elementwise.py``) into a call.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
from c_build import (
    EXTRA_WARNINGS,
    INCLUDE_DIR,
    SRC_DIR,
    STRICT_FLAGS,
    rounding_defines,
    run_cc,
)

OPS = ("add", "sub", "mul", "squared_difference", "rsqrt", "logistic", "tanh", "softmax", "l2_normalization",
       "quantize")
SOURCES = ["hydra_requantize.c", "tfl_fixedpoint.c", *(f"tfl_{op}.c" for op in OPS)]
_CACHE: dict[tuple[bool, bool], ctypes.CDLL] = {}

_i32, _p = ctypes.c_int32, ctypes.c_void_p
D6 = _i32 * 6


def _binary_fields(with_rescale: bool) -> list:
    fields = [("input1_shape", D6), ("input2_shape", D6), ("output_shape", D6),
              ("input1_offset", _i32), ("input2_offset", _i32), ("output_offset", _i32)]
    if with_rescale:
        fields += [("left_shift", _i32), ("input1_multiplier", _i32), ("input1_shift", _i32),
                   ("input2_multiplier", _i32), ("input2_shift", _i32)]
    return fields + [("output_multiplier", _i32), ("output_shift", _i32),
                     ("output_activation_min", _i32), ("output_activation_max", _i32)]


def _struct(name: str, fields: list) -> type[ctypes.Structure]:
    return type(name, (ctypes.Structure,), {"_fields_": fields})


_SIGMOID = [("size", _i32), ("input_zero_point", _i32), ("input_range_radius", _i32),
            ("input_multiplier", _i32), ("input_left_shift", _i32)]

# op -> mirror of hydra_tfl_<op>_params
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "add": _struct("TflAddParams", _binary_fields(True)),
    "sub": _struct("TflSubParams", _binary_fields(True)),
    "squared_difference": _struct("TflSquaredDifferenceParams", _binary_fields(True)),
    "mul": _struct("TflMulParams", _binary_fields(False)),
    "rsqrt": _struct("TflRsqrtParams", [("size", _i32), ("input_zero_point", _i32), ("output_zero_point", _i32),
                                        ("multiplier", _i32), ("shift", _i32)]),
    "logistic": _struct("TflLogisticParams", _SIGMOID),
    "tanh": _struct("TflTanhParams", _SIGMOID),
    "softmax": _struct("TflSoftmaxParams", [("outer_size", _i32), ("depth", _i32), ("input_multiplier", _i32),
                                            ("input_left_shift", _i32), ("diff_min", _i32)]),
    "l2_normalization": _struct("TflL2NormalizationParams", [("outer_size", _i32), ("depth", _i32),
                                                             ("input_zero_point", _i32)]),
    "quantize": _struct("TflQuantizeParams", [("size", _i32), ("input_zero_point", _i32),
                                              ("output_zero_point", _i32), ("multiplier", _i32), ("shift", _i32)]),
}
BINARY = ("add", "sub", "squared_difference", "mul")


def build_tfl_lib(tmpdir: str | os.PathLike, single_rounding: bool = False, sanitize: bool = True) -> ctypes.CDLL:
    """Compile the kernels into ``tmpdir`` (once per process and option pair) and load them.

    ``sanitize`` adds UBSan with ``-fno-sanitize-recover=all``: undefined behaviour aborts the test.
    """
    key = (single_rounding, sanitize)
    if key in _CACHE:
        return _CACHE[key]
    flags = [*STRICT_FLAGS, *EXTRA_WARNINGS, "-fPIC", "-shared", f"-I{INCLUDE_DIR}", *rounding_defines(single_rounding)]
    if sanitize:
        flags += ["-fsanitize=undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    name = f"libhydra_tfl_{'single' if single_rounding else 'double'}{'_san' if sanitize else ''}.so"
    out = Path(tmpdir) / name
    run_cc([*flags, *(str(SRC_DIR / s) for s in SOURCES), "-o", str(out)])
    lib = ctypes.CDLL(str(out))
    for op, struct in STRUCTS.items():
        fn = getattr(lib, f"hydra_tfl_{op}_s8")
        fn.restype = ctypes.c_int
        n_in = 2 if op in BINARY else 1
        fn.argtypes = [ctypes.POINTER(struct), *([_p] * n_in), _p]
    _CACHE[key] = lib
    return lib


def params_struct(op: str, attrs: dict) -> ctypes.Structure:
    """The C params struct for ``op`` from its prepare dict (every field must be present)."""
    struct = STRUCTS[op]()
    for field, ctype in struct._fields_:
        value = attrs[field]
        if isinstance(value, (tuple, list, np.ndarray)):
            setattr(struct, field, ctype(*[int(v) for v in value]))
        else:
            setattr(struct, field, int(value))
    return struct


def call_kernel(lib: ctypes.CDLL, op: str, attrs: dict, inputs: list[np.ndarray], out_shape: tuple[int, ...]
                ) -> tuple[int, np.ndarray]:
    """Run ``hydra_tfl_<op>_s8``: ``(status, int8 output)``."""
    struct = params_struct(op, attrs)
    arrays = [np.ascontiguousarray(x, dtype=np.int8) for x in inputs]
    out = np.zeros(out_shape, dtype=np.int8)
    status = getattr(lib, f"hydra_tfl_{op}_s8")(ctypes.byref(struct), *(a.ctypes.data for a in arrays),
                                                 out.ctypes.data)
    return status, out
