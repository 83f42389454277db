"""The aarch64 linear kernel (runtime_c/src/hydra_linear.c, HYDRA_LINEAR_NEON) on its targets, bit for bit.

A C driver, built for jetson-nano (armv8-a NEON: SMULL/SADALP) and jetson-orin (armv8.2-a+dotprod: SDOT) and
run under qemu-aarch64 with the board's core, checks:

- hydra_requantize_x4 (hydra_rt.h) lane by lane against hydra_requantize (the general form) and
  hydra_requantize_right (the short form), in both rounding modes: every shift the kernel accepts ([-31, 30];
  [-31, 0] for the short form), the multipliers 0, 1, 2^30, 2^31 - 1 (and INT32_MIN, -1 for the general form,
  which takes any int32), accumulators at the ends of each form's range and around the rounding ties, and random
  ones. Each lane holds a different case, so a lane mix-up shows;
- hydra_channel_outputs_x16 against hydra_channel_output_s8 on random and extreme channels (bias + dot
  saturating, every zero point edge, activation clamps);
- hydra_linear_s8 against the spec computed in the driver from the [N, K] weights (int64 sum, then the library's
  hydra_requantize_double / _single and the clamps), on shapes that take every path: 1, 2, 3 and 5 tokens (the
  2-token pass and the odd one), N around 16 (16-output passes, single blocks, the N % 4 rows), K around 16 and
  4 (the 16-column loop, the 4-column groups, the K % 4 tail), unaligned rows, all -128 / all 127 operands, both
  rounding modes and both requantisation forms.

The driver is built with UBSan where the cross toolchain has it (trapping, so any report fails the run).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import c_build
import pytest
from hydra_edge.boards import load_board

BOARDS = ["jetson-nano", "jetson-orin"]

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hydra_rt.h"

#if !defined(HYDRA_LINEAR_NEON_EXPECTED) || !defined(__aarch64__) || !defined(__ARM_NEON)
#error "build for aarch64 with -DHYDRA_LINEAR_NEON_EXPECTED"
#endif

static unsigned long long state = 0x9E3779B97F4A7C15ull;
static unsigned long long next(void) /* splitmix64 */
{
    unsigned long long z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int32_t rand_i32(void) { return (int32_t)(uint32_t)next(); }
static int32_t rand_range(int32_t lo, int32_t hi) /* [lo, hi] */
{
    return (int32_t)((long long)lo + (long long)(next() % (unsigned long long)((long long)hi - lo + 1)));
}

static long failures = 0, checked_lanes = 0, checked_outputs = 0, checked_kernel = 0, unclamped = 0;

/* ---- hydra_requantize_x4, lane by lane ---- */

#define MAXCASES 400000
static int32_t cx[MAXCASES], cm[MAXCASES], cs[MAXCASES];
static int ncases;

static void add_case(int32_t x, int32_t m, int32_t s)
{
    if (ncases < MAXCASES) {
        cx[ncases] = x; cm[ncases] = m; cs[ncases] = s; ncases++;
    }
}

static int32_t expected(int32_t x, int32_t m, int32_t s, int sr, int ro)
{
    if (ro)
        return sr ? hydra_requantize_right(x, m, s, 1) : hydra_requantize_right(x, m, s, 0);
    return sr ? hydra_requantize_single(x, m, s) : hydra_requantize_double(x, m, s);
}

static void run_cases(int sr, int ro)
{
    /* shuffle so that each vector holds unrelated cases */
    for (int i = ncases - 1; i > 0; i--) {
        const int j = (int)(next() % (unsigned long long)(i + 1));
        int32_t t;
        t = cx[i]; cx[i] = cx[j]; cx[j] = t;
        t = cm[i]; cm[i] = cm[j]; cm[j] = t;
        t = cs[i]; cs[i] = cs[j]; cs[j] = t;
    }
    for (int i = 0; i + 4 <= ncases; i += 4) {
        int32_t got[4];
        const int32x4_t x = vld1q_s32(cx + i), m = vld1q_s32(cm + i), s = vld1q_s32(cs + i);
        /* the modes as constants, as the kernel instantiates them */
        const int32x4_t r = sr ? (ro ? hydra_requantize_x4(x, m, s, 1, 1) : hydra_requantize_x4(x, m, s, 1, 0))
                               : (ro ? hydra_requantize_x4(x, m, s, 0, 1) : hydra_requantize_x4(x, m, s, 0, 0));
        vst1q_s32(got, r);
        for (int l = 0; l < 4; l++) {
            const int32_t want = expected(cx[i + l], cm[i + l], cs[i + l], sr, ro);
            checked_lanes++;
            if (got[l] != want && failures++ < 20)
                printf("requant sr=%d ro=%d x=%d M=%d shift=%d: lanes %d, scalar %d\n", sr, ro, cx[i + l], cm[i + l],
                       cs[i + l], got[l], want);
        }
    }
}

static void requant_lanes(int sr, int ro)
{
    const int32_t ms_full[] = {0, 1, 1 << 30, INT32_MAX, INT32_MAX - 1, (1 << 30) + 1, INT32_MIN, -1, -(1 << 30)};
    const int32_t ms_right[] = {0, 1, 1 << 30, INT32_MAX, INT32_MAX - 1, (1 << 30) + 1, 3};
    const int32_t *ms = ro ? ms_right : ms_full;
    const int nms = ro ? (int)(sizeof ms_right / sizeof ms_right[0]) : (int)(sizeof ms_full / sizeof ms_full[0]);
    const int32_t xmax = ro ? (1 << 30) - 1 : INT32_MAX, xmin = ro ? -((1 << 30) - 1) : INT32_MIN;
    const int32_t smax = ro ? 0 : 30;
    ncases = 0;
    for (int32_t s = -31; s <= smax; s++) {
        int32_t xs[128];
        int nx = 0;
        const int32_t fixed[] = {0, 1, -1, 2, -2, 3, -3, xmax, xmin, xmax - 1, xmin + 1, 1 << 29, -(1 << 29),
                                 (1 << 30) - 1, -((1 << 30) - 1), 127, -128, 255, -256, 12345, -12345};
        for (unsigned f = 0; f < sizeof fixed / sizeof fixed[0]; f++)
            xs[nx++] = fixed[f];
        if (!ro) {
            xs[nx++] = INT32_MIN; xs[nx++] = INT32_MAX; xs[nx++] = 1 << 30; xs[nx++] = -(1 << 30);
        }
        /* the ties of the final shift, y = +-(q 2^r + 2^(r-1)) + d: M = 2^31 - 1 keeps y = x (|x| <= 2^30), M = 2^30
         * makes y = floor((x + 1) / 2), so x = 2 y and 2 y - 1 */
        const int32_t r = -s;
        for (int32_t q = 0; r >= 1 && q <= 1; q++)
            for (int32_t d = -1; d <= 1; d++)
                for (int32_t sign = -1; sign <= 1; sign += 2) {
                    const int64_t y = sign * ((int64_t)q * ((int64_t)1 << r) + ((int64_t)1 << (r - 1))) + d;
                    const int64_t cand[3] = {y, 2 * y, 2 * y - 1};
                    for (int c = 0; c < 3; c++)
                        if (cand[c] >= xmin && cand[c] <= xmax)
                            xs[nx++] = (int32_t)cand[c];
                }
        for (int i = 0; i < nx; i++)
            for (int j = 0; j < nms; j++)
                add_case(xs[i], ms[j], s);
        for (int i = 0; i < 400; i++) {
            const int32_t x = ro ? rand_range(xmin, xmax) : rand_i32();
            const int32_t m = ro ? (int32_t)((uint32_t)rand_i32() >> 1) : rand_i32();
            const int32_t small = rand_range(-70000, 70000); /* accumulators of a typical layer */
            add_case(x, m, s);
            add_case(small, m, s);
            add_case(small, rand_range(1 << 30, INT32_MAX), s);
        }
    }
    run_cases(sr, ro);
}

/* ---- hydra_channel_outputs_x16 against hydra_channel_output_s8 ---- */

static void outputs_x16(int sr, int ro)
{
    for (int iter = 0; iter < 3000; iter++) {
        int32_t bias[16], mult[16], shift[16], dot[16];
        for (int c = 0; c < 16; c++) {
            const int kind = (int)(next() % 4);
            if (ro) {
                bias[c] = kind == 0 ? ((1 << 29) - 1) * (c % 2 ? 1 : -1) : rand_range(-(1 << 29) + 1, (1 << 29) - 1);
                dot[c] = kind == 1 ? (1 << 29) * (c % 2 ? 1 : -1) : rand_range(-(1 << 29), 1 << 29);
                mult[c] = kind == 2 ? INT32_MAX : (int32_t)((uint32_t)rand_i32() >> 1);
                shift[c] = rand_range(-31, 0);
            } else {
                bias[c] = kind == 0 ? (c % 2 ? INT32_MAX : INT32_MIN) : rand_i32();
                dot[c] = kind == 1 ? (c % 2 ? INT32_MAX : INT32_MIN) : rand_range(-(1 << 29), 1 << 29);
                mult[c] = kind == 2 ? INT32_MIN : rand_i32();
                shift[c] = rand_range(-31, 30);
            }
            if (kind == 3) { /* a small accumulator at a scale that keeps outputs inside int8 */
                bias[c] = rand_range(-1000, 1000);
                dot[c] = rand_range(-100000, 100000);
                mult[c] = rand_range(1 << 30, INT32_MAX);
                shift[c] = rand_range(-12, -6);
            }
        }
        const int32_t zy = iter % 3 == 0 ? (iter % 2 ? 127 : -128) : rand_range(-128, 127);
        int32_t lo = rand_range(-128, 127), hi = rand_range(-128, 127);
        if (iter % 2) { lo = -128; hi = 127; }
        if (lo > hi) { const int32_t t = lo; lo = hi; hi = t; }
        const hydra_channel_outputs o = {bias, mult, shift, zy, lo, hi};
        const int32x4_t d0 = vld1q_s32(dot), d1 = vld1q_s32(dot + 4), d2 = vld1q_s32(dot + 8), d3 = vld1q_s32(dot + 12);
        int8_t got[16];
        vst1q_s8(got, sr ? (ro ? hydra_channel_outputs_x16(&o, 0, d0, d1, d2, d3, 1, 1)
                               : hydra_channel_outputs_x16(&o, 0, d0, d1, d2, d3, 1, 0))
                         : (ro ? hydra_channel_outputs_x16(&o, 0, d0, d1, d2, d3, 0, 1)
                               : hydra_channel_outputs_x16(&o, 0, d0, d1, d2, d3, 0, 0)));
        for (int c = 0; c < 16; c++) {
            const int8_t want = hydra_channel_output_s8(&o, c, dot[c], sr, ro);
            checked_outputs++;
            if (got[c] != want && failures++ < 20)
                printf("output sr=%d ro=%d bias=%d dot=%d M=%d shift=%d zy=%d [%d, %d]: lanes %d, scalar %d\n", sr,
                       ro, bias[c], dot[c], mult[c], shift[c], zy, lo, hi, got[c], want);
        }
    }
}

/* ---- hydra_linear_s8 against the spec ---- */

/* ops/linear.py blocked_weights */
static void block_weights(const int8_t *w, int32_t N, int32_t K, int8_t *out)
{
    const int32_t fullN = N - N % 4, fullK = K - K % 4;
    size_t o = 0;
    for (int32_t n0 = 0; n0 < fullN; n0 += 4) {
        for (int32_t g = 0; g < fullK; g += 4)
            for (int32_t r = 0; r < 4; r++)
                for (int32_t j = 0; j < 4; j++)
                    out[o++] = w[(size_t)(n0 + r) * (size_t)K + (size_t)(g + j)];
        for (int32_t r = 0; r < 4; r++)
            for (int32_t j = fullK; j < K; j++)
                out[o++] = w[(size_t)(n0 + r) * (size_t)K + (size_t)j];
    }
    for (size_t i = (size_t)fullN * (size_t)K; i < (size_t)N * (size_t)K; i++)
        out[o++] = w[i];
}

static void fill(int8_t *p, size_t n, int mode)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (int8_t)(mode == 0 ? rand_range(-128, 127)
                                  : (mode == 1 ? -128 : (mode == 2 ? 127 : (i % 2 ? 127 : -128))));
}

static void kernel_case(int32_t T, int32_t K, int32_t N, int sr, int ro, int xmode, int wmode)
{
    int8_t *x = malloc((size_t)T * (size_t)K + 1), *w = malloc((size_t)N * (size_t)K);
    int8_t *wb = malloc((size_t)N * (size_t)K + 1), *y = malloc((size_t)T * (size_t)N + 1);
    int32_t *bias = malloc(sizeof(int32_t) * (size_t)N), *mult = malloc(sizeof(int32_t) * (size_t)N);
    int32_t *shift = malloc(sizeof(int32_t) * (size_t)N);
    int8_t *xu = x + 1, *wbu = wb + 1, *yu = y + 1; /* odd addresses: no alignment assumed */
    fill(xu, (size_t)T * (size_t)K, xmode);
    fill(w, (size_t)N * (size_t)K, wmode);
    block_weights(w, N, K, wbu);
    /* a shift that maps about sqrt(K) 2^13 (random operands) or K 2^14 (extreme ones) to about 2^7 */
    double typical = xmode == 0 && wmode == 0 ? 8192.0 : 16384.0;
    int32_t base = 0;
    for (double v = typical * (xmode == 0 && wmode == 0 ? 1.0 : (double)K); v > 128.0; v /= 2.0)
        base--;
    if (xmode == 0 && wmode == 0) /* random sums grow as sqrt(K) 2^12.4; aim at about 2^5, zy beside */
        for (int32_t k = 1; k <= K; k *= 4)
            base--;
    for (int32_t n = 0; n < N; n++) {
        bias[n] = rand_range(-5000, 5000);
        mult[n] = rand_range(1 << 30, INT32_MAX);
        shift[n] = base + rand_range(-1, 1);
        if (shift[n] > 0 && ro)
            shift[n] = 0;
        if (shift[n] < -31)
            shift[n] = -31;
        if (n % 7 == 3) { /* the multiplier and shift edges */
            const int32_t ms[] = {0, 1, 1 << 30, INT32_MAX};
            mult[n] = ms[rand_range(0, 3)];
            shift[n] = ro ? rand_range(-31, 0) : rand_range(-31, 30);
        }
        if (n % 11 == 5 && ro)
            bias[n] = n % 2 ? (1 << 29) - 1 : -(1 << 29) + 1;
        if (n % 11 == 5 && !ro)
            bias[n] = n % 2 ? INT32_MAX - (1 << 22) : INT32_MIN + (1 << 22);
    }
    const int32_t zy = N % 5 == 0 ? (N % 2 ? 127 : -128) : rand_range(-64, 64);
    const int32_t lo = (N % 3 != 1) ? -128 : rand_range(-128, 0), hi = (N % 3 != 1) ? 127 : rand_range(0, 127);
    hydra_linear_params p = {T, K, N, wbu, bias, mult, shift, zy, lo, hi, sr, ro};
    const hydra_status st = hydra_linear_s8(&p, xu, yu);
    if (st != HYDRA_OK) {
        printf("kernel T=%d K=%d N=%d sr=%d ro=%d: status %d\n", T, K, N, sr, ro, (int)st);
        failures++;
    }
    for (int32_t t = 0; t < T && st == HYDRA_OK; t++)
        for (int32_t n = 0; n < N; n++) {
            int64_t acc = bias[n];
            for (int32_t k = 0; k < K; k++)
                acc += (int64_t)xu[(size_t)t * (size_t)K + (size_t)k] * w[(size_t)n * (size_t)K + (size_t)k];
            const int32_t a = acc > INT32_MAX ? INT32_MAX : (acc < INT32_MIN ? INT32_MIN : (int32_t)acc);
            const int64_t r = (int64_t)(sr ? hydra_requantize_single(a, mult[n], shift[n])
                                           : hydra_requantize_double(a, mult[n], shift[n])) + zy;
            int32_t want = r < -128 ? -128 : (r > 127 ? 127 : (int32_t)r);
            want = want < lo ? lo : (want > hi ? hi : want);
            const int32_t got = yu[(size_t)t * (size_t)N + (size_t)n];
            checked_kernel++;
            unclamped += want > lo && want < hi; /* outputs that the clamp did not decide */
            if (got != want && failures++ < 20)
                printf("kernel T=%d K=%d N=%d sr=%d ro=%d x%d w%d: y[%d, %d] = %d, spec %d\n", T, K, N, sr, ro,
                       xmode, wmode, t, n, got, want);
        }
    free(x); free(w); free(wb); free(y); free(bias); free(mult); free(shift);
}

int main(void)
{
    for (int sr = 0; sr <= 1; sr++)
        for (int ro = 0; ro <= 1; ro++) {
            requant_lanes(sr, ro);
            outputs_x16(sr, ro);
        }
    const int32_t Ts[] = {1, 2, 3, 5};
    const int32_t Ks[] = {1, 3, 4, 7, 12, 16, 17, 20, 29, 32, 64, 67, 130};
    const int32_t Ns[] = {1, 2, 3, 4, 5, 8, 11, 15, 16, 17, 20, 24, 31, 32, 33, 64};
    for (unsigned a = 0; a < sizeof Ts / sizeof Ts[0]; a++)
        for (unsigned b = 0; b < sizeof Ks / sizeof Ks[0]; b++)
            for (unsigned c = 0; c < sizeof Ns / sizeof Ns[0]; c++)
                for (int mode = 0; mode < 4; mode++) {
                    const int sr = mode & 1, ro = mode >> 1;
                    kernel_case(Ts[a], Ks[b], Ns[c], sr, ro, 0, 0);
                    if ((a + b + c + (unsigned)mode) % 4 == 0) /* the extreme operands on a quarter of the shapes */
                        kernel_case(Ts[a], Ks[b], Ns[c], sr, ro, 1 + (int)((b + c) % 3), 1 + (int)((a + c) % 3));
                }
    printf("lanes %ld outputs %ld kernel %ld unclamped %ld failures %ld\n", checked_lanes, checked_outputs,
           checked_kernel, unclamped, failures);
    printf(failures ? "FAILED\n" : "OK\n");
    return failures != 0;
}
"""


