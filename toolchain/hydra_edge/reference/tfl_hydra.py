"""Reference kernel of tfl_hydra_attention: the lifted Hydra core of an int8 TFLite graph, row by row.

The node (passes/lift_tfl_hydra.py) carries the attrs of every TFLite op it replaces, made per row.
This kernel runs exactly those ops' reference kernels (reference/tfl_elementwise.py, tfl_linear.py) on
one token's row at a time, in the order the C kernel (runtime_c/src/tfl_hydra_attention.c) does:

    pass 1, t = 0..T-1:  acc += MUL_kv(phi_k(k_t), v_t)          (raw int8 values, int32 sums)
    kv = requantize_sum(kv_sum, acc)                             (TFLM's QuantizedMeanOrSum ending)
    pass 2, t = 0..T-1:  out_t = MUL_out(phi_q(q_t), kv)

phi is MUL_scale(x, RSQRT([ADD_eps(] SUM_row(MUL_square(x, x)) [, eps)])) or L2_NORMALIZATION(x).
tests/test_tfl_hydra.py proves that this equals the unfused ops (and TFLM) on every input it tries.
Contract as the other tfl kernels: ``KERNELS[op](attrs, inputs, rounding)``, ``scratch_bytes(attrs)``; every
step rounds as the node (the C kernel's nested params each carry that rounding).
"""

from __future__ import annotations

import numpy as np

from .tfl_elementwise import tfl_add, tfl_l2_normalization, tfl_mul, tfl_rsqrt
from .tfl_linear import reduce_rows, requantize_sum

PHI_RSQRT, PHI_L2 = 0, 1


def phi_row(p: dict, x: np.ndarray, rounding: str) -> np.ndarray:
    """phi of one token's row x [D] (int8) by the replaced ops' kernels."""
    if p["kind"] == PHI_L2:
        return tfl_l2_normalization(p["l2"], [x], rounding)
    square = tfl_mul(p["square"], [x, x], rounding)
    s = reduce_rows(p["sum"], [square], rounding).reshape(1)
    if p["has_eps"]:
        s = tfl_add(p["eps"], [s, np.array([p["eps_value"]], np.int8)], rounding)
    r = tfl_rsqrt(p["rsqrt"], [s], rounding)
    return tfl_mul(p["scale"], [x, r], rounding)


def tfl_hydra_attention(a: dict, inputs: list, rounding: str) -> np.ndarray:
    q, k, v = inputs
    return tfl_hydra_apply(a, [q, tfl_hydra_kv_state(a, [k, v], rounding)], rounding)


def tfl_hydra_kv_state(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """Pass 1 and kv: the first half, as passes/stream.py splits the node (tfl_hydra_kv_state(k, v) -> kv)."""
    t, d = a["tokens"], a["depth"]
    k, v = (np.asarray(x).reshape(t, d) for x in inputs)
    acc = np.zeros(d, np.int64)
    for i in range(t):
        acc += tfl_mul(a["kv_mul"], [phi_row(a["phi_k"], k[i], rounding), v[i]], rounding).astype(np.int64)
    return requantize_sum(a["kv_sum"], acc, rounding)


def tfl_hydra_apply(a: dict, inputs: list, rounding: str) -> np.ndarray:
    """Pass 2: the second half (tfl_hydra_apply(q, kv) -> out)."""
    t, d = a["tokens"], a["depth"]
    q, kv = np.asarray(inputs[0]).reshape(t, d), np.asarray(inputs[1]).reshape(d)
    out = np.empty((t, d), np.int8)
    for i in range(t):
        out[i] = tfl_mul(a["out_mul"], [phi_row(a["phi_q"], q[i], rounding), kv], rounding)
    return out


def scratch_bytes(attrs: dict, op: str = "tfl_hydra_attention") -> int:
    """The C kernel's scratch: the int32 accumulator [D], one int8 row [D] and kv [D]; kv_state's acc and row
    (its loop state in a token loop), apply's row."""
    d = int(attrs["depth"]) if "depth" in attrs else 0
    return {"tfl_hydra_kv_state": 5 * d, "tfl_hydra_apply": d}.get(op, 6 * d)


KERNELS = {"tfl_hydra_attention": tfl_hydra_attention, "tfl_hydra_kv_state": tfl_hydra_kv_state,
           "tfl_hydra_apply": tfl_hydra_apply}
