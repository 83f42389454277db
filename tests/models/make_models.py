"""Make the small test models committed beside this script, one subcommand per format.

The tests need only the oracles (onnxruntime, tflite-micro, ai-edge-litert), never the converters: the
models are made offline, once, and committed. Each format has one function; run them as

    .venv-tflite/bin/python tests/models/make_models.py tflite            # tests/models/tfl_*.tflite
    .venv-tflite/bin/python tests/models/make_models.py tflite --bench    # benchmarks/models/*.tflite

onnx (docs/frontends.md, "ONNX"): small ViTs of hydra_edge.models.hydra_vit (seeded weights, random
LayerNorm affines) exported by both torch exporters: dynamo (opset 18, external_data=False) and the legacy
TorchScript one (dynamo=False, opset 17; opset 14 writes LayerNorm decomposed), Hydra with both phi
spellings, softmax attention, and a model mixing the two.

tflite (docs/frontends.md, "TFLite"): PyTorch modules in the forms TFLite Micro's int8 kernels cover,
converted to float .tflite by litert-torch, then to static int8 by ai-edge-quantizer (recipe
static_wi8_ai8: int8 weights per channel, int8 activations), calibrated on seeded standard-normal inputs,
constant buffers moved inline. The ViT twins are benchmarks/tflite_models.py's, imported, not copied.

tflite --bench (benchmarks/models/README.md): the models of benchmarks/vs_tflm_cmsis.py, by the same recipe:
MLPerf Tiny's reference architectures (ResNet-8, DS-CNN small, MobileNetV1 0.25 at 96x96, the FC autoencoder)
with seeded weights and BatchNorm folded, and the TFLM-form twin of examples/hydra_vit_cifar10.pt2 (its
weights, calibrated on the inputs `hydra-edge compile` calibrates the .pt2 on by default).

torchscript (docs/frontends.md, "TorchScript and pickles"): small Hydra ViTs through torch.jit.script and
torch.jit.trace; needs only torch (.venv/bin/python tests/models/make_models.py torchscript).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SEED = 0
CALIB_SAMPLES = 16
MAX_BYTES = 150 * 1024  # keep every committed model small


def _checked(target: Path, max_bytes: int = MAX_BYTES) -> Path:
    """A model just written: refuse it if it is too big to commit, else say so and return it."""
    size = target.stat().st_size
    if size > max_bytes:
        raise RuntimeError(f"{target.name} is {size} bytes, over the {max_bytes} limit for committed models")
    shown = target.resolve().relative_to(ROOT) if target.resolve().is_relative_to(ROOT) else target
    print(f"wrote {shown} ({size} bytes)", file=sys.stderr)
    return target


# ---------------------------------------------------------------- onnx

# name -> (HydraViTConfig overrides, exporter, opset); every model: 16x16x3 input, patch 4 (16 tokens), D 24.
# (The dynamo exporter's metadata triples a file: its softmax models have one block, to stay small.)
ONNX_SMALL = dict(image_size=16, patch_size=4, embed_dim=24, depth=2, mlp_ratio=2.0)
ONNX_MODELS = {
    "onnx_hydra_dynamo_norm": (dict(phi_style="norm"), "dynamo", 18),
    "onnx_hydra_dynamo_normalize": (dict(phi_style="normalize"), "dynamo", 18),
    "onnx_hydra_legacy_norm": (dict(phi_style="norm"), "legacy", 17),
    "onnx_hydra_legacy_normalize": (dict(phi_style="normalize"), "legacy", 17),
    "onnx_hydra_legacy_opset14": (dict(phi_style="norm", depth=1), "legacy", 14),
    "onnx_softmax_dynamo_manual": (dict(attention="softmax", heads=2, softmax_style="manual", depth=1), "dynamo", 18),
    "onnx_softmax_dynamo_sdpa": (dict(attention="softmax", heads=2, softmax_style="sdpa", depth=1), "dynamo", 18),
    "onnx_softmax_legacy_manual": (dict(attention="softmax", heads=3, softmax_style="manual"), "legacy", 17),
    "onnx_mixed_dynamo": (dict(attention=("hydra", "softmax"), heads=2, softmax_style="manual"), "dynamo", 18),
}


def onnx_model(name: str):
    """The seeded torch module of ONNX test model `name` and its config."""
    import dataclasses

    import torch
    from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig

    overrides, _, _ = ONNX_MODELS[name]
    fields = {f.name for f in dataclasses.fields(HydraViTConfig)}
    missing = set(overrides) - fields
    if missing:  # e.g. softmax attention before HydraViTConfig(attention=...) existed
        raise RuntimeError(f"{name}: HydraViTConfig has no field {sorted(missing)}")
    cfg = HydraViTConfig(**{**ONNX_SMALL, **overrides})
    torch.manual_seed(SEED)
    model = HydraViT(cfg).eval()
    with torch.no_grad():  # random LayerNorm affines: the integer LayerNorm sees more than 1 and 0
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model, cfg


def make_onnx(out: Path, only: list[str] | None = None) -> list[Path]:
    """torch.onnx.export each ONNX_MODELS entry; a model whose config fields do not exist yet is skipped."""
    if str(ROOT / "toolchain") not in sys.path:
        sys.path.insert(0, str(ROOT / "toolchain"))
    import warnings

    import onnx
    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter's notice
    written = []
    for name, (_, exporter, opset) in ONNX_MODELS.items():
        if only and name not in only:
            continue
        try:
            model, cfg = onnx_model(name)
        except RuntimeError as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        example = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
        target = out / f"{name}.onnx"
        if exporter == "dynamo":
            torch.onnx.export(model, (example,), str(target), dynamo=True, opset_version=opset,
                              external_data=False, input_names=["image"], output_names=["logits"])
        else:
            torch.onnx.export(model, (example,), str(target), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["logits"])
        onnx.checker.check_model(onnx.load(str(target)))
        written.append(_checked(target))
    return written


# ---------------------------------------------------------------- tflite

def _tflite_modules():
    """The torch modules of the TFLite test models: name -> (module, example input shape)."""
    import torch
    import torch.nn.functional as F
    from tflite_models import TfliteHydraViT, tflite_gelu, tflm_variant  # the TFLM-form twins
    from hydra_edge.models.hydra_vit import HydraViTConfig
    from torch import nn

    class TinyMlp(nn.Module):
        """FULLY_CONNECTED (with and without RELU), RESHAPE, MEAN: the first vertical slice."""

        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 8, 16)
            h = torch.relu(self.fc1(x))  # (1, 8, 32)
            h = h.reshape(1, 4, 64).reshape(1, 8, 32)
            return self.fc2(h.mean(dim=1))  # (1, 10)

    class SmallCnn(nn.Module):
        """CONV_2D, DEPTHWISE_CONV_2D (stride, dilation, depth multiplier), PAD, pools, MEAN, FULLY_CONNECTED."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, stride=1, padding=1)
            self.dw = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)  # depth multiplier 2
            self.conv2 = nn.Conv2d(16, 16, 3, padding=0, dilation=2)
            self.pw = nn.Conv2d(16, 24, 1)
            self.fc = nn.Linear(24, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 3, 16, 16)
            x = F.relu6(self.conv1(x))
            x = F.max_pool2d(x, 2)  # 8x8
            x = F.relu(self.dw(F.pad(x, (1, 1, 1, 1))))  # PAD then 5x5
            x = self.conv2(F.pad(x, (2, 2, 2, 2)))  # 5x5
            x = F.avg_pool2d(self.pw(x), 2, stride=1)  # 4x4
            return self.fc(x.mean(dim=(2, 3)))

    class SoftmaxTwin(TfliteHydraViT):
        """The softmax-attention ViT in TFLM's forms: q @ k^T * scale -> SOFTMAX -> @ v (BATCH_MATMUL)."""

        def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
            a = block.attn
            b, t, d = x.shape
            h = block.norm1(x)
            q, k, v = (a._split(m(h)) for m in (a.q, a.k, a.v))  # (1, H, T, dh)
            attn = torch.softmax((q @ k.transpose(-2, -1)) * a.scale, dim=-1)
            x = x + a.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
            m = block.mlp
            return x + m.fc2(tflite_gelu(m.fc1(block.norm2(x))))

    torch.manual_seed(SEED)
    small = dict(image_size=16, patch_size=4, embed_dim=32, depth=2, mlp_ratio=2.0)
    _, hydra = tflm_variant(HydraViTConfig(**small))
    soft_cfg = HydraViTConfig(**small, attention="softmax", heads=2, softmax_style="manual")
    torch.manual_seed(SEED)
    from hydra_edge.models.hydra_vit import HydraViT
    soft = SoftmaxTwin(soft_cfg).eval()
    soft.load_state_dict(HydraViT(soft_cfg).state_dict(), strict=True)
    torch.manual_seed(SEED)
    return {
        "tfl_tiny_mlp": (TinyMlp().eval(), (1, 8, 16)),
        "tfl_small_cnn": (SmallCnn().eval(), (1, 3, 16, 16)),
        "tfl_hydra_vit": (hydra, (1, 3, 16, 16)),
        "tfl_softmax_vit": (soft.eval(), (1, 3, 16, 16)),
    }


