"""The row-level C entry points a token loop calls, against the whole-tensor kernels, byte for byte.

A token loop (passes/stream.py, codegen/emit_c.py) runs each op on groups of rows: linear and layernorm
as their params' check once, then their rows function per group; Hydra attention as
accumulate over any split of the rows, round_state, apply; softmax attention on `query_rows` rows of q at
a time against all keys and values; mean_pool as begin, accumulate over any split, finish. Each must give
the bits of one call over all rows. The library is built with UBSan; both rounding modes (per call).
"""

from __future__ import annotations

import ctypes

import c_build
import numpy as np
import pytest
from c_build import (HYDRA_ERR_ARG, HYDRA_ERR_SHAPE, HYDRA_OK, AddParams, AttentionParams, LayerNormParams,
                     LinearParams, MeanPoolParams, SoftmaxAttentionParams, ptr)
from hydra_edge.ir.graph import Node
from hydra_edge.ops.softmax_attention import softmax_exp_table
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(not c_build.have_compiler(), reason=f"no C compiler ({c_build.CC})")

INT32_MAX = 2**31 - 1
zero_points = st.one_of(st.integers(-128, 127), st.sampled_from([-128, 0, 127]))


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """The runtime under UBSan (undefined behaviour aborts)."""
    return c_build.build_runtime_lib(tmp_path_factory.mktemp("rt"), sanitize=True)


roundings = st.sampled_from([0, 1])  # each params struct's single_rounding


def _splits(rng: np.random.Generator, t: int) -> list[tuple[int, int]]:
    cuts = sorted({0, t, *rng.integers(1, t + 1, 3).tolist()})
    return list(zip(cuts, cuts[1:]))


