"""The hand rules other searches use in place of a compiler, for comparison with the real constraint.

- Parameter count (what MCUFormer's released search limits): int8 weights must
  fit flash; RAM is not checked at all.
- An MCUFormer-style activation formula: int8 activations of the largest layer,
  computed by hand from the config rather than planned:

      attention layer:  T*D (x) + 3*T*D (q, k, v) + T*D (out) [+ heads*T*T scores, softmax]
      MLP layer:        T*D (x) + T*H (hidden) + T*D (out)

  i.e. every tensor of the layer held whole, as a layer-by-layer runtime
  (TFLite Micro) holds it; peak RAM = the largest of these.

Neither sees what the compiler does (token loops, in-place reuse, kernel
scratch, the harness and stack); search/constraint.py counts the candidates
each rule would have let through that the compiler refuses, and the reverse.
"""

from __future__ import annotations

from .space import Candidate


def parameter_count(c: Candidate) -> int:
    d, h, t, r = c.embed_dim, c.mlp_dim, c.num_tokens, c.mlp_rank
    patch = c.in_channels * c.patch_size**2 * d + d
    attention = 4 * (d * d + d)
    mlp = (r * (d + h) + h + r * (h + d) + d) if r else (d * h + h + h * d + d)
    norms = 2 * 2 * d
    per_block = attention + mlp + norms
    return patch + t * d + c.depth * per_block + 2 * d + d * c.num_classes + c.num_classes


def formula_peak_activation_bytes(c: Candidate) -> int:
    d, h, t = c.embed_dim, c.mlp_dim, c.num_tokens
    image = c.in_channels * c.image_size**2
    peak = image + t * d  # the patch embedding: image in, tokens out
    for kind in c.attention:
        attn = t * d + 3 * t * d + t * d + (c.heads * t * t if kind == "softmax" else 0)
        mlp = t * d + t * h + t * d
        peak = max(peak, attn, mlp)
    return peak


def formula_fits(c: Candidate, ram_bytes: int | None, flash_bytes: int | None) -> dict[str, bool]:
    """Each rule's verdict: "params" (flash only) and "formula" (params in flash and activations in RAM)."""
    params_ok = flash_bytes is None or parameter_count(c) <= flash_bytes
    ram_ok = ram_bytes is None or formula_peak_activation_bytes(c) <= ram_bytes
    return {"params": params_ok, "formula": params_ok and ram_ok}
