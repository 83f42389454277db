"""The SIMD paths of the imported-.tflite convolutions, pools, reductions and elementwise ops on the Cortex-M7, bit
for bit.

runtime_c/src/tfl_fixedpoint.c has SXTB16/SXTAB16/SMLAD (CONV_2D, group by group: two output pixels' windows
widened into the scratch (im2col), output channels in pairs)
and SSUB8/SEL, SXTAB16 (MAX_POOL_2D, AVERAGE_POOL_2D: four channels a word) paths beside the portable loops the
host tests run. Each single-operator model here is compiled for the stm32f746 and run under QEMU on the extremes
(every input -128, every input 127, a checkerboard of both) and random inputs, against the numpy reference
(reference/tfl_linear.py, itself TFLM's bits: tests/test_tflite.py), and built again with
-DHYDRA_PORTABLE_KERNELS: another image, the same bytes. The cases cover odd channel counts (the tails of the
pairs and of the words: 1, 3, 5, 7), SAME and VALID padding (windows cut by the border, pixels that go alone),
strides 1 and 2, dilation, groups 1, 2 and 3, 1x1, 3x3 and patch (4x4 stride 4) kernels, input zero points at both
ends (offsets 128 and -127), per-channel multipliers and shifts, filters of -128 and 127, and the fused activations.
Needs the cross toolchain and QEMU (.ci/run installs them).
"""

from __future__ import annotations

import ctypes

import c_build
import numpy as np
import pytest
from hydra_edge import driver
from hydra_edge.boards import load_board
from hydra_edge.frontend.tflite import tflite_from_bytes
from hydra_edge.reference.int_interp import run_int
from hydra_edge.reference.tfl_linear import scratch_bytes
from hydra_edge.targets import runner
from hydra_edge.targets.icount import PORTABLE_CPPFLAGS
from tfl_single_op import TensorSpec, single_op_model


def _inputs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)
    checker = np.where(np.indices(shape).sum(axis=0) % 2 == 0, -128, 127).astype(np.int8)
    return np.concatenate([np.stack([lo, hi, checker]), rng.integers(-128, 128, (3, *shape)).astype(np.int8)])


def _filter(shape: tuple[int, ...], seed: int, out_axis: int) -> np.ndarray:
    """Random weights, with output channel 0 all -128 and channel 1 all 127 (when there are two)."""
    w = np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)
    w = np.moveaxis(w, out_axis, 0)
    w[0] = -128
    if len(w) > 1:
        w[1] = 127
    return np.ascontiguousarray(np.moveaxis(w, 0, out_axis))


def _scales(n: int, taps: int) -> list[float]:
    """Per-channel filter scales spread over two decades around the one that maps a random accumulator (about
    sqrt(taps) 74^2) onto int8: per-channel multipliers and shifts, outputs neither all saturated nor all zero."""
    return [float(v) for v in np.geomspace(0.1, 10.0, n) / (74.0**2 * np.sqrt(taps) / 40.0)]


