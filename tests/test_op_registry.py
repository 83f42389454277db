"""The op registry (hydra_edge/ops, issue 16 part 1): every native op has the fields its graphs need, each
scratch formula is the C runtime's *_get_buffer_size, and row_local is what the float reference does."""

from __future__ import annotations

import numpy as np
import pytest
from c_build import AttentionParams, SoftmaxAttentionParams, build_runtime_lib, have_compiler
from hydra_edge.ir.graph import Graph, Node, Tensor
from hydra_edge.ops import LOWERED_OPS, REGISTRY, OpDef, op_def

NATIVE = ("patch_embed", "linear", "layernorm", "gelu", "lut", "hydra_attention", "hydra_kv_state", "hydra_apply",
          "softmax_attention", "add", "mean_pool", "select_token", "conv2d", "max_pool2d", "avg_pool2d", "activation",
          "flatten",
          "token_loop")
# hydra_attention's two halves in a token loop: its C file's row-level functions, scratch one phi row [D]
ATTENTION_HALVES = ("hydra_kv_state", "hydra_apply")


def test_the_registry_holds_the_native_ops():
    assert set(REGISTRY) == set(NATIVE) == set(LOWERED_OPS)
    assert all(isinstance(d, OpDef) and d.name == name for name, d in REGISTRY.items())
    assert op_def("tfl_add") is None


@pytest.mark.parametrize("name", NATIVE)
def test_every_op_has_the_fields_its_graphs_need(name):
    d = REGISTRY[name]
    assert d.graphs in ("both", "float", "int")
    assert callable(d.shape) and callable(d.macs)
    if d.in_float:  # in a float graph: run by the float reference, turned into an int8 op by the quantiser
        assert callable(d.float_ref) and callable(d.quantize)
    else:
        assert d.float_ref is None and d.quantize is None
    if name == "token_loop":  # a schedule's region, not a kernel: the emitter writes its loop in model.c
        assert callable(d.emit) and d.c_source is None and d.int_ref is None
    elif d.in_int:  # in a quantised graph: the integer reference and a C kernel
        assert callable(d.int_ref) and callable(d.emit)
        assert d.c_source and d.c_function and d.param_struct
        assert d.c_function.startswith(d.param_struct.removesuffix("_params")) and d.c_function.endswith("_s8")
        from c_build import SRC_DIR, INCLUDE_DIR

        assert (SRC_DIR / d.c_source).is_file()
        header = (INCLUDE_DIR / "hydra_rt.h").read_text()
        assert f"{d.c_function}(" in header and f"}} {d.param_struct};" in header
        has_size_fn = f"{d.c_function}_get_buffer_size(" in header
        if name not in ATTENTION_HALVES:
            assert has_size_fn == (d.scratch is not None), "scratch bytes exactly for the kernels with *_get_buffer_size"
    else:
        assert d.int_ref is None and d.c_source is None and d.emit is None
    assert all(i >= 0 for i in d.in_place)
    assert all(dep in REGISTRY and REGISTRY[dep].c_source for dep in d.c_depends)


@pytest.mark.parametrize("name", [n for n in NATIVE if REGISTRY[n].row_inputs])
def test_every_op_a_token_loop_runs_says_how(name):
    """The emitter gives a loop's op its rows through rows_field, or the op's emit reads em.rows itself."""
    d = REGISTRY[name]
    assert d.in_int and callable(d.fields)
    assert d.rows_field is not None or d.reduces or name in ATTENTION_HALVES
    from c_build import INCLUDE_DIR

    header = (INCLUDE_DIR / "hydra_rt.h").read_text()
    for fn in d.loop_functions or ():  # the check once before the loop, the rows function per group
        assert f"hydra_status {fn}(const {d.param_struct} *params" in header
    if d.rows_field is not None:
        struct = header.split(f"}} {d.param_struct};")[0].rsplit("typedef struct", 1)[1]
        assert d.rows_field in struct


def _graph(**shapes: tuple[int, ...]) -> Graph:
    g = Graph()
    for name, shape in shapes.items():
        g.add_tensor(Tensor(name, shape, "int8"))
    return g


@pytest.mark.skipif(not have_compiler(), reason="no C compiler")
def test_scratch_formulas_are_the_c_runtime_s(tmp_path_factory):
    lib = build_runtime_lib(tmp_path_factory.mktemp("rt"))
    for tokens in (1, 7, 64, 197):
        for dim in (8, 27, 64, 192):
            g = _graph(q=(tokens, dim), k=(tokens, dim), v=(tokens, dim), y=(tokens, dim))
            attn = Node("a", "hydra_attention", ["q", "k", "v"], ["y"])
            p = AttentionParams(tokens=tokens, dim=dim)
            assert REGISTRY["hydra_attention"].scratch(g, attn) == lib.hydra_attention_s8_get_buffer_size(p)
            heads = 4 if dim % 4 == 0 else 1
            sm = Node("s", "softmax_attention", ["q", "k", "v"], ["y"], {"heads": heads})
            p = SoftmaxAttentionParams(tokens=tokens, dim=dim, heads=heads)
            assert REGISTRY["softmax_attention"].scratch(g, sm) == lib.hydra_softmax_attention_s8_get_buffer_size(p)
            kv = Node("kv", "hydra_kv_state", ["k", "v"], ["s"], {"tokens": tokens})
            assert REGISTRY["hydra_kv_state"].scratch(g, kv) == dim  # phi_scratch: int8 [dim] (hydra_rt.h)


