"""The C runtime builds clean, stays within its MCU constraints, and is UB-free.

- every source compiles alone with -Werror -pedantic (and stricter warnings),
  and as 32-bit freestanding code (rounding is no build option: each params
  struct's single_rounding picks it per call);
- no float, no 128-bit integers, no allocation, no libc beyond the allowed
  headers, and no undefined symbols other than the runtime's own;
- the ctypes mirrors in c_build.py match the C structs;
- a driver exercising every primitive and kernel on extreme values, in place
  and with exact-size heap buffers, runs clean under ASan + UBSan.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import c_build
import pytest

pytestmark = pytest.mark.skipif(not c_build.have_compiler(), reason=f"no C compiler ({c_build.CC})")

SOURCES = c_build.c_sources()
EXPECTED = {
    "hydra_requantize.c", "hydra_dot.c", "hydra_linear.c", "hydra_patch_embed.c", "hydra_layernorm.c",
    "hydra_lut.c", "hydra_attention.c", "hydra_add.c", "hydra_mean_pool.c", "hydra_softmax_attention.c",
}


def test_every_op_has_a_source():
    assert EXPECTED <= {p.name for p in SOURCES}


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_compiles_strict(tmp_path, src):
    flags = [*c_build.STRICT_FLAGS, *c_build.EXTRA_WARNINGS]
    c_build.run_cc([*flags, f"-I{c_build.INCLUDE_DIR}", "-c", str(src), "-o", str(tmp_path / "x.o")])


def _m32_available(tmp_path) -> bool:
    probe = tmp_path / "probe.c"
    probe.write_text("int probe(void) { return 0; }\n")
    proc = subprocess.run([c_build.CC, "-m32", "-c", str(probe), "-o", str(tmp_path / "probe.o")], capture_output=True)
    return proc.returncode == 0


def test_compiles_32bit_freestanding(tmp_path):
    """A 32-bit target (size_t and pointers of 32 bits) without a hosted libc."""
    if not _m32_available(tmp_path):
        pytest.skip("the compiler has no -m32 support")
    flags = [*c_build.STRICT_FLAGS, *c_build.EXTRA_WARNINGS, "-m32", "-ffreestanding", f"-I{c_build.INCLUDE_DIR}"]
    for src in SOURCES:
        c_build.run_cc([*flags, "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))])


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


@pytest.mark.parametrize("src", [*SOURCES, c_build.INCLUDE_DIR / "hydra_rt.h"], ids=lambda p: p.name)
def test_no_forbidden_constructs(src):
    code = _strip_comments(src.read_text())
    forbidden = r"\b(float|double|long\s+double|__int128|malloc|calloc|realloc|free|printf|abort|exit)\b"
    assert not re.search(forbidden, code), re.search(forbidden, code)
    includes = set(re.findall(r'#\s*include\s*[<"]([^>"]+)[>"]', code))
    # arm_acle.h / arm_neon.h: the compiler's own intrinsics (hydra_dot.c), no library behind them
    assert includes <= {"stdint.h", "stddef.h", "string.h", "hydra_rt.h", "hydra_tfl.h", "arm_acle.h", "arm_neon.h"}, includes


def test_undefined_symbols(tmp_path):
    """Objects need only each other (and at most memset/memcpy, which compilers may emit)."""
    nm = shutil.which("nm")
    objs = []
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        c_build.run_cc([*c_build.STRICT_FLAGS, f"-I{c_build.INCLUDE_DIR}", "-c", str(src), "-o", str(obj)])
        objs.append(str(obj))
    out = subprocess.run([nm, "-u", *objs], capture_output=True, text=True, check=True).stdout
    undefined = {line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":")}
    defined = subprocess.run([nm, "--defined-only", *objs], capture_output=True, text=True, check=True).stdout
    ours = {line.split()[-1] for line in defined.splitlines() if " T " in line}
    assert undefined - ours <= {"memset", "memcpy", "memmove"}, undefined - ours


LAYOUT_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include "hydra_rt.h"
#define F(s, f) printf(#s " " #f " %zu\n", offsetof(s, f));
#define S(s) printf(#s " sizeof %zu\n", sizeof(s));
int main(void)
{
%s
    return 0;
}
"""