def _conv(in_shape, out_c, kernel, stride, padding, zp_in, dilation=1, depthwise=False, act="NONE", seed=0, groups=1,
          scales=None, bias_range=5000):
    n, h, w, c = in_shape
    kh, kw = kernel
    eff_h, eff_w = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - eff_h) // stride + 1, (w - eff_w) // stride + 1
    if depthwise:
        fshape, out_axis, taps = (1, kh, kw, out_c), 3, kh * kw
    else:
        fshape, out_axis, taps = (out_c, kh, kw, c // groups), 0, kh * kw * c // groups
    s_in, s_out = 0.05, 0.05
    fs = _scales(out_c, taps) if scales is None else [float(v) for v in scales]
    bias = np.random.default_rng(seed + 1).integers(-bias_range, bias_range, out_c).astype(np.int32)
    inputs = [TensorSpec(in_shape, s_in, zp_in),
              TensorSpec(fshape, fs, 0, data=_filter(fshape, seed, out_axis), quantized_dimension=out_axis),
              TensorSpec((out_c,), [s_in * s for s in fs], 0, "int32", bias)]
    outputs = [TensorSpec((n, oh, ow, out_c), s_out, 5)]
    options = {"padding": padding, "stride_h": stride, "stride_w": stride, "dilation_h_factor": dilation,
               "dilation_w_factor": dilation, "fused_activation_function": act}
    if depthwise:
        options["depth_multiplier"] = out_c // c
    return ("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"), inputs, outputs, options


def _pool(op, in_shape, kernel, stride, padding, zp, act="NONE"):
    n, h, w, c = in_shape
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    return (op, [TensorSpec(in_shape, 0.05, zp)], [TensorSpec((n, oh, ow, c), 0.05, zp)],
            {"padding": padding, "stride_h": stride, "stride_w": stride, "filter_height": kernel,
             "filter_width": kernel, "fused_activation_function": act})


CASES = {
    # CONV_2D (groups 1): the 2 x 2 pixel-by-channel blocks, their lone pixels and odd last channels
    "conv3x3_same_s1_c3_o5_off128": _conv((1, 7, 8, 3), 5, (3, 3), 1, "SAME", -128, seed=1),
    "conv3x3_same_s2_c7_o3_off-127": _conv((1, 9, 7, 7), 3, (3, 3), 2, "SAME", 127, seed=2),
    "conv3x3_valid_s1_c1_o1": _conv((1, 6, 6, 1), 1, (3, 3), 1, "VALID", 3, seed=3),
    "conv1x1_c5_o7_relu": _conv((1, 3, 5, 5), 7, (1, 1), 1, "VALID", -128, act="RELU", seed=4),
    "conv1x1_c16_o6_s2": _conv((1, 5, 5, 16), 6, (1, 1), 2, "VALID", 127, seed=5),
    "patch4x4_s4_c3_o4": _conv((1, 8, 12, 3), 4, (4, 4), 4, "VALID", -7, seed=6),
    "patch4x4_s4_c8_o3_off128": _conv((1, 8, 8, 8), 3, (4, 4), 4, "VALID", -128, seed=7),
    "conv3x3_same_dilated2_c5_o4": _conv((1, 5, 6, 5), 4, (3, 3), 1, "SAME", 20, dilation=2, seed=8),
    "conv3x3_same_s2_c12_o8_relu6": _conv((1, 8, 8, 12), 8, (3, 3), 2, "SAME", -128, act="RELU6", seed=9),
    # the im2col path's channel loop: 37 outputs (chunks of 8 channel pairs, then 2 pairs and a lone channel) from
    # whole-group windows (4 input channels); 20 outputs from byte windows (3 channels: k % 4 == 3) with
    # multipliers from 0.0001 to 4 (one above 1: the whole call takes the general output stage); an odd pixel count
    "conv3x3_same_s1_c4_o37": _conv((1, 5, 3, 4), 37, (3, 3), 1, "SAME", -128, seed=40),
    "conv3x3_same_s2_c3_o20_mixed_scales": _conv((1, 9, 9, 3), 20, (3, 3), 2, "SAME", 127, seed=41,
                                                 scales=list(np.geomspace(0.0001, 4.0, 20))),
    # CONV_2D with groups > 1: the same pixel kernels group by group (one run of a group's channels per tap), an
    # odd channel count per group, with dilation
    "conv3x3_same_s1_c8_o6_groups2": _conv((1, 6, 7, 8), 6, (3, 3), 1, "SAME", -128, seed=18, groups=2),
    "conv3x3_valid_dilated2_c6_o9_groups3": _conv((1, 7, 8, 6), 9, (3, 3), 1, "VALID", 127, dilation=2, seed=19,
                                                 groups=3),
    # DEPTHWISE_CONV_2D
    "dw3x3_same_s1_c5_dm1": _conv((1, 6, 5, 5), 5, (3, 3), 1, "SAME", -128, depthwise=True, seed=10),
    "dw3x3_same_s2_c3_dm2": _conv((1, 7, 7, 3), 6, (3, 3), 2, "SAME", 127, depthwise=True, seed=11),
    "dw3x3_valid_dilated2_c7": _conv((1, 8, 8, 7), 7, (3, 3), 1, "VALID", 0, dilation=2, depthwise=True, seed=12),
    # depth multiplier 1: four channels a word (SMLABB / SMLATT), input offsets at both ends
    "dw3x3_same_s2_c8_dm1": _conv((1, 9, 7, 8), 8, (3, 3), 2, "SAME", 127, depthwise=True, seed=13),
    "dw10x4_same_s2_c4_dm1": _conv((1, 12, 6, 4), 4, (10, 4), 2, "SAME", -128, depthwise=True, seed=14),
    # a depth multiplier that is a multiple of 4 (DS-CNN's first layer: one input channel): quads of output channels
    "dw10x4_same_s2_c1_dm8": _conv((1, 13, 6, 1), 8, (10, 4), 2, "SAME", 127, depthwise=True, seed=15),
    "dw3x3_valid_s1_c2_dm4": _conv((1, 5, 6, 2), 8, (3, 3), 1, "VALID", -128, depthwise=True, seed=16),
    "dw3x3_same_s1_c4_dm2": _conv((1, 6, 5, 4), 8, (3, 3), 1, "SAME", -128, depthwise=True, seed=17),
    # depth multiplier 1, a quad's output stage formed once (doubled products, the offset inside the rounding shift,
    # SSAT, one word): the in-image columns' loop and the border columns' taps (3 x 3: 2 x 3 rows, 3 x 2 and 2 x 2
    # border windows unrolled, also dilated), the activation clamp on the word, an image one column wide (no
    # interior), 5 x 5 stride 2 (the tap loop inside the image)
    "dw3x3_same_s1_c16_dm1_relu6_off-127": _conv((1, 7, 5, 16), 16, (3, 3), 1, "SAME", 127, depthwise=True, act="RELU6",
                                                 seed=20),
    "dw3x3_same_s1_c8_dm1_w1": _conv((1, 4, 1, 8), 8, (3, 3), 1, "SAME", -128, depthwise=True, seed=21),
    "dw3x3_same_dilated2_c8_dm1": _conv((1, 6, 7, 8), 8, (3, 3), 1, "SAME", -60, dilation=2, depthwise=True,
                                        seed=32),
    "dw5x5_valid_s2_c12_dm1_relu": _conv((1, 9, 11, 12), 12, (5, 5), 2, "VALID", 40, depthwise=True, act="RELU",
                                         seed=22),
    # quads whose stage is not the fast one beside quads whose stage is: a shift of 0 (multiplier in [0.5, 1)) and
    # a right shift past 22 (multiplier below 2^-23) in one call; and multipliers above 1 (no channel fast). Small
    # biases: the all -128 input (x + offset = 0) leaves acc = bias, so the shift-0 channel's outputs (its bias is
    # negative) are not all saturated
    "dw3x3_same_s1_c12_dm1_shift0_shift23": _conv(
        (1, 5, 6, 12), 12, (3, 3), 1, "SAME", -128, depthwise=True, seed=23, bias_range=150,
        scales=[0.0006, 0.002, 0.004, 0.008, 0.003, 0.001, 0.7, 0.005, 6e-8, 0.002, 0.009, 0.0008]),
    "dw3x3_same_s2_c8_dm1_multiplier_above_1": _conv((1, 6, 6, 8), 8, (3, 3), 2, "SAME", 3, depthwise=True, seed=24,
                                                     scales=np.geomspace(0.001, 4.0, 8)),
    # one input channel, a depth multiplier a multiple of 4 (DS-CNN's first layer, its 64 outputs): a filter row's
    # taps a word at a time, border windows through the shifted read and the pad byte; filter widths 3 (a zero tap
    # read past the row), 4, 7 and 8 (two groups, one past the border), 9 (three), an image exactly 4 wide, and 3
    # wide (the quads' walk)
    "dw10x4_same_s2_c1_dm64_off-127": _conv((1, 13, 10, 1), 64, (10, 4), 2, "SAME", 127, depthwise=True, seed=25),
    "dw3x3_same_s1_c1_dm4_off128": _conv((1, 6, 5, 1), 4, (3, 3), 1, "SAME", -128, depthwise=True, seed=26),
    "dw5x7_same_s1_c1_dm8_relu6": _conv((1, 6, 9, 1), 8, (5, 7), 1, "SAME", 60, depthwise=True, act="RELU6", seed=27),
    "dw3x8_same_s1_c1_dm4": _conv((1, 4, 5, 1), 4, (3, 8), 1, "SAME", -128, depthwise=True, seed=28),
    "dw2x9_same_s3_c1_dm12": _conv((1, 5, 10, 1), 12, (2, 9), 3, "SAME", 127, depthwise=True, seed=29),
    "dw2x4_valid_s1_c1_dm4_w4": _conv((1, 5, 4, 1), 4, (2, 4), 1, "VALID", -128, depthwise=True, seed=30),
    "dw3x3_same_s1_c1_dm4_w3": _conv((1, 5, 3, 1), 4, (3, 3), 1, "SAME", 127, depthwise=True, seed=31),
    # pools: four channels a word, then the tail
    "maxpool2x2_s2_valid_c7": _pool("MAX_POOL_2D", (1, 8, 6, 7), 2, 2, "VALID", -128),
    "maxpool3x3_s2_same_c5_relu6": _pool("MAX_POOL_2D", (1, 7, 6, 5), 3, 2, "SAME", 10, act="RELU6"),
    "maxpool3x3_s1_same_c8_relu": _pool("MAX_POOL_2D", (1, 5, 5, 8), 3, 1, "SAME", 90, act="RELU"),
    "avgpool2x2_s1_valid_c24": _pool("AVERAGE_POOL_2D", (1, 5, 5, 24), 2, 1, "VALID", -128),
    "avgpool3x3_s2_same_c7": _pool("AVERAGE_POOL_2D", (1, 7, 7, 7), 3, 2, "SAME", 3),
    "avgpool3x3_s1_same_c1_relu": _pool("AVERAGE_POOL_2D", (1, 4, 5, 1), 3, 1, "SAME", -3, act="RELU"),
    "avgpool17x17_valid_c4": _pool("AVERAGE_POOL_2D", (1, 17, 17, 4), 17, 1, "VALID", 0),  # 289 taps: int32 sums
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_simd_paths_match_reference_on_m7(case, tmp_path):
    op, inputs, outputs, options = CASES[case]
    graph = tflite_from_bytes(single_op_model(op, inputs, outputs, options), f"{case}.tflite")
    assert [n.op for n in graph.nodes] == ["tfl_" + op.lower()]
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=len(case))
    expected = np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])
    assert len(np.unique(expected)) > 4, "outputs too uniform to test anything"
    res = driver.compile_prequantised(graph, load_board("stm32f746"), tmp_path / "build", optimize="speed")
    flat = xs.reshape(len(xs), -1)
    np.testing.assert_array_equal(runner.run(res.folder, flat).reshape(len(xs), -1), expected)
    image = runner.build(res.folder).read_bytes()
    assert runner.build(res.folder, extra_cppflags=PORTABLE_CPPFLAGS).read_bytes() != image
    portable = runner.run(res.folder, flat, extra_cppflags=PORTABLE_CPPFLAGS)
    np.testing.assert_array_equal(portable.reshape(len(xs), -1), expected)