def _tflite_paths() -> None:
    for extra in (ROOT / "toolchain", ROOT / "benchmarks"):  # hydra_edge.models and tflite_models, no install
        if str(extra) not in sys.path:
            sys.path.insert(0, str(extra))


def short_tensor_names(path: Path) -> int:
    """Rewrite a .tflite's tensor names without the Python module paths litert-torch puts in each scope
    ('__main__._bench_tflite_modules.<locals>.ResNet8/torch.nn.modules.conv.Conv2d_s2a' -> 'ResNet8/Conv2d_s2a')
    and with a scope repeated across ';;' kept once (a name that then repeats another gets '~2', '~3', ...):
    the same graph, names a few KB shorter. Returns the bytes saved."""
    import re

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    qualified = re.compile(r"(?:[A-Za-z_<>][\w<>]*\.)+(?=[A-Za-z_]\w*)")
    for graph in model.subgraphs:
        seen: set[bytes] = set()
        for t in graph.tensors:
            name = qualified.sub("", (t.name or b"").decode(errors="replace"))
            short = base = ";;".join(dict.fromkeys(name.split(";;"))).encode()
            k = 1
            while short in seen:  # the converter's names are unique: so are these
                k += 1
                short = base + b"~%d" % k
            seen.add(short)
            t.name = short
    builder = flatbuffers.Builder(len(buf) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return len(buf) - path.stat().st_size


def convert_tflite(module, shape: tuple[int, ...], target: Path, calib=None, max_bytes: int = MAX_BYTES,
                   short_names: bool = False) -> Path:
    """One torch module -> int8 .tflite `target`: float convert with litert-torch, static int8 with
    ai-edge-quantizer (static_wi8_ai8) calibrated on `calib` (float32, one sample per row; default
    CALIB_SAMPLES seeded standard-normal inputs), buffers inline (and tensor names shortened)."""
    _tflite_paths()
    import litert_torch
    import numpy as np
    import torch
    from ai_edge_quantizer import quantizer, recipe
    from tflite_models import _signature, inline_buffers

    name = target.stem
    if calib is None:
        rng = np.random.default_rng(SEED)
        calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(CALIB_SAMPLES)]
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / f"{name}.float.tflite"
        litert_torch.convert(module, (torch.zeros(shape),)).export(str(float_path))
        qt = quantizer.Quantizer(str(float_path))
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        sig = _signature(float_path)
        samples = [{sig["input"]: np.asarray(x, dtype=np.float32).reshape(shape)} for x in calib]
        calibrated = qt.calibrate({sig["key"]: samples})
        int8_path = Path(tmp) / f"{name}.int8.tflite"
        qt.quantize(calibrated).export_model(str(int8_path), overwrite=True)
        inline_buffers(int8_path)
        if short_names:
            short_tensor_names(int8_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(int8_path.read_bytes())
    return _checked(target, max_bytes)


def make_tflite(out: Path, only: list[str] | None = None) -> list[Path]:
    """The test models: float convert with litert-torch, static int8 with ai-edge-quantizer, buffers inline."""
    _tflite_paths()
    written = []
    for name, (module, shape) in _tflite_modules().items():
        if only and name not in only:
            continue
        written.append(convert_tflite(module, shape, out / f"{name}.tflite"))
    return written


# ---------------------------------------------------------------- benchmark models (benchmarks/models)

# benchmarks/vs_tflm_cmsis.py's models: the MLPerf Tiny v1 reference architectures with seeded random weights,
# and the TFLM-form twin of the bundled example ViT. Bigger than the test models (MobileNetV1 0.25 alone holds
# 208k int8 weights), so they have their own folder and limit.
BENCH_OUT = ROOT / "benchmarks" / "models"
BENCH_MAX_BYTES = 400 * 1024
BN_SAMPLES = 64  # seeded standard-normal inputs that set each BatchNorm's running statistics
EXAMPLE_PT2 = ROOT / "examples" / "hydra_vit_cifar10.pt2"


def _bench_tflite_modules():
    """name -> (torch module in eval mode, BatchNorm folded, example input shape, calibration rows or None).

    The architectures are MLPerf Tiny's reference models (github.com/mlcommons/tiny, benchmark/training):
    NHWC inputs as there (no TRANSPOSE in the .tflite), Keras 'same' padding (a stride-2 convolution pads
    0 before and 1 after: spelled F.pad + padding 0, which litert-torch writes as CONV_2D SAME), softmax
    outputs where the reference has them. Weights: PyTorch's default (seeded) initialisation; each
    BatchNorm gets the running mean and variance of its input over BN_SAMPLES seeded standard-normal
    inputs, a random affine (weight in [0.5, 1.5], bias in [-0.25, 0.25]), and is then folded into the
    convolution or linear layer before it; MobileNetV1's logits are centred (centre_head)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    def conv_bn(cin: int, cout: int, k, stride: int = 1, padding=0, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False),
                             nn.BatchNorm2d(cout))

    def same_s2(x: torch.Tensor) -> torch.Tensor:
        """Keras 'same' padding of a 3x3 stride-2 convolution on an even size: 0 before, 1 after."""
        return F.pad(x, (0, 1, 0, 1))

    class ResNet8(nn.Module):
        """MLPerf Tiny image classification (CIFAR-10, 32x32x3): conv 16, three residual stacks of 16, 32, 64
        filters (the last two stride 2 with a 1x1 stride-2 shortcut), average pool 8x8, FC 10, softmax."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = conv_bn(3, 16, 3, padding=1)
            self.s1a, self.s1b = conv_bn(16, 16, 3, padding=1), conv_bn(16, 16, 3, padding=1)
            self.s2a, self.s2b, self.s2s = conv_bn(16, 32, 3, stride=2), conv_bn(32, 32, 3, padding=1), \
                nn.Conv2d(16, 32, 1, stride=2)
            self.s3a, self.s3b, self.s3s = conv_bn(32, 64, 3, stride=2), conv_bn(64, 64, 3, padding=1), \
                nn.Conv2d(32, 64, 1, stride=2)
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 32, 32, 3)
            x = F.relu(self.stem(x.permute(0, 3, 1, 2)))
            x = F.relu(x + self.s1b(F.relu(self.s1a(x))))
            x = F.relu(self.s2s(x) + self.s2b(F.relu(self.s2a(same_s2(x)))))
            x = F.relu(self.s3s(x) + self.s3b(F.relu(self.s3a(same_s2(x)))))
            return torch.softmax(self.fc(F.avg_pool2d(x, 8).flatten(1)), dim=-1)

    class DsCnn(nn.Module):
        """MLPerf Tiny keyword spotting, DS-CNN small (49x10x1 MFCCs): conv 10x4 stride 2, 64 filters
        (Keras 'same': 4 rows before, 5 after, 1 column each side), four depthwise-separable blocks of 64
        (3x3 depthwise, 1x1 conv), average pool 24x5, FC 12, softmax."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = conv_bn(1, 64, (10, 4), stride=2)
            self.blocks = nn.ModuleList(nn.ModuleList([conv_bn(64, 64, 3, padding=1, groups=64), conv_bn(64, 64, 1)])
                                        for _ in range(4))
            self.fc = nn.Linear(64, 12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 49, 10, 1)
            x = F.relu(self.stem(F.pad(x.permute(0, 3, 1, 2), (1, 1, 4, 5))))  # (1, 64, 25, 5)
            for dw, pw in self.blocks:
                x = F.relu(pw(F.relu(dw(x))))
            return torch.softmax(self.fc(F.avg_pool2d(x, (24, 5)).flatten(1)), dim=-1)

    class MobileNetV1(nn.Module):
        """MLPerf Tiny visual wake words: MobileNetV1 alpha 0.25 at 96x96x3: conv 3x3 stride 2 (8 filters),
        13 depthwise-separable blocks (16, 32, 32, 64, 64, 128 x 6, 256, 256 filters; stride 2 at 32, 64,
        128, 256), average pool 3x3, FC 2, softmax."""

        PLAN = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [(256, 2), (256, 1)]

        def __init__(self) -> None:
            super().__init__()
            self.stem = conv_bn(3, 8, 3, stride=2)
            cin, blocks = 8, []
            for cout, stride in self.PLAN:
                blocks.append(nn.ModuleList([conv_bn(cin, cin, 3, stride=stride, padding=1 if stride == 1 else 0,
                                                     groups=cin), conv_bn(cin, cout, 1)]))
                cin = cout
            self.blocks = nn.ModuleList(blocks)
            self.strides = [stride for _, stride in self.PLAN]
            self.fc = nn.Linear(256, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 96, 96, 3)
            x = F.relu(self.stem(same_s2(x.permute(0, 3, 1, 2))))  # (1, 8, 48, 48)
            for (dw, pw), stride in zip(self.blocks, self.strides):
                x = F.relu(pw(F.relu(dw(same_s2(x) if stride == 2 else x))))
            return torch.softmax(self.fc(F.avg_pool2d(x, 3).flatten(1)), dim=-1)

    class AutoEncoder(nn.Module):
        """MLPerf Tiny anomaly detection (ToyADMOS, 640 = 5 frames x 128 mel bins): FC 640-128-128-128-128-8-
        128-128-128-128-640, BatchNorm and ReLU after every hidden layer, a linear output."""

        WIDTHS = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]

        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b))
                                        for a, b in zip(self.WIDTHS, self.WIDTHS[1:]))
            self.out = nn.Linear(128, 640)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 640)
            for layer in self.hidden:
                x = F.relu(layer(x))
            return self.out(x)

    def fold_batchnorms(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
        """BatchNorm statistics from seeded inputs, a seeded random affine, then each (conv|linear, BN) pair
        folded into one layer: the model litert-torch converts has no BatchNorm left."""
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the batches below
        x = torch.from_numpy(np.random.default_rng(SEED + 1).standard_normal((BN_SAMPLES, *shape[1:])))
        model.train()
        with torch.no_grad():
            model(x.float())
            for bn in bns:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.25, 0.25)
        model.eval()
        x0 = x[:4].float()
        with torch.no_grad():
            before = model(x0)
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.Sequential) and len(child) == 2 and isinstance(child[1], nn.BatchNorm1d
                                                                                       | nn.BatchNorm2d):
                    fuse = fuse_conv_bn_eval if isinstance(child[0], nn.Conv2d) else fuse_linear_bn_eval
                    setattr(parent, name, fuse(child[0], child[1]))
        if any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules()):
            raise RuntimeError(f"{type(model).__name__}: a BatchNorm was left unfolded")
        with torch.no_grad():
            err = float((model(x0) - before).abs().max())
        if err > 1e-4 * max(1.0, float(before.abs().max())):
            raise RuntimeError(f"{type(model).__name__}: folding the BatchNorms changed the outputs by {err}")
        return model

    def centre_head(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
        """The classifier's mean logits over the BatchNorm inputs taken out of its bias (a data-dependent init
        of the last layer). Untrained, MobileNetV1's two logits sit about 10 apart whatever the input: its int8
        softmax output would be 127, -128 on every input, leaving the output bits nothing to show. (ResNet-8's
        and DS-CNN's outputs already vary; centred, more of their logits would clip together.)"""
        feats = {}
        hook = model.fc.register_forward_hook(lambda mod, inp, out: feats.__setitem__("logits", out))
        x = torch.from_numpy(np.random.default_rng(SEED + 1).standard_normal((BN_SAMPLES, *shape[1:]))).float()
        with torch.no_grad():
            model(x)
            logits = feats["logits"]
            model.fc.bias -= logits.mean(dim=0)
        hook.remove()
        return model

    modules = {}
    for name, cls, shape in (("resnet8", ResNet8, (1, 32, 32, 3)), ("ds_cnn", DsCnn, (1, 49, 10, 1)),
                             ("mobilenet_v1_025", MobileNetV1, (1, 96, 96, 3)),
                             ("autoencoder", AutoEncoder, (1, 640))):
        torch.manual_seed(SEED)
        model = fold_batchnorms(cls(), shape)
        modules[name] = (centre_head(model, shape) if cls is MobileNetV1 else model, shape, None)

    # The bundled example's twin: its weights, calibrated on the inputs `hydra-edge compile` calibrates the
    # .pt2 on when given no --calib (quant.calibrate.fallback_calibration: default_rng(0), standard normal).
    from hydra_edge.quant.calibrate import FALLBACK_SAMPLES
    from tflite_models import twin_from_pt2

    model, twin = twin_from_pt2(EXAMPLE_PT2)
    cfg = model.cfg
    shape = (1, cfg.in_channels, cfg.image_size, cfg.image_size)
    calib = np.random.default_rng(0).standard_normal((FALLBACK_SAMPLES, *shape)).astype(np.float32)
    modules[EXAMPLE_PT2.stem] = (twin, shape, calib)
    return modules


@contextlib.contextmanager
def _nhwc_constant_pad():
    """litert-torch 0.10's layout pass has no NHWC rewrite for a zero pad (aten.constant_pad_nd): a pad
    between two convolutions stays NCHW, wrapped in TRANSPOSEs, and never fuses into the stride-2
    convolution after it. Registered here (only while the benchmark models convert), the pad of H and W
    is written NHWC and the converter folds it into CONV_2D / DEPTHWISE_CONV_2D padding SAME, as the
    MLPerf Tiny reference .tflite files have it. A pad of more than the last two dimensions stays NCHW."""
    import torch
    from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_check, layout_rewrite

    op = torch.ops.aten.constant_pad_nd.default

    def pad_nhwc(x, pad, value=0.0):
        return op(x, [0, 0, *pad], value)

    def rewrite(node) -> None:
        node.target = pad_nhwc

    def nhwcable(node):
        ok = (len(node.args[1]) <= 4 and layout_check.is_4d(node)
              and layout_check.all_layout_sensitive_inputs_are_4d(node))
        return layout_check.NHWCable(ok, must_be=False)

    registries = ((layout_rewrite.rewriters, rewrite), (layout_check.nhwcable_node_checkers, nhwcable))
    saved = [(reg, reg.get(op)) for reg, _ in registries]
    for reg, func in registries:
        reg[op] = func
    try:
        yield
    finally:
        for reg, old in saved:
            if old is None:
                reg.pop(op, None)
            else:
                reg[op] = old


def make_bench_tflite(out: Path, only: list[str] | None = None) -> list[Path]:
    """benchmarks/models/*.tflite, the same recipe as the test models (convert_tflite), zero pads NHWC."""
    _tflite_paths()
    written = []
    with _nhwc_constant_pad():
        for name, (module, shape, calib) in _bench_tflite_modules().items():
            if only and name not in only:
                continue
            written.append(convert_tflite(module, shape, out / f"{name}.tflite", calib, BENCH_MAX_BYTES,
                                          short_names=True))
    return written


# ---------------------------------------------------------------- torchscript

# name -> (how it is saved, HydraViTConfig overrides). torch.jit only: the main .venv suffices.
TORCHSCRIPT_MODELS = {
    "ts_hydra_vit_scripted": ("script", {"phi_style": "normalize"}),
    "ts_hydra_vit_traced": ("trace", {}),
}
TORCHSCRIPT_CONFIG = {"image_size": 16, "patch_size": 4, "embed_dim": 24, "depth": 2, "mlp_ratio": 2.0,
                      "num_classes": 10}


def make_torchscript(out: Path, only: list[str] | None = None) -> list[Path]:
    """Small Hydra ViTs saved with torch.jit.save: scripted (its input shape in the archive's extra file
    hydra_edge.input_shape) and traced (torch.jit.trace stores the inputs it traced with)."""
    sys.path.insert(0, str(ROOT / "toolchain"))
    import torch
    from hydra_edge.models.hydra_vit import HydraViT, HydraViTConfig

    written = []
    for name, (how, overrides) in TORCHSCRIPT_MODELS.items():
        if only and name not in only:
            continue
        cfg = HydraViTConfig(**TORCHSCRIPT_CONFIG, **overrides)
        torch.manual_seed(SEED)
        model = HydraViT(cfg).eval()
        with torch.no_grad():  # LayerNorm affine away from 1/0, as tests/model_zoo.py does
            for m in model.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        target = out / f"{name}.pt"
        if how == "script":
            extra = {"hydra_edge.input_shape": ",".join(map(str, shape))}
            torch.jit.save(torch.jit.script(model), str(target), _extra_files=extra)
        else:
            torch.jit.save(torch.jit.trace(model, torch.zeros(1, *shape)), str(target))
        written.append(_checked(target))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="format", required=True)
    t = sub.add_parser("tflite", help="int8 .tflite models (litert-torch + ai-edge-quantizer)")
    t.add_argument("--only", nargs="*", help="model names to (re)make, default all")
    t.add_argument("--out", type=Path, default=None, help="default tests/models, with --bench benchmarks/models")
    t.add_argument("--bench", action="store_true",
                   help="the benchmark models (MLPerf Tiny architectures, the example ViT's twin), not the test ones")
    ts = sub.add_parser("torchscript", help="TorchScript .pt models (torch.jit.script / torch.jit.trace)")
    ts.add_argument("--only", nargs="*", help="model names to (re)make, default all")
    ts.add_argument("--out", type=Path, default=HERE)
    o = sub.add_parser("onnx", help=".onnx models (torch.onnx.export: dynamo and legacy exporters)")
    o.add_argument("--only", nargs="*", help="model names to (re)make, default all")
    o.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    if args.format == "onnx":
        make_onnx(args.out, args.only)
    if args.format == "torchscript":
        make_torchscript(args.out, args.only)
    if args.format == "tflite":
        # The converters print a lot on stdout (Python and C level): keep it on stderr.
        sys.stdout.flush()
        os.dup2(2, 1)
        if args.bench:
            make_bench_tflite(args.out or BENCH_OUT, args.only)
        else:
            make_tflite(args.out or HERE, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
