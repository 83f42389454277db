"""The quantisation pass: float IR + calibrated ranges -> int8 IR.

Every constant the kernels need is computed here, once, in float64, following
docs/numerics.md; the reference interpreter and the C runtime then do integer
arithmetic only. The pass is pure: a new graph comes out.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import HydraEdgeError
from ..ir.graph import Graph, Node, QuantParams, Tensor
from ..numerics.fixedpoint import (
    bitlen,
    quantize_multiplier,
    quantize_multipliers,
    round_half_away,
)
from ..reference.float_interp import gelu
from .calibrate import Range

INT32_MAX = 2**31 - 1
ADD_LEFT_SHIFT = 20
MAX_LAYERNORM_DIM = 4096
# softmax_attention (docs/numerics.md): exp table in Q15 over [0, 12) in steps of 1/64.
SOFTMAX_EXP_BITS = 15
SOFTMAX_EXP_STEP_BITS = 6
SOFTMAX_EXP_ENTRIES = 768
SOFTMAX_MAX_TOKENS = INT32_MAX // 2**SOFTMAX_EXP_BITS  # the int32 sum of exp values: 65535 tokens
SOFTMAX_MAX_HEAD_DIM = 16384  # keeps |q.k| < 2^30 and every score difference inside int32


class QuantizationError(HydraEdgeError, ValueError):
    """A model whose constants do not fit the integer contract."""


def activation_qparams(r: Range) -> QuantParams:
    lo, hi = min(r.lo, 0.0), max(r.hi, 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise QuantizationError("calibration produced a non-finite activation range (NaN or inf in the float model)")
    if hi - lo <= 0:
        lo, hi = 0.0, 1e-6
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round_half_away(-128.0 - lo / scale), -128, 127))
    return QuantParams.per_tensor(scale, zero_point)


def quantize_array(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float -> int8 with an activation's scale and zero point (docs/numerics.md, Quantisation)."""
    # x / scale beyond +-2^16 saturates either way: clipped first so that a value far outside the
    # calibrated range (percentile calibration, an outlier) saturates instead of overflowing int64
    v = np.clip(np.asarray(x, np.float64) / scale, -65536.0, 65536.0)
    return np.clip(round_half_away(v) + zero_point, -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (scale * (q.astype(np.float64) - zero_point)).astype(np.float32)


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per output channel (axis 0) in [-127, 127]."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    q = np.clip(round_half_away(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale


def softmax_exp_table() -> np.ndarray:
    """exp(-i / 64) in Q15 for i in [0, 768): table[0] = 2^15, and 0 from i = 710 on."""
    i = np.arange(SOFTMAX_EXP_ENTRIES, dtype=np.float64)
    return round_half_away(np.exp(-i / 2**SOFTMAX_EXP_STEP_BITS) * 2**SOFTMAX_EXP_BITS).astype(np.int32)


def _multiplier(real: float, what: str) -> tuple[int, int]:
    try:
        return quantize_multiplier(real)
    except ValueError as exc:
        raise QuantizationError(f"{what}: {exc}") from None


class _Quantizer:
    def __init__(self, graph: Graph, ranges: dict[str, Range], rounding: str) -> None:
        self.src = graph
        self.qp = {name: activation_qparams(r) for name, r in ranges.items()}
        self.out = Graph(inputs=list(graph.inputs), outputs=list(graph.outputs), meta={**graph.meta, "rounding": rounding})
        for t in graph.activations():
            self.out.add_tensor(Tensor(t.name, t.shape, "int8", self.qp[t.name]))

    def scale(self, name: str) -> float:
        return self.qp[name].scalar_scale

    def zp(self, name: str) -> int:
        return self.qp[name].scalar_zero_point

    def const(self, node: Node, role: str, data: np.ndarray) -> str:
        name = self.out.unique_name(f"{node.name}.{role}")
        self.out.add_constant(name, data)
        return name

    def emit(self, node: Node, inputs: list[str], op: str | None = None, **attrs) -> None:
        self.out.add_node(Node(node.name, op or node.op, inputs, list(node.outputs), attrs, node.source))

    # -- ops ----------------------------------------------------------
    def linear(self, node: Node) -> None:
        x, w_name, b_name = node.inputs
        y = node.outputs[0]
        w = self.src.tensor(w_name).data
        b = self.src.tensor(b_name).data.astype(np.float64)
        wq, ws = quantize_weights(w)
        sx, zx = self.scale(x), self.zp(x)
        k = int(np.prod(w.shape[1:]))
        bias = round_half_away(b / (sx * ws)).astype(np.int64)
        bias_k = bias - zx * wq.reshape(len(wq), -1).astype(np.int64).sum(axis=1)
        worst = int(np.abs(bias_k).max()) + k * 128 * 127
        if worst > INT32_MAX:
            raise QuantizationError(
                f"node {node.name} ({node.op}): the int32 accumulator could reach {worst} (> 2^31-1); "
                "the bias is too large for the input and weight scales"
            )
        mult, shift = self._channel_multipliers(node, sx * ws / self.scale(y))
        attrs = dict(multiplier=mult, shift=shift, out_zp=self.zp(y))
        if node.op == "patch_embed":
            attrs = {"patch": int(node.attrs["patch"]), **attrs}
        self.emit(node, [x, self.const(node, "weight", wq), self.const(node, "bias", bias_k.astype(np.int32))], **attrs)

    def _channel_multipliers(self, node: Node, reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return quantize_multipliers(reals)
        except ValueError as exc:
            raise QuantizationError(f"node {node.name} ({node.op}): {exc}") from None

    def layernorm(self, node: Node) -> None:
        x, g_name, b_name = node.inputs
        y = node.outputs[0]
        d = self.src.tensor(x).shape[-1]
        if d > MAX_LAYERNORM_DIM:
            raise QuantizationError(f"node {node.name} (layernorm): dim {d} > {MAX_LAYERNORM_DIM} is not supported")
        sx, sy = self.scale(x), self.scale(y)
        g = self.src.tensor(g_name).data.astype(np.float64) / sy
        beta = self.src.tensor(b_name).data.astype(np.float64) / sy
        gmax = float(np.abs(g).max())
        gshift = 0 if gmax == 0 else int(np.clip(15 - math.ceil(math.log2(gmax)), 0, 40))
        out_shift = 20 + gshift
        gamma_q = round_half_away(g * 2.0**gshift)
        if np.abs(gamma_q).max() > INT32_MAX:
            raise QuantizationError(f"node {node.name} (layernorm): gamma / output scale does not fit int32")
        eps_q = max(1, int(round_half_away(min(d * d * float(node.attrs["eps"]) / (sx * sx), 2.0**61))))
        beta_q = round_half_away(beta * 2.0**out_shift)
        if np.abs(beta_q).max() > 2.0**62:
            raise QuantizationError(f"node {node.name} (layernorm): beta / output scale does not fit the int64 contract")
        self.emit(
            node,
            [x, self.const(node, "gamma", gamma_q.astype(np.int32)), self.const(node, "beta", beta_q.astype(np.int64))],
            in_zp=self.zp(x), eps_q=eps_q, out_shift=out_shift, out_zp=self.zp(y),
        )

    def gelu(self, node: Node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        real = self.scale(x) * (np.arange(256, dtype=np.float64) - 128 - self.zp(x))
        f = gelu(real, node.attrs.get("approximate", "none"))
        table = np.clip(round_half_away(f / self.scale(y)) + self.zp(y), -128, 127).astype(np.int8)
        self.emit(node, [x, self.const(node, "table", table)], op="lut")

    def hydra_attention(self, node: Node) -> None:
        q, k, v = node.inputs
        y = node.outputs[0]
        tokens = self.src.tensor(q).shape[0]
        zv = self.zp(v)
        vmax = max(127 - zv, zv + 128)
        max_tokens = INT32_MAX // (128 * vmax)
        if tokens > max_tokens:
            raise QuantizationError(
                f"node {node.name} (hydra_attention): {tokens} tokens, but the int32 attention state "
                f"is proven overflow-free only up to {max_tokens} tokens for this value zero point"
            )
        kv_shift = max(0, bitlen(tokens * 128 * vmax) - 23)
        mult, shift = _multiplier(self.scale(v) * 2.0**kv_shift / (128 * 128 * self.scale(y)), f"node {node.name}")
        self.emit(node, [q, k, v], zq=self.zp(q), zk=self.zp(k), zv=zv, kv_shift=kv_shift,
                  multiplier=mult, shift=shift, out_zp=self.zp(y), max_tokens=max_tokens)

    def softmax_attention(self, node: Node) -> None:
        q, k, v = node.inputs
        y = node.outputs[0]
        tokens, dim = self.src.tensor(q).shape
        heads = int(node.attrs["heads"])
        scale = float(node.attrs["scale"])
        where = f"node {node.name} (softmax_attention)"
        if tokens > SOFTMAX_MAX_TOKENS:
            raise QuantizationError(f"{where}: {tokens} tokens, but the int32 sum of exp values is proven "
                                    f"overflow-free only up to {SOFTMAX_MAX_TOKENS} tokens")
        if dim // heads > SOFTMAX_MAX_HEAD_DIM:
            raise QuantizationError(f"{where}: head dim {dim // heads} > {SOFTMAX_MAX_HEAD_DIM} is not supported; "
                                    "use more heads")
        if not math.isfinite(scale) or scale < 0:
            raise QuantizationError(f"{where}: attention scale {scale!r} must be a finite real >= 0")
        # A score difference d (integer units of s_q s_k) is scale * s_q * s_k * d in the exponent: 64 table steps per unit.
        em, es = _multiplier(scale * self.scale(q) * self.scale(k) * 2**SOFTMAX_EXP_STEP_BITS, where)
        # The normalised sum is in Q15 units of s_v.
        mult, shift = _multiplier(self.scale(v) / (2**SOFTMAX_EXP_BITS * self.scale(y)), where)
        table = self.const(node, "exp_table", softmax_exp_table())
        self.emit(node, [q, k, v, table], heads=heads, zq=self.zp(q), zk=self.zp(k), zv=self.zp(v),
                  exp_multiplier=em, exp_shift=es, multiplier=mult, shift=shift, out_zp=self.zp(y),
                  max_tokens=SOFTMAX_MAX_TOKENS)

    def add(self, node: Node) -> None:
        a, b = node.inputs
        y = node.outputs[0]
        if self.src.tensor(b).is_constant:  # e.g. a position embedding: quantise it per tensor like an activation
            data = self.src.tensor(b).data
            qp = activation_qparams(Range(float(data.min()), float(data.max())))
            b = self.const(node, "constant", quantize_array(data, qp.scalar_scale, qp.scalar_zero_point))
            self.out.tensor(b).quant = qp
            self.qp[b] = qp
        sa, sb = self.scale(a), self.scale(b)
        twice_max = 2.0 * max(sa, sb)
        where = f"node {node.name} (add)"
        ma, sha = _multiplier(sa / twice_max, where)
        mb, shb = _multiplier(sb / twice_max, where)
        my, shy = _multiplier(twice_max / (2**ADD_LEFT_SHIFT * self.scale(y)), where)
        self.emit(node, [a, b], left_shift=ADD_LEFT_SHIFT, za=self.zp(a), ma=ma, sa=sha,
                  zb=self.zp(b), mb=mb, sb=shb, my=my, sy=shy, out_zp=self.zp(y))

    def mean_pool(self, node: Node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        tokens = self.src.tensor(x).shape[0]
        mult, shift = _multiplier(self.scale(x) / (tokens * self.scale(y)), f"node {node.name} (mean_pool)")
        self.emit(node, [x], in_zp=self.zp(x), multiplier=mult, shift=shift, out_zp=self.zp(y))


_HANDLERS = {
    "patch_embed": _Quantizer.linear,
    "linear": _Quantizer.linear,
    "layernorm": _Quantizer.layernorm,
    "gelu": _Quantizer.gelu,
    "hydra_attention": _Quantizer.hydra_attention,
    "softmax_attention": _Quantizer.softmax_attention,
    "add": _Quantizer.add,
    "mean_pool": _Quantizer.mean_pool,
}


def quantize_graph(graph: Graph, ranges: dict[str, Range], rounding: str = "double") -> Graph:
    """Return the int8 graph; `ranges` come from calibrate()."""
    if rounding not in ("double", "single"):
        raise QuantizationError(f"rounding must be 'double' or 'single', not {rounding!r}")
    q = _Quantizer(graph, ranges, rounding)
    for node in graph.nodes:
        _HANDLERS[node.op](q, node)
    q.out.validate()
    return q.out
