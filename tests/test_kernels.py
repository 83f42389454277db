"""Every C kernel against the reference interpreter, bit for bit, on random and extreme parameters.

Each example is a small quantised graph around one op (hypothesis-random shapes with odd sizes
and token counts that are not powers of two; zero points, multipliers and shifts including
-128/127, 0, 2^30, 2^31-1, -31 and positive shifts), emitted, built with ASan+UBSan and run
through the host harness on random and extreme inputs. Ops with several activation operands
(add, hydra_attention) take the extra operands from random lookup tables of the input (the lut
kernel is checked on its own) or, for add, from a constant. The runtime's object files are
compiled once per (runtime content, Makefile) and reused.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hydra_edge.codegen.emit_c import emit_project, kernel_scratch
from hydra_edge.ir.graph import Graph, Node, QuantParams, Tensor
from hydra_edge.memory.planner import plan_memory
from hydra_edge.reference import int_interp
from hydra_edge.targets import host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SANITIZE = True
EXAMPLES = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
INT32_MAX = 2**31 - 1

# -- strategies ----------------------------------------------------------------------------

zero_points = st.one_of(st.integers(-128, 127), st.sampled_from([-128, 127, 0]))
tokens = st.one_of(st.integers(1, 13), st.sampled_from([1, 3, 7]))
dims = st.one_of(st.integers(1, 29), st.sampled_from([1, 5, 17]))
roundings = st.sampled_from(["double", "single"])
seeds = st.integers(0, 2**32 - 1)
# "realistic": M in [2^30, 2^31) and a shift near the one that maps typical accumulators into int8 (outputs
# that neither all saturate nor all round to zero); "any": the whole legal range; "extreme": the edges.
regimes = st.sampled_from(["realistic", "any", "extreme"])
EXTREME_M = [0, 2**30, INT32_MAX, INT32_MAX - 1]
EXTREME_SHIFT = [-31, 0, -1, 1, 30]


def zero_point(data, regime: str, label: str) -> int:
    """Zero points: near the middle when realistic (data of both signs), anywhere or at the edges otherwise."""
    if regime == "realistic":
        return data.draw(st.integers(-48, 48), label)
    return data.draw(zero_points if regime == "any" else st.sampled_from([-128, 127, 0]), label)


def requant_params(data, regime: str, typical: float, label: str = "") -> tuple[int, int]:
    """A per-tensor (multiplier, shift)."""
    if regime == "extreme":
        return data.draw(st.sampled_from(EXTREME_M), f"M{label}"), data.draw(st.sampled_from(EXTREME_SHIFT), f"shift{label}")
    if regime == "any":
        return data.draw(st.integers(0, INT32_MAX), f"M{label}"), data.draw(st.integers(-31, 30), f"shift{label}")
    s = sensible(typical)
    m = data.draw(st.integers(2**30, INT32_MAX), f"M{label}")
    return m, data.draw(st.integers(max(-31, s - 3), min(30, s + 3)), f"shift{label}")


def channel_params(rng: np.random.Generator, n: int, regime: str, typical: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) arrays."""
    if regime == "extreme":
        m = rng.choice(np.array(EXTREME_M), n)
        s = rng.choice(np.array(EXTREME_SHIFT), n)
    elif regime == "any":
        m = rng.integers(0, INT32_MAX, n, endpoint=True)
        s = rng.integers(-31, 30, n, endpoint=True)
    else:
        m = rng.integers(2**30, INT32_MAX, n, endpoint=True)
        s = np.clip(sensible(typical) + rng.integers(-3, 4, n), -31, 30)
    return m.astype(np.int32), s.astype(np.int32)


def bitlen(v: int) -> int:
    return int(v).bit_length()


def sensible(typical: float) -> int:
    """The shift that maps an accumulator of about `typical` magnitude to about 2^7 (M is in [2^30, 2^31))."""
    return int(np.clip(round(8 - np.log2(max(typical, 1.0))), -31, 30))


# -- graphs ---------------------------------------------------------------------------------


def act(g: Graph, name: str, shape: tuple[int, ...], zp: int, scale: float = 0.05) -> str:
    g.add_tensor(Tensor(name, tuple(shape), "int8", QuantParams.per_tensor(scale, zp)))
    return name


