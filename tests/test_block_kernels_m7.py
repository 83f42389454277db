"""The Cortex-M7 fast paths of the transformer block's kernels (add, lut, layernorm, Hydra attention, mean_pool,
patch_embed), run on the M7 under QEMU through tests/target_probe.py, bit for bit against the reference interpreter
(the spec) and against the same probe built with -DHYDRA_PORTABLE_KERNELS (the plain C paths on the same target).

Each case is chosen to reach one path and its edges: the shifts at the bounds that pick a path, zero points at both
ends, all-extreme and random operands. Needs the cross toolchain and QEMU (.ci/run installs them).
"""

from __future__ import annotations

import numpy as np
import pytest
from hydra_edge.ir.graph import Node
from hydra_edge.targets.icount import PORTABLE_CPPFLAGS
from target_probe import probe_folder, run_probe


def _both_builds(folder, rows: np.ndarray) -> np.ndarray:
    """The probe's outputs with the target's kernels; the portable build of the same probe must give the same."""
    got = run_probe(folder, rows)
    portable = run_probe(folder, rows, extra_cppflags=PORTABLE_CPPFLAGS)
    np.testing.assert_array_equal(got, portable)
    return got


# ---- add ---------------------------------------------------------------------------------------------------

ADD_PROBE = """    static int8_t a[65536], b[65536], y[65536];
    int32_t h[13];
    memcpy(h, input, sizeof h);
    for (int32_t i = 0; i < 65536; i++) {
        y[i] = 0;
        a[i] = (int8_t)((i >> 8) - 128);
        b[i] = (int8_t)((i & 255) - 128);
    }
    const hydra_add_params p = {.size = 65536 - h[12], .left_shift = h[0], .a_zero_point = h[1], .a_multiplier = h[2],
                                .a_shift = h[3], .b_zero_point = h[4], .b_multiplier = h[5], .b_shift = h[6],
                                .output_multiplier = h[7], .output_shift = h[8], .output_zero_point = h[9],
                                .single_rounding = h[10]};
    int8_t *out = h[11] == 1 ? a : (h[11] == 2 ? b : y); /* in place on a, on b, or apart */
    const int status = (int)hydra_add_s8(&p, a, b, out);
    memcpy(output, out, 65536);
    return status;"""

# left_shift, (za, ma, sa), (zb, mb, sb), (my, sy), zy, single, where the output goes (0 apart, 1 on a, 2 on b)
ADD_CASES = [
    (20, (13, 2**30, 0), (5, 1179707089, -2), (2109372369, -19), 11, 0, 0),  # a halved, rb 2: a's zp folded
    (20, (-128, 2**30, 0), (127, 2**31 - 1, -1), (2**31 - 1, -1), -128, 0, 2),  # rb 1, ry 1, extreme zero points
    (20, (127, 2**30, 0), (-128, 2**30 + 1, -4), (2**30, -22), 127, 0, 1),  # rb 4 (last folded), ry 22 (last folded)
    (20, (-128, 2**30, 0), (9, 1717986918, -5), (1288490189, -17), -3, 0, 0),  # rb 5: a's zp apart
    (20, (3, 2**30, 0), (-3, 1431655765, -31), (1840700269, -20), 0, 0, 0),  # rb 31
    (20, (60, 2**30, 0), (-60, 2**31 - 1, 0), (2063321981, -19), 4, 0, 2),  # rb 0: b's rescaling rounds nothing
    (20, (2, 1766721061, -2), (-3, 2**30, 0), (2063321981, -19), 4, 0, 2),  # b halved: the operands swapped
    (20, (2, 2**30, 0), (-3, 1766721061, -2), (2**31 - 1, -23), 127, 0, 0),  # ry 23, the last folded
    (20, (2, 2**30, 0), (-3, 1766721061, -2), (2**31 - 1, -23), -128, 0, 0),
    (20, (2, 2**30, 0), (-3, 1766721061, -2), (2**31 - 1, -24), -128, 0, 0),  # ry 24: zy apart (the general loop)
    (20, (2, 2**30, 0), (-3, 1766721061, -2), (2063321981, 0), 4, 0, 0),  # ry 0
    (20, (2, 2**30, 0), (-3, 1766721061, -2), (2063321981, -19), 4, 1, 0),  # single rounding
    (19, (2, 2**30, 0), (-3, 1766721061, -2), (2063321981, -18), 4, 0, 0),  # another left shift
    (20, (3, 1288490189, 0), (-9, 1717986918, -3), (2**31 - 1, -20), 0, 0, 0),  # neither halved
    # b's multiplier tiny (no calibration makes it, the path allows it): b's rescaled values are small and odd or
    # even, so its rounding ties reach the output on the row a == za (the other rows saturate)
    *[(20, (za, 2**30, 0), (-zb, 3001, -rb), (2**31 - 1, -1), zy, 0, 0)
      for za, zb, rb, zy in [(0, 0, 0, 0), (5, -3, 1, 1), (-128, 127, 2, -5), (127, 127, 3, 0), (1, 2, 4, 3),
                             (-2, 9, 5, 0), (100, 100, 6, -1)]],
]


