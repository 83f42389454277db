"""hydra_block_s8 (the streamed encoder block) against the unfused C kernels, byte for byte.

A random valid block (int8 weights, int32 biases inside the compiler's bound, multipliers in
[2^30, 2^31 - 1], LayerNorm constants in the spec's ranges, a random GELU-like table, zero
points anywhere in [-128, 127]) runs in place over a random [T, D] token buffer; the result
must equal hydra_layernorm_s8, hydra_linear_s8 x3, hydra_attention_s8, hydra_linear_s8,
hydra_add_s8, hydra_layernorm_s8, hydra_linear_s8, hydra_lut_s8, hydra_linear_s8 and
hydra_add_s8 run one after the other on full-size buffers. Shapes include odd D, T that is not
a power of two and T = 1, with tokens_per_step 1, 3, T and more than T; both rounding modes, the
library built with UBSan. The scratch is exactly hydra_block_s8_get_buffer_size() bytes
followed by guard bytes that must stay untouched (ASan runs the block in test_runtime_build).
"""

from __future__ import annotations

import ctypes

import c_build
import numpy as np
import pytest
from c_build import (
    HYDRA_ERR_ARG,
    HYDRA_ERR_SHAPE,
    HYDRA_OK,
    AddParams,
    AttentionParams,
    BlockParams,
    LayerNormParams,
    LinearParams,
    LutParams,
    ptr,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(not c_build.have_compiler(), reason=f"no C compiler ({c_build.CC})")

EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT32_MAX = 2**31 - 1
GUARD = 64


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """The runtime under UBSan (undefined behaviour aborts)."""
    return c_build.build_runtime_lib(tmp_path_factory.mktemp("rt"), sanitize=True)


@pytest.fixture(scope="module", params=[0, 1], ids=["double", "single"])
def single(request) -> int:
    """Each rounding mode: the params' single_rounding field."""
    return request.param


# ---- random valid block constants ------------------------------------------------------------


class Block:
    """A BlockParams and the numpy arrays its pointers refer to (kept alive here)."""

    def __init__(self, rng: np.random.Generator, t: int, d: int, h: int, step: int, zps: list[int],
                 single: int = 0) -> None:
        self.t, self.d, self.h, self.single = t, d, h, single
        self.keep: list[np.ndarray] = []
        zx, zn1, zq, zk, zv, za, zp, zr1, zn2, zf1, zg, zf2, zr2 = zps
        self.zx = zx
        p = BlockParams(tokens=t, dim=d, hidden=h, tokens_per_step=step)
        p.norm1 = self.layernorm(rng, d, zx, zn1)
        p.q, p.k, p.v = (self.linear(rng, d, d, z) for z in (zq, zk, zv))
        vmax = max(127 - zv, zv + 128)
        kv_shift = max(0, (t * 128 * vmax).bit_length() - 23)  # the compiler's rule: |kv| <= 2^23
        kv_shift += int(rng.choice([0, 1, 4, 9]))  # more is legal: small T alone would never round the state
        p.attn = AttentionParams(tokens=t, dim=d, q_zero_point=zq, k_zero_point=zk, v_zero_point=zv,
                                 kv_shift=kv_shift, multiplier=self.mult(rng), shift=int(rng.integers(-12, 1)),
                                 output_zero_point=za, single_rounding=single)
        p.proj = self.linear(rng, d, d, zp)
        p.residual1 = self.add(rng, za=zx, zb=zp, zy=zr1)
        p.norm2 = self.layernorm(rng, d, zr1, zn2)
        p.fc1 = self.linear(rng, d, h, zf1)
        table = rng.integers(-128, 128, 256).astype(np.int8)
        if rng.integers(0, 2):  # a GELU-like table, monotone above its zero point, sometimes
            table = np.clip(np.maximum(np.arange(-128, 128) - zf1, -8) + zg, -128, 127).astype(np.int8)
        p.act = LutParams(size=0, table=self.hold(table, np.int8))
        p.fc2 = self.linear(rng, h, d, zf2)
        p.residual2 = self.add(rng, za=zr1, zb=zf2, zy=zr2)
        self.p = p

    def hold(self, arr: np.ndarray, dtype) -> int:
        arr = np.ascontiguousarray(arr, dtype=dtype)
        self.keep.append(arr)
        return ptr(arr, dtype)

    @staticmethod
    def mult(rng: np.random.Generator) -> int:
        return int(rng.integers(2**30, INT32_MAX, endpoint=True))

    def linear(self, rng: np.random.Generator, k: int, n: int, zy: int) -> LinearParams:
        w = rng.integers(-127, 128, (n, k))
        bound = INT32_MAX - k * 128 * 127  # the compiler's check: |bias| + K * 128 * 127 fits int32
        big = rng.integers(-bound, bound, n, endpoint=True)
        bias = np.where(rng.integers(0, 4, n) == 0, big, rng.integers(-(2**14), 2**14, n, endpoint=True))
        m = rng.integers(2**30, INT32_MAX, n, endpoint=True)
        s = rng.integers(-12, 1, n)
        return LinearParams(rows=0, in_features=k, out_features=n, weights=self.hold(w, np.int8),
                            bias=self.hold(bias, np.int32), multiplier=self.hold(m, np.int32),
                            shift=self.hold(s, np.int32), output_zero_point=zy, activation_min=-128,
                            activation_max=127, single_rounding=self.single)

    def layernorm(self, rng: np.random.Generator, d: int, zx: int, zy: int) -> LayerNormParams:
        # gamma_q = g * 2^G with |gamma_q| <= 2^15 and out_shift = 20 + G; beta_q = beta / s_y * 2^out_shift.
        g_shift = int(rng.integers(0, 16))
        gamma = rng.integers(-(2**15), 2**15, d, endpoint=True)
        out_shift = 20 + g_shift
        beta = rng.integers(-(2 ** (out_shift + 6)), 2 ** (out_shift + 6), d, endpoint=True)
        eps = int(rng.choice([1, int(rng.integers(1, 2**20)), 2**40, 2**61]))
        return LayerNormParams(tokens=0, dim=d, input_zero_point=zx, eps=eps, gamma=self.hold(gamma, np.int32),
                               beta=self.hold(beta, np.int64), output_shift=out_shift, output_zero_point=zy)

    def add(self, rng: np.random.Generator, za: int, zb: int, zy: int) -> AddParams:
        # ma, mb encode s / (2 max s) <= 1/2; my encodes 2 max s / (2^20 s_y).
        return AddParams(size=0, left_shift=20, a_zero_point=za, a_multiplier=self.mult(rng),
                         a_shift=int(rng.integers(-3, 1)), b_zero_point=zb, b_multiplier=self.mult(rng),
                         b_shift=int(rng.integers(-3, 1)), output_multiplier=self.mult(rng),
                         output_shift=int(rng.integers(-24, -15)), output_zero_point=zy,
                         single_rounding=self.single)


# ---- the two ways to run it -------------------------------------------------------------------


def copy_params(s: ctypes.Structure) -> ctypes.Structure:
    return type(s).from_buffer_copy(s)


def unfused(lib, blk: Block, x: np.ndarray) -> np.ndarray:
    """The block as eleven separate kernels over full [T, D] / [T, hidden] buffers."""
    p, t, d, h = blk.p, blk.t, blk.d, blk.h

    def ln(params, inp):
        q = copy_params(params)
        q.tokens = t
        out = np.empty((t, d), np.int8)
        assert lib.hydra_layernorm_s8(ctypes.byref(q), ptr(inp, np.int8), ptr(out, np.int8)) == HYDRA_OK
        return out

    def lin(params, inp):
        q = copy_params(params)
        q.rows = t
        out = np.empty((t, q.out_features), np.int8)
        assert lib.hydra_linear_s8(ctypes.byref(q), ptr(inp, np.int8), ptr(out, np.int8)) == HYDRA_OK
        return out

    def add(params, a, b):
        q = copy_params(params)
        q.size = a.size
        out = np.empty_like(a)
        assert lib.hydra_add_s8(ctypes.byref(q), ptr(a, np.int8), ptr(b, np.int8), ptr(out, np.int8)) == HYDRA_OK
        return out

    n1 = ln(p.norm1, x)
    q, k, v = lin(p.q, n1), lin(p.k, n1), lin(p.v, n1)
    attn = copy_params(p.attn)
    scratch = np.zeros((lib.hydra_attention_s8_get_buffer_size(ctypes.byref(attn)) + 3) // 4, np.int32)
    y = np.empty((t, d), np.int8)
    assert lib.hydra_attention_s8(ctypes.byref(attn), ptr(q, np.int8), ptr(k, np.int8), ptr(v, np.int8),
                                  ptr(scratch, np.int32), ptr(y, np.int8)) == HYDRA_OK
    r1 = add(p.residual1, x, lin(p.proj, y))
    f1 = lin(p.fc1, ln(p.norm2, r1))
    act = copy_params(p.act)
    act.size = t * h
    assert lib.hydra_lut_s8(ctypes.byref(act), ptr(f1, np.int8), ptr(f1, np.int8)) == HYDRA_OK
    return add(p.residual2, r1, lin(p.fc2, f1))


def scratch_bytes(t: int, d: int, h: int, step: int) -> int:
    g = min(step, t)
    return 5 * d + g * d + g * max(2 * d, h)


def run_block(lib, blk: Block, x: np.ndarray) -> np.ndarray:
    """hydra_block_s8 in place on a copy of x, with exact-size scratch and guard bytes after it."""
    size = lib.hydra_block_s8_get_buffer_size(ctypes.byref(blk.p))
    assert size == scratch_bytes(blk.t, blk.d, blk.h, blk.p.tokens_per_step)
    backing = np.zeros((size + GUARD + 3) // 4, np.int32)  # int32: 4-byte aligned
    raw = backing.view(np.int8)
    raw[:] = 0x5A
    tokens = x.copy()
    assert lib.hydra_block_s8(ctypes.byref(blk.p), ptr(tokens, np.int8), ptr(backing, np.int32)) == HYDRA_OK
    assert (raw[size:] == 0x5A).all(), "the block wrote past its scratch"
    return tokens


def token_inputs(rng: np.random.Generator, t: int, d: int, zx: int) -> list[np.ndarray]:
    xs = [rng.integers(-128, 128, (t, d)).astype(np.int8) for _ in range(3)]
    xs.append(np.full((t, d), zx, np.int8))  # every LN1 row constant: phi(k) = 0 where k is the bias alone
    mixed = rng.integers(-128, 128, (t, d)).astype(np.int8)
    mixed[::2] = 127
    xs.append(mixed)
    return xs


# ---- tests --------------------------------------------------------------------------------------

zero_points = st.one_of(st.integers(-128, 127), st.sampled_from([-128, 0, 127]))
tokens = st.one_of(st.sampled_from([1, 2, 3, 5, 7, 12]), st.integers(1, 40))
dims = st.one_of(st.sampled_from([1, 3, 7, 9, 16]), st.integers(1, 24))
hiddens = st.one_of(st.sampled_from([1, 5, 17, 48]), st.integers(1, 64))


@st.composite
def steps(draw, t: int) -> int:
    return draw(st.sampled_from([1, 3, t, t + 1 + draw(st.integers(0, 50)), 2**31 - 1]))


@EXAMPLES
@given(st.data(), tokens, dims, hiddens, st.lists(zero_points, min_size=13, max_size=13), st.integers(0, 2**32 - 1))
def test_block_equals_unfused_kernels(rt, single, data, t, d, h, zps, seed):
    step = data.draw(steps(t), "tokens_per_step")
    rng = np.random.default_rng(seed)
    blk = Block(rng, t, d, h, step, zps, single)
    for x in token_inputs(rng, t, d, blk.zx):
        want = unfused(rt, blk, x)
        got = run_block(rt, blk, x)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("t,d,h", [(1, 1, 1), (1, 7, 3), (13, 5, 20), (32, 16, 64), (300, 9, 36)])
def test_block_shapes_and_steps(rt, single, t, d, h):
    """Fixed shapes (odd D, T = 1, T not a power of two, a larger T) through every kind of step."""
    rng = np.random.default_rng(t * 1000 + d * 10 + h)
    zps = [int(z) for z in rng.integers(-128, 128, 13)]
    for step in sorted({1, 2, 3, t, t + 5}):
        blk = Block(rng, t, d, h, step, zps, single)
        x = rng.integers(-128, 128, (t, d)).astype(np.int8)
        np.testing.assert_array_equal(run_block(rt, blk, x), unfused(rt, blk, x))


@given(st.integers(1, 30), st.integers(1, 12), zero_points, zero_points, st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_attention_rows_in_chunks(rt, single, t, d, zk, zv, seed):
    """accumulate over any split of the rows, round_state, apply row by row == hydra_attention_s8."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.integers(-128, 128, (t, d)).astype(np.int8) for _ in range(3))
    k[rng.integers(0, t)] = zk  # one zero row for phi
    p = AttentionParams(tokens=t, dim=d, q_zero_point=int(rng.integers(-128, 128)), k_zero_point=zk,
                        v_zero_point=zv, kv_shift=int(rng.integers(0, 8)), multiplier=2**30 + 12345,
                        shift=int(rng.integers(-12, 1)), output_zero_point=int(rng.integers(-128, 128)),
                        single_rounding=single)
    scratch = np.zeros((5 * d + 3) // 4, np.int32)
    want = np.empty((t, d), np.int8)
    assert rt.hydra_attention_s8(ctypes.byref(p), ptr(q, np.int8), ptr(k, np.int8), ptr(v, np.int8),
                                 ptr(scratch, np.int32), ptr(want, np.int8)) == HYDRA_OK
    acc = np.zeros(d, np.int32)
    phi = np.zeros(d, np.int8)
    cuts = sorted({0, t, *rng.integers(1, t + 1, 3).tolist()})
    for lo, hi in zip(cuts, cuts[1:]):
        assert rt.hydra_attention_accumulate_s8(ctypes.byref(p), ptr(k[lo:], np.int8), ptr(v[lo:], np.int8), hi - lo,
                                                ptr(acc, np.int32), ptr(phi, np.int8)) == HYDRA_OK
    assert rt.hydra_attention_round_state_s8(ctypes.byref(p), ptr(acc, np.int32)) == HYDRA_OK
    got = q.copy()
    for r in range(t):  # in place, one row at a time
        assert rt.hydra_attention_apply_s8(ctypes.byref(p), ptr(got[r:], np.int8), ptr(acc, np.int32), 1,
                                           ptr(phi, np.int8), ptr(got[r:], np.int8)) == HYDRA_OK
    np.testing.assert_array_equal(got, want)


def test_attention_max_tokens(rt):
    assert rt.hydra_attention_max_tokens(0) == INT32_MAX // (128 * 128)
    assert rt.hydra_attention_max_tokens(-128) == rt.hydra_attention_max_tokens(127) == 65793
    assert rt.hydra_attention_max_tokens(128) == rt.hydra_attention_max_tokens(-129) == 0


def test_block_rejects_bad_params(rt):
    rng = np.random.default_rng(7)
    t, d, h = 5, 3, 8
    blk = Block(rng, t, d, h, 2, [0] * 13)
    size = scratch_bytes(t, d, h, 2)
    backing = np.zeros((size + 4) // 4 + 1, np.int32)
    x = rng.integers(-128, 128, (t, d)).astype(np.int8)
    scratch = ptr(backing, np.int32)

    def status(params, tokens=ptr(x, np.int8), scr=scratch):
        return rt.hydra_block_s8(ctypes.byref(params), tokens, scr)

    assert status(blk.p) == HYDRA_OK
    assert rt.hydra_block_s8(None, ptr(x, np.int8), scratch) == HYDRA_ERR_ARG
    assert status(blk.p, tokens=None) == HYDRA_ERR_ARG
    assert status(blk.p, scr=None) == HYDRA_ERR_ARG
    assert status(blk.p, scr=scratch + 2) == HYDRA_ERR_ARG  # misaligned
    shape_breakers = [
        ("tokens", 0), ("dim", 0), ("hidden", 0), ("tokens_per_step", 0), ("tokens_per_step", -3),
        ("norm1.dim", d + 1), ("norm2.dim", 1), ("q.in_features", d + 1), ("k.out_features", d - 1),
        ("v.in_features", h), ("proj.out_features", h), ("fc1.out_features", d), ("fc1.in_features", h),
        ("fc2.in_features", d), ("fc2.out_features", h), ("attn.dim", d + 1), ("attn.tokens", t + 1),
        ("attn.tokens", 0),
    ]
    for field, value in shape_breakers:
        p = copy_params(blk.p)
        obj = p
        *path, last = field.split(".")
        for name in path:
            obj = getattr(obj, name)
        setattr(obj, last, value)
        assert status(p) == HYDRA_ERR_SHAPE, field
        assert rt.hydra_block_s8_get_buffer_size(ctypes.byref(p)) == 0, field
    # beyond T_max (Vmax = 255 at zv = -128): the int32 state could overflow
    p = copy_params(blk.p)
    p.tokens = p.attn.tokens = 65794
    p.attn.v_zero_point = -128
    assert status(p) == HYDRA_ERR_SHAPE
    p.attn.v_zero_point = 200
    assert status(p) == HYDRA_ERR_ARG
    # a scratch size past int32
    p = copy_params(blk.p)
    p.tokens = p.attn.tokens = p.tokens_per_step = 20000
    p.hidden = p.fc1.out_features = p.fc2.in_features = 2**17
    assert rt.hydra_block_s8_get_buffer_size(ctypes.byref(p)) == 0
    assert status(p) == HYDRA_ERR_SHAPE
    # a sub-op's own range check comes through
    p = copy_params(blk.p)
    p.residual2.left_shift = 24
    assert status(p) == HYDRA_ERR_ARG
    assert rt.hydra_block_s8_get_buffer_size(None) == 0