def _build(board: str, tmp_path, sanitize: bool) -> subprocess.CompletedProcess:
    b = load_board(board)
    driver = tmp_path / "driver.c"
    driver.write_text(DRIVER)
    exe = tmp_path / f"driver_{board}"
    flags = [*c_build.STRICT_FLAGS, *b.cflags, *b.ldflags, "-DHYDRA_LINEAR_NEON_EXPECTED"]
    if sanitize:  # traps: no runtime library needed in the static image, and any report ends the run
        flags += ["-fsanitize=undefined", "-fsanitize-undefined-trap-on-error"]
    sources = [c_build.SRC_DIR / s for s in ("hydra_linear.c", "hydra_dot.c", "hydra_requantize.c")]
    proc = subprocess.run([b.cc, *flags, f"-I{c_build.INCLUDE_DIR}", str(driver), *map(str, sources), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # the board's core, as validate runs it: an instruction the core lacks is SIGILL
    return subprocess.run(["qemu-aarch64", "-cpu", b.raw["emulator"]["cpu"], str(exe)], capture_output=True, text=True,
                          timeout=600, env={})


@pytest.mark.parametrize("board", BOARDS)
def test_linear_neon_bit_exact_on_target(board, tmp_path):
    missing = [t for t in (load_board(board).cc, "qemu-aarch64") if shutil.which(t) is None]
    assert not missing, f"not installed: {', '.join(missing)} (run .ci/run or see docs/boards.md)"
    proc = _build(board, tmp_path, sanitize=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-4000:]
    counts = re.search(r"lanes (\d+) outputs (\d+) kernel (\d+) unclamped (\d+) failures 0", proc.stdout)
    assert counts, proc.stdout[-2000:]
    lanes, outputs, kernel, unclamped = map(int, counts.groups())
    # every shift of both forms with its edge cases (about 75,000 cases a mode), 4 modes of 3000 x 16 channels,
    # every output of every kernel case; most of those not decided by the clamp
    assert lanes > 250_000 and outputs == 4 * 3000 * 16 and kernel == KERNEL_OUTPUTS, counts.group(0)
    assert unclamped > kernel // 2, counts.group(0)


def _kernel_outputs() -> int:
    """T N summed over the driver's kernel cases (main's loops)."""
    ts, ks, ns = [1, 2, 3, 5], [1, 3, 4, 7, 12, 16, 17, 20, 29, 32, 64, 67, 130], [1, 2, 3, 4, 5, 8, 11, 15, 16, 17,
                                                                                  20, 24, 31, 32, 33, 64]
    return sum(t * n * (1 + ((a + b + c + mode) % 4 == 0)) for a, t in enumerate(ts) for b, _ in enumerate(ks)
               for c, n in enumerate(ns) for mode in range(4))


KERNEL_OUTPUTS = _kernel_outputs()


@pytest.mark.parametrize("board", BOARDS)
def test_linear_neon_compiles_strict(board, tmp_path):
    """The aarch64 paths of hydra_linear.c (and hydra_rt.h's NEON output stage) under the strictest warnings."""
    b = load_board(board)
    proc = c_build.compile_strict(b, "hydra_linear.c", tmp_path / "linear.o")
    assert proc.returncode == 0, proc.stderr
    # the NEON kernel is the one compiled: its output stage's SQRDMULH (double rounding) is in the object
    dis = subprocess.run([b.cc.replace("gcc", "objdump"), "-d", str(tmp_path / "linear.o")], capture_output=True,
                         text=True)
    assert dis.returncode == 0 and "sqrdmulh" in dis.stdout, dis.stderr