@pytest.mark.parametrize("board", ["stm32f746", "jetson-orin"])
def test_add_on_the_m7(board, tmp_path):
    """hydra_add_s8 on all 256 x 256 operand pairs for each case: every loop the kernel picks on the M7 (a or b halved
    with b's shift 0, 1 to 4 and past 4, the output shift at and past its fold bound, single rounding, other left
    shifts, neither operand halved), in place on either operand; and the same cases through aarch64's NEON loop."""
    from hydra_edge.ops.add import int_ref

    # every third case leaves out the last 7 pairs: a tail after the 16-lane loop, and bytes the kernel must not touch
    cut = [7 if i % 3 == 1 else 0 for i in range(len(ADD_CASES))]
    rows = np.stack([np.array([*c[:1], *c[1], *c[2], *c[3], *c[4:], n], np.int32).view(np.int8)
                     for c, n in zip(ADD_CASES, cut)])
    folder = probe_folder(tmp_path / "add", board, ADD_PROBE, rows.shape[1], 65536, sources=("hydra_add.c",))
    got = _both_builds(folder, rows)
    a = np.repeat(np.arange(-128, 128), 256).astype(np.int8)
    b = np.tile(np.arange(-128, 128), 256).astype(np.int8)
    for out, n, (left, (za, ma, sa), (zb, mb, sb), (my, sy), zy, single, where) in zip(got, cut, ADD_CASES):
        node = Node("add", "add", ["a", "b"], ["y"], {"left_shift": left, "za": za, "ma": ma, "sa": sa, "zb": zb,
                                                      "mb": mb, "sb": sb, "my": my, "sy": sy, "out_zp": zy})
        untouched = (b if where == 2 else a if where == 1 else np.zeros_like(a))[len(a) - n:]
        want = np.concatenate([int_ref(node, a[:len(a) - n], b[:len(a) - n], "single" if single else "double"),
                               untouched])
        np.testing.assert_array_equal(out, want, err_msg=str((board, left, za, zb, sb, sy, zy, single, n)))


# ---- lut -----------------------------------------------------------------------------------------------------

LUT_PROBE = """    static int8_t x[263];
    int8_t table[256];
    int32_t n;
    memcpy(table, input, 256);
    memcpy(&n, input + 256, 4);
    memcpy(x, input + 260, 263);
    memset(output, 0, 263); /* the bytes past the length stay 0 in every build */
    int8_t *out = n < 0 ? x : output; /* n < 0: in place, over -n elements */
    const hydra_lut_params p = {.size = n < 0 ? -n : n, .table = table};
    const int status = (int)hydra_lut_s8(&p, x, out);
    if (out == x)
        memcpy(output, x, 263);
    return status;"""


@pytest.mark.parametrize("board", ["stm32f746", "jetson-orin"])
def test_lut_on_the_m7(board, tmp_path):
    """hydra_lut_s8's four-a-turn loop and its tail (and aarch64's 16 lanes by TBL/TBX): every length from 1 to 7,
    15 to 17 and 256 + 7, apart and in place, all 256 inputs against random tables (the bytes past the length
    untouched)."""
    rng = np.random.default_rng(5)
    rows, cases = [], []
    for n in [1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 263, -1, -3, -4, -7, -16, -17, -263]:
        table = rng.integers(-128, 128, 256).astype(np.int8)
        x = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, 7)]).astype(np.int8)
        rng.shuffle(x)
        rows.append(np.concatenate([table, np.array([n], np.int32).view(np.int8), x]))
        cases.append((table, n, x))
    folder = probe_folder(tmp_path / "lut", board, LUT_PROBE, len(rows[0]), 263, sources=("hydra_lut.c",))
    got = _both_builds(folder, np.stack(rows))
    for out, (table, n, x) in zip(got, cases):
        m = abs(n)
        want = np.zeros(263, np.int8) if n > 0 else x.copy()
        want[:m] = table[x[:m].astype(np.int32) + 128]
        np.testing.assert_array_equal(out, want, err_msg=str(n))