@given(st.integers(1, 30), st.integers(1, 12), zero_points, zero_points, roundings, st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_attention_rows_in_chunks(rt, t, d, zk, zv, single, seed):
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
    for lo, hi in _splits(rng, t):
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


def _softmax(rt, p: SoftmaxAttentionParams, q, k, v, rows: int, key_sums: bool = False) -> np.ndarray:
    """hydra_softmax_attention_s8 on groups of `rows` query rows; with key_sums, the token loop's pair
    (key sums once, then hydra_softmax_attention_rows_s8 per group)."""
    scratch = np.zeros(2 * p.tokens, np.int32)
    sums = np.zeros(p.heads * p.tokens, np.int32)
    if key_sums:
        assert rt.hydra_softmax_attention_key_sums_s8(ctypes.byref(p), ptr(k, np.int8), ptr(sums, np.int32)) == HYDRA_OK
    out = np.zeros_like(q)
    for lo in range(0, q.shape[0], rows):
        p.query_rows = min(rows, q.shape[0] - lo)
        args = (ptr(q[lo:], np.int8), ptr(k, np.int8), ptr(v, np.int8))
        if key_sums:
            status = rt.hydra_softmax_attention_rows_s8(ctypes.byref(p), *args, ptr(sums, np.int32),
                                                        ptr(out[lo:], np.int8), ptr(scratch, np.int32))
        else:
            status = rt.hydra_softmax_attention_s8(ctypes.byref(p), *args, ptr(out[lo:], np.int8),
                                                   ptr(scratch, np.int32))
        assert status == HYDRA_OK
    return out


@given(st.integers(1, 40), st.sampled_from([(4, 1), (6, 2), (8, 4), (12, 3)]), zero_points, zero_points, roundings,
       st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_softmax_query_rows_in_groups(rt, t, dims, zq, zk, single, seed):
    """query_rows rows of q at a time, against all keys and values, with the key sums per call or once before
    == all T rows in one call."""
    d, heads = dims
    rng = np.random.default_rng(seed)
    q, k, v = (rng.integers(-128, 128, (t, d)).astype(np.int8) for _ in range(3))
    table = softmax_exp_table()
    p = SoftmaxAttentionParams(tokens=t, dim=d, heads=heads, q_zero_point=zq, k_zero_point=zk,
                               v_zero_point=int(rng.integers(-128, 128)), exp_multiplier=2**30 + 777,
                               exp_shift=int(rng.integers(-10, 2)), exp_table=ptr(table, np.int32),
                               exp_table_size=len(table), multiplier=2**30 + 99, shift=int(rng.integers(-20, -5)),
                               output_zero_point=int(rng.integers(-128, 128)), single_rounding=single)
    whole = _softmax(rt, p, q, k, v, t)
    for rows in sorted({1, 3, max(1, t // 2), t}):
        np.testing.assert_array_equal(_softmax(rt, p, q, k, v, rows), whole)
        np.testing.assert_array_equal(_softmax(rt, p, q, k, v, rows, key_sums=True), whole)


def test_softmax_rejects_bad_query_rows(rt):
    table = softmax_exp_table()
    q = np.zeros((4, 4), np.int8)
    scratch = np.zeros(8, np.int32)
    for rows in (0, -1, 5):
        p = SoftmaxAttentionParams(tokens=4, dim=4, heads=1, query_rows=rows, exp_table=ptr(table, np.int32),
                                   exp_table_size=len(table), multiplier=2**30, exp_multiplier=2**30)
        assert rt.hydra_softmax_attention_s8(ctypes.byref(p), ptr(q, np.int8), ptr(q, np.int8), ptr(q, np.int8),
                                             ptr(q, np.int8), ptr(scratch, np.int32)) == HYDRA_ERR_SHAPE
        assert rt.hydra_softmax_attention_rows_s8(ctypes.byref(p), ptr(q, np.int8), ptr(q, np.int8), ptr(q, np.int8),
                                                  ptr(scratch, np.int32), ptr(q, np.int8),
                                                  ptr(scratch, np.int32)) == HYDRA_ERR_SHAPE
    p.query_rows = 4
    assert rt.hydra_softmax_attention_rows_s8(ctypes.byref(p), ptr(q, np.int8), ptr(q, np.int8), ptr(q, np.int8),
                                              None, ptr(q, np.int8), ptr(scratch, np.int32)) == HYDRA_ERR_ARG
    assert rt.hydra_softmax_attention_key_sums_s8(ctypes.byref(p), ptr(q, np.int8), None) == HYDRA_ERR_ARG


@given(st.integers(1, 50), st.integers(1, 20), zero_points, zero_points, roundings, st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_mean_pool_in_groups(rt, t, d, zx, zy, single, seed):
    """begin, accumulate over any split of the rows, finish == hydra_mean_pool_s8."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (t, d)).astype(np.int8)
    p = MeanPoolParams(tokens=t, dim=d, input_zero_point=zx, multiplier=2**30 + int(rng.integers(0, 2**30)),
                       shift=int(rng.integers(-31, 1)), output_zero_point=zy, single_rounding=single)
    want = np.zeros(d, np.int8)
    assert rt.hydra_mean_pool_s8(ctypes.byref(p), ptr(x, np.int8), ptr(want, np.int8)) == HYDRA_OK
    acc = np.full(d, 12345, np.int32)  # begin must clear it
    rt.hydra_mean_pool_begin_s8(ctypes.byref(p), ptr(acc, np.int32))
    for lo, hi in _splits(rng, t):
        assert rt.hydra_mean_pool_accumulate_s8(ctypes.byref(p), ptr(x[lo:], np.int8), hi - lo,
                                                ptr(acc, np.int32)) == HYDRA_OK
    got = np.zeros(d, np.int8)
    assert rt.hydra_mean_pool_finish_s8(ctypes.byref(p), ptr(acc, np.int32), ptr(got, np.int8)) == HYDRA_OK
    np.testing.assert_array_equal(got, want)
    for rows in (0, t + 1):
        assert rt.hydra_mean_pool_accumulate_s8(ctypes.byref(p), ptr(x, np.int8), rows,
                                                ptr(acc, np.int32)) == HYDRA_ERR_SHAPE


def _in_groups(fn, p, rows_field: str, x: np.ndarray, out_width: int, group: int) -> np.ndarray:
    """fn(params, x rows, y rows) over groups of `group` rows, params' rows_field set per group."""
    t = x.shape[0]
    y = np.zeros((t, out_width), np.int8)
    for lo in range(0, t, group):
        setattr(p, rows_field, min(group, t - lo))
        assert fn(ctypes.byref(p), ptr(x[lo:], np.int8), ptr(y[lo:], np.int8)) == HYDRA_OK
    setattr(p, rows_field, t)
    return y


@given(st.integers(1, 20), st.integers(1, 40), st.integers(1, 40), roundings, st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_linear_checked_once_then_rows_in_groups(rt, t, k, n, single, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (t, k)).astype(np.int8)
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    b = rng.integers(-2**20, 2**20, n).astype(np.int32)
    m = rng.integers(2**30, 2**31 - 1, n).astype(np.int32)
    sh = rng.integers(-31, 31, n).astype(np.int32)
    p = LinearParams(rows=t, in_features=k, out_features=n, weights=ptr(w, np.int8), bias=ptr(b, np.int32),
                     multiplier=ptr(m, np.int32), shift=ptr(sh, np.int32), output_zero_point=int(rng.integers(-128, 128)),
                     activation_min=-128, activation_max=127, single_rounding=single)
    whole = np.zeros((t, n), np.int8)
    assert rt.hydra_linear_s8(ctypes.byref(p), ptr(x, np.int8), ptr(whole, np.int8)) == HYDRA_OK
    assert rt.hydra_linear_s8_check(ctypes.byref(p)) == HYDRA_OK
    for group in sorted({1, 3, t}):
        np.testing.assert_array_equal(_in_groups(rt.hydra_linear_rows_s8, p, "rows", x, n, group), whole)
    sh[n // 2] = 31  # a shift out of range: refused by the check (and by the whole kernel), before any row
    assert rt.hydra_linear_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG
    assert rt.hydra_linear_s8(ctypes.byref(p), ptr(x, np.int8), ptr(whole, np.int8)) == HYDRA_ERR_ARG
    p.rows = 0
    assert rt.hydra_linear_rows_s8(ctypes.byref(p), ptr(x, np.int8), ptr(whole, np.int8)) == HYDRA_ERR_SHAPE
    assert rt.hydra_linear_rows_s8(ctypes.byref(p), None, ptr(whole, np.int8)) == HYDRA_ERR_ARG


@given(st.integers(1, 6), st.integers(1, 70), st.integers(1, 40), roundings, st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_linear_right_only_gives_the_same_bits_and_is_checked(rt, t, k, n, single, seed):
    """right_only = 1 (the compiler's hint: multipliers below 1, |bias| < 2^29) takes hydra_requantize_right: the
    same bytes as the general path on random and extreme inputs; _check refuses the hint where it does not hold."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (t, k)).astype(np.int8)
    x[0] = -128 if seed % 2 else 127  # a row at the extreme
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    b = rng.integers(-2**29 + 1, 2**29, n).astype(np.int32)
    m = rng.integers(2**30, 2**31 - 1, n).astype(np.int32)
    sh = rng.integers(-31, 1, n).astype(np.int32)
    p = LinearParams(rows=t, in_features=k, out_features=n, weights=ptr(w, np.int8), bias=ptr(b, np.int32),
                     multiplier=ptr(m, np.int32), shift=ptr(sh, np.int32), output_zero_point=int(rng.integers(-128, 128)),
                     activation_min=-128, activation_max=127, single_rounding=single)
    general, right = np.zeros((t, n), np.int8), np.zeros((t, n), np.int8)
    assert rt.hydra_linear_s8(ctypes.byref(p), ptr(x, np.int8), ptr(general, np.int8)) == HYDRA_OK
    p.right_only = 1
    assert rt.hydra_linear_s8(ctypes.byref(p), ptr(x, np.int8), ptr(right, np.int8)) == HYDRA_OK
    np.testing.assert_array_equal(right, general)
    sh[n - 1] = 1  # a multiplier above 1: the hint is refused
    assert rt.hydra_linear_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG
    sh[n - 1], b[0] = 0, 2**29  # a bias too large for the hint
    assert rt.hydra_linear_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG
    b[0], p.right_only = 0, 2
    assert rt.hydra_linear_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG


@pytest.mark.parametrize("out_shift", [0, 1, 31, 62])
@pytest.mark.parametrize("d", [1, 7, 4096])
def test_layernorm_at_the_bounds_of_its_rounding_shifts(rt, d, out_shift):
    """hydra_layernorm.c forms round_shift's x + 2^(n-1) directly, relying on the check's bounds (|beta| <= 2^62,
    |gamma| < 2^31, D <= 4096): at those bounds, under UBSan (no overflow), it gives the reference's bytes."""
    from hydra_edge.ir.graph import Node
    from hydra_edge.ops.layernorm import int_ref

    x = np.where(np.arange(2 * d).reshape(2, d) % 2 == 0, -128, 127).astype(np.int8)
    x[1, 0] = 0  # the second row off balance
    gamma = np.where(np.arange(d) % 2 == 0, 2**31 - 1, -(2**31) + 1).astype(np.int32)
    beta = np.where(np.arange(d) % 3 == 0, 2**62, -(2**62)).astype(np.int64)
    p = LayerNormParams(tokens=2, dim=d, input_zero_point=-128, eps=1, gamma=ptr(gamma, np.int32),
                        beta=ptr(beta, np.int64), output_shift=out_shift, output_zero_point=0)
    got = np.zeros((2, d), np.int8)
    assert rt.hydra_layernorm_s8(ctypes.byref(p), ptr(x, np.int8), ptr(got, np.int8)) == HYDRA_OK
    node = Node("ln", "layernorm", ["x", "g", "b"], ["y"],
                {"in_zp": -128, "eps_q": 1, "out_shift": out_shift, "out_zp": 0})
    np.testing.assert_array_equal(got, int_ref(node, x, gamma, beta, "double"))


LN_PROBE_DIM = 67
LN_PROBE = """    int32_t head[3];
    int64_t eps;
    static int32_t gamma[%(d)d];
    static int64_t beta[%(d)d];
    memcpy(head, input, 12);
    memcpy(&eps, input + 12, 8);
    memcpy(gamma, input + 20 + %(d)d, sizeof gamma);
    memcpy(beta, input + 20 + %(d)d + sizeof gamma, sizeof beta);
    const hydra_layernorm_params p = {.tokens = 1, .dim = %(d)d, .input_zero_point = head[0], .eps = eps,
                                      .gamma = gamma, .beta = beta, .output_shift = head[2],
                                      .output_zero_point = head[1]};
    return (int)hydra_layernorm_s8(&p, input + 20, output);""" % {"d": LN_PROBE_DIM}


def test_layernorm_on_the_m7(tmp_path):
    """The M7 build of layernorm (SMMULR for z, the output's shift on two words where 41 - P <= 32 and
    out_shift <= 31; the general loop elsewhere) against the reference, one token per case: output shifts from 0 to
    62, eps from 1 to 2^61 (z's shift from 11 to 41), gamma and beta up to the spec's bounds (saturated outputs),
    flat, extreme and random rows, zero points at both ends (QEMU; the cross toolchain)."""
    from hydra_edge.ops.layernorm import int_ref
    from target_probe import probe_folder, run_probe

    d, rng = LN_PROBE_DIM, np.random.default_rng(21)
    rows, cases = [], []
    for i in range(160):
        zx, zy = [(-128, 127), (127, -128), (0, 0)][i % 3] if i < 30 else rng.integers(-128, 128, 2).tolist()
        kind = i % 5
        x = (rng.integers(-128, 128, d) if kind == 0 else np.full(d, -128) if kind == 1 else
             np.where(np.arange(d) % 2 == 0, -128, 127) if kind == 2 else np.full(d, 5) + (np.arange(d) == 3) if
             kind == 3 else rng.integers(-3, 4, d))
        out_shift = [0, 1, 15, 29, 31, 32, 40, 62][i % 8]
        eps = [1, 2**10, 2**40, 2**61, int(rng.integers(1, 2**20))][(i // 8) % 5]
        g_bits, b_bits = [4, 16, 31][(i // 3) % 3], [0, 30, 45, 62][(i // 4) % 4]
        gamma = rng.integers(-(2**g_bits) + 1, 2**g_bits, d)
        beta = rng.integers(-(2**b_bits), 2**b_bits, d, dtype=np.int64, endpoint=True)
        head = np.array([zx, zy, out_shift], np.int32).tobytes() + np.array([eps], np.int64).tobytes()
        rows.append(np.frombuffer(head + x.astype(np.int8).tobytes() + gamma.astype(np.int32).tobytes()
                                  + beta.tobytes(), np.int8))
        cases.append((x.astype(np.int8), gamma.astype(np.int32), beta, zx, zy, out_shift, eps))
    folder = probe_folder(tmp_path / "m7", "stm32f746", LN_PROBE, len(rows[0]), d, sources=("hydra_layernorm.c",))
    got = run_probe(folder, np.stack(rows))
    for row, (x, gamma, beta, zx, zy, out_shift, eps) in zip(got, cases):
        node = Node("ln", "layernorm", ["x", "g", "b"], ["y"],
                    {"in_zp": zx, "eps_q": eps, "out_shift": out_shift, "out_zp": zy})
        np.testing.assert_array_equal(row, int_ref(node, x[None], gamma, beta, "double")[0],
                                      err_msg=f"zx {zx} zy {zy} out_shift {out_shift} eps {eps}")


@given(st.integers(1, 20), st.integers(1, 40), zero_points, zero_points, st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_layernorm_checked_once_then_rows_in_groups(rt, t, d, zx, zy, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (t, d)).astype(np.int8)
    gamma = rng.integers(-2**20, 2**20, d).astype(np.int32)
    beta = rng.integers(-2**40, 2**40, d).astype(np.int64)
    p = LayerNormParams(tokens=t, dim=d, input_zero_point=zx, eps=int(rng.integers(1, 2**20)), gamma=ptr(gamma, np.int32),
                        beta=ptr(beta, np.int64), output_shift=int(rng.integers(20, 40)), output_zero_point=zy)
    whole = np.zeros((t, d), np.int8)
    assert rt.hydra_layernorm_s8(ctypes.byref(p), ptr(x, np.int8), ptr(whole, np.int8)) == HYDRA_OK
    assert rt.hydra_layernorm_s8_check(ctypes.byref(p)) == HYDRA_OK
    for group in sorted({1, 3, t}):
        np.testing.assert_array_equal(_in_groups(rt.hydra_layernorm_rows_s8, p, "tokens", x, d, group), whole)
    beta[d - 1] = 2**62 + 1  # outside the spec's bound: refused by the check
    assert rt.hydra_layernorm_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG
    p.tokens = 0
    assert rt.hydra_layernorm_rows_s8(ctypes.byref(p), ptr(x, np.int8), ptr(whole, np.int8)) == HYDRA_ERR_SHAPE


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_add_every_operand_pair(rt, rounding):
    """hydra_add_s8 on all 256 x 256 operand pairs against the reference, for the paths it picks per call: a's or
    b's multiplier exactly 1/2 (the operand of the larger scale: a shift), neither (three requantisations), a
    left shift too large for the short requantisation, and multipliers above 1/2 with positive shifts."""
    from hydra_edge.ops.add import int_ref

    a = np.repeat(np.arange(-128, 128), 256).astype(np.int8)
    b = np.tile(np.arange(-128, 128), 256).astype(np.int8)
    cases = [  # left_shift, (za, ma, sa), (zb, mb, sb), (my, sy), zy
        (20, (13, 2**30, 0), (5, 1179707089, -2), (2109372369, -19), 11),
        (20, (-128, 1531603011, -1), (127, 2**30, 0), (1288490189, -18), -7),
        (20, (3, 1288490189, 0), (-9, 1717986918, -3), (2**31 - 1, -20), 0),
        (1, (0, 2**30, 0), (0, 2**30, 0), (2**30, 0), 0),
        (23, (100, 2**30, 0), (-100, 2**30 + 1, 0), (1431655765, -22), 127),
        (2, (7, 2**31 - 1, 1), (-3, 2**30, 0), (1840700269, 2), -128),
    ]
    for left, (za, ma, sa), (zb, mb, sb), (my, sy), zy in cases:
        p = AddParams(size=len(a), left_shift=left, a_zero_point=za, a_multiplier=ma, a_shift=sa, b_zero_point=zb,
                      b_multiplier=mb, b_shift=sb, output_multiplier=my, output_shift=sy, output_zero_point=zy,
                      single_rounding=int(rounding == "single"))
        got = np.zeros(len(a), np.int8)
        assert rt.hydra_add_s8(ctypes.byref(p), ptr(a, np.int8), ptr(b, np.int8), ptr(got, np.int8)) == HYDRA_OK
        node = Node("add", "add", ["a", "b"], ["y"], {"left_shift": left, "za": za, "ma": ma, "sa": sa, "zb": zb,
                                                      "mb": mb, "sb": sb, "my": my, "sy": sy, "out_zp": zy})
        np.testing.assert_array_equal(got, int_ref(node, a, b, rounding), err_msg=str((left, za, zb, zy)))


@pytest.mark.parametrize("right_only", [0, 1])
def test_linear_check_at_its_bounds(rt, right_only):
    """hydra_linear_s8_check's one pass over the channels: each bound at its edge, accepted, and one past it, refused,
    in the channel it is put in (first, middle or last); under right_only also the multiplier's sign, the bias's
    |b| < 2^29 and K <= 2^15; without it those pass and only the shift's [-31, 30] counts."""
    n, k = 5, 3
    w = np.zeros((n, k), np.int8)
    b = np.zeros(n, np.int32)
    m = np.full(n, 2**30, np.int32)
    sh = np.full(n, -3, np.int32)

    def check(K: int = k) -> int:
        p = LinearParams(rows=1, in_features=K, out_features=n, weights=ptr(w, np.int8), bias=ptr(b, np.int32),
                         multiplier=ptr(m, np.int32), shift=ptr(sh, np.int32), output_zero_point=0,
                         activation_min=-128, activation_max=127, single_rounding=0, right_only=right_only)
        return rt.hydra_linear_s8_check(ctypes.byref(p))

    assert check() == HYDRA_OK
    for c in (0, 2, n - 1):
        for arr, ok, bad_only, bad_always in [
            (sh, [-31, 0], [1, 30], [-32, 31, -(2**31), 2**31 - 1]),
            (b, [2**29 - 1, -(2**29) + 1], [2**29, -(2**29), 2**31 - 1, -(2**31)], []),
            (m, [0, 2**31 - 1], [-1, -(2**31)], []),
        ]:
            keep = arr[c]
            for v in ok:
                arr[c] = v
                assert check() == HYDRA_OK, (c, v)
            for v in bad_only:
                arr[c] = v
                assert check() == (HYDRA_ERR_ARG if right_only else HYDRA_OK), (c, v)
            for v in bad_always:
                arr[c] = v
                assert check() == HYDRA_ERR_ARG, (c, v)
            arr[c] = keep
    assert check(32768) == HYDRA_OK
    assert check(32769) == (HYDRA_ERR_ARG if right_only else HYDRA_OK)


@given(st.integers(1, 70), zero_points, zero_points, st.integers(2, 31), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_layernorm_narrow_output_gives_the_same_bits(rt, d, zx, zy, out_shift, at_bounds, seed):
    """narrow_output (the compiler's flag: out_shift in [2, 31], |gamma_q| <= 2^(s+1), |beta_q| <= 2^(s+28)) takes
    the 32-bit output shift: the same bytes as the general path and the reference, under UBSan; _check refuses the flag
    where a bound fails."""
    from hydra_edge.ops.layernorm import int_ref, narrow_output

    rng = np.random.default_rng(seed)
    s = out_shift
    g_max, b_max = min(2 ** (s + 1), 2**31 - 1), 2 ** (s + 28)
    x = rng.integers(-128, 128, (3, d)).astype(np.int8)
    x[1] = zx  # a flat row
    if at_bounds:
        gamma = np.where(rng.integers(0, 2, d) == 1, g_max, -g_max).astype(np.int32)
        beta = np.where(rng.integers(0, 2, d) == 1, b_max, -b_max).astype(np.int64)
    else:
        gamma = rng.integers(-min(2**15, g_max), min(2**15, g_max) + 1, d).astype(np.int32)
        beta = rng.integers(-(2 ** (s + 7)), 2 ** (s + 7) + 1, d, dtype=np.int64)
    assert narrow_output(gamma, beta, s)
    eps = int(rng.choice([1, 55, 2**20, 2**40]))
    outs = []
    for narrow in (0, 1):
        p = LayerNormParams(tokens=3, dim=d, input_zero_point=zx, eps=eps, gamma=ptr(gamma, np.int32),
                            beta=ptr(beta, np.int64), output_shift=s, output_zero_point=zy, narrow_output=narrow)
        out = np.zeros((3, d), np.int8)
        assert rt.hydra_layernorm_s8(ctypes.byref(p), ptr(x, np.int8), ptr(out, np.int8)) == HYDRA_OK
        outs.append(out)
    np.testing.assert_array_equal(outs[1], outs[0])
    node = Node("ln", "layernorm", ["x", "g", "b"], ["y"], {"in_zp": zx, "eps_q": eps, "out_shift": s, "out_zp": zy})
    np.testing.assert_array_equal(outs[1], int_ref(node, x, gamma, beta, "double"))
    beta[d - 1] = b_max + 1
    assert not narrow_output(gamma, beta, s)
    assert rt.hydra_layernorm_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG
    p.narrow_output, p.output_shift = 1, 1
    assert rt.hydra_layernorm_s8_check(ctypes.byref(p)) == HYDRA_ERR_ARG