@pytest.mark.parametrize("case", ["patch4x4_s4_c8_o3_off128", "conv3x3_same_s2_c12_o8_relu6", "conv3x3_same_s1_c4_o37",
                                  "conv3x3_same_s1_c8_o6_groups2"])
def test_byte_window_takes_every_conv_in_a_build_for_size(case, tmp_path):
    """--optimize size leaves the word window out (HYDRA_TFL_NO_CONV_WORD_WINDOW, at -Os): convolutions on a multiple
    of 4 input channels per group then take the byte window, in the larger scratch planned for it, with the same
    bits; the speed build of the same model takes the word window."""
    op, inputs, outputs, options = CASES[case]
    graph = tflite_from_bytes(single_op_model(op, inputs, outputs, options), f"{case}.tflite")
    assert int(graph.nodes[0].attrs["filter_shape"][3]) % 4 == 0
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=len(case))
    expected = np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])
    builds = {goal: driver.compile_prequantised(graph, load_board("stm32f746"), tmp_path / goal, optimize=goal)
              for goal in ("speed", "size")}
    makefile = (builds["size"].folder / "Makefile").read_text()
    assert "-DHYDRA_TFL_NO_CONV_WORD_WINDOW" in makefile and "\nOPT = -Os\n" in makefile
    assert "-DHYDRA_TFL_NO_CONV_WORD_WINDOW" not in (builds["speed"].folder / "Makefile").read_text()
    scratch = {goal: max(b.size for b in res.plan.buffers if b.name.endswith("scratch")) for goal, res in builds.items()}
    assert scratch["size"] == scratch["speed"] * 20 // 16
    flat = xs.reshape(len(xs), -1)
    np.testing.assert_array_equal(runner.run(builds["size"].folder, flat).reshape(len(xs), -1), expected)