def test_ctypes_struct_layout(tmp_path):
    lines = []
    for cname, cls in c_build.STRUCTS.items():
        lines.append(f"    S({cname})")
        lines += [f"    F({cname}, {field})" for field, _ in cls._fields_]
    src = tmp_path / "layout.c"
    src.write_text(LAYOUT_PROBE.replace("%s", "\n".join(lines)))
    exe = tmp_path / "layout"
    c_build.run_cc(["-std=c99", f"-I{c_build.INCLUDE_DIR}", str(src), "-o", str(exe)])
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        cname, field, value = line.split()
        cls = c_build.STRUCTS[cname]
        got = ctypes.sizeof(cls) if field == "sizeof" else getattr(cls, field).offset
        assert got == int(value), line


# ---- sanitizers ------------------------------------------------------------------

DRIVER = r"""
/* Exercises every primitive and kernel on extreme inputs, with exact-size heap
 * buffers (so ASan sees any overrun) and in place where the API allows it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hydra_rt.h"

#ifndef SINGLE /* the params' single_rounding: the test builds the driver with -DSINGLE=0 and 1 */
#define SINGLE 0
#endif

static int failures;
#define CHECK(c) do { if (!(c)) { printf("FAIL %d: %s\n", __LINE__, #c); failures++; } } while (0)

static uint32_t rng_state = 12345u;
static uint32_t rnd(void) { rng_state = rng_state * 1664525u + 1013904223u; return rng_state >> 8; }

/* pattern 0 random, 1 all -128, 2 all 127, 3 alternating, 4 all equal to z */
static int8_t *buf8(size_t n, int pattern, int z)
{
    int8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++) {
        int v = pattern == 0 ? (int)(rnd() % 256u) - 128 : pattern == 1 ? -128 : pattern == 2 ? 127
              : pattern == 3 ? ((i % 2) ? 127 : -128) : z;
        p[i] = (int8_t)v;
    }
    return p;
}

static volatile uint64_t sink; /* results are XORed in, so the calls are not optimised away */

static void primitives(void)
{
    const int32_t xs[] = {INT32_MIN, INT32_MIN + 1, -65536, -3, -1, 0, 1, 3, 65536, INT32_MAX - 1, INT32_MAX};
    const int32_t ms[] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, 1 << 30, INT32_MAX};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        for (size_t j = 0; j < sizeof ms / sizeof ms[0]; j++)
            for (int32_t s = -40; s <= 40; s++)
                sink ^= (uint64_t)hydra_requantize_double(xs[i], ms[j], s) ^ (uint64_t)hydra_requantize_single(xs[i], ms[j], s);
    const int64_t x64[] = {INT64_MIN, INT64_MIN + 1, -3, -1, 0, 1, 3, INT64_MAX - 1, INT64_MAX};
    for (size_t i = 0; i < sizeof x64 / sizeof x64[0]; i++)
        for (int32_t n = -2; n <= 64; n++)
            sink ^= (uint64_t)hydra_round_shift_s64(x64[i], n);
    const int64_t vs[] = {INT64_MIN, -1, 0, 1, 2, 3, 4, (INT64_C(1) << 62) - 1, INT64_C(1) << 62, INT64_MAX};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        int32_t inv = -7, p = -7;
        hydra_inv_sqrt(vs[i], &inv, &p);
        if (vs[i] >= 1 && vs[i] < (INT64_C(1) << 62))
            CHECK(inv >= (1 << 30) && p >= 0 && p <= 30);
        else
            CHECK(inv == 0 && p == 0);
    }
    hydra_inv_sqrt(5, NULL, NULL);
}

static void linear(void)
{
    const int32_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {2, 300, 3}, {1, 131071, 1}};
    for (size_t c = 0; c < 4; c++)
        for (int pat = 0; pat < 4; pat++) {
            const int32_t T = shapes[c][0], K = shapes[c][1], N = shapes[c][2];
            int8_t *x = buf8((size_t)T * K, pat, 0), *w = buf8((size_t)N * K, pat == 3 ? 1 : pat, 0);
            int8_t *y = malloc((size_t)T * N);
            int32_t *b = malloc(sizeof(int32_t) * N), *m = malloc(sizeof(int32_t) * N), *s = malloc(sizeof(int32_t) * N);
            for (int32_t n = 0; n < N; n++) {
                b[n] = n % 3 == 0 ? INT32_MAX : n % 3 == 1 ? INT32_MIN : 0;
                m[n] = n % 2 ? INT32_MAX : 1 << 30;
                s[n] = n % 2 ? 30 : -31;
            }
            hydra_linear_params p = {T, K, N, w, b, m, s, pat % 2 ? 127 : -128, -128, 127, SINGLE, 0};
            CHECK(hydra_linear_s8(&p, x, y) == HYDRA_OK);
            p.shift = NULL;
            CHECK(hydra_linear_s8(&p, x, y) == HYDRA_ERR_ARG);
            p.shift = s; s[0] = 31;
            CHECK(hydra_linear_s8(&p, x, y) == HYDRA_ERR_ARG);
            s[0] = 0; p.output_zero_point = 128;
            CHECK(hydra_linear_s8(&p, x, y) == HYDRA_ERR_ARG);
            p.output_zero_point = 0; p.rows = 0;
            CHECK(hydra_linear_s8(&p, x, y) == HYDRA_ERR_SHAPE);
            p.rows = T; p.in_features = 131072;
            CHECK(hydra_linear_s8(&p, x, y) == HYDRA_ERR_SHAPE);
            CHECK(hydra_linear_s8(NULL, x, y) == HYDRA_ERR_ARG);
            free(x); free(w); free(y); free(b); free(m); free(s);
        }
}

static void patch_embed(void)
{
    for (int pat = 0; pat < 4; pat++) {
        const int32_t C = 3, H = 8, W = 12, P = 4, D = 5, T = (H / P) * (W / P);
        int8_t *x = buf8((size_t)C * H * W, pat, 0), *w = buf8((size_t)D * C * P * P, pat, 0);
        int8_t *y = malloc((size_t)T * D);
        int32_t b[5] = {INT32_MAX, INT32_MIN, 0, 1, -1}, m[5] = {INT32_MAX, 1 << 30, 0, 1, INT32_MAX};
        int32_t s[5] = {30, -31, 0, 1, -1};
        hydra_patch_embed_params p = {C, H, W, P, D, w, b, m, s, 5, SINGLE, 0, NULL};
        CHECK(hydra_patch_embed_s8(&p, x, y) == HYDRA_OK);
        p.height = 9;
        CHECK(hydra_patch_embed_s8(&p, x, y) == HYDRA_ERR_SHAPE);
        p.height = H; p.patch = 0;
        CHECK(hydra_patch_embed_s8(&p, x, y) == HYDRA_ERR_SHAPE);
        p.patch = 46341; /* p * p overflows int32 */
        CHECK(hydra_patch_embed_s8(&p, x, y) == HYDRA_ERR_SHAPE);
        p.patch = P; s[2] = -32;
        CHECK(hydra_patch_embed_s8(&p, x, y) == HYDRA_ERR_ARG);
        free(x); free(w); free(y);
    }
}

static void layernorm(void)
{
    const int32_t dims[] = {1, 2, 7, 4096};
    for (size_t c = 0; c < 4; c++)
        for (int pat = 0; pat < 5; pat++)
            for (int e = 0; e < 2; e++) {
                const int32_t T = 3, D = dims[c], zx = pat == 2 ? -128 : 127;
                int8_t *x = buf8((size_t)T * D, pat, zx), *y = malloc((size_t)T * D);
                if (pat == 0 && D > 1) x[0] = (int8_t)(zx == 127 ? -128 : 127); /* one outlier: |z| ~ sqrt(D) 2^20 */
                int32_t *g = malloc(sizeof(int32_t) * D);
                int64_t *bt = malloc(sizeof(int64_t) * D);
                for (int32_t i = 0; i < D; i++) {
                    g[i] = i % 2 ? INT32_MAX : INT32_MIN;
                    bt[i] = i % 3 == 0 ? (INT64_C(1) << 62) : i % 3 == 1 ? -(INT64_C(1) << 62) : 0;
                }
                hydra_layernorm_params p = {T, D, zx, e ? INT64_C(1) << 61 : 1, g, bt, e ? 0 : 62, -128, 0};
                CHECK(hydra_layernorm_s8(&p, x, y) == HYDRA_OK);
                CHECK(hydra_layernorm_s8(&p, x, x) == HYDRA_OK); /* in place */
                CHECK(memcmp(x, y, (size_t)T * D) == 0);
                p.eps = 0;
                CHECK(hydra_layernorm_s8(&p, x, y) == HYDRA_ERR_ARG);
                p.eps = (INT64_C(1) << 61) + 1;
                CHECK(hydra_layernorm_s8(&p, x, y) == HYDRA_ERR_ARG);
                p.eps = 1; p.output_shift = 63;
                CHECK(hydra_layernorm_s8(&p, x, y) == HYDRA_ERR_ARG);
                p.output_shift = 20; bt[0] = INT64_MAX;
                CHECK(hydra_layernorm_s8(&p, x, y) == HYDRA_ERR_ARG);
                bt[0] = 0; p.dim = 4097;
                CHECK(hydra_layernorm_s8(&p, x, y) == HYDRA_ERR_SHAPE);
                free(x); free(y); free(g); free(bt);
            }
}

static void lut(void)
{
    int8_t *table = buf8(256, 0, 0), *x = malloc(256), *y = malloc(256);
    for (int i = 0; i < 256; i++)
        x[i] = (int8_t)(i - 128);
    hydra_lut_params p = {256, table};
    CHECK(hydra_lut_s8(&p, x, y) == HYDRA_OK);
    for (int i = 0; i < 256; i++)
        CHECK(y[i] == table[i]);
    CHECK(hydra_lut_s8(&p, x, x) == HYDRA_OK);
    CHECK(memcmp(x, y, 256) == 0);
    p.size = 0;
    CHECK(hydra_lut_s8(&p, x, y) == HYDRA_ERR_SHAPE);
    p.size = 1; p.table = NULL;
    CHECK(hydra_lut_s8(&p, x, y) == HYDRA_ERR_ARG);
    free(table); free(x); free(y);
}

static void attention(void)
{
    const int32_t shapes[][2] = {{1, 1}, {5, 8}, {65793, 1}, {3, 64}};
    const int32_t zs[] = {-128, 127, 0};
    for (size_t c = 0; c < 4; c++)
        for (int pat = 0; pat < 5; pat++)
            for (size_t zi = 0; zi < 3; zi++) {
                const int32_t T = shapes[c][0], D = shapes[c][1], z = zs[zi];
                const size_t n = (size_t)T * D;
                int8_t *q = buf8(n, pat, z), *k = buf8(n, (pat + 2) % 5, z), *v = buf8(n, (pat + 1) % 4, z);
                int8_t *y = malloc(n);
                hydra_attention_params p = {T, D, z, z, z, 0, INT32_MAX, 30, zs[(zi + 1) % 3], SINGLE};
                const int32_t bytes = hydra_attention_s8_get_buffer_size(&p);
                CHECK(bytes == 5 * D);
                void *scratch = malloc((size_t)bytes);
                for (int32_t kv_shift = 0; kv_shift <= 31; kv_shift += 31) {
                    p.kv_shift = kv_shift;
                    CHECK(hydra_attention_s8(&p, q, k, v, scratch, y) == HYDRA_OK);
                    int8_t *q2 = malloc(n);
                    memcpy(q2, q, n);
                    CHECK(hydra_attention_s8(&p, q2, k, v, scratch, q2) == HYDRA_OK); /* output == q */
                    CHECK(memcmp(q2, y, n) == 0);
                    free(q2);
                }
                p.kv_shift = 32;
                CHECK(hydra_attention_s8(&p, q, k, v, scratch, y) == HYDRA_ERR_ARG);
                p.kv_shift = 0;
                CHECK(hydra_attention_s8(&p, q, k, v, (char *)scratch + 1, y) == HYDRA_ERR_ARG);
                if (z != 0) { /* Vmax = 255: T_max = 65793 */
                    p.tokens = 65794;
                    CHECK(hydra_attention_s8(&p, q, k, v, scratch, y) == HYDRA_ERR_SHAPE);
                    p.tokens = T;
                }
                p.dim = 0;
                CHECK(hydra_attention_s8(&p, q, k, v, scratch, y) == HYDRA_ERR_SHAPE);
                CHECK(hydra_attention_s8_get_buffer_size(&p) == 0);
                free(q); free(k); free(v); free(y); free(scratch);
            }
}

static void add(void)
{
    const int32_t n = 1000;
    for (int pat = 0; pat < 4; pat++)
        for (int32_t ls = 0; ls <= 23; ls += 23) {
            int8_t *a = buf8((size_t)n, pat, 0), *b = buf8((size_t)n, (pat + 1) % 4, 0), *y = malloc((size_t)n);
            int8_t *a2 = malloc((size_t)n), *b2 = malloc((size_t)n);
            hydra_add_params p = {n, ls, -128, INT32_MAX, 30, 127, INT32_MAX, 30, INT32_MAX, 30, 127, SINGLE};
            CHECK(hydra_add_s8(&p, a, b, y) == HYDRA_OK);
            memcpy(a2, a, (size_t)n); memcpy(b2, b, (size_t)n);
            CHECK(hydra_add_s8(&p, a2, b, a2) == HYDRA_OK && memcmp(a2, y, (size_t)n) == 0);
            CHECK(hydra_add_s8(&p, a, b2, b2) == HYDRA_OK && memcmp(b2, y, (size_t)n) == 0);
            p.a_shift = -31; p.b_shift = -31; p.output_shift = -31; p.output_multiplier = 1 << 30;
            CHECK(hydra_add_s8(&p, a, b, y) == HYDRA_OK);
            p.left_shift = 24;
            CHECK(hydra_add_s8(&p, a, b, y) == HYDRA_ERR_ARG);
            p.left_shift = 20; p.b_zero_point = -129;
            CHECK(hydra_add_s8(&p, a, b, y) == HYDRA_ERR_ARG);
            free(a); free(b); free(y); free(a2); free(b2);
        }
}

static void mean_pool(void)
{
    const int32_t shapes[][2] = {{1, 1}, {7, 3}, {8421504, 1}};
    for (size_t c = 0; c < 3; c++)
        for (int pat = 1; pat < 3; pat++) {
            const int32_t T = shapes[c][0], D = shapes[c][1];
            int8_t *x = buf8((size_t)T * D, pat, 0), *y = malloc((size_t)D);
            hydra_mean_pool_params p = {T, D, pat == 1 ? 127 : -128, INT32_MAX, 30, 0, SINGLE};
            CHECK(hydra_mean_pool_s8(&p, x, y) == HYDRA_OK);
            p.tokens = 8421505;
            CHECK(hydra_mean_pool_s8(&p, x, y) == HYDRA_ERR_SHAPE);
            p.tokens = T; p.shift = 31;
            CHECK(hydra_mean_pool_s8(&p, x, y) == HYDRA_ERR_ARG);
            free(x); free(y);
        }
}

/* A token loop's mean_pool: begin, accumulate in groups, finish, on an exact-size int32 acc[D]. */
static void mean_pool_steps(void)
{
    const int32_t shapes[][2] = {{1, 1}, {7, 3}, {300, 5}};
    for (size_t c = 0; c < 3; c++)
        for (int pat = 1; pat < 3; pat++) {
            const int32_t T = shapes[c][0], D = shapes[c][1];
            int8_t *x = buf8((size_t)T * D, pat, 0), *want = malloc((size_t)D), *got = malloc((size_t)D);
            int32_t *acc = malloc(sizeof(int32_t) * (size_t)D);
            hydra_mean_pool_params p = {T, D, pat == 1 ? 127 : -128, INT32_MAX, -3, 5, SINGLE};
            CHECK(hydra_mean_pool_s8(&p, x, want) == HYDRA_OK);
            hydra_mean_pool_begin_s8(&p, acc);
            for (int32_t t0 = 0; t0 < T; t0 += 3)
                CHECK(hydra_mean_pool_accumulate_s8(&p, x + (size_t)t0 * (size_t)D, T - t0 < 3 ? T - t0 : 3, acc) == HYDRA_OK);
            CHECK(hydra_mean_pool_finish_s8(&p, acc, got) == HYDRA_OK);
            CHECK(memcmp(got, want, (size_t)D) == 0);
            CHECK(hydra_mean_pool_accumulate_s8(&p, x, T + 1, acc) == HYDRA_ERR_SHAPE);
            CHECK(hydra_mean_pool_accumulate_s8(&p, NULL, 1, acc) == HYDRA_ERR_ARG);
            free(x); free(want); free(got); free(acc);
        }
}

int main(void)
{
    primitives();
    linear();
    patch_embed();
    layernorm();
    lut();
    attention();
    add();
    mean_pool();
    mean_pool_steps();
    printf(failures ? "FAILED %d\n" : "OK\n", failures);
    return failures != 0;
}
"""


@pytest.mark.parametrize("single", [False, True], ids=["double", "single"])
def test_sanitized_driver(tmp_path, single):
    driver = tmp_path / "driver.c"
    driver.write_text(DRIVER)
    exe = tmp_path / "driver"
    flags = [*c_build.STRICT_FLAGS, *c_build.SANITIZE_FLAGS, f"-DSINGLE={int(single)}"]
    flags = [f for f in flags if f != "-O2"] + ["-O1"]  # faster to build, still optimised
    try:
        c_build.run_cc([*flags, f"-I{c_build.INCLUDE_DIR}", str(driver), *map(str, SOURCES), "-o", str(exe)])
    except RuntimeError as exc:
        if "asan" in str(exc).lower() and "cannot find" in str(exc).lower():
            pytest.skip("no ASan runtime for this compiler")
        raise
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                          env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr
