"""Reference kernel of tfl_softmax_attention: the lifted softmax attention core of an int8 TFLite graph, query
row by query row.

The node (passes/lift_tfl_softmax.py) carries the attrs of the TFLite ops it replaces, made per query row and
head. This kernel runs exactly those ops' reference kernels (reference/tfl_linear.py's BATCH_MATMUL,
tfl_elementwise.py's MUL and SOFTMAX) on one row at a time, in the order the C kernel
(runtime_c/src/tfl_softmax_attention.c) does; the transposes of the unfused graph are the offsets:

    for each query row t (of the q rows given: query_rows), each head h:
        s     = BATCH_MATMUL_qk(q[t, h dh:(h+1) dh], k[:, h dh:])     [1, T]  (rhs col stride D)
        s     = MUL_scale(s, scale_value)                            when has_scale
        p     = SOFTMAX(s)                                           over the T keys
        out[t, h dh:(h+1) dh] = BATCH_MATMUL_pv(p, v[:, h dh:])      [1, dh] (rhs depth stride D)

tests/test_tfl_softmax.py proves that this equals the unfused ops (and TFLM) on every input it tries.
Contract as the other tfl kernels: ``KERNELS[op](attrs, inputs, rounding)``, ``scratch_bytes(attrs)``.
"""

from __future__ import annotations

import numpy as np

from .tfl_elementwise import tfl_mul, tfl_softmax
from .tfl_linear import batch_matmul


def tfl_softmax_attention(a: dict, inputs: list, rounding: str) -> np.ndarray:
    heads, dh = int(a["heads"]), int(a["head_dim"])
    d = heads * dh
    q, k, v = (np.asarray(x).reshape(-1) for x in inputs)
    rows = q.size // d
    if rows * d != q.size or rows != int(a["query_rows"]):
        raise ValueError(f"tfl_softmax_attention: q has {q.size} elements, not query_rows = {a['query_rows']} rows "
                         f"of {d}")
    out = np.empty((rows, d), np.int8)
    scale = np.array([a["scale_value"]], np.int8)
    for t in range(rows):
        for h in range(heads):
            s = batch_matmul(a["qk"], [q[t * d + h * dh:], k[h * dh:]], rounding).reshape(-1)
            if a["has_scale"]:
                s = tfl_mul(a["scale"], [s, scale], rounding)
            p = tfl_softmax(a["softmax"], [s], rounding)
            out[t, h * dh:(h + 1) * dh] = batch_matmul(a["pv"], [p, v[h * dh:]], rounding).reshape(-1)
    return out


def scratch_bytes(attrs: dict) -> int:
    """The C kernel's scratch: one head's int8 scores [T] and probabilities [T], rounded up to 4 bytes
    (hydra_tfl_softmax_attention_get_buffer_size)."""
    t = int(attrs.get("tokens", 0))
    return (2 * t + 3) // 4 * 4


KERNELS = {"tfl_softmax_attention": tfl_softmax_attention}