T, D = 6, 8


def _samples(rng: np.random.Generator) -> dict[str, tuple[Node, list[np.ndarray], tuple[int, ...]]]:
    """op -> (node, inputs, the inputs that hold one row per token); the reference each op runs in."""
    x = lambda *s: rng.standard_normal(s)  # noqa: E731
    s8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    node = lambda op, n, **attrs: Node(op, op, [f"i{i}" for i in range(n)], ["y"], attrs)  # noqa: E731
    attention = dict(zq=3, zk=-5, zv=7, kv_shift=4, multiplier=1 << 30, shift=-12, out_zp=0, tokens=T)
    return {
        "linear": (node("linear", 3), [x(T, D), x(5, D), x(5)], (0,)),
        "patch_embed": (node("patch_embed", 3, patch=2), [x(3, 4, 4), x(D, 3, 2, 2), x(D)], (0,)),
        "layernorm": (node("layernorm", 3, eps=1e-5), [x(T, D), x(D), x(D)], (0,)),
        "gelu": (node("gelu", 1), [x(T, D)], (0,)),
        "lut": (node("lut", 2), [s8(T, D), s8(256)], (0,)),
        "hydra_attention": (node("hydra_attention", 3), [x(T, D), x(T, D), x(T, D)], (0, 1, 2)),
        "hydra_kv_state": (node("hydra_kv_state", 2, **attention), [s8(T, D), s8(T, D)], (0, 1)),
        "hydra_apply": (node("hydra_apply", 2, **attention), [s8(T, D), rng.integers(-2**20, 2**20, D)], (0,)),
        "softmax_attention": (node("softmax_attention", 3, heads=2, scale=0.5), [x(T, D), x(T, D), x(T, D)],
                              (0, 1, 2)),
        "add": (node("add", 2), [x(T, D), x(T, D)], (0, 1)),
        "mean_pool": (node("mean_pool", 1), [x(T, D)], (0,)),
        "select_token": (node("select_token", 1, index=0), [x(T, D)], (0,)),
        # a 2x3 feature map (T = 6 pixels, channels last): a 3x3 window reads the neighbouring pixels
        "conv2d": (node("conv2d", 3, in_hw=[2, 3], stride=[1, 1], padding=[1, 1, 1, 1], groups=1),
                   [x(T, D), x(5, 3, 3, D), x(5)], (0,)),
        "max_pool2d": (node("max_pool2d", 1, in_hw=[2, 3], kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1]),
                       [x(T, D)], (0,)),
        "activation": (node("activation", 1, function="silu"), [x(T, D)], (0,)),
        "flatten": (node("flatten", 1), [x(T, D)], (0,)),
        "avg_pool2d": (node("avg_pool2d", 1, in_hw=[2, 3], kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1]),
                       [x(T, D)], (0,)),
    }


@pytest.mark.parametrize("name", [n for n in NATIVE if n != "token_loop"])
def test_row_local_is_what_the_reference_does(name):
    rng = np.random.default_rng(0)
    d = REGISTRY[name]
    node, ins, token_inputs = _samples(rng)[name]
    ref = d.float_ref if d.in_float else (lambda n, *a: d.int_ref(n, *a, "double"))
    changed = [a.copy() for a in ins]
    for i in token_inputs:
        fresh = rng.integers(-128, 128, changed[i][0].shape) if changed[i].dtype == np.int8 else \
            rng.standard_normal(changed[i][0].shape)
        changed[i][0] = fresh  # token 0 only (a patch_embed's input has no tokens: channel 0)
    y, y2 = np.asarray(ref(node, *ins)), np.asarray(ref(node, *changed))
    assert not np.array_equal(y, y2)
    other_rows_same = y.ndim == 2 and y.shape[0] == T and np.array_equal(y[1:], y2[1:])
    assert other_rows_same == d.row_local


@pytest.mark.parametrize("name", [n for n in NATIVE if REGISTRY[n].row_local and REGISTRY[n].in_int])
def test_a_row_local_op_reads_its_token_inputs_row_by_row(name):
    _, _, token_inputs = _samples(np.random.default_rng(0))[name]
    assert set(REGISTRY[name].row_inputs) == set(token_inputs)


def test_macs_and_shapes_of_a_linear():
    g = _graph(x=(T, D), w=(5, D), b=(5,), y=(T, 5))
    n = Node("l", "linear", ["x", "w", "b"], ["y"])
    assert REGISTRY["linear"].shape(n, [(T, D), (5, D), (5,)]) == (T, 5)
    assert REGISTRY["linear"].macs(g, n) == T * D * 5
