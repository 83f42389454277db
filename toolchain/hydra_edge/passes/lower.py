"""Lower a canonical aten-level graph (Hydra already lifted) to the ops of ir/ops.py.

    conv2d (kernel == stride, square, no padding/dilation, groups 1) on the image
      + flatten(2) (or view [B, D, T]) + transpose(1, 2)  -> patch_embed  attrs patch
    any other conv2d (dilation 1, groups 1 or depthwise)  -> conv2d on a channels-last feature map [H*W, C]
      (ops/conv2d.py; weight [Cout, kh, kw, Cin / groups])   attrs in_hw, stride, padding, groups
    eval BatchNorm after a conv2d read only by it         -> nothing: folded into its weights and bias
      (elsewhere: a depthwise 1x1 conv2d)
    relu / relu6 / hardtanh / clamp after a conv2d or
      linear read only by it                              -> nothing: the producer's clamp_min / clamp_max
    other relu-likes, sigmoid, tanh, silu (also x *
      sigmoid(x)), hardswish, hardsigmoid                 -> activation   attrs function (a lut once quantised)
    max_pool2d, avg_pool2d (count_include_pad=False
      when padded)                                        -> max_pool2d, avg_pool2d
    adaptive_avg_pool2d to 1x1, mean over H, W            -> mean_pool over the [H*W, C] map
    flatten(2) + transpose(1, 2) of a feature map         -> nothing: it is the token matrix already
    flatten(1) of a feature map read by Linears           -> flatten (their weight columns permuted to HWC)
    linear; mm/matmul/addmm with a constant weight      -> linear       (a following
      add of a [N] constant becomes the bias)
    layer_norm / native_layer_norm over the last dim      -> layernorm    attrs eps
    gelu                                                  -> gelu         attrs approximate
    add of two activations of one shape, or of an
      activation and a broadcastable constant (pos_embed) -> add          (the constant is
      materialised at the activation's batch-free shape)
    cat([constant tokens..., x], dim=1) right after the
      patch embedding (a class / distillation token)      -> patch_embed's prefix input
    select of one token (x[:, 0]) of [B, T, D]            -> select_token attrs index
    mul / div by a constant of the output of a linear
      (or of an add of linears: DeiT's (x + x_dist) / 2)  -> nothing: folded into the weights
    mean over the token dim of [B, T, D]                  -> mean_pool
    hydra_attention                                       -> hydra_attention
    softmax_attention (lifted by passes/lift_softmax.py)  -> softmax_attention attrs heads, scale
    view/reshape/flatten/(un)squeeze that only add or
      drop 1s (the batch of addmm's 2-d form)             -> nothing (an alias)

Activations keep their leading batch dimension of 1 while lowering; the last
step strips it, and check_shapes and validate() then prove every shape matches
the table in ir/ops.py. Any other op is a LoweringError naming the op, the
node and the user's source line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, IRError, Node, Tensor
from ..ops import check_shapes, shape_rule
from .canonicalize import consumers, producers, strip_batch_dim
from .errors import LoweringError, unsupported

_HYDRA_HINT = (
    "L2 norms, divisions, products and sums are lowered only as Hydra attention, "
    "phi(q) * (phi(k) * v).sum(dim=-2, keepdim=True) with phi(x) = x / x.norm(dim=-1, keepdim=True) "
    "or F.normalize(x, dim=-1)"
)
_HINTS = {
    op: _HYDRA_HINT
    for op in ("linalg_vector_norm", "norm", "div", "mul", "sum", "clamp_min", "clamp", "expand", "expand_as")
}
_HINTS.update(
    {
        "transpose": "tokens are transposed only right after the patch-embedding convolution",
        "permute": "tokens are permuted only right after the patch-embedding convolution",
    }
)
_SOFTMAX_HINT = (
    "softmax is lowered only as self-attention, softmax(q @ k^T * scale, dim=-1) @ v per head (or "
    "F.scaled_dot_product_attention / nn.MultiheadAttention) on [T, D] projections, without mask or dropout"
)
_UNLIFTED_SOFTMAX = {"softmax", "_softmax", "_safe_softmax", "scaled_dot_product_attention"}
_HINTS.update({op: _SOFTMAX_HINT for op in ("softmax", "_softmax", "_safe_softmax", "scaled_dot_product_attention",
                                             "bmm")})
_RESHAPES = {"view", "reshape", "_unsafe_view", "flatten", "unsqueeze", "squeeze", "view_copy"}


def lower(graph: Graph) -> Graph:
    """Lower `graph` (canonicalised, Hydra lifted) to a batch-free graph of ir/ops.py ops."""
    return _Lowerer(graph).run()


def _ones_dropped(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _where(node: Node) -> str:
    return node.source or node.name


def _feature_map(torch_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(H, W, C) of a torch [1, C, H, W] activation with more than one pixel (its channels-last lowered
    tensor is [1, H*W, C]); None for any other shape."""
    if len(torch_shape) != 4 or torch_shape[0] != 1 or torch_shape[2] * torch_shape[3] == 1:
        return None
    return int(torch_shape[2]), int(torch_shape[3]), int(torch_shape[1])


def _pair(v: Any, what: str, node: Node) -> tuple[int, int]:
    v = [v] if isinstance(v, int) else list(v or [])
    if len(v) == 1:
        v = v * 2
    if len(v) != 2:
        raise unsupported(node, f"{what} {v} is not one value or two (2-d)")
    return int(v[0]), int(v[1])


_CLAMPS = {"relu": (0.0, None), "relu6": (0.0, 6.0)}
_TABLE_ACTIVATIONS = {"sigmoid", "tanh", "silu", "hardswish", "hardsigmoid"}
_BN_TRAINING = ("BatchNorm in training mode (batch statistics) is not lowered: call model.eval() before "
                "exporting, so that BatchNorm uses its running statistics and folds into the convolution")