@pytest.mark.parametrize("case", ["conv3x3_same_s1_c3_o5_off128", "patch4x4_s4_c8_o3_off128"])
def test_single_rounding_conv_on_m7(case, tmp_path):
    """The pixel kernels' copies for single rounding (the params' single_rounding) against the reference."""
    op, inputs, outputs, options = CASES[case]
    graph = tflite_from_bytes(single_op_model(op, inputs, outputs, options), f"{case}.tflite")
    graph.meta["rounding"] = "single"
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=len(case))
    expected = np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])
    res = driver.compile_prequantised(graph, load_board("stm32f746"), tmp_path / "build", optimize="speed")
    assert ".single_rounding = 1" in (res.folder / "model.c").read_text()
    np.testing.assert_array_equal(runner.run(res.folder, xs.reshape(len(xs), -1)).reshape(len(xs), -1), expected)


def _reduce(op: str, d: int, zp: int) -> tuple:
    axis = TensorSpec((1,), dtype="int32", data=np.array([-1], np.int32))
    return op, [TensorSpec((1, 3, d), 0.05, zp), axis], [TensorSpec((1, 3), 0.1 if op == "MEAN" else 1.5, -5)], \
        {"keep_dims": False}


def _binary(op: str, a: tuple, b: tuple, out: tuple, act: str = "NONE") -> tuple:
    """The second operand a constant (random, with -128 and 127 in it): one model input."""
    data = np.random.default_rng(len(op) + len(b)).integers(-128, 128, b).astype(np.int8)
    data.reshape(-1)[:2] = (-128, 127)
    return op, [TensorSpec(a, 0.05, 3), TensorSpec(b, 0.03, -120, data=data)], [TensorSpec(out, 0.02, 9)], \
        {"fused_activation_function": act}


