"""Build the C runtime (runtime_c/) into a shared library and load it with ctypes.

A helper for the tests, not a test module. Typical use, once per session::

    import pytest
    from c_build import build_runtime_lib

    @pytest.fixture(scope="session")
    def rt(tmp_path_factory):
        return build_runtime_lib(tmp_path_factory.mktemp("rt"))

The library is built at most once per process for each ``sanitize`` value;
later calls return the cached ``ctypes.CDLL`` whatever ``tmpdir`` they pass, so
pass a directory that lives as long as the session. Rounding is not a build
option: each param struct's ``single_rounding`` field picks it per call.

The ``Structure`` classes below mirror the param structs of hydra_rt.h field
for field (``tests/test_runtime_build.py`` checks sizes and offsets against
the compiler); data pointers are declared ``c_void_p`` so that a numpy array's
``arr.ctypes.data`` can be passed directly (see ``ptr``).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DIR = REPO_ROOT / "runtime_c"
INCLUDE_DIR = RUNTIME_DIR / "include"
SRC_DIR = RUNTIME_DIR / "src"

CC = os.environ.get("CC", "gcc")
# The flags every runtime source must compile clean with.
STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
# Stricter still, for an MCU-minded compile check: no VLAs, no implicit narrowing.
EXTRA_WARNINGS = ["-Wvla", "-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wdouble-promotion"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]

_CACHE: dict[bool, ctypes.CDLL] = {}


def c_sources() -> list[Path]:
    """The runtime's C sources, one op per file."""
    return sorted(SRC_DIR.glob("*.c"))


def compile_strict(board, source: str, out: Path) -> subprocess.CompletedProcess:
    """runtime_c/src/<source> compiled (-c, to `out`) by the board's compiler with its flags, under the host tests'
    strictest warnings (board: a boards.Board)."""
    flags = [*STRICT_FLAGS, *EXTRA_WARNINGS, *board.cflags]
    return subprocess.run([board.cc, *flags, f"-I{INCLUDE_DIR}", "-c", str(SRC_DIR / source), "-o", str(out)],
                          capture_output=True, text=True)


def have_compiler() -> bool:
    return shutil.which(CC) is not None