class _Lowerer:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.out = Graph(meta=dict(graph.meta))
        self.env: dict[str, str] = {}  # aten activation -> lowered activation
        self.copied: dict[str, str] = {}  # aten constant -> its unchanged copy in out
        self.absorbed: set[str] = set()  # aten nodes folded into an earlier lowered node
        self.zero_bias: dict[str, Node] = {}  # lowered tensor -> linear node whose bias is synthetic zeros
        self.suffix: dict[str, int] = {}  # base name -> the suffix fresh() tries next (names are never freed)
        self.prod = producers(graph)
        self.users = consumers(graph)
        # Feature maps (ops/conv2d.py): an aten [1, C, H, W] tensor whose lowered tensor is [1, H*W, C]
        # (channels last), and an aten [1, C, T] one (its flatten(2)) whose lowered tensor is [1, T, C].
        self.fmaps: dict[str, tuple[int, int, int]] = {}
        self.channels_first_tokens: set[str] = set()
        self.made: dict[str, Node] = {}  # lowered tensor -> the lowered node that computes it
        self.flattened: dict[str, tuple[int, int, int]] = {}  # lowered flatten output -> (H, W, C) in HWC order

    # -- driving -----------------------------------------------------------
    def run(self) -> Graph:
        g, out = self.g, self.out
        if len(g.inputs) != 1:
            raise LoweringError(f"the graph has {len(g.inputs)} inputs; hydra-edge lowers one image input")
        x = g.tensor(g.inputs[0])
        if not x.shape or x.shape[0] != 1 or x.dtype != "float32":
            raise self._bad_input(x)
        out.add_tensor(Tensor(x.name, x.shape, "float32"))
        out.inputs = [x.name]
        self.env[x.name] = x.name
        for node in g.nodes:  # an attention lift_softmax left alone: say so, not what its head split trips on
            if node.op in _UNLIFTED_SOFTMAX:
                raise unsupported(node, self._softmax_near_miss(node))
        for node in g.nodes:
            if node.name in self.absorbed:
                continue
            handler = getattr(self, f"_op_{node.op}", None)
            if handler is None:
                if node.op in _RESHAPES:
                    handler = self._reshape
                else:
                    raise unsupported(node, _HINTS.get(node.op, ""))
            handler(node)
        if len(x.shape) != 4:  # checked after the walk: an unsupported op is the better message
            raise self._bad_input(x)
        for name in g.outputs:
            if name not in self.env:
                raise LoweringError(f"graph output {name} is not computed from the input by lowered ops")
            out.outputs.append(self.env[name])
        lowered = strip_batch_dim(out.prune())
        check_shapes(lowered)
        lowered.validate()
        return lowered

    def _softmax_near_miss(self, node: Node) -> str:
        """What kept an attention from being lifted, when it is one of the usual reasons; else the general hint."""
        found = "softmax attention found, but "
        if node.op == "scaled_dot_product_attention":
            if node.attrs.get("is_causal"):
                return found + ("causal (is_causal=True): it hides later tokens from earlier ones; hydra-edge "
                                "lowers attention over all tokens, as a ViT's")
            if len(node.inputs) > 3:
                return found + ("with an attn_mask that hides some keys; hydra-edge lowers attention over all "
                                "tokens (an all-true or all-zero mask is dropped)")
            if float(node.attrs.get("dropout_p") or 0.0) > 0.0:
                return found + "with dropout_p > 0: export the model after model.eval()"
        else:
            rank = len(self.g.tensor(node.inputs[0]).shape)
            dim = int(node.attrs.get("dim", -1)) % max(rank, 1)
            if dim != rank - 1:
                return found + f"softmax is over dim {dim}, not the keys (the last dim)"
            scores = self.prod.get(node.inputs[0])
            if scores is not None and scores.op in ("add", "masked_fill", "where") and any(
                    self.is_const(i) for i in scores.inputs):
                return found + ("its scores get a constant mask that hides some keys; hydra-edge lowers "
                                "attention over all tokens (an all-true or all-zero mask is dropped)")
        return _SOFTMAX_HINT

    @staticmethod
    def _bad_input(x: Tensor) -> LoweringError:
        return LoweringError(
            f"input {x.name} is {x.dtype}{list(x.shape)}; hydra-edge lowers a float32 image [1, C, H, W]"
        )

    # -- operands ------------------------------------------------------------
    def operands(self, node: Node, names: list[str]) -> dict[str, str]:
        """Map the schema names of `node`'s tensor args to its inputs (None args skipped)."""
        present = [n for n in names if not (n in node.attrs and node.attrs[n] is None)]
        if len(present) != len(node.inputs):
            raise unsupported(node, f"expected tensor operands {present}, got {len(node.inputs)}")
        return dict(zip(present, node.inputs))

    def is_const(self, name: str) -> bool:
        return self.g.tensor(name).is_constant

    def act(self, name: str, node: Node) -> str:
        if self.is_const(name):
            raise unsupported(node, f"operand {name} is a constant where an activation is expected")
        if name not in self.env:
            raise unsupported(node, f"operand {name} is not computed by a lowered op")
        return self.env[name]

    def const(self, name: str, node: Node, rank: int | None = None) -> str:
        t = self.g.tensor(name)
        if not t.is_constant:
            raise unsupported(node, f"operand {name} must be a constant (a weight), not an activation")
        if rank is not None and t.data.ndim != rank:
            raise unsupported(node, f"weight {name} has shape {list(t.shape)}, expected rank {rank}")
        if name not in self.copied:
            new = self.fresh(name)
            self.out.add_constant(new, t.data.astype(np.float32))
            self.copied[name] = new
        return self.copied[name]

    def new_const(self, base: str, data: np.ndarray) -> str:
        name = self.fresh(base)
        self.out.add_constant(name, np.asarray(data, np.float32))
        return name

    def fresh(self, base: str) -> str:
        """The first of base, base_1, base_2, ... that is free (linear: each base resumes where it stopped)."""
        i = self.suffix.get(base, 0)
        name = base if i == 0 else f"{base}_{i}"
        while name in self.out.tensors or (name in self.g.tensors and name != base):
            i += 1
            name = f"{base}_{i}"
        self.suffix[base] = i
        return name

    def ushape(self, lowered: str) -> tuple[int, ...]:
        """The batch-free shape of a tensor of the lowered graph."""
        t = self.out.tensor(lowered)
        return t.shape if t.is_constant else t.shape[1:]

    def emit(self, op: str, inputs: list[str], attrs: dict[str, Any], node: Node, stands_for: str) -> str:
        """Add a lowered node computing what aten tensor `stands_for` holds; return its output."""
        name = self.fresh(node.name)
        lowered = Node(name, op, inputs, [name], attrs, node.source)
        try:
            shape = tuple(shape_rule(op)(lowered, [self.ushape(i) for i in inputs]))
        except (IRError, KeyError, IndexError, ValueError) as exc:
            raise LoweringError(f"{op} at node {_where(node)}: {exc}") from None
        torch_shape = self.g.tensor(stands_for).shape
        fmap = _feature_map(torch_shape)
        if fmap is not None and _ones_dropped(shape) == _ones_dropped((fmap[0] * fmap[1], fmap[2])):
            self.fmaps[stands_for] = fmap  # [1, C, H, W] in torch, [H*W, C] here (channels last)
        elif _ones_dropped(shape) != _ones_dropped(torch_shape):  # aliasing reshapes move size-1 dims
            raise LoweringError(
                f"{op} at node {_where(node)}: lowered shape {list(shape)} does not match torch's "
                f"{list(torch_shape)}"
            )
        self.out.add_tensor(Tensor(name, (1, *shape), "float32"))
        self.out.add_node(lowered)
        self.env[stands_for] = name
        self.made[name] = lowered
        return name

    def only_user(self, tensor: str) -> Node | None:
        users = self.users.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.g.outputs else None

    # -- ops ---------------------------------------------------------------------
    def _op_hydra_attention(self, node: Node) -> None:
        q, k, v = (self.act(n, node) for n in node.inputs)
        self.emit("hydra_attention", [q, k, v], {}, node, node.outputs[0])

    def _op_softmax_attention(self, node: Node) -> None:
        q, k, v = (self.act(n, node) for n in node.inputs)
        attrs = {"heads": int(node.attrs["heads"]), "scale": float(node.attrs["scale"])}
        self.emit("softmax_attention", [q, k, v], attrs, node, node.outputs[0])

    def _op_convolution(self, node: Node) -> None:
        if node.attrs.get("transposed") or any(node.attrs.get("output_padding") or []):
            raise unsupported(node, "transposed convolutions are not lowered")
        self._op_conv2d(node)

    def _op_conv2d(self, node: Node) -> None:
        """A ViT patch embedding (kernel == stride on the image, then .flatten(2).transpose(1, 2)) stays
        patch_embed; any other 2-d convolution is conv2d on a channels-last feature map."""
        if self._is_patch_embedding(node):
            self._patch_embed(node)
        else:
            self._conv2d(node)

    def _is_patch_embedding(self, node: Node) -> bool:
        ops = self.operands(node, ["input", "weight", "bias"])
        w, x = self.g.tensor(ops["weight"]), self.g.tensor(ops["input"])
        if not w.is_constant or len(w.shape) != 4 or len(x.shape) != 4 or ops["input"] not in self.g.inputs:
            return False
        d, _, kh, kw = w.shape
        padding = node.attrs.get("padding", [0, 0])
        padding = [0, 0] if padding == "valid" else padding
        if isinstance(padding, str) or kh != kw or list(node.attrs.get("stride", [1, 1])) != [kh, kw]:
            return False
        if any(int(p) for p in padding) or any(int(v) != 1 for v in node.attrs.get("dilation", [1, 1])):
            return False
        if int(node.attrs.get("groups", 1)) != 1 or x.shape[2] % kh or x.shape[3] % kw:
            return False
        flat = self.only_user(node.outputs[0])
        tokens = (x.shape[2] // kh) * (x.shape[3] // kw)
        if flat is None or flat.op not in _RESHAPES or self.g.tensor(flat.outputs[0]).shape != (1, d, tokens):
            return False
        tr = self.only_user(flat.outputs[0])
        return tr is not None and self._is_swap12(tr)

    def _feature_map_input(self, name: str, node: Node) -> tuple[str, tuple[int, int, int]]:
        """The lowered input of a windowed op and its (H, W, C): the image [1, C, H, W] (read channels first)
        or a feature map."""
        x = self.act(name, node)
        shape = self.g.tensor(name).shape
        if name in self.g.inputs and len(shape) == 4:
            return x, (int(shape[2]), int(shape[3]), int(shape[1]))
        if name in self.fmaps:
            return x, self.fmaps[name]
        raise unsupported(node, f"its input {name} {list(shape)} is neither the image nor a feature map "
                                "(the output of a convolution, pool or an elementwise op on one)")

    def _conv2d(self, node: Node) -> None:
        ops = self.operands(node, ["input", "weight", "bias"])
        w = self.g.tensor(ops["weight"])
        if not w.is_constant or len(w.shape) != 4:
            raise unsupported(node, "a convolution is lowered with a constant [Cout, Cin / groups, kh, kw] weight")
        x, (h, wd, c) = self._feature_map_input(ops["input"], node)
        cout, cin_g, kh, kw = w.shape
        if any(int(v) != 1 for v in node.attrs.get("dilation", [1, 1])):
            raise unsupported(node, f"dilation {node.attrs.get('dilation')} (only 1 is lowered)")
        groups = int(node.attrs.get("groups", 1))
        if groups != 1 and not (groups == c == cout and cin_g == 1):
            raise unsupported(node, f"groups {groups}: a convolution is lowered with groups 1 or depthwise "
                                    "(groups == in channels == out channels)")
        stride = _pair(node.attrs.get("stride", [1, 1]), "stride", node)
        padding = self._padding(node, (kh, kw), stride)
        b = ops.get("bias")
        bias = self.const(b, node, rank=1) if b else self.new_const(f"{node.name}_bias", np.zeros(cout, np.float32))
        weight = self.new_const(ops["weight"], np.ascontiguousarray(w.data.transpose(0, 2, 3, 1)))  # [Cout, kh, kw, Cin]
        attrs = {"in_hw": [h, wd], "stride": list(stride), "padding": padding, "groups": groups}
        self.emit("conv2d", [x, weight, bias], attrs, node, node.outputs[0])

    def _padding(self, node: Node, kernel: tuple[int, int], stride: tuple[int, int]) -> list[int]:
        """[top, left, bottom, right] from torch's padding ([ph, pw], "valid", "same") or ONNX's pads."""
        padding = node.attrs.get("padding", [0, 0])
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding == "same":
            if stride != (1, 1):
                raise unsupported(node, "padding='same' with a stride other than 1")
            (kh, kw) = kernel
            return [(kh - 1) // 2, (kw - 1) // 2, kh - 1 - (kh - 1) // 2, kw - 1 - (kw - 1) // 2]
        padding = [int(p) for p in ([padding] if isinstance(padding, int) else padding)]
        if len(padding) == 1:
            padding *= 2
        if len(padding) == 2:
            return [padding[0], padding[1], padding[0], padding[1]]
        if len(padding) == 4:  # [top, left, bottom, right] (ONNX's pads order)
            return padding
        raise unsupported(node, f"padding {padding}")

    def _lowered_producer(self, lowered: str, op: tuple[str, ...]) -> Node | None:
        """The lowered node of kind `op` computing `lowered`, when nothing reads its output yet."""
        made = self.made.get(lowered)
        if made is None or made.op not in op or lowered in self.out.outputs:
            return None
        if any(lowered in n.inputs for n in self.out.nodes):
            return None
        return made

    def _op__native_batch_norm_legit_no_training(self, node: Node) -> None:
        """Eval-mode BatchNorm: folded into the convolution before it; on any other feature map, a depthwise
        1x1 conv2d (scale and shift)."""
        ops = self.operands(node, ["input", "weight", "bias", "running_mean", "running_var"])
        src, gamma, beta, mean, var = (ops.get(k) for k in ("input", "weight", "bias", "running_mean", "running_var"))
        eps = float(node.attrs.get("eps", 1e-5))
        for extra in node.outputs[1:]:
            if self.users.get(extra) or extra in self.g.outputs:
                raise unsupported(node, "the saved mean and invstd results of batch norm are not lowered")
        consts = [self.g.tensor(n) if n else None for n in (gamma, beta, mean, var)]
        if any(t is not None and not t.is_constant for t in consts) or consts[2] is None or consts[3] is None:
            raise unsupported(node, "batch norm is lowered with constant running statistics (model.eval())")
        c = consts[2].data.size
        g_ = consts[0].data.astype(np.float64) if consts[0] is not None else np.ones(c)
        b_ = consts[1].data.astype(np.float64) if consts[1] is not None else np.zeros(c)
        scale = g_ / np.sqrt(consts[3].data.astype(np.float64) + eps)
        shift = b_ - consts[2].data.astype(np.float64) * scale
        self._scale_shift_channels(node, src, scale, shift)

    def _scale_shift_channels(self, node: Node, src: str, scale: np.ndarray, shift: np.ndarray) -> None:
        x = self.act(src, node)
        conv = self._lowered_producer(x, ("conv2d",)) if self.only_user(src) is node else None
        if conv is not None and "clamp_min" not in conv.attrs and "clamp_max" not in conv.attrs:
            w, b = (self.out.tensor(conv.inputs[i]).data.astype(np.float64) for i in (1, 2))
            conv.inputs[1] = self.new_const(conv.inputs[1], w * scale[:, None, None, None])
            conv.inputs[2] = self.new_const(conv.inputs[2], b * scale + shift)
            self.env[node.outputs[0]] = x
            if src in self.fmaps:
                self.fmaps[node.outputs[0]] = self.fmaps[src]
            return
        x, (h, wd, c) = self._feature_map_input(src, node)
        weight = self.new_const(f"{node.name}_weight", scale.reshape(c, 1, 1, 1))
        bias = self.new_const(f"{node.name}_bias", shift)
        attrs = {"in_hw": [h, wd], "stride": [1, 1], "padding": [0, 0, 0, 0], "groups": c}
        self.emit("conv2d", [x, weight, bias], attrs, node, node.outputs[0])

    def _op__native_batch_norm_legit(self, node: Node) -> None:
        if node.attrs.get("training", True):
            raise unsupported(node, _BN_TRAINING)
        self._op__native_batch_norm_legit_no_training(node)

    def _op_batch_norm(self, node: Node) -> None:
        """aten.batch_norm / native_batch_norm (input, weight, bias, running_mean, running_var)."""
        if node.attrs.get("training", False):
            raise unsupported(node, _BN_TRAINING)
        self._op__native_batch_norm_legit_no_training(node)

    _op_native_batch_norm = _op_batch_norm
    _op__native_batch_norm_legit_functional = _op__native_batch_norm_legit

    # activations: a clamp fused into the conv2d / linear before it, anything else a table (lut)
    def _activation(self, node: Node, function: str, lo: float | None = None, hi: float | None = None) -> None:
        src = node.inputs[0]
        x = self.act(src, node)
        if function in ("relu", "relu6", "hardtanh") and self.only_user(src) is node:
            made = self._lowered_producer(x, ("conv2d", "linear"))
            if made is not None:
                old_lo, old_hi = made.attrs.get("clamp_min"), made.attrs.get("clamp_max")
                if lo is not None:
                    made.attrs["clamp_min"] = lo if old_lo is None else max(lo, old_lo)
                if hi is not None:
                    made.attrs["clamp_max"] = hi if old_hi is None else min(hi, old_hi)
                self.env[node.outputs[0]] = x
                if src in self.fmaps:
                    self.fmaps[node.outputs[0]] = self.fmaps[src]
                return
        attrs: dict[str, Any] = {"function": function}
        if function == "hardtanh":
            attrs.update(min_val=float(lo if lo is not None else -np.inf), max_val=float(hi if hi is not None
                                                                                           else np.inf))
        self.emit("activation", [x], attrs, node, node.outputs[0])

    def _op_relu(self, node: Node) -> None:
        self._activation(node, "relu", 0.0)

    def _op_relu6(self, node: Node) -> None:
        self._activation(node, "relu6", 0.0, 6.0)

    def _op_hardtanh(self, node: Node) -> None:
        lo, hi = float(node.attrs.get("min_val", -1.0)), float(node.attrs.get("max_val", 1.0))
        self._activation(node, "relu6" if (lo, hi) == (0.0, 6.0) else "hardtanh", lo, hi)

    def _op_clamp(self, node: Node) -> None:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        if len(node.inputs) != 1 or (lo is None and hi is None) or not all(
                v is None or isinstance(v, (int, float)) for v in (lo, hi)):
            raise unsupported(node, "clamp is lowered with constant scalar bounds only (ReLU, ReLU6, hardtanh)")
        lo = None if lo is None else float(lo)
        hi = None if hi is None else float(hi)
        if hi is None and lo == 0.0:
            self._activation(node, "relu", 0.0)
        elif hi is None or lo is None:
            raise unsupported(node, "a one-sided clamp other than clamp(min=0) (ReLU)")
        else:
            self._activation(node, "hardtanh", lo, hi)

    _op_clamp_min = _op_clamp

    def _op_sigmoid(self, node: Node) -> None:
        self._activation(node, "sigmoid")

    def _op_tanh(self, node: Node) -> None:
        self._activation(node, "tanh")

    def _op_silu(self, node: Node) -> None:
        self._activation(node, "silu")

    def _op_hardswish(self, node: Node) -> None:
        self._activation(node, "hardswish")

    def _op_hardsigmoid(self, node: Node) -> None:
        self._activation(node, "hardsigmoid")

    # pooling
    def _op_max_pool2d(self, node: Node) -> None:
        for extra in node.outputs[1:]:  # max_pool2d_with_indices: the indices must be unused
            if self.users.get(extra) or extra in self.g.outputs:
                raise unsupported(node, "max pooling's indices are not lowered")
        x, (h, w, c) = self._feature_map_input(node.inputs[0], node)
        if node.inputs[0] in self.g.inputs:
            raise unsupported(node, "max pooling of the image itself (pool a convolution's feature map)")
        kernel = _pair(node.attrs.get("kernel_size"), "kernel_size", node)
        stride = _pair(node.attrs.get("stride") or list(kernel), "stride", node)
        if any(int(v) != 1 for v in _pair(node.attrs.get("dilation", [1, 1]), "dilation", node)):
            raise unsupported(node, "max pooling with dilation")
        if node.attrs.get("ceil_mode"):
            raise unsupported(node, "max pooling with ceil_mode=True")
        padding = self._padding(node, kernel, stride)
        attrs = {"in_hw": [h, w], "kernel": list(kernel), "stride": list(stride), "padding": padding}
        self.emit("max_pool2d", [x], attrs, node, node.outputs[0])

    _op_max_pool2d_with_indices = _op_max_pool2d

    def _op_avg_pool2d(self, node: Node) -> None:
        x, (h, w, c) = self._feature_map_input(node.inputs[0], node)
        if node.inputs[0] in self.g.inputs:
            raise unsupported(node, "average pooling of the image itself (pool a convolution's feature map)")
        kernel = _pair(node.attrs.get("kernel_size"), "kernel_size", node)
        stride = _pair(node.attrs.get("stride") or list(kernel), "stride", node)
        padding = self._padding(node, kernel, stride)
        if node.attrs.get("ceil_mode") or node.attrs.get("divisor_override") is not None:
            raise unsupported(node, "average pooling with ceil_mode=True or a divisor_override")
        if any(padding) and node.attrs.get("count_include_pad", True):
            raise unsupported(node, "padded average pooling that counts the padding (count_include_pad=True, "
                                    "torch's default): use count_include_pad=False, as TFLite does")
        attrs = {"in_hw": [h, w], "kernel": list(kernel), "stride": list(stride), "padding": padding}
        self.emit("avg_pool2d", [x], attrs, node, node.outputs[0])

    def _op_adaptive_avg_pool2d(self, node: Node) -> None:
        src = node.inputs[0]
        size = _pair(node.attrs.get("output_size"), "output_size", node)
        if src not in self.fmaps or size != (1, 1):
            raise unsupported(node, "adaptive average pooling is lowered to 1x1 (global average pooling) "
                                    "of a feature map")
        self.emit("mean_pool", [self.act(src, node)], {}, node, node.outputs[0])

    _op__adaptive_avg_pool2d = _op_adaptive_avg_pool2d

    def _op_transpose(self, node: Node) -> None:
        """x.flatten(2).transpose(1, 2) of a feature map: the channels-last tokens it already is."""
        src = node.inputs[0]
        if src in self.channels_first_tokens and self._is_swap12(node):
            self.env[node.outputs[0]] = self.act(src, node)
            return
        raise unsupported(node, "tokens are transposed only right after a convolution (.flatten(2).transpose(1, 2))")

    _op_permute = _op_transpose

    def _patch_embed(self, node: Node) -> None:
        ops = self.operands(node, ["input", "weight", "bias"])
        x = self.act(ops["input"], node)
        w = self.g.tensor(ops["weight"])
        where = _where(node)
        kind = (
            "hydra-edge lowers a convolution only as a ViT patch embedding "
            "(square kernel == stride, no padding, no dilation, groups 1)"
        )
        if not w.is_constant or len(w.shape) != 4:
            raise LoweringError(f"{node.op} at node {where} has a non-constant or non-2-d weight; {kind}")
        d, c, kh, kw = w.shape
        stride = list(node.attrs.get("stride", [1, 1]))
        padding = node.attrs.get("padding", [0, 0])
        dilation = list(node.attrs.get("dilation", [1, 1]))
        groups = int(node.attrs.get("groups", 1))
        if isinstance(padding, str):
            if padding != "valid":
                raise LoweringError(f"{node.op} at node {where} has padding={padding!r}; {kind}")
            padding = [0, 0]
        problems = []
        if kh != kw:
            problems.append(f"a {kh}x{kw} kernel (not square)")
        if stride != [kh, kw]:
            problems.append(f"stride {stride} (not the kernel size {[kh, kw]})")
        if any(int(p) != 0 for p in padding):
            problems.append(f"padding {list(padding)}")
        if any(int(v) != 1 for v in dilation):
            problems.append(f"dilation {dilation}")
        if groups != 1:
            problems.append(f"groups {groups}")
        if problems:
            raise LoweringError(f"{node.op} at node {where} has {', '.join(problems)}; {kind}")
        _, cin, h, wd = self.g.tensor(ops["input"]).shape
        if h % kh or wd % kw:
            raise LoweringError(
                f"{node.op} at node {where}: input {h}x{wd} is not a multiple of the patch size {kh}; "
                "resize the input or pick a patch size that divides it"
            )
        # The token layout: flatten(2) (or a view to [B, D, T]) then transpose(1, 2).
        conv_out = node.outputs[0]
        flat = self.only_user(conv_out)
        tokens = (h // kh) * (wd // kw)
        chain = f"{node.op} at node {where} is not followed by .flatten(2).transpose(1, 2); {kind}"
        if flat is None or flat.op not in _RESHAPES or self.g.tensor(flat.outputs[0]).shape != (1, d, tokens):
            raise LoweringError(chain)
        tr = self.only_user(flat.outputs[0])
        if tr is None or not self._is_swap12(tr):
            raise LoweringError(chain)
        b = ops.get("bias")
        bias = self.const(b, node, rank=1) if b else self.new_const(f"{node.name}_bias", np.zeros(d, np.float32))
        weight = self.const(ops["weight"], node)
        self.absorbed.update({flat.name, tr.name})
        self.emit("patch_embed", [x, weight, bias], {"patch": int(kh)}, node, tr.outputs[0])

    def _is_swap12(self, node: Node) -> bool:
        if len(node.inputs) != 1 or len(self.g.tensor(node.inputs[0]).shape) != 3:
            return False
        if node.op == "transpose":
            return sorted(int(node.attrs[k]) % 3 for k in ("dim0", "dim1")) == [1, 2]
        if node.op == "permute":
            return [int(v) % 3 for v in node.attrs.get("dims", [])] == [0, 2, 1]
        return False

    def _reshape(self, node: Node) -> None:
        """A view that only adds or drops 1s (batch-1 reshapes) is an alias.

        Not only leading ones: canonicalize turns transposes of a size-1 dim into reshapes (the element order
        is the same), so nn.MultiheadAttention's [B, T, D] -> [T, B, D] is a [T, 1, D] reshape.
        """
        src, out = node.inputs[0], node.outputs[0]
        out_shape = self.g.tensor(out).shape
        if src in self.fmaps:
            h, w, c = self.fmaps[src]
            if tuple(out_shape) == (1, c, h * w):  # flatten(2): tokens channels first, transposed next
                self.env[out] = self.act(src, node)
                self.channels_first_tokens.add(out)
                return
            if len(out_shape) == 4 and _feature_map(out_shape) == (h, w, c):
                self.env[out] = self.act(src, node)
                self.fmaps[out] = (h, w, c)
                return
            readers = self.users.get(out, [])
            if tuple(out_shape) == (1, c * h * w) and readers and out not in self.g.outputs and all(
                    r.op == "linear" for r in readers):  # flatten(1) before a Linear: its weight columns follow
                self.emit("flatten", [self.act(src, node)], {}, node, out)
                self.flattened[self.env[out]] = (h, w, c)
                return
            raise unsupported(node, f"a feature map [1, {c}, {h}, {w}] is reshaped only by flatten(2) before "
                                    "transpose(1, 2) into tokens, or by flatten(1) before a Linear")
        if not self.is_const(src) and _ones_dropped(self.g.tensor(src).shape) == _ones_dropped(
            self.g.tensor(out).shape
        ):
            self.env[out] = self.act(src, node)
            return
        raise unsupported(node, "only reshapes of the batch dimension are lowered")

    def _linear(self, node: Node, x: str, weight: str, bias: str | None, n: int) -> None:
        if bias is None:
            bias = self.new_const(f"{node.name}_bias", np.zeros(n, np.float32))
            synthetic = True
        else:
            synthetic = False
        out = self.emit("linear", [x, weight, bias], {}, node, node.outputs[0])
        if synthetic:
            self.zero_bias[out] = self.out.nodes[-1]

    def _op_linear(self, node: Node) -> None:
        ops = self.operands(node, ["input", "weight", "bias"])
        x = self.act(ops["input"], node)
        w = self.const(ops["weight"], node, rank=2)
        if x in self.flattened:  # torch's columns are in (c, y, x) order, the flattened map's in (y, x, c)
            h, wd, c = self.flattened[x]
            data = self.out.tensor(w).data
            w = self.new_const(f"{w}_hwc", data.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(len(data), -1))
        b = self.const(ops["bias"], node, rank=1) if "bias" in ops else None
        self._linear(node, x, w, b, self.out.tensor(w).shape[0])

    def _transposed_weight(self, name: str, node: Node) -> str:
        t = self.g.tensor(name)
        if not t.is_constant or t.data.ndim != 2:
            raise unsupported(node, "a matrix product is lowered only with a constant 2-d weight")
        # A weight transposed back: canonicalize named W.t() "<W>_t", so this is W again.
        base = name[:-2] if name.endswith("_t") else f"{name}_t"
        return self.new_const(base, t.data.T)

    def _op_mm(self, node: Node) -> None:
        a, w = node.inputs
        x = self.act(a, node)
        weight = self._transposed_weight(w, node)
        self._linear(node, x, weight, None, self.out.tensor(weight).shape[0])

    _op_matmul = _op_mm

    def _op_addmm(self, node: Node) -> None:
        if node.attrs.get("beta", 1) != 1 or node.attrs.get("alpha", 1) != 1:
            raise unsupported(node, "addmm with beta or alpha other than 1")
        b, a, w = node.inputs
        x = self.act(a, node)
        weight = self._transposed_weight(w, node)
        n = self.out.tensor(weight).shape[0]
        bias_t = self.g.tensor(b)
        if not bias_t.is_constant or bias_t.data.size != n:
            raise unsupported(node, "addmm is lowered only with a constant [N] bias")
        self._linear(node, x, weight, self.new_const(b, bias_t.data.reshape(n)), n)

    def _op_layer_norm(self, node: Node) -> None:
        ops = self.operands(node, ["input", "weight", "bias"])
        x = self.act(ops["input"], node)
        d = self.ushape(x)[-1]
        if list(node.attrs.get("normalized_shape", [])) != [d]:
            raise LoweringError(
                f"layer_norm at node {_where(node)} normalises over {node.attrs.get('normalized_shape')}; "
                "hydra-edge lowers LayerNorm over the last dimension only"
            )
        for extra in node.outputs[1:]:
            if self.users.get(extra) or extra in self.g.outputs:
                raise unsupported(node, "the mean and rstd results of native_layer_norm are not lowered")
        gamma = self.const(ops["weight"], node, rank=1) if "weight" in ops else self.new_const(
            f"{node.name}_weight", np.ones(d, np.float32)
        )
        beta = self.const(ops["bias"], node, rank=1) if "bias" in ops else self.new_const(
            f"{node.name}_bias", np.zeros(d, np.float32)
        )
        eps = float(node.attrs.get("eps", 1e-5))
        self.emit("layernorm", [x, gamma, beta], {"eps": eps}, node, node.outputs[0])

    _op_native_layer_norm = _op_layer_norm

    def _op_gelu(self, node: Node) -> None:
        approximate = node.attrs.get("approximate", "none")
        if approximate not in ("none", "tanh"):
            raise unsupported(node, f"gelu approximate={approximate!r}")
        x = self.act(node.inputs[0], node)
        self.emit("gelu", [x], {"approximate": approximate}, node, node.outputs[0])

    def _op_add(self, node: Node) -> None:
        alpha = node.attrs.get("alpha", 1)
        if alpha != 1:
            raise unsupported(node, f"add with alpha={alpha}")
        out = node.outputs[0]
        out_shape = self.g.tensor(out).shape
        if len(node.inputs) == 1:  # add(x, scalar)
            x = self.act(node.inputs[0], node)
            other = node.attrs.get("other")
            if not isinstance(other, (int, float)):
                raise unsupported(node, f"add of {type(other).__name__}")
            c = self.new_const(f"{node.name}_const", np.full(self.ushape(x), float(other), np.float32))
            self.emit("add", [x, c], {}, node, out)
            return
        a, b = node.inputs
        if not self.is_const(a) and not self.is_const(b):
            xa, xb = self.act(a, node), self.act(b, node)
            if self.ushape(xa) != self.ushape(xb):
                raise unsupported(
                    node, f"adds of activations of different shapes {list(self.ushape(xa))} and {list(self.ushape(xb))}"
                )
            self.emit("add", [xa, xb], {}, node, out)
            return
        if self.is_const(a) and self.is_const(b):
            raise unsupported(node, "an add of two constants survived constant folding")
        act_name, const_name = (a, b) if self.is_const(b) else (b, a)
        x = self.act(act_name, node)
        data = self.g.tensor(const_name).data
        if self.g.tensor(act_name).shape != out_shape:
            raise unsupported(node, "the constant operand broadcasts the activation to a larger shape")
        n = self.ushape(x)[-1]
        linear = self.zero_bias.get(x)
        if linear is not None and self.only_user(act_name) is node and data.size == n and data.shape[-1] == n:
            # x @ W + b written as two ops: the constant is the linear's bias.
            linear.inputs[2] = self.new_const(const_name, data.reshape(n))
            self.zero_bias.pop(x)
            self.env[out] = x
            return
        target = self.ushape(x)
        while data.ndim > len(target) and data.shape[0] == 1:
            data = data[0]
        try:
            full = np.broadcast_to(data, target)
        except ValueError:
            raise unsupported(
                node, f"constant {const_name} of shape {list(data.shape)} does not broadcast to {list(target)}"
            ) from None
        c = self.new_const(const_name, np.ascontiguousarray(full))
        self.emit("add", [x, c], {}, node, out)

    def _op_cat(self, node: Node) -> None:
        """Class (and distillation) tokens: constant rows put before the patch embedding's tokens."""
        hint = ("a concatenation is lowered only as class tokens put before the patch embedding's tokens: "
                "torch.cat([cls_token.expand(B, -1, -1), x], dim=1) right after the patch embedding")
        out_shape = self.g.tensor(node.outputs[0]).shape
        *prefix, last = node.inputs
        if len(out_shape) != 3 or int(node.attrs.get("dim", 0)) % 3 != 1 or not prefix:
            raise unsupported(node, hint)
        if self.is_const(last) or not all(self.is_const(c) for c in prefix) or self.only_user(last) is not node:
            raise unsupported(node, hint)
        x = self.act(last, node)
        embed = self._lowered_producer(x, ("patch_embed",))
        if embed is None or len(embed.inputs) != 3:
            raise unsupported(node, hint)
        d = out_shape[2]
        rows = np.concatenate([self.g.tensor(c).data.reshape(-1, d) for c in prefix]).astype(np.float32)
        embed.inputs.append(self.new_const(f"{node.name}_tokens", rows))
        t = self.out.tensor(x)
        t.shape = (1, rows.shape[0] + t.shape[1], d)
        self.env[node.outputs[0]] = x

    def _op_select(self, node: Node) -> None:
        src = node.inputs[0]
        shape = self.g.tensor(src).shape
        if len(shape) != 3 or int(node.attrs.get("dim", 0)) % 3 != 1:
            raise unsupported(node, "a select (x[:, i]) is lowered only as one token of [B, T, D] tokens")
        x = self.act(src, node)
        index = int(node.attrs["index"]) % shape[1]
        self.emit("select_token", [x], {"index": index}, node, node.outputs[0])

    def _op_mul(self, node: Node) -> None:
        if not self._silu(node):
            self._scale_by_constant(node, divide=False)

    def _silu(self, node: Node) -> bool:
        """x * sigmoid(x) (SiLU as the legacy ONNX exporter writes it): the sigmoid's table becomes SiLU's."""
        if len(node.inputs) != 2:
            return False
        for x, s in (node.inputs, node.inputs[::-1]):
            sig = self.prod.get(s)
            if sig is None or sig.op != "sigmoid" or sig.inputs[0] != x or self.only_user(s) is not node:
                continue
            made = self._lowered_producer(self.env.get(s, ""), ("activation",))
            if made is None or made.attrs.get("function") != "sigmoid":
                continue
            made.attrs["function"] = "silu"
            self.env[node.outputs[0]] = self.env[s]
            if s in self.fmaps:
                self.fmaps[node.outputs[0]] = self.fmaps[s]
            return True
        return False

    def _op_div(self, node: Node) -> None:
        self._scale_by_constant(node, divide=True)

    def _scale_by_constant(self, node: Node, divide: bool) -> None:
        """x * c or x / c with x a linear's output (or a sum of linears' outputs): c goes into their weights."""
        hint = ("a product or quotient with a constant is lowered only on a linear's output (or a sum of "
                "linears' outputs); " + _HYDRA_HINT)
        other = node.attrs.get("other")
        if len(node.inputs) == 2 and self.is_const(node.inputs[1]) and self.g.tensor(node.inputs[1]).data.size == 1:
            other = float(self.g.tensor(node.inputs[1]).data.reshape(-1)[0])
        if len(node.inputs) != 1 and other is None or not isinstance(other, (int, float)) or other == 0:
            raise unsupported(node, hint)
        factor = 1.0 / float(other) if divide else float(other)
        src = node.inputs[0]
        if self.is_const(src) or self.only_user(src) is not node:
            raise unsupported(node, hint)
        x = self.act(src, node)
        linears = self._linears_summed_into(x)
        if linears is None:
            raise unsupported(node, hint)
        for lin in linears:  # each linear is read only by this sum, so scaling it changes nothing else
            for i in (1, 2):
                lin.inputs[i] = self.new_const(lin.inputs[i], self.out.tensor(lin.inputs[i]).data * factor)
        self.env[node.outputs[0]] = x

    def _linears_summed_into(self, lowered: str, reader: Node | None = None) -> list[Node] | None:
        """The linear nodes whose outputs `lowered` adds up (or its own linear), each read only by that sum
        (`reader`; `lowered` itself has no reader yet)."""
        producer = self.made.get(lowered)
        readers = [n for n in self.out.nodes if lowered in n.inputs]
        if producer is None or lowered in self.out.outputs or readers != ([reader] if reader else []):
            return None
        if producer.op == "linear":
            return [producer]
        if producer.op == "add" and producer.inputs[0] != producer.inputs[1]:
            found = [self._linears_summed_into(i, producer) for i in producer.inputs]
            if all(f is not None for f in found):
                return [lin for f in found for lin in f]
        return None

    def _op_mean(self, node: Node) -> None:
        src = node.inputs[0]
        x = self.act(src, node)
        shape = self.g.tensor(src).shape
        dims = node.attrs.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if src in self.fmaps and sorted(int(d) % 4 for d in dims) == [2, 3] and node.attrs.get("dtype") is None:
            self.emit("mean_pool", [x], {}, node, node.outputs[0])  # global average pooling
            return
        if len(shape) != 3 or [int(d) % 3 for d in dims] != [1] or node.attrs.get("dtype") is not None:
            raise unsupported(node, "mean is lowered only over the token dimension of [B, T, D] tokens")
        self.emit("mean_pool", [x], {}, node, node.outputs[0])


# The aten ops lowering has a handler for (passes/support.py checks a whole graph against these first).
LOWERED_OPS = frozenset(n.removeprefix("_op_") for n in vars(_Lowerer) if n.startswith("_op_")) | frozenset(_RESHAPES)
