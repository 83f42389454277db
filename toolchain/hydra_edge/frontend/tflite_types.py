"""What the TFLite frontend hands each op's prepare function: one tensor of the .tflite, decoded.

The int8 TFLite path keeps the file's own quantisation. For every operator the
frontend calls ``PREPARE[op_name](inputs, outputs, options)``, which computes,
in Python and once, what TFLite Micro's Prepare() computes on the device (its
OpData: multipliers, shifts, offsets, activation bounds) and returns it as the
IR node's attrs. The contract between the frontend, the reference kernels
(reference/tfl_*.py) and the C kernels (runtime_c/src/tfl_*.c):

- IR op name: ``tfl_`` + the builtin operator name in lower case
  (FULLY_CONNECTED -> ``tfl_fully_connected``).
- Node inputs: every tensor input of the TFLite operator, in the operator's
  order, constants included; a missing optional input (index -1, e.g. no bias)
  is the empty string "".
- attrs: the prepare dict. Keys are snake_case C field names of
  ``hydra_tfl_<op>_params`` (runtime_c/include/hydra_tfl.h); values are Python
  ints (C int32_t), np.int32 arrays (a ``const int32_t *`` field pointing to an
  emitted constant array, e.g. per-channel multipliers), or tuples of ints
  (an inline ``int32_t name[N]`` field; shapes are always extended to 4-D
  like TFLite's RuntimeShape, N = 4). C uses designated initialisers, so
  field order does not matter.
- C kernel: ``hydra_status hydra_tfl_<op>_s8(const hydra_tfl_<op>_params *p,
  <one pointer per node input, in order, NULL for "">, <output pointer>
  [, int32_t *scratch])``; a kernel that needs scratch also has
  ``int32_t hydra_tfl_<op>_get_buffer_size(const hydra_tfl_<op>_params *p)``
  (bytes) and its reference module a ``scratch_bytes(attrs) -> int`` (tfl_linear's and tfl_hydra's also take
  the op: ``scratch_bytes(attrs, op)``).
- Reference kernel: ``KERNELS[ir_op](attrs, inputs, rounding) -> np.ndarray``,
  inputs as numpy arrays in node input order (None for ""), rounding "double"
  (TFLM's MultiplyByQuantizedMultiplier) or "single" (as TFLITE_SINGLE_ROUNDING
  builds it): the node's rounding (ops.node_rounding), not an attr of the prepare
  dict. The C params of an op whose kernel requantises carry it as
  ``single_rounding`` (codegen/emit_tfl.py writes it, ROUNDED_OPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TflTensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "int16", "int32", "int64", "float32", "bool"
    scale: np.ndarray  # float64; one entry per tensor, or per channel along quantized_dimension
    zero_point: np.ndarray  # int64, same length as scale (empty when not quantised)
    quantized_dimension: int
    data: np.ndarray | None  # the constant buffer (typed, shaped), None for activations

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def per_tensor_scale(self) -> float:
        return float(self.scale[0])

    @property
    def per_tensor_zero_point(self) -> int:
        return int(self.zero_point[0]) if len(self.zero_point) else 0