# The other M7-only instructions of the .tflite kernels: USADA8 (MEAN / SUM over the innermost dimension, whole
# words then the tail) and SSAT (every int8 saturation of MUL / ADD / SUB's short requantisation).
OTHER_CASES = {
    "mean_d1": _reduce("MEAN", 1, 0), "mean_d7": _reduce("MEAN", 7, -128), "mean_d33": _reduce("MEAN", 33, 127),
    "sum_d4": _reduce("SUM", 4, 5), "sum_d13": _reduce("SUM", 13, -128),
    "mul_broadcast_row": _binary("MUL", (1, 4, 7), (1, 4, 1), (1, 4, 7)),
    "mul_broadcast_first": _binary("MUL", (1, 1, 7), (1, 4, 7), (1, 4, 7), act="RELU"),
    "sub_broadcast_row": _binary("SUB", (1, 4, 9), (1, 4, 1), (1, 4, 9)),
    "add_broadcast_col": _binary("ADD", (1, 4, 9), (1, 1, 9), (1, 4, 9)),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_reduce_and_elementwise_on_m7(case, tmp_path):
    op, inputs, outputs, options = OTHER_CASES[case]
    graph = tflite_from_bytes(single_op_model(op, inputs, outputs, options), f"{case}.tflite")
    xs = _inputs(graph.tensor(graph.inputs[0]).shape, seed=len(case))
    expected = np.stack([run_int(graph, x)[0].reshape(-1) for x in xs])
    assert len(np.unique(expected)) > 2, "outputs too uniform to test anything"
    res = driver.compile_prequantised(graph, load_board("stm32f746"), tmp_path / "build", optimize="speed")
    np.testing.assert_array_equal(runner.run(res.folder, xs.reshape(len(xs), -1)).reshape(len(xs), -1), expected)


class _ConvParams(ctypes.Structure):
    """hydra_tfl_conv_2d_params (hydra_tfl.h), field for field."""
    _fields_ = [("input_shape", ctypes.c_int32 * 4), ("filter_shape", ctypes.c_int32 * 4),
                ("output_shape", ctypes.c_int32 * 4), ("stride_height", ctypes.c_int32),
                ("stride_width", ctypes.c_int32), ("dilation_height_factor", ctypes.c_int32),
                ("dilation_width_factor", ctypes.c_int32), ("padding_height", ctypes.c_int32),
                ("padding_width", ctypes.c_int32), ("input_offset", ctypes.c_int32),
                ("output_offset", ctypes.c_int32), ("output_multiplier", ctypes.c_void_p),
                ("output_shift", ctypes.c_void_p), ("activation_min", ctypes.c_int32),
                ("activation_max", ctypes.c_int32), ("single_rounding", ctypes.c_int32)]


@pytest.mark.parametrize("byte_window", [False, True], ids=["speed", "size"])
@pytest.mark.parametrize("filter_shape", [(16, 3, 3, 16), (16, 3, 3, 3), (8, 1, 1, 5), (64, 3, 3, 64),
                                          (3, 4, 4, 8), (4, 1, 1, 1), (2, 10, 4, 1)])
def test_conv_scratch_formula_is_the_kernels(filter_shape, byte_window, tmp_path):
    """CONV_2D's planned scratch (reference/tfl_linear.py scratch_bytes) is what hydra_tfl_conv_2d_get_buffer_size
    asks for: the pair layout of two windows, and a byte window where the filter's input channels are not a
    multiple of 4, or for every filter in a build for size (-DHYDRA_TFL_NO_CONV_WORD_WINDOW); -1 beyond 33025 taps."""
    if not c_build.have_compiler():
        pytest.skip(f"no C compiler ({c_build.CC})")
    out = tmp_path / "libconv.so"
    c_build.run_cc([*c_build.STRICT_FLAGS, "-fPIC", "-shared", f"-I{c_build.INCLUDE_DIR}",
                    *(["-DHYDRA_TFL_NO_CONV_WORD_WINDOW"] if byte_window else []),
                    *(str(c_build.SRC_DIR / s) for s in ("hydra_requantize.c", "tfl_fixedpoint.c", "tfl_conv_2d.c")),
                    "-o", str(out)])
    lib = ctypes.CDLL(str(out))
    lib.hydra_tfl_conv_2d_get_buffer_size.restype = ctypes.c_int32
    lib.hydra_tfl_conv_2d_get_buffer_size.argtypes = [ctypes.POINTER(_ConvParams)]
    p = _ConvParams()
    p.filter_shape[:] = filter_shape
    expected = scratch_bytes({"filter_shape": filter_shape}, "tfl_conv_2d", byte_window=byte_window)
    assert lib.hydra_tfl_conv_2d_get_buffer_size(ctypes.byref(p)) == expected
    k = filter_shape[1] * filter_shape[2] * filter_shape[3]
    assert expected == (16 if filter_shape[3] % 4 == 0 and not byte_window else 20) * -(-k // 4)
    p.filter_shape[:] = (1, 200, 200, 1)  # 40000 taps: the kernel refuses the shape
    assert lib.hydra_tfl_conv_2d_get_buffer_size(ctypes.byref(p)) == -1