# ---- inv_sqrt --------------------------------------------------------------------------------------------------

INV_SQRT_PROBE = """    int64_t v;
    int32_t r[2];
    memcpy(&v, input, 8);
    hydra_inv_sqrt(v, &r[0], &r[1]);
    memcpy(output, r, 8);"""


def _inv_sqrt_cases(rng: np.random.Generator) -> list[int]:
    """Where the Karatsuba steps and the division correct themselves: every power of two and its neighbours, squares
    and their neighbours (of v, and of the normalised v 4^P: v = floor(k^2 / 4^P) for k in [2^30, 2^31)), the int32
    range Hydra's phi takes, and log-uniform values."""
    vs = {1, 2, 3, 2**62 - 1}
    # sigma = isqrt(v 4^P) is k itself for v = k^2 >= 2^60; these k make the division's first digit take its
    # correction on equality (found by searching every sigma)
    vs |= {k * k for k in [2**30, 2**30 + 1, 1082163199, 1431597514, 1431597516, 2**31 - 1]}
    for k in range(62):
        vs |= {2**k - 1, 2**k, 2**k + 1}
    for k in rng.integers(1, 2**31, 300).tolist():
        vs |= {k * k - 1, k * k, k * k + 1}
    for k in rng.integers(2**30, 2**31, 300).tolist():
        p = int(rng.integers(0, 31))
        vs |= {(k * k >> 2 * p) - 1, k * k >> 2 * p, (k * k >> 2 * p) + 1}
    vs |= set(rng.integers(1, 2**31, 300).tolist())
    vs |= {int(rng.integers(2 ** (b - 1), 2**b)) for b in rng.integers(1, 63, 600).tolist()}
    return sorted(v for v in vs if 1 <= v < 2**62)


def test_inv_sqrt_on_the_m7(tmp_path):
    """hydra_inv_sqrt (the table, two Karatsuba steps of 32 bits, the last one's 33-bit quantities split, the 64 / 32
    division in 16-bit digits) on the M7 against the spec's bit-by-bit isqrt and 64-bit division (numpy), and its
    defined answer outside the domain."""
    from hydra_edge.numerics import fixedpoint as fp

    vs = _inv_sqrt_cases(np.random.default_rng(3))
    outside = [0, -1, 2**62, 2**63 - 1]
    rows = np.array(vs + outside, np.int64).view(np.int8).reshape(-1, 8)
    folder = probe_folder(tmp_path / "isq", "stm32f746", INV_SQRT_PROBE, 8, 8)
    got = _both_builds(folder, rows).view(np.int32).reshape(-1, 2)
    inv, p = fp.inv_sqrt(np.array(vs, np.int64))
    np.testing.assert_array_equal(got[:len(vs), 0], inv)
    np.testing.assert_array_equal(got[:len(vs), 1], p)
    assert got[len(vs):].tolist() == [[0, 0]] * len(outside)


# ---- Hydra attention ---------------------------------------------------------------------------------------

ATT_T, ATT_D = 6, 67
ATT_PROBE = """    int32_t h[11];
    static int8_t q[%(t)d * %(d)d], k[%(t)d * %(d)d], v[%(t)d * %(d)d];
    static int32_t kv[%(d)d], scratch[%(d)d + (%(d)d + 3) / 4];
    memcpy(h, input, sizeof h);
    const int32_t T = h[0], D = h[1];
    const int8_t *at = input + sizeof h;
    memset(output, 0, sizeof q + sizeof kv); /* the bytes past T x D stay 0 in every build */
    memcpy(q, at, sizeof q);
    memcpy(k, at + sizeof q, sizeof k);
    memcpy(v, at + 2 * sizeof q, sizeof v);
    memcpy(kv, at + 3 * sizeof q, sizeof kv);
    const hydra_attention_params p = {.tokens = T, .dim = D, .q_zero_point = h[2], .k_zero_point = h[3],
                                      .v_zero_point = h[4], .kv_shift = h[5], .multiplier = h[6], .shift = h[7],
                                      .output_zero_point = h[8], .single_rounding = h[9]};
    int status;
    if (h[10] == 0) { /* the whole kernel, then the state by the row functions, the rows one at a time */
        status = (int)hydra_attention_s8(&p, q, k, v, scratch, output);
        for (int32_t d = 0; d < D; d++)
            kv[d] = 0;
        for (int32_t t = 0; t < T && status == 0; t++)
            status = (int)hydra_attention_accumulate_s8(&p, k + t * D, v + t * D, 1, kv, (int8_t *)scratch);
        if (status == 0)
            status = (int)hydra_attention_round_state_s8(&p, kv);
    } else { /* apply with the given state, in place on q */
        status = (int)hydra_attention_apply_s8(&p, q, kv, T, (int8_t *)scratch, q);
        memcpy(output, q, sizeof q);
    }
    memcpy(output + sizeof q, kv, sizeof kv);
    return status;""" % {"t": ATT_T, "d": ATT_D}


