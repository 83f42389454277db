"""The native ops, one file each: the registry every stage asks (issue 16, part 1).

`ops/<op>.py` registers one `OpDef` (ops/base.py): its shape rule, float reference, integer reference
(docs/numerics.md, executable), quantisation step, C kernel (source file, function, param struct, the
struct's fields, the call), scratch bytes (the one owner of the formula the C `*_get_buffer_size` computes),
in-place inputs, MACs and whether it is row-local. The stages look an op up here:

    ir/ops.py check_shapes -> hydra_edge.ops.check_shapes   shape
    reference/float_interp.py, int_interp.py                float_ref, int_ref
    quant/quantize.py                                       quantize
    memory/planner.py, loop_plan.py                         in_place, scratch, loop_state
    passes/stream.py                                        row_inputs, reduces, macs
    codegen/emit_c.py                                       c_source, c_depends, c_defines, fields, emit, scratch,
                                                            rows_field
    codegen/report.py (and targets/icount.py)               macs

The tfl_* ops of an imported .tflite are not here (ir/tfl_ops.py, reference/tfl_*.py, codegen/emit_tfl.py).

To add an op `foo`:

1. `ops/foo.py`: the functions (`shape`, `float_ref`, `int_ref`, `quantize`, `fields`, ...), then
   `OP = register(OpDef("foo", shape, macs, ...))` with the fields it needs (`graphs` says whether it lives in
   float graphs, quantised ones or both); import it below. The file may import the IR, the numerics and
   ops/base.py only (tests/test_layering.py); the emitter and the quantiser come in duck-typed.
2. Its C kernel: `runtime_c/src/hydra_foo.c`, its param struct and prototype (and `*_get_buffer_size` when it
   needs scratch) in `runtime_c/include/hydra_rt.h`; name them in `c_source`, `c_function`, `param_struct`.
3. Its tests: tests/test_op_registry.py checks every op's fields, scratch against C and row_local on its own;
   add the op's bit-exactness (reference vs C) to tests/test_kernels.py and a graph using it to the codegen tests.
"""

from __future__ import annotations

from ..ir.graph import Graph, IRError
from ..ir.tfl_ops import TFL_SHAPE_RULES, check_tfl_shape

# imported for their register() calls; this order is the runtime sources' order in a build's Makefile
from . import linear, patch_embed, layernorm, gelu, lut, hydra_attention, softmax_attention, add, mean_pool  # noqa: F401,E401,I001
from . import select_token  # noqa: F401
from . import conv2d, max_pool2d, avg_pool2d, activation, flatten  # noqa: F401,E401,I001
from . import token_loop  # noqa: F401  (after the ops of its body)
from .base import REGISTRY, OpDef, QuantizationError, node_rounding, op_def, strip_leading_ones

__all__ = ["REGISTRY", "OpDef", "QuantizationError", "node_rounding", "op_def", "check_shapes", "LOWERED_OPS", "shape_rule"]

LOWERED_OPS = tuple(REGISTRY)  # the native ops (a lowered float graph has those with in_float)


def shape_rule(op: str):
    """The shape rule of a native or tfl_* op, or None."""
    d = REGISTRY.get(op)
    return d.shape if d is not None else TFL_SHAPE_RULES.get(op)


def check_shapes(graph: Graph) -> None:
    """Recompute every output shape from the inputs; raise IRError on a mismatch."""
    for node in graph.nodes:
        rule = shape_rule(node.op)
        if rule is None:
            raise IRError(f"node {node.name}: op {node.op!r} is not a lowered op ({', '.join(LOWERED_OPS)})")
        expected = rule(node, [graph.tensor(n).shape for n in node.inputs])
        actual = graph.tensor(node.outputs[0]).shape
        if node.op in TFL_SHAPE_RULES:
            same = check_tfl_shape(node, expected, actual)
        else:  # up to leading 1s: a legalised TFLite node (passes/legalise_tfl.py) keeps TFLite's batch dimension
            same = strip_leading_ones(expected) == strip_leading_ones(actual)
        if not same:
            raise IRError(f"node {node.name} ({node.op}): output shape {actual}, expected {tuple(expected)}")
