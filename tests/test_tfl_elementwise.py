"""The elementwise int8 TFLite kernels, bit for bit: TFLite Micro == numpy reference == C.

For each op (ADD, SUB, MUL, SQUARED_DIFFERENCE, RSQRT, LOGISTIC, TANH, SOFTMAX,
L2_NORMALIZATION, QUANTIZE, DEQUANTIZE) and seeded random cases (shapes with
broadcasting up to 6-D, scales and zero points from realistic to extreme, inputs with
-128 and 127 planted, every fused activation), a one-operator .tflite is built
(tests/tfl_single_op.py) and run on TFLM's interpreter (the oracle, pinned in
pyproject.toml); the attrs come from frontend/tflite_prepare_elementwise.py on the same
tensors, the numpy reference (reference/tfl_elementwise.py) and the C kernel
(runtime_c/src/tfl_*.c, built with UBSan, called through ctypes) must give TFLM's bytes.
The same models also run on ai-edge-litert's BUILTIN_REF kernels: they agree with TFLM
for every op here except where docs/frontends.md ("TFLite oracles") says otherwise, and
the tests assert both the agreement and the documented disagreement.
"""

from __future__ import annotations

import ctypes
import subprocess
import zlib

import numpy as np
import pytest
from c_build import INCLUDE_DIR, run_cc
from c_build_tfl import STRUCTS, build_tfl_lib, call_kernel
from hydra_edge.frontend.errors import FrontendError
from hydra_edge.frontend.tflite_prepare_elementwise import PREPARE
from hydra_edge.frontend.tflite_types import TflTensorInfo
from hydra_edge.numerics import fixedpoint as fp
from hydra_edge.numerics import tfl_fixedpoint as tfp
from hydra_edge.reference.tfl_elementwise import KERNELS, affine_quantize, dequantize
from tfl_single_op import TensorSpec, run_litert, run_tflm, single_op_model

N_CASES = 24  # seeded cases per op and regime
REGIMES = ("realistic", "extreme")
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    return build_tfl_lib(tmp_path_factory.mktemp("tfl_double"))


# ---- cases -------------------------------------------------------------------------------


def info(spec: TensorSpec, name: str) -> TflTensorInfo:
    """The frontend's view of a tensor of the single-op model (scales as the file holds them: float32)."""
    scale = np.atleast_1d(np.asarray(spec.scale, dtype=np.float32)).astype(np.float64)
    return TflTensorInfo(name, tuple(spec.shape), spec.dtype, scale,
                         np.atleast_1d(np.asarray(spec.zero_point, dtype=np.int64)), 0, None)


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def zero_point(rng: np.random.Generator, regime: str) -> int:
    if regime == "extreme" and rng.random() < 0.6:
        return int(rng.choice([-128, 127, 0]))
    return int(rng.integers(-128, 128))


def int8_data(rng: np.random.Generator, shape: tuple[int, ...], lo: int = -128) -> np.ndarray:
    x = rng.integers(lo, 128, size=shape).astype(np.int8)
    flat = x.reshape(-1)
    if flat.size >= 2:
        flat[rng.choice(flat.size, 2, replace=False)] = [lo, 127]  # the ends of the range, always
    return x