def run_cc(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the compiler; raise ``RuntimeError`` carrying its diagnostics if it fails."""
    proc = subprocess.run([CC, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{CC} {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    return proc


def _asan_loaded() -> bool:
    """ASan cannot be dlopen()ed into a process; it works only if already preloaded."""
    try:
        return "libasan" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def build_runtime_lib(tmpdir: str | os.PathLike, sanitize: bool = False) -> ctypes.CDLL:
    """Compile every runtime source into ``tmpdir/libhydra_rt*.so`` and load it.

    ``sanitize`` adds UBSan with ``-fno-sanitize-recover=all`` (an error aborts
    the process), and ASan too when the process was started with libasan in
    ``LD_PRELOAD`` (ASan cannot be loaded later; ``test_runtime_build.py`` runs
    ASan on a standalone driver instead). Prototypes are declared on the result.
    """
    key = sanitize
    if key in _CACHE:
        return _CACHE[key]
    flags = [*STRICT_FLAGS, "-fPIC", "-shared", f"-I{INCLUDE_DIR}"]
    if sanitize:
        kinds = "address,undefined" if _asan_loaded() else "undefined"
        flags += [f"-fsanitize={kinds}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    name = "libhydra_rt" + ("_san" if sanitize else "") + ".so"
    out = Path(tmpdir) / name
    run_cc([*flags, *map(str, c_sources()), "-o", str(out)])
    lib = ctypes.CDLL(str(out))
    declare_prototypes(lib)
    _CACHE[key] = lib
    return lib


# ---- mirrors of hydra_rt.h ------------------------------------------------

HYDRA_OK, HYDRA_ERR_ARG, HYDRA_ERR_SHAPE = 0, 1, 2

_i32, _i64, _p = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p


class LinearParams(ctypes.Structure):
    _fields_ = [("rows", _i32), ("in_features", _i32), ("out_features", _i32), ("weights", _p), ("bias", _p),
                ("multiplier", _p), ("shift", _p), ("output_zero_point", _i32), ("activation_min", _i32),
                ("activation_max", _i32), ("single_rounding", _i32), ("right_only", _i32)]


class PatchEmbedParams(ctypes.Structure):
    _fields_ = [("channels", _i32), ("height", _i32), ("width", _i32), ("patch", _i32), ("embed_dim", _i32),
                ("weights", _p), ("bias", _p), ("multiplier", _p), ("shift", _p), ("output_zero_point", _i32),
                ("single_rounding", _i32), ("prefix_tokens", _i32), ("prefix", _p)]


class LayerNormParams(ctypes.Structure):
    _fields_ = [("tokens", _i32), ("dim", _i32), ("input_zero_point", _i32), ("eps", _i64), ("gamma", _p),
                ("beta", _p), ("output_shift", _i32), ("output_zero_point", _i32), ("narrow_output", _i32)]


class LutParams(ctypes.Structure):
    _fields_ = [("size", _i32), ("table", _p)]


class AttentionParams(ctypes.Structure):
    _fields_ = [("tokens", _i32), ("dim", _i32), ("q_zero_point", _i32), ("k_zero_point", _i32),
                ("v_zero_point", _i32), ("kv_shift", _i32), ("multiplier", _i32), ("shift", _i32),
                ("output_zero_point", _i32), ("single_rounding", _i32)]


class AddParams(ctypes.Structure):
    _fields_ = [("size", _i32), ("left_shift", _i32), ("a_zero_point", _i32), ("a_multiplier", _i32),
                ("a_shift", _i32), ("b_zero_point", _i32), ("b_multiplier", _i32), ("b_shift", _i32),
                ("output_multiplier", _i32), ("output_shift", _i32), ("output_zero_point", _i32),
                ("single_rounding", _i32)]


class MeanPoolParams(ctypes.Structure):
    _fields_ = [("tokens", _i32), ("dim", _i32), ("input_zero_point", _i32), ("multiplier", _i32),
                ("shift", _i32), ("output_zero_point", _i32), ("single_rounding", _i32)]


class SoftmaxAttentionParams(ctypes.Structure):
    _fields_ = [("tokens", _i32), ("dim", _i32), ("heads", _i32), ("query_rows", _i32), ("q_zero_point", _i32),
                ("k_zero_point", _i32),
                ("v_zero_point", _i32), ("exp_multiplier", _i32), ("exp_shift", _i32), ("exp_table", _p),
                ("exp_table_size", _i32), ("multiplier", _i32), ("shift", _i32), ("output_zero_point", _i32),
                ("single_rounding", _i32)]


# C struct name -> its mirror; the layout test walks this table.
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "hydra_linear_params": LinearParams,
    "hydra_patch_embed_params": PatchEmbedParams,
    "hydra_layernorm_params": LayerNormParams,
    "hydra_lut_params": LutParams,
    "hydra_attention_params": AttentionParams,
    "hydra_add_params": AddParams,
    "hydra_mean_pool_params": MeanPoolParams,
    "hydra_softmax_attention_params": SoftmaxAttentionParams,
}


def declare_prototypes(lib: ctypes.CDLL) -> None:
    """Set argtypes/restype for every function of hydra_rt.h."""
    P = ctypes.POINTER
    sigs = {
        "hydra_requantize_double": (_i32, [_i32, _i32, _i32]),
        "hydra_requantize_right_double": (_i32, [_i32, _i32, _i32]),
        "hydra_requantize_right_single": (_i32, [_i32, _i32, _i32]),
        "hydra_requantize_single": (_i32, [_i32, _i32, _i32]),
        "hydra_round_shift_s64": (_i64, [_i64, _i32]),
        "hydra_inv_sqrt": (None, [_i64, P(_i32), P(_i32)]),
        "hydra_linear_s8": (ctypes.c_int, [P(LinearParams), _p, _p]),
        "hydra_linear_s8_check": (ctypes.c_int, [P(LinearParams)]),
        "hydra_linear_rows_s8": (ctypes.c_int, [P(LinearParams), _p, _p]),
        "hydra_patch_embed_s8": (ctypes.c_int, [P(PatchEmbedParams), _p, _p]),
        "hydra_layernorm_s8": (ctypes.c_int, [P(LayerNormParams), _p, _p]),
        "hydra_layernorm_s8_check": (ctypes.c_int, [P(LayerNormParams)]),
        "hydra_layernorm_rows_s8": (ctypes.c_int, [P(LayerNormParams), _p, _p]),
        "hydra_lut_s8": (ctypes.c_int, [P(LutParams), _p, _p]),
        "hydra_attention_s8_get_buffer_size": (_i32, [P(AttentionParams)]),
        "hydra_attention_s8": (ctypes.c_int, [P(AttentionParams), _p, _p, _p, _p, _p]),
        "hydra_attention_max_tokens": (_i32, [_i32]),
        "hydra_attention_accumulate_s8": (ctypes.c_int, [P(AttentionParams), _p, _p, _i32, _p, _p]),
        "hydra_attention_round_state_s8": (ctypes.c_int, [P(AttentionParams), _p]),
        "hydra_attention_apply_s8": (ctypes.c_int, [P(AttentionParams), _p, _p, _i32, _p, _p]),
        "hydra_add_s8": (ctypes.c_int, [P(AddParams), _p, _p, _p]),
        "hydra_mean_pool_s8": (ctypes.c_int, [P(MeanPoolParams), _p, _p]),
        "hydra_mean_pool_begin_s8": (None, [P(MeanPoolParams), _p]),
        "hydra_mean_pool_accumulate_s8": (ctypes.c_int, [P(MeanPoolParams), _p, _i32, _p]),
        "hydra_mean_pool_finish_s8": (ctypes.c_int, [P(MeanPoolParams), _p, _p]),
        "hydra_softmax_attention_s8_get_buffer_size": (_i32, [P(SoftmaxAttentionParams)]),
        "hydra_softmax_attention_s8": (ctypes.c_int, [P(SoftmaxAttentionParams), _p, _p, _p, _p, _p]),
        "hydra_softmax_attention_key_sums_s8": (ctypes.c_int, [P(SoftmaxAttentionParams), _p, _p]),
        "hydra_softmax_attention_rows_s8": (ctypes.c_int, [P(SoftmaxAttentionParams), _p, _p, _p, _p, _p, _p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def ptr(arr: np.ndarray, dtype: type | np.dtype) -> int:
    """The address of ``arr``'s data, after checking it is C-contiguous ``dtype``.

    Keep ``arr`` alive for as long as C may use the address.
    """
    if arr.dtype != np.dtype(dtype) or not arr.flags["C_CONTIGUOUS"]:
        raise TypeError(f"expected a C-contiguous {np.dtype(dtype)} array, got {arr.dtype}")
    return arr.ctypes.data


def inv_sqrt_c(lib: ctypes.CDLL, v: int) -> tuple[int, int]:
    """``hydra_inv_sqrt(v)`` as a Python pair ``(inv, p)``."""
    inv, p = ctypes.c_int32(), ctypes.c_int32()
    lib.hydra_inv_sqrt(v, ctypes.byref(inv), ctypes.byref(p))
    return inv.value, p.value