def _attention_rows(rng: np.random.Generator, t: int, d: int, z: int, kind: int) -> np.ndarray:
    """Rows of one kind: random, flat at the zero point (phi = 0), one feature far from it (phi at +-128, clamped),
    every feature at the far end (the largest sum of squares), or close to the zero point (small sums)."""
    far = -128 if z >= 0 else 127
    if kind == 0:
        rows = rng.integers(-128, 128, (t, d))
    elif kind == 1:
        rows = np.full((t, d), z)
    elif kind == 2:
        rows = np.full((t, d), z)
        rows[np.arange(t), rng.integers(0, d, t)] = [far if i % 2 == 0 else (127 if far == -128 else -128)
                                                     for i in range(t)]
    elif kind == 3:
        rows = np.full((t, d), far)
    else:
        rows = np.clip(z + rng.integers(-2, 3, (t, d)), -128, 127)
    rows = rows.copy()
    if t > 1 and kind != 1:
        rows[rng.integers(0, t)] = z  # a zero row among the others
    return rows.astype(np.int8)


@pytest.mark.parametrize("board", ["stm32f746", "jetson-orin"])
def test_hydra_attention_on_the_m7(board, tmp_path):
    """Hydra attention's M7 paths (four features a word: SSUB16 pairs, SMLAD for the sums of squares, SMLAW for phi,
    SMLAB into the state; the short requantisation of the output) and their tails: D from 1 to 67, zero rows, rows
    whose phi clamps at -128 and 127, the largest sums of squares, zero points at both ends, kv_shift up to 8; then
    apply on given states at the short form's bounds (kv at -2^23, -2^23 + 1 and 2^23 beside a phi of -128; the
    output shift from 1 to 23 and past it; both roundings; M at its ends). On aarch64 the same cases take the NEON
    lanes (eight features a turn: SMLAL of phi into the state, hydra_requantize_x4 for the outputs) and tails."""
    from hydra_edge.numerics.fixedpoint import requantize
    from hydra_edge.ops.base import clamp_s8
    from hydra_edge.ops.hydra_attention import apply_state, int_ref, kv_state, phi

    rng = np.random.default_rng(8)
    rows, cases = [], []

    def add(t, d, zq, zk, zv, kv_shift, m, shift, zy, single, mode, q, k, v, kv):
        qp = np.pad(q.astype(np.int8).ravel(), (0, ATT_T * ATT_D - q.size))  # rows packed at the kernel's stride D
        kp = np.pad(k.astype(np.int8).ravel(), (0, ATT_T * ATT_D - k.size))
        vp = np.pad(v.astype(np.int8).ravel(), (0, ATT_T * ATT_D - v.size))
        head = np.array([t, d, zq, zk, zv, kv_shift, m, shift, zy, single, mode], np.int32)
        kvp = np.pad(kv.astype(np.int32), (0, ATT_D - d))
        rows.append(np.concatenate([head.view(np.int8), qp, kp, vp, kvp.view(np.int8)]))
        cases.append((t, d, zq, zk, zv, kv_shift, m, shift, zy, single, mode, q, k, v, kv))

    for i in range(60):
        d = [1, 3, 4, 5, 8, 64, 67][i % 7]
        t = int(rng.integers(1, ATT_T + 1))
        zq, zk, zv = ([-128, 127, 0][i % 3], [127, -128, 5][i % 3], [-128, 127, -3][i % 3]) if i < 21 else \
            rng.integers(-128, 128, 3).tolist()
        q, k = _attention_rows(rng, t, d, zq, i % 5), _attention_rows(rng, t, d, zk, (i // 5) % 5)
        v = rng.integers(-128, 128, (t, d)) if i % 4 else np.full((t, d), -128 if zv >= 0 else 127)
        shift = [-1, -13, -23, -24, 0, 2][i % 6]
        add(t, d, zq, zk, zv, int(rng.integers(0, 9)), [2**30 + 12345, 2**31 - 1, 0, 1697860045][i % 4], shift,
            int(rng.integers(-128, 128)), int(i % 5 == 4), 0, q, k, v, np.zeros(d, np.int32))
    # apply on given states. Rows with one feature off the zero point (phi -128 on even rows, 127 on odd ones) whose
    # state entry is at the short form's edge: kv = -2^23 makes -128 kv = 2^30 (the long form), -2^23 + 1 and 2^23
    # are the short form's ends; with the output shifts at and past the fold's bound and the zero points at the ends
    edge_cases = [(-1, 0, -(2**23), 2**30), (-23, -128, -(2**23), 2**30), (-23, 127, 2**23, 2**31 - 1),
                  (-23, -128, -(2**23) + 1, 2**31 - 1), (-24, -128, -(2**23) + 1, 2**31 - 1),
                  (-24, 127, 2**23, 2**31 - 1), (-24, 127, -(2**23) + 1, 2**31 - 1), (-12, -3, 2**23 + 1, 1697860045),
                  (-12, 0, -(2**23) - 1, 1697860045), (-31, 5, 2**23, 2**31 - 1), (0, 0, 2**23, 2**30),
                  (5, 0, 100, 2**30), (-13, 4, -(2**23), 0),
                  # states past any short form: products that overflow int32 (the general path saturates them)
                  (-20, 0, 2**30, 2**30), (-20, 0, -(2**31), 2**31 - 1), (-20, 5, 2**31 - 1, 2**30),
                  (-20, 0, -(2**24), 2**30), (-20, 0, 2**24 + 1, 2**30)]
    for i, (shift, zy, edge, m) in enumerate(edge_cases * 2):
        d = [1, 4, 5, 67][i % 4]
        t, zq = ATT_T, [-100, 0, 9, 126][i % 4]
        q = np.full((t, d), zq)
        kv = rng.integers(-(2**23) + 1, 2**23 + 1, d)
        for r in range(t):
            q[r, r % d] = -128 if r % 2 == 0 else 127
            kv[r % d] = edge
        add(t, d, zq, 0, 0, 0, m, shift, zy, int(i >= len(edge_cases)), 1, q, np.zeros((t, d)), np.zeros((t, d)),
            kv)
    # small states, so that the outputs stay in range and the output's rounding ties (y odd and negative for a
    # shift of 1) show; random rows; multipliers at and below 2^30 (the short form needs M >= 2^30)
    for i in range(24):
        d = [3, 4, 64, 67][i % 4]
        t, zq = int(rng.integers(1, ATT_T + 1)), int(rng.integers(-128, 128))
        q = rng.integers(-128, 128, (t, d))
        add(t, d, zq, 0, 0, 0, [2**30, 2**31 - 1, 1697860045, 2**30 - 1, 0][i % 5], [-1, -2, -3][(i // 3) % 3],
            [0, -3, 100][i % 3], int(i % 8 == 7), 1, q, np.zeros((t, d)), np.zeros((t, d)), rng.integers(-6, 7, d))

    folder = probe_folder(tmp_path / "att", board, ATT_PROBE, len(rows[0]), ATT_T * ATT_D + 4 * ATT_D,
                          sources=("hydra_attention.c",))
    got = _both_builds(folder, np.stack(rows))
    for out, (t, d, zq, zk, zv, kv_shift, m, shift, zy, single, mode, q, k, v, kv) in zip(got, cases):
        node = Node("attn", "hydra_attention", ["q", "k", "v"], ["y"],
                    {"zq": zq, "zk": zk, "zv": zv, "kv_shift": kv_shift, "multiplier": m, "shift": shift,
                     "out_zp": zy})
        rounding = "single" if single else "double"
        y = out[:t * d].reshape(t, d)
        what = f"mode {mode} t {t} d {d} z {(zq, zk, zv)} shift {shift} m {m} single {single}"
        if mode == 0:
            np.testing.assert_array_equal(y, int_ref(node, q, k, v, rounding), err_msg=what)
            state = out[ATT_T * ATT_D:].view(np.int32)[:d]
            np.testing.assert_array_equal(state, kv_state(node, k, v), err_msg=what)
        elif np.abs(kv).max() <= 2**23:  # the spec's states (kv_shift's bound)
            np.testing.assert_array_equal(y, apply_state(node, q, kv, rounding), err_msg=what)
        else:  # past the spec's bound the kernel saturates each product to int32 (never wraps)
            prod = np.clip(phi(q, zq) * kv.astype(np.int64), -(2**31), 2**31 - 1)
            np.testing.assert_array_equal(y, clamp_s8(zy + requantize(prod, m, shift, rounding)), err_msg=what)


# ---- layernorm -------------------------------------------------------------------------------------------------

LN_D = 67
LN_PROBE = """    int32_t h[5];
    int64_t eps;
    static int8_t x[%(d)d];
    static int32_t gamma[%(d)d];
    static int64_t beta[%(d)d];
    memcpy(h, input, sizeof h);
    memcpy(&eps, input + 20, 8);
    memcpy(x, input + 28, sizeof x);
    memcpy(gamma, input + 28 + sizeof x, sizeof gamma);
    memcpy(beta, input + 28 + sizeof x + sizeof gamma, sizeof beta);
    const hydra_layernorm_params p = {.tokens = 1, .dim = h[4], .input_zero_point = h[0], .eps = eps,
                                      .gamma = gamma, .beta = beta, .output_shift = h[2], .output_zero_point = h[1],
                                      .narrow_output = h[3]};
    memset(output, 0, 1 + %(d)d); /* a refused call writes nothing */
    output[0] = (int8_t)hydra_layernorm_s8(&p, x, output + 1); /* the status: a refused flag is a result here */
    return 0;""" % {"d": LN_D}


@pytest.mark.parametrize("board", ["stm32f746", "jetson-orin"])
def test_layernorm_on_the_m7_narrow(board, tmp_path):
    """layernorm's M7 paths: the row sums four bytes a word (USADA8, SXTB16/SMLAD; every D from 1 to 8, 64 and 67,
    zero points at both ends, flat and extreme rows) and the narrow output (MLA, SMMULR, SMLAL, the shift on two words,
    SSAT with ASR #1; a copy of the loop per output shift from 20 to 31) where the compiler's narrow_output holds:
    gamma and beta at its bounds (and the saturated outputs they give), every output shift from 2 to 31, eps from 1
    to 2^61 (z's shift from 11 to 41: the rows whose z takes the general loop); and _check refusing the flag where a
    bound fails (and for an output shift of 1), against the reference. Also without the flag at the spec's widest
    shifts (0, 32, 40, 62), gamma and beta: on aarch64 every row takes the int64 NEON lanes (and its D % 8 tail)."""
    from hydra_edge.ops.layernorm import int_ref, narrow_output

    rng = np.random.default_rng(31)
    rows, cases = [], []
    for i in range(248):
        d = [1, 2, 3, 4, 5, 6, 7, 8, 64, 67][i % 10]
        zx, zy = [(-128, 127), (127, -128), (0, 0), (3, -2)][i % 4] if i < 40 else rng.integers(-128, 128, 2).tolist()
        kind = (i // 10) % 5
        x = (rng.integers(-128, 128, d) if kind == 0 else np.full(d, -128) if kind == 1 else
             np.where(np.arange(d) % 2 == 0, -128, 127) if kind == 2 else np.full(d, 5) + (np.arange(d) == 3) if
             kind == 3 else rng.integers(-3, 4, d))
        s = 1 + i % 31  # every output shift: the copies of the loop for 20 to 31, the general one below
        eps = [55, 1, 2**20, 2**40, 2**61][(i // 7) % 5] if i % 3 else 55
        g_max, b_max = min(2 ** (s + 1), 2**31 - 1), 2 ** (s + 28)
        if i % 4 == 0:  # at the bounds
            gamma = np.where(rng.integers(0, 2, d) == 1, g_max, -g_max)
            beta = np.where(rng.integers(0, 2, d) == 1, b_max, -b_max).astype(np.int64)
        else:  # as calibration makes them: |gamma| near 2^15, beta a few output steps
            gamma = rng.integers(-min(2**15, g_max), min(2**15, g_max) + 1, d)
            beta = rng.integers(-(2**(s + 7)), 2**(s + 7) + 1, d, dtype=np.int64)
        assert narrow_output(gamma, beta, s) == (s >= 2)
        if s == 1:  # out_shift 1: the flag must be refused
            want_status = 1
        elif i % 11 == 5:  # a bound broken by one: the flag must be refused
            j = int(rng.integers(0, d))
            if i % 2:
                beta[j] = b_max + 1
            elif g_max < 2**31 - 1:
                gamma[j] = -g_max - 1
            else:
                beta[j] = -b_max - 1
            want_status = 1
        else:
            want_status = 0
        narrow = 1
        if i % 13 == 7:  # no flag, the spec's widest shifts and constants
            s, narrow, want_status = [0, 32, 40, 62][(i // 13) % 4], 0, 0
            gamma = rng.integers(-(2**31) + 1, 2**31, d)
            beta = rng.integers(-(2**62), 2**62, d, dtype=np.int64, endpoint=True)
        head = np.array([zx, zy, s, narrow, d], np.int32).tobytes() + np.array([eps], np.int64).tobytes()
        xs = np.zeros(LN_D, np.int8)
        xs[:d] = x
        g = np.zeros(LN_D, np.int32)
        g[:d] = gamma
        b = np.zeros(LN_D, np.int64)
        b[:d] = beta
        rows.append(np.frombuffer(head + xs.tobytes() + g.tobytes() + b.tobytes(), np.int8))
        cases.append((x.astype(np.int8), gamma.astype(np.int32), beta, zx, zy, s, eps, d, want_status))
    folder = probe_folder(tmp_path / "ln", board, LN_PROBE, len(rows[0]), 1 + LN_D,
                          sources=("hydra_layernorm.c",))
    got = _both_builds(folder, np.stack(rows))
    for out, (x, gamma, beta, zx, zy, s, eps, d, want_status) in zip(got, cases):
        what = f"d {d} zx {zx} zy {zy} out_shift {s} eps {eps}"
        assert out[0] == want_status, what
        if want_status:
            continue
        node = Node("ln", "layernorm", ["x", "g", "b"], ["y"],
                    {"in_zp": zx, "eps_q": eps, "out_shift": s, "out_zp": zy})
        np.testing.assert_array_equal(out[1:1 + d], int_ref(node, x[None], gamma, beta, "double")[0], err_msg=what)


# ---- patch_embed -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_patch_embed_on_the_m7(rounding, tmp_path):
    """patch_embed on the M7: patches of at most 128 bytes gathered two at a time into linear's rows (its token
    pairs, and a lone last patch where the count is odd), D with and without a remainder of 4, K not a multiple of 4,
    at the gather bound (128) and past it (the per-row dot2 path on [D, C, p, p] weights), a prefix row, extreme and
    random operands, biases that keep the short requantisation and ones that do not; against the reference and the
    portable build."""
    from hydra_edge.codegen.emit_c import emit_project, kernel_scratch
    from hydra_edge.ir.graph import Graph
    from hydra_edge.memory.planner import plan_memory
    from hydra_edge.ops.linear import c_defines as linear_defines
    from hydra_edge.ops.linear import right_only
    from hydra_edge.targets import runner
    from hydra_edge.targets.host import RunError
    from hydra_edge.validate.bitexact import reference_outputs, validate_build
    from test_kernels import act, inputs_for

    rng = np.random.default_rng(23)
    # channels, patch, patches down, patches across, D, prefix rows, bias bound
    for c, p, hy, wx, d, prefix, bias_bound in [(3, 4, 3, 3, 64, 0, 999), (3, 2, 1, 3, 5, 1, 2**29 + 5),
                                                (2, 8, 1, 2, 13, 0, 999), (1, 3, 2, 2, 4, 2, 50),
                                                (3, 7, 1, 3, 6, 0, 999), (1, 1, 1, 1, 3, 0, 9)]:
        k = c * p * p
        g = Graph(meta={"rounding": rounding})
        zx, zy = int(rng.integers(-128, 128)), int(rng.integers(-20, 20))
        x = act(g, "x", (c, hy * p, wx * p), zx)
        w = rng.integers(-127, 128, (d, c, p, p))
        w[0] = -127  # every product of channel 0 at its extreme with an all -128 input
        g.add_constant("w", w.astype(np.int8))
        g.add_constant("b", rng.integers(-bias_bound, bias_bound + 1, d).astype(np.int32))
        inputs = [x, "w", "b"]
        if prefix:
            g.add_constant("cls", rng.integers(-128, 128, (prefix, d)).astype(np.int8))
            inputs.append("cls")
        y = act(g, "y", (prefix + hy * wx, d), zy)
        m = rng.integers(2**30, 2**31 - 1, d).astype(np.int32)
        s = np.full(d, -int(np.ceil(np.log2(np.sqrt(k) * 75 * 73 / 64))), np.int32)
        g.add_node(Node("embed", "patch_embed", inputs, [y], {"patch": p, "multiplier": m, "shift": s,
                                                               "out_zp": np.int32(zy)}))
        g.inputs, g.outputs = [x], [y]
        # linear's kernel serves the gathered patches: it keeps its general requantisation unless this node rounds
        # twice and takes the short form (ops/linear.py LINEAR_CALLERS)
        assert ("HYDRA_LINEAR_RIGHT_ONLY" in linear_defines(g)) == (
            rounding == "double" and right_only(g.tensor("b").data, m, s, k))
        folder = tmp_path / f"pe{k}_{d}"
        emit_project(g, plan_memory(g, kernel_scratch(g)), folder, "stm32f746")
        assert ("_blocked" in (folder / "model.c").read_text()) == (k <= 128)
        xs = inputs_for(rng, g.tensor(x).shape, zx)
        xs[0] = -128
        result = validate_build(folder, g, xs)
        assert result.ok, (k, d, result.mismatches)
        portable = runner.run(folder, xs.reshape(len(xs), -1), extra_cppflags=PORTABLE_CPPFLAGS)
        assert np.array_equal(portable, reference_outputs(g, xs).reshape(portable.shape)), (k, d)
        if rounding == "single" and k <= 128:  # a linear built without what these params need: refused, not zeros
            with pytest.raises(RunError, match="kernel error"):
                runner.run(folder, xs.reshape(len(xs), -1), extra_cppflags="-DHYDRA_LINEAR_RIGHT_ONLY")


# ---- mean_pool -----------------------------------------------------------------------------------------------

MP_T, MP_D = 9, 67
MP_PROBE = """    int32_t h[8];
    static int8_t x[%(t)d * %(d)d];
    static int32_t acc[%(d)d];
    memcpy(h, input, sizeof h);
    memcpy(x, input + sizeof h, sizeof x);
    memset(output, 0, 2 * %(d)d);
    const hydra_mean_pool_params p = {.tokens = h[0], .dim = h[1], .input_zero_point = h[2], .multiplier = h[3],
                                      .shift = h[4], .output_zero_point = h[5], .single_rounding = h[6]};
    int status = (int)hydra_mean_pool_s8(&p, x, output);
    hydra_mean_pool_begin_s8(&p, acc);
    for (int32_t t = 0; t < h[0] && status == 0; t += h[7]) /* groups of h[7] rows, the last one shorter */
        status = (int)hydra_mean_pool_accumulate_s8(&p, x + t * h[1], h[0] - t < h[7] ? h[0] - t : h[7], acc);
    if (status == 0)
        status = (int)hydra_mean_pool_finish_s8(&p, acc, output + %(d)d);
    return status;""" % {"t": MP_T, "d": MP_D}


def test_mean_pool_on_the_m7(tmp_path):
    """mean_pool's M7 accumulation (two rows at a time, four features a word: SXTB16, SXTAB16, SSUB16, SXTAH) and its
    tails (an odd row in a group, D % 4), in groups of 1 to 4 rows and whole, zero points at both ends, rows all at one
    end (the widest lanes), against the reference."""
    from hydra_edge.ops.mean_pool import int_ref

    rng = np.random.default_rng(41)
    rows, cases = [], []
    for i in range(60):
        t, d = [(9, 67), (2, 4), (3, 5), (4, 64), (1, 3), (5, 8)][i % 6]
        zx = [-128, 127, 0, 5][i % 4] if i < 20 else int(rng.integers(-128, 128))
        x = rng.integers(-128, 128, (t, d)) if i % 3 else np.full((t, d), 127 if zx < 0 else -128)
        m, shift = int(rng.integers(2**30, 2**31)), int(rng.integers(-5, 0))  # sums of up to 9 rows into int8
        if i % 7 == 3:  # rows close to the zero point at a scale near 1: every unit of the sums shows
            x, shift = np.clip(zx + rng.integers(-3, 4, (t, d)), -128, 127), 0
        head = np.array([t, d, zx, m, shift, int(rng.integers(-128, 128)), i % 5 == 4, [1, 2, 3, 4][i % 4]], np.int32)
        xs = np.zeros(MP_T * MP_D, np.int8)
        xs[:t * d] = x.ravel()
        rows.append(np.concatenate([head.view(np.int8), xs]))
        cases.append((x.astype(np.int8), head))
    folder = probe_folder(tmp_path / "mp", "stm32f746", MP_PROBE, len(rows[0]), 2 * MP_D,
                          sources=("hydra_mean_pool.c",))
    got = _both_builds(folder, np.stack(rows))
    for out, (x, (t, d, zx, m, shift, zy, single, group)) in zip(got, cases):
        node = Node("mean", "mean_pool", ["x"], ["y"], {"in_zp": zx, "multiplier": m, "shift": shift, "out_zp": zy})
        want = int_ref(node, x, "single" if single else "double")
        np.testing.assert_array_equal(out[:d], want, err_msg=str((t, d, zx, group)))
        np.testing.assert_array_equal(out[MP_D:MP_D + d], want, err_msg=str((t, d, zx, group)))