def random_lut(g: Graph, rng: np.random.Generator, x: str, name: str, zp: int, constant: int | None = None) -> str:
    """name = table[x] for a random table (or a constant one)."""
    table = np.full(256, constant, np.int8) if constant is not None else rng.integers(-128, 128, 256).astype(np.int8)
    g.add_constant(f"{name}.table", table)
    y = act(g, name, g.tensor(x).shape, zp)
    g.add_node(Node(f"{name}_lut", "lut", [x, f"{name}.table"], [y]))
    return y


def inputs_for(rng: np.random.Generator, shape: tuple[int, ...], zp: int, n: int = 5) -> np.ndarray:
    """Random inputs plus all -128, all 127, all zero point, and rows alternating zero point / random."""
    xs = [rng.integers(-128, 128, shape) for _ in range(n)]
    xs += [np.full(shape, -128), np.full(shape, 127), np.full(shape, zp)]
    mixed = rng.integers(-128, 128, shape)
    if len(shape) >= 2:
        mixed[::2] = zp
    xs.append(mixed)
    return np.stack(xs).astype(np.int8)


# -- building and running --------------------------------------------------------------------


class Runner:
    """Emit, build (runtime objects cached per runtime content and Makefile) and run; compare with run_int."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[tuple, dict[Path, bytes]] = {}

    def check(self, g: Graph, xs: np.ndarray) -> None:
        g.validate()
        folder = Path(tempfile.mkdtemp(dir=self.root))
        try:
            emit_project(g, plan_memory(g, kernel_scratch(g)), folder, "host")
            objdir = folder / ("obj-asan" if SANITIZE else "obj")
            # Keyed by the content of the runtime copied into this build, so that an edited kernel is rebuilt.
            runtime = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((folder / "runtime").rglob("*"))
                                              if p.is_file())).hexdigest()
            key = (runtime, (folder / "Makefile").read_text(), SANITIZE)
            cached = self.cache.get(key)
            for rel, data in (cached or {}).items():  # written after the sources: make sees them up to date
                (objdir / rel).parent.mkdir(parents=True, exist_ok=True)
                (objdir / rel).write_bytes(data)
            ys = host.run(folder, xs, sanitize=SANITIZE)
            if cached is None:
                self.cache[key] = {p.relative_to(objdir): p.read_bytes() for p in (objdir / "runtime").rglob("*.o")}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ref = np.stack([int_interp.run_int(g, x)[0].reshape(-1) for x in xs])
        if not np.array_equal(ys, ref):
            bad = np.argwhere(ys != ref)
            i = tuple(bad[0])
            pytest.fail(
                f"C and reference differ at {len(bad)} places, first at input {i[0]} element {i[1]}: "
                f"C {ys[i]} vs reference {ref[i]}\nnodes: {[(n.op, n.attrs) for n in g.nodes]}"
            )


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(tmp_path_factory.mktemp("kernels"))


# -- one test per op ---------------------------------------------------------------------------


@EXAMPLES
@given(st.data(), tokens, st.integers(1, 40), st.integers(1, 19), regimes, roundings, seeds)
def test_linear(runner, data, t, k, n, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    zx, zy = zero_point(data, regime, "zx"), zero_point(data, regime, "zy")
    flat = data.draw(st.booleans(), "1-D input [K]")
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (k,) if flat else (t, k), zx)
    w = rng.integers(-127, 128, (n, k))
    if data.draw(st.integers(0, 3), "extreme weights") == 0:
        w = rng.choice(np.array([-127, 127]), (n, k))
    bias = rng.integers(-5000, 5001, n)
    if regime != "realistic":
        bound = INT32_MAX - k * 128 * 127  # the compiler's no-overflow rule
        bias = rng.integers(-bound, bound, n, endpoint=True)
    m, s = channel_params(rng, n, regime, np.sqrt(k) * 75 * 73)
    g.add_constant("w", w.astype(np.int8))
    g.add_constant("b", bias.astype(np.int32))
    y = act(g, "y", (n,) if flat else (t, n), zy)
    g.add_node(Node("fc", "linear", [x, "w", "b"], [y], {"multiplier": m, "shift": s, "out_zp": np.int32(zy)}))
    g.inputs, g.outputs = [x], [y]
    runner.check(g, inputs_for(rng, g.tensor(x).shape, zx))


@EXAMPLES
@given(st.data(), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 13),
       regimes, roundings, seeds)
def test_patch_embed(runner, data, c, p, hy, wx, d, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    zx, zy = zero_point(data, regime, "zx"), zero_point(data, regime, "zy")
    k = c * p * p
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (c, hy * p, wx * p), zx)
    bias = rng.integers(-999, 1000, d)
    if regime != "realistic":
        bound = INT32_MAX - k * 128 * 127
        bias = rng.integers(-bound, bound, d, endpoint=True)
    m, s = channel_params(rng, d, regime, np.sqrt(k) * 75 * 73)
    g.add_constant("w", rng.integers(-127, 128, (d, c, p, p)).astype(np.int8))
    g.add_constant("b", bias.astype(np.int32))
    y = act(g, "y", (hy * wx, d), zy)
    attrs = {"patch": p, "multiplier": m, "shift": s, "out_zp": np.int32(zy)}
    g.add_node(Node("embed", "patch_embed", [x, "w", "b"], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    runner.check(g, inputs_for(rng, g.tensor(x).shape, zx))


@EXAMPLES
@given(st.data(), tokens, dims, st.integers(20, 60), regimes, roundings, seeds)
def test_layernorm(runner, data, t, d, out_shift, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    zx, zy = zero_point(data, regime, "zx"), zero_point(data, regime, "zy")
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (t, d), zx)
    # gamma_q = g * 2^G with |gamma_q| <= 2^15, out_shift = 20 + G; beta_q = beta / s_y * 2^out_shift.
    gamma = rng.integers(-(2**15), 2**15 + 1, d)
    beta_bits = out_shift + data.draw(st.integers(0, 8), "beta bits")
    eps_q = data.draw(st.integers(1, 2**20), "eps_q")
    if regime == "extreme":
        gamma = rng.choice(np.array([-(2**15), 0, 2**15]), d)
        eps_q = data.draw(st.sampled_from([1, 2**40]), "eps_q extreme")
        beta_bits = out_shift + 8
    elif regime == "realistic":
        out_shift = 20 + 15 - data.draw(st.integers(0, 7), "log2 max|g|")
        gamma = rng.integers(2**14, 2**15 + 1, d) * rng.choice(np.array([-1, 1]), d)
        beta_bits = out_shift + data.draw(st.integers(0, 6), "beta bits")
    beta_bits = min(beta_bits, 62)  # the kernel's bound: |beta_q| <= 2^62
    beta = rng.integers(-(2**beta_bits), 2**beta_bits, d, endpoint=True)
    g.add_constant("gamma", gamma.astype(np.int32))
    g.add_constant("beta", beta.astype(np.int64))
    y = act(g, "y", (t, d), zy)
    attrs = {"in_zp": np.int32(zx), "eps_q": np.int64(eps_q), "out_shift": np.int32(out_shift), "out_zp": np.int32(zy)}
    g.add_node(Node("ln", "layernorm", [x, "gamma", "beta"], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    runner.check(g, inputs_for(rng, (t, d), zx))


@EXAMPLES
@given(st.lists(st.integers(1, 9), min_size=1, max_size=3), zero_points, roundings, seeds)
def test_lut(runner, shape, zx, rounding, seed):
    rng = np.random.default_rng(seed)
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", tuple(shape), zx)
    y = random_lut(g, rng, x, "y", 0)
    g.inputs, g.outputs = [x], [y]
    n = g.tensor(x).numel
    every_index = np.resize(np.arange(-128, 128), n).reshape(1, *shape)  # all 256 entries, as far as n allows
    runner.check(g, np.concatenate([inputs_for(rng, tuple(shape), zx), every_index]).astype(np.int8))


@EXAMPLES
@given(st.data(), st.one_of(tokens, st.integers(250, 400)), dims, regimes, roundings, seeds)
def test_hydra_attention(runner, data, t, d, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    zq, zk, zv, zy = (zero_point(data, regime, label) for label in ("zq", "zk", "zv", "zy"))
    g = Graph(meta={"rounding": rounding})
    q = act(g, "q", (t, d), zq)
    # k and v from random tables of q; sometimes k is all zk (phi(k) = 0 for every token).
    k = random_lut(g, rng, q, "k", zk, constant=zk if data.draw(st.integers(0, 5), "k all zero") == 0 else None)
    v = random_lut(g, rng, q, "v", zv)
    vmax = max(127 - zv, zv + 128)
    max_tokens = (2**31 - 1) // (128 * vmax)
    kv_shift = max(0, bitlen(t * 128 * vmax) - 23)  # the compiler's rule: |kv| <= 2^23
    if regime != "realistic":
        kv_shift = min(31, kv_shift + data.draw(st.sampled_from([0, 1, 5, 12, 31]), "extra kv_shift"))
    # phi ~ 128 / sqrt(D) per feature, acc ~ sqrt(T) * phi * 75 (random signs); |phi_q * kv| <= 2^30 at worst.
    phi = 128 / np.sqrt(d)
    mult, shift = requant_params(data, regime, phi * np.sqrt(t) * phi * 75 / 2**kv_shift)
    y = act(g, "y", (t, d), zy)
    attrs = {"zq": np.int32(zq), "zk": np.int32(zk), "zv": np.int32(zv), "kv_shift": np.int32(kv_shift),
             "multiplier": np.int32(mult), "shift": np.int32(shift), "out_zp": np.int32(zy),
             "max_tokens": int(max_tokens)}
    g.add_node(Node("attn", "hydra_attention", [q, k, v], [y], attrs))
    g.inputs, g.outputs = [q], [y]
    runner.check(g, inputs_for(rng, (t, d), zq, n=3))


@EXAMPLES
@given(st.data(), st.lists(st.integers(1, 11), min_size=1, max_size=2), regimes, roundings, seeds)
def test_add(runner, data, shape, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    za, zb, zy = (zero_point(data, regime, label) for label in ("za", "zb", "zy"))
    g = Graph(meta={"rounding": rounding})
    a = act(g, "a", tuple(shape), za)
    if data.draw(st.booleans(), "constant b"):
        b = "b"
        g.add_constant(b, rng.integers(-128, 128, shape).astype(np.int8), QuantParams.per_tensor(0.05, zb))
    else:
        b = random_lut(g, rng, a, "b", zb)
    if regime == "realistic":
        # ma, mb encode s / (2 max s) <= 1/2: shifts <= 0, one of them 0 (the larger scale), the other near it.
        # (a - za) * 2^20 ~ 2^26, so sa + sb ~ 2^26; the output shift maps that to ~2^7.
        ma, mb = data.draw(st.integers(2**30, INT32_MAX), "ma"), data.draw(st.integers(2**30, INT32_MAX), "mb")
        sa, sb = 0, -data.draw(st.integers(0, 4), "sb")
        if data.draw(st.booleans(), "exactly 1/2"):  # what the quantiser gives the larger scale (add's shift path)
            ma = 2**30
        if data.draw(st.booleans(), "swap"):
            (ma, sa), (mb, sb) = (mb, sb), (ma, sa)
        my, sy = requant_params(data, regime, 2.0**26, "y")
    else:
        (ma, sa), (mb, sb), (my, sy) = (requant_params(data, regime, 1, label) for label in "aby")
        sa, sb = min(sa, 0), min(sb, 0)  # the operand multipliers are <= 1/2
    y = act(g, "y", tuple(shape), zy)
    attrs = {"left_shift": 20, "za": za, "ma": ma, "sa": sa, "zb": zb, "mb": mb, "sb": sb, "my": my, "sy": sy,
             "out_zp": zy}
    g.add_node(Node("add", "add", [a, b], [y], attrs))
    g.inputs, g.outputs = [a], [y]
    runner.check(g, inputs_for(rng, tuple(shape), za))


@EXAMPLES
@given(st.data(), st.one_of(tokens, st.integers(250, 400)), dims, regimes, roundings, seeds)
def test_mean_pool(runner, data, t, d, regime, rounding, seed):
    rng = np.random.default_rng(seed)
    zx, zy = zero_point(data, regime, "zx"), zero_point(data, regime, "zy")
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (t, d), zx)
    mult, shift = requant_params(data, regime, np.sqrt(t) * 75)
    y = act(g, "y", (d,), zy)
    attrs = {"in_zp": np.int32(zx), "multiplier": np.int32(mult), "shift": np.int32(shift), "out_zp": np.int32(zy)}
    g.add_node(Node("pool", "mean_pool", [x], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    runner.check(g, inputs_for(rng, (t, d), zx))


@EXAMPLES
@given(st.data(), st.integers(1, 7), st.integers(1, 7), st.integers(1, 5), st.integers(1, 6), regimes, roundings,
       seeds)
def test_conv2d(runner, data, h, w, c, cout, regime, rounding, seed):
    """Any kernel, stride and (asymmetric) padding, depthwise or not, the image read channels first or a
    channels-last feature map, a fused clamp; padding reads the input zero point."""
    rng = np.random.default_rng(seed)
    zx, zy = zero_point(data, regime, "zx"), zero_point(data, regime, "zy")
    kh, kw = data.draw(st.integers(1, 3), "kh"), data.draw(st.integers(1, 3), "kw")
    stride = [data.draw(st.integers(1, 3), "sh"), data.draw(st.integers(1, 3), "sw")]
    pad = [data.draw(st.integers(0, 2), f"pad{i}") for i in range(4)]
    if h + pad[0] + pad[2] < kh or w + pad[1] + pad[3] < kw:
        pad = [kh, kw, kh, kw]  # the window must fit the padded input
    dw = data.draw(st.booleans(), "depthwise")
    chw = not dw and data.draw(st.booleans(), "channels-first image input")
    if dw:
        cout = c
    oh, ow = (h + pad[0] + pad[2] - kh) // stride[0] + 1, (w + pad[1] + pad[3] - kw) // stride[1] + 1
    k = kh * kw * (1 if dw else c)
    g = Graph(meta={"rounding": rounding})
    x = act(g, "x", (c, h, w) if chw else (h * w, c), zx)
    wq = rng.integers(-127, 128, (cout, kh, kw, 1 if dw else c))
    if data.draw(st.integers(0, 3), "extreme weights") == 0:
        wq = rng.choice(np.array([-127, 127]), wq.shape)
    bias = rng.integers(-5000, 5001, cout)
    if regime != "realistic":
        bound = INT32_MAX - k * 128 * 127
        bias = rng.integers(-bound, bound, cout, endpoint=True)
    m, s = channel_params(rng, cout, regime, np.sqrt(k) * 75 * 73)
    g.add_constant("w", wq.astype(np.int8))
    g.add_constant("b", bias.astype(np.int32))
    y = act(g, "y", (oh * ow, cout), zy)
    lo = data.draw(st.sampled_from([-128, zy, -5]), "act_min")
    hi = data.draw(st.sampled_from([127, max(lo, 100)]), "act_max")
    attrs = {"in_hw": [h, w], "stride": stride, "padding": pad, "groups": c if dw else 1, "multiplier": m,
             "shift": s, "in_zp": np.int32(zx), "out_zp": np.int32(zy), "act_min": lo, "act_max": hi}
    g.add_node(Node("conv", "conv2d", [x, "w", "b"], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    runner.check(g, inputs_for(rng, g.tensor(x).shape, zx))


@EXAMPLES
@given(st.data(), st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.sampled_from(["max", "avg"]), seeds)
def test_pool2d(runner, data, h, w, c, kind, seed):
    """max_pool2d and avg_pool2d (TFLM's rounding: ties away from zero, padding not counted)."""
    rng = np.random.default_rng(seed)
    kh, kw = data.draw(st.integers(1, 3), "kh"), data.draw(st.integers(1, 3), "kw")
    stride = [data.draw(st.integers(1, 3), "sh"), data.draw(st.integers(1, 3), "sw")]
    pad = [data.draw(st.integers(0, kh - 1), "pt"), data.draw(st.integers(0, kw - 1), "pl"),
           data.draw(st.integers(0, kh - 1), "pb"), data.draw(st.integers(0, kw - 1), "pr")]
    if h + pad[0] + pad[2] < kh or w + pad[1] + pad[3] < kw:
        pad = [0, 0, 0, 0]
        kh, kw = min(kh, h), min(kw, w)
    oh, ow = (h + pad[0] + pad[2] - kh) // stride[0] + 1, (w + pad[1] + pad[3] - kw) // stride[1] + 1
    zx = data.draw(zero_points, "zx")
    g = Graph()
    x = act(g, "x", (h * w, c), zx)
    y = act(g, "y", (oh * ow, c), zx)
    attrs = {"in_hw": [h, w], "kernel": [kh, kw], "stride": stride, "padding": pad}
    g.add_node(Node("pool", f"{kind}_pool2d", [x], [y], attrs))
    g.inputs, g.outputs = [x], [y]
    runner.check(g, inputs_for(rng, (h * w, c), zx))