def broadcast_shapes(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(a, b, out): ranks 1..6, each input a suffix of the output with some dimensions 1."""
    rank = int(rng.integers(1, 7))
    out = tuple(int(d) for d in rng.integers(1, 5, size=rank))
    if rng.random() < 0.25:
        return out, out, out

    def operand() -> tuple[int, ...]:
        r = int(rng.integers(1, rank + 1))
        return tuple(d if rng.random() < 0.6 else 1 for d in out[rank - r:])

    a, b = operand(), operand()
    full = np.broadcast_shapes(a, b)
    return a, b, tuple(int(d) for d in full)


class Case:
    def __init__(self, op, inputs, outputs, options, data):
        self.op, self.inputs, self.outputs, self.options, self.data = op, inputs, outputs, options or {}, data

    def attrs(self) -> dict:
        infos = [info(s, f"in{i}") for i, s in enumerate(self.inputs)]
        return PREPARE[self.op](infos, [info(s, f"out{i}") for i, s in enumerate(self.outputs)], self.options)

    def model(self) -> bytes:
        return single_op_model(self.op, self.inputs, self.outputs, self.options or None)


def binary_case(op: str, seed: int, regime: str) -> Case:
    rng = np.random.default_rng([zlib.crc32(op.encode()), seed, REGIMES.index(regime)])
    sa, sb, so = broadcast_shapes(rng)
    if regime == "realistic":
        s1, s2 = log_uniform(rng, 0.005, 0.2), log_uniform(rng, 0.005, 0.2)
    else:  # one input scale tiny against the other: input multipliers near 2^-20
        s1, s2 = log_uniform(rng, 1e-6, 1.0), log_uniform(rng, 1e-6, 1.0)
    big = max(s1, s2)
    if op in ("ADD", "SUB"):
        s_out = log_uniform(rng, big / 8, big * 4) if regime == "realistic" else log_uniform(rng, big / 2**18, big * 64)
    elif op == "MUL":  # the product scale against the output: multipliers far below and above 1
        s_out = log_uniform(rng, s1 * s2 * 4, s1 * s2 * 512) if regime == "realistic" else log_uniform(
            rng, s1 * s2 / 2**12, s1 * s2 * 2**16)
    else:  # SQUARED_DIFFERENCE
        s_out = log_uniform(rng, big * big * 16, big * big * 2**14) if regime == "realistic" else log_uniform(
            rng, big * big / 2**10, big * big * 2**20)
    inputs = [TensorSpec(sa, s1, zero_point(rng, regime)), TensorSpec(sb, s2, zero_point(rng, regime))]
    options = None if op == "SQUARED_DIFFERENCE" else {"fused_activation_function": ACTIVATIONS[seed % 4]}
    return Case(op, inputs, [TensorSpec(so, s_out, zero_point(rng, regime))], options,
                [int8_data(rng, sa), int8_data(rng, sb)])


def unary_shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 9, size=int(rng.integers(1, 5))))


def unary_case(op: str, seed: int, regime: str) -> Case:
    rng = np.random.default_rng([zlib.crc32(op.encode()), seed, REGIMES.index(regime)])
    shape = unary_shape(rng)
    zp = zero_point(rng, regime)
    options = None
    lo = -128
    if op == "LOGISTIC":
        s_in = log_uniform(rng, 0.01, 0.2) if regime == "realistic" else log_uniform(rng, 2.0**-26, 7.9)
        out = TensorSpec(shape, 1 / 256, -128)
    elif op == "TANH":
        s_in = log_uniform(rng, 0.01, 0.2) if regime == "realistic" else log_uniform(rng, 2.0**-26, 7.9)
        out = TensorSpec(shape, 1 / 128, 0)
    elif op == "SOFTMAX":
        beta = float(rng.choice([1.0, 0.5, 2.0]))
        s_in = log_uniform(rng, 0.01, 0.3) if regime == "realistic" else log_uniform(rng, 2.0**-25, 15.9) / beta
        out = TensorSpec(shape, 1 / 256, -128)
        options = {"beta": beta}
    elif op == "L2_NORMALIZATION":
        s_in = log_uniform(rng, 0.01, 0.3) if regime == "realistic" else log_uniform(rng, 1e-6, 100.0)
        out = TensorSpec(shape, 1 / 128, 0)
    elif op == "RSQRT":
        s_in = log_uniform(rng, 0.005, 0.1) if regime == "realistic" else log_uniform(rng, 1e-4, 10.0)
        max_real = 1.0 / (np.sqrt(s_in) * s_in)  # the largest 1/sqrt(x): one step above zero
        s_out = max_real / 127 * (log_uniform(rng, 0.5, 2.0) if regime == "realistic" else log_uniform(rng, 0.01, 50))
        out = TensorSpec(shape, s_out, zero_point(rng, regime))
        lo = zp
    else:  # QUANTIZE int8 -> int8
        s_in = log_uniform(rng, 0.01, 0.2)
        ratio = log_uniform(rng, 0.25, 4.0) if regime == "realistic" else log_uniform(rng, 2.0**-20, 2.0**12)
        out = TensorSpec(shape, s_in / ratio, zero_point(rng, regime))
    return Case(op, [TensorSpec(shape, s_in, zp)], [out], options, [int8_data(rng, shape, lo)])


CASES = {op: binary_case for op in ("ADD", "SUB", "MUL", "SQUARED_DIFFERENCE")}
CASES.update({op: unary_case for op in ("RSQRT", "LOGISTIC", "TANH", "SOFTMAX", "L2_NORMALIZATION", "QUANTIZE")})


def all_cases(op: str) -> list[Case]:
    return [CASES[op](op, seed, regime) for regime in REGIMES for seed in range(N_CASES)]


# ---- TFLM == reference == C ------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(CASES))
def test_tflm_reference_and_c_agree(op, lib):
    refused = 0
    for k, case in enumerate(all_cases(op)):
        try:
            tflm = run_tflm(case.model(), case.data)[0]
        except RuntimeError:  # TFLM's Prepare refused the model: so must ours, with a FrontendError
            with pytest.raises(FrontendError):
                case.attrs()
            refused += 1
            continue
        attrs = case.attrs()
        ref = KERNELS["tfl_" + op.lower()](attrs, case.data, "double")
        status, c_out = call_kernel(lib, op.lower(), attrs, case.data, tflm.shape)
        where = f"{op} case {k}: shapes {[s.shape for s in case.inputs]} attrs {attrs}"
        assert ref.shape == tflm.shape and ref.dtype == np.int8, where
        np.testing.assert_array_equal(ref, tflm, err_msg=f"reference != TFLM; {where}")
        assert status == 0, where
        np.testing.assert_array_equal(c_out, tflm, err_msg=f"C != TFLM; {where}")
    assert refused <= len(REGIMES) * N_CASES // 8, f"{op}: TFLM refused {refused} cases: the generator is off"


@pytest.mark.parametrize("op", sorted(CASES))
def test_single_rounding_reference_and_c_agree(op, lib):
    """Single rounding (TFLITE_SINGLE_ROUNDING's) has no oracle here (TFLM's wheel is double); the reference and C
    given the rounding per call (the params' single_rounding, as the emitter writes a node's) still agree, in the
    same library as the double-rounding calls above: rounding is no build option."""
    for case in all_cases(op):
        try:
            attrs = case.attrs()
        except FrontendError:
            continue  # a case TFLM refuses too (checked above)
        ref = KERNELS["tfl_" + op.lower()](attrs, case.data, "single")
        status, c_out = call_kernel(lib, op.lower(), attrs, case.data, ref.shape, rounding="single")
        assert status == 0
        np.testing.assert_array_equal(c_out, ref)


# Where the two roundings differ the random cases above rarely go (a difference needs a raw value near a tie of
# the final right shift): a multiplier of 1/2 (2^30) and a right shift of 1 to 3 put small raw values on those ties
# (1 * 1/2 rounds to 1, then 1/2 to 1; once: 1/4 to 0). The output multiplier of each op that has one, and for
# ADD, SUB and SQUARED_DIFFERENCE inputs halved without the left shift (raw values of int8 size). (LOGISTIC, TANH
# and SOFTMAX only shift left, where one rounding and two agree; L2_NORMALIZATION's multiplier and RSQRT's
# inverse square root come from the input.)
_HALVED_INPUTS = {"left_shift": 0, "input1_multiplier": 2**30, "input1_shift": 0, "input2_multiplier": 2**30,
                  "input2_shift": 0}
TIES = {op: (_HALVED_INPUTS, "output_multiplier", "output_shift") for op in ("ADD", "SUB", "SQUARED_DIFFERENCE")}
TIES.update(MUL=({}, "output_multiplier", "output_shift"), QUANTIZE=({}, "multiplier", "shift"))


@pytest.mark.parametrize("op", sorted(TIES))
def test_each_kernel_rounds_as_its_params_say(op, lib):
    """On ties, single and double rounding give different bytes, and C follows the params' single_rounding."""
    inputs, key_m, key_s = TIES[op]
    differ = 0
    for case in all_cases(op)[:8]:
        try:
            attrs = case.attrs()
        except FrontendError:
            continue
        for shift in (-1, -2, -3):
            attrs = {**attrs, **inputs, key_m: 2**30, key_s: shift}
            out = {}
            for rounding in ("double", "single"):
                out[rounding] = KERNELS["tfl_" + op.lower()](attrs, case.data, rounding)
                status, c_out = call_kernel(lib, op.lower(), attrs, case.data, out[rounding].shape, rounding)
                assert status == 0
                np.testing.assert_array_equal(c_out, out[rounding], err_msg=f"{op} {rounding}: C != reference")
            differ += int(not np.array_equal(out["single"], out["double"]))
    assert differ > 0, f"{op}: no case where the rounding matters"


# ---- the second oracle: ai-edge-litert's reference kernels ------------------------------


@pytest.mark.parametrize("op", sorted(CASES))
def test_litert_builtin_ref_agrees_with_tflm(op):
    """LiteRT 2.3.0 BUILTIN_REF gives TFLM's bytes on every case of every elementwise op (docs/frontends.md)."""
    compared = 0
    for case in all_cases(op)[::2]:
        try:
            tflm = run_tflm(case.model(), case.data)[0]
        except RuntimeError:
            continue
        np.testing.assert_array_equal(run_litert(case.model(), case.data)[0], tflm, err_msg=f"{op}: LiteRT != TFLM")
        compared += 1
    assert compared >= N_CASES // 2


# ---- the edges: float32 -> int8 QUANTIZE, int8 -> float32 DEQUANTIZE ------------------


@pytest.mark.parametrize("seed", range(6))
def test_float_quantize_and_dequantize_match_tflm(seed):
    rng = np.random.default_rng(seed)
    shape = unary_shape(rng)
    scale, zp = log_uniform(rng, 1e-3, 1.0), int(rng.integers(-128, 128))
    x = (rng.standard_normal(shape) * scale * 100).astype(np.float32)
    x.reshape(-1)[:1] = np.float32(2.5 * scale)  # a tie: TfLiteRound goes away from zero
    q_spec = TensorSpec(shape, scale, zp)
    f_spec = TensorSpec(shape, None, None, dtype="float32")

    model = single_op_model("QUANTIZE", [f_spec], [q_spec])
    attrs = PREPARE["QUANTIZE"]([info_float(f_spec)], [info(q_spec, "q")], {})
    tflm_q = run_tflm(model, [x])[0]
    np.testing.assert_array_equal(KERNELS["tfl_quantize"](attrs, [x], "double"), tflm_q)
    np.testing.assert_array_equal(affine_quantize(x, attrs["scale"], attrs["zero_point"]), tflm_q)
    np.testing.assert_array_equal(run_litert(model, [x])[0], tflm_q)

    q = int8_data(rng, shape)
    model = single_op_model("DEQUANTIZE", [q_spec], [f_spec])
    attrs = PREPARE["DEQUANTIZE"]([info(q_spec, "q")], [info_float(f_spec)], {})
    tflm_f = run_tflm(model, [q])[0]
    assert tflm_f.dtype == np.float32
    np.testing.assert_array_equal(KERNELS["tfl_dequantize"](attrs, [q], "double"), tflm_f)
    np.testing.assert_array_equal(dequantize(q, attrs["scale"], attrs["zero_point"]), tflm_f)
    np.testing.assert_array_equal(run_litert(model, [q])[0], tflm_f)


def info_float(spec: TensorSpec) -> TflTensorInfo:
    return TflTensorInfo("f", tuple(spec.shape), "float32", np.zeros(0), np.zeros(0, dtype=np.int64), 0, None)


# ---- errors ------------------------------------------------------------------------------


def test_rsqrt_below_zero_point_fails_like_tflm(lib):
    x_spec, y_spec = TensorSpec((4,), 0.05, 10), TensorSpec((4,), 0.1, 0)
    x = np.array([10, 11, 9, 127], dtype=np.int8)  # 9 < zero point: a negative real value
    with pytest.raises(RuntimeError):
        run_tflm(single_op_model("RSQRT", [x_spec], [y_spec]), [x])
    attrs = PREPARE["RSQRT"]([info(x_spec, "x")], [info(y_spec, "y")], {})
    with pytest.raises(ValueError, match="below the zero point"):
        KERNELS["tfl_rsqrt"](attrs, [x], "double")
    status, _ = call_kernel(lib, "rsqrt", attrs, [x], x.shape)
    assert status == 1  # HYDRA_ERR_ARG


@pytest.mark.parametrize(
    "op, inputs, outputs, options, message",
    [
        ("LOGISTIC", [TensorSpec((4,), 0.1, 0)], [TensorSpec((4,), 1 / 256, 0)], {}, "zero point is 0"),
        ("SOFTMAX", [TensorSpec((4,), 0.1, 0)], [TensorSpec((4,), 1 / 255, -128)], {"beta": 1.0}, "1/256"),
        ("SOFTMAX", [TensorSpec((4,), 20.0, 0)], [TensorSpec((4,), 1 / 256, -128)], {"beta": 1.0}, "exceeds 16"),
        ("ADD", [TensorSpec((4,), 0.1, 0), TensorSpec((3,), 0.1, 0)], [TensorSpec((4,), 0.1, 0)], {}, "broadcast"),
        ("MUL", [TensorSpec((4,), 0.1, 0), TensorSpec((4,), 0.1, 0)], [TensorSpec((4,), 0.1, 0)],
         {"fused_activation_function": "TANH"}, "TANH"),
        ("ADD", [TensorSpec((4,), 0.1, 0), TensorSpec((4,), 0.1, 0, dtype="int16")], [TensorSpec((4,), 0.1, 0)], {},
         "int16"),
        ("L2_NORMALIZATION", [TensorSpec((1, 1, 1, 2, 4), 0.1, 0)], [TensorSpec((1, 1, 1, 2, 4), 1 / 128, 0)], {},
         "at most 4"),
    ],
)
def test_prepare_refuses_with_a_message_naming_the_tensor(op, inputs, outputs, options, message):
    with pytest.raises(FrontendError, match=message) as err:
        PREPARE[op]([info(s, f"in{i}") for i, s in enumerate(inputs)], [info(s, "out") for s in outputs], options)
    assert f"TFLite {op}" in str(err.value) and "tensor '" in str(err.value)


# ---- the fixed-point helpers on their edges ---------------------------------------------


def test_fixedpoint_helpers_on_edges():
    """Values the kernels reach rarely: exp of 0 and of the most negative input, 1/(1+x) at 0 and 1, inv sqrt of 0/1."""
    assert int(tfp.exp_on_negative_values(0, 5)) == tfp.INT32_MAX
    assert int(tfp.exp_on_negative_values(tfp.INT32_MIN, 5)) == 0  # below -32: clamped to zero
    assert int(tfp.one_over_one_plus_x_for_x_in_0_1(0)) == tfp.INT32_MAX
    assert abs(int(tfp.one_over_one_plus_x_for_x_in_0_1(tfp.INT32_MAX)) - 2**30) < 8  # 1/2, approximately
    assert int(tfp.logistic(0, 4)) == 2**30 and int(tfp.tanh(0, 4)) == 0
    for v in (0, 1):
        m, s = tfp.get_inv_sqrt_quantized_multiplier_exp(v, -1)
        assert (int(m), int(s)) == (tfp.INT32_MAX, 0)
    assert fp.quantize_multiplier(2.0**31 - 1, large_shift="keep") == (2**31 - 1, 31)  # kept in the double build
    assert fp.quantize_multiplier(2.0**31 - 1, large_shift="saturate") == (2**31 - 1, 30)
    assert fp.quantize_multiplier(2.0**-40, large_shift="keep") == (0, 0)
    assert tfp.tfl_round(-2.5) == -3 and tfp.tfl_round(0.49999999999999994) == 0


# ---- the C structs ---------------------------------------------------------------------


def test_param_struct_layouts_match_the_compiler(tmp_path):
    """Every mirror in c_build_tfl.py has the C struct's size and field offsets."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "hydra_tfl.h"', "int main(void) {"]
    for op, struct in STRUCTS.items():
        c_name = f"hydra_tfl_{op}_params"
        lines.append(f'printf("{op} size %zu\\n", sizeof({c_name}));')
        lines += [f'printf("{op} {f} %zu\\n", offsetof({c_name}, {f}));' for f, _ in struct._fields_]
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    run_cc(["-std=c99", f"-I{INCLUDE_DIR}", str(src), "-o", str(tmp_path / "layout")])
    got = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout.split("\n")
    expected = []
    for op, struct in STRUCTS.items():
        expected.append(f"{op} size {ctypes.sizeof(struct)}")
        expected += [f"{op} {f} {getattr(struct, f).offset}" for f, _ in struct._fields_]
    assert got[:-1] == expected


def test_fixedpoint_helpers_numpy_equal_c(lib):
    """The gemmlowp helpers, numpy against C, on their whole int32 domain's edges and random raw values."""
    i32 = ctypes.c_int32
    for name, n_args in [("srdhm", 2), ("rounding_divide_by_pot", 2), ("exp_on_negative_values", 2),
                         ("one_over_one_plus_x_for_x_in_0_1", 1), ("logistic", 2), ("tanh", 2)]:
        fn = getattr(lib, f"hydra_tfl_{name}")
        fn.restype, fn.argtypes = i32, [i32] * n_args
    lib.hydra_tfl_get_reciprocal.restype = i32
    lib.hydra_tfl_get_reciprocal.argtypes = [i32, i32, ctypes.POINTER(i32)]
    lib.hydra_tfl_inv_sqrt_multiplier_exp.restype = None
    lib.hydra_tfl_inv_sqrt_multiplier_exp.argtypes = [i32, i32, ctypes.POINTER(i32), ctypes.POINTER(i32)]

    rng = np.random.default_rng(7)
    edges = [tfp.INT32_MIN, tfp.INT32_MIN + 1, -(2**30), -1, 0, 1, 2**30, tfp.INT32_MAX - 1, tfp.INT32_MAX]
    raw = np.concatenate([edges, rng.integers(tfp.INT32_MIN, tfp.INT32_MAX, 300, endpoint=True)]).astype(np.int64)
    negative = np.concatenate([[tfp.INT32_MIN, -1, 0], -rng.integers(0, 2**31, 200)]).astype(np.int64)
    positive = np.concatenate([[0, 1, 2, 3, 2**29 - 1, 2**29, tfp.INT32_MAX], rng.integers(1, 2**31, 200)])
    for a, b in zip(raw, raw[::-1]):
        assert lib.hydra_tfl_srdhm(int(a), int(b)) == int(tfp.saturating_rounding_doubling_high_mul(a, b))
        e = int(abs(b) % 32)
        assert lib.hydra_tfl_rounding_divide_by_pot(int(a), e) == int(tfp.rounding_divide_by_pot(a, e))
        for bits in (4, 5):
            assert lib.hydra_tfl_logistic(int(a), bits) == int(tfp.logistic(a, bits))
            assert lib.hydra_tfl_tanh(int(a), bits) == int(tfp.tanh(a, bits))
    for a in negative:
        for bits in (1, 4, 5, 6, 12):
            assert lib.hydra_tfl_exp_on_negative_values(int(a), bits) == int(tfp.exp_on_negative_values(a, bits))
    for a in positive:
        assert lib.hydra_tfl_one_over_one_plus_x_for_x_in_0_1(int(a)) == int(tfp.one_over_one_plus_x_for_x_in_0_1(a))
        nbits = i32()
        if a > 0:
            r = lib.hydra_tfl_get_reciprocal(int(a), 12, ctypes.byref(nbits))
            ref_r, ref_n = tfp.get_reciprocal(a, 12)
            assert (r, nbits.value) == (int(ref_r), int(ref_n))
        m, s = i32(), i32()
        lib.hydra_tfl_inv_sqrt_multiplier_exp(int(a), -1, ctypes.byref(m), ctypes.byref(s))
        ref_m, ref_s = tfp.get_inv_sqrt_quantized_multiplier_exp(a, -1)
        assert (m.value, s.value) == (int(ref_m), int(ref_s))
