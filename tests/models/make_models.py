"""Make the small test models committed beside this script, one subcommand per format.

The tests need only the oracles (onnxruntime, tflite-micro, ai-edge-litert), never the converters: the
models are made offline, once, and committed. Each format has one function; run them as

    .venv-tflite/bin/python tests/models/make_models.py tflite

onnx (docs/frontends.md, "ONNX"): small ViTs of hydra_edge.models.hydra_vit (seeded weights, random
LayerNorm affines) exported by both torch exporters: dynamo (opset 18, external_data=False) and the legacy
TorchScript one (dynamo=False, opset 17; opset 14 writes LayerNorm decomposed), Hydra with both phi
spellings, softmax attention, and a model mixing the two.

tflite (docs/frontends.md, "TFLite"): PyTorch modules in the forms TFLite Micro's int8 kernels cover,
converted to float .tflite by litert-torch, then to static int8 by ai-edge-quantizer (recipe
static_wi8_ai8: int8 weights per channel, int8 activations), calibrated on seeded standard-normal inputs,
constant buffers moved inline. The ViT twins are benchmarks/tflite_models.py's, imported, not copied.

torchscript (docs/frontends.md, "TorchScript and pickles"): small Hydra ViTs through torch.jit.script and
torch.jit.trace; needs only torch (.venv/bin/python tests/models/make_models.py torchscript).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SEED = 0
CALIB_SAMPLES = 16
MAX_BYTES = 150 * 1024  # keep every committed model small


def _checked(target: Path) -> Path:
    """A model just written: refuse it if it is too big to commit, else say so and return it."""
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{target.name} is {size} bytes, over the {MAX_BYTES} limit for committed models")
    print(f"wrote {target.relative_to(ROOT)} ({size} bytes)", file=sys.stderr)
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


def make_tflite(out: Path, only: list[str] | None = None) -> list[Path]:
    """Float convert with litert-torch, static int8 with ai-edge-quantizer, buffers inline."""
    for extra in (ROOT / "toolchain", ROOT / "benchmarks"):  # hydra_edge.models and tflite_models, no install
        if str(extra) not in sys.path:
            sys.path.insert(0, str(extra))
    import litert_torch
    import numpy as np
    import torch
    from ai_edge_quantizer import quantizer, recipe
    from tflite_models import _signature, inline_buffers

    written = []
    for name, (module, shape) in _tflite_modules().items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            float_path = Path(tmp) / f"{name}.float.tflite"
            litert_torch.convert(module, (torch.zeros(shape),)).export(str(float_path))
            qt = quantizer.Quantizer(str(float_path))
            qt.load_quantization_recipe(recipe.static_wi8_ai8())
            sig = _signature(float_path)
            rng = np.random.default_rng(SEED)
            samples = [{sig["input"]: rng.standard_normal(shape).astype(np.float32)} for _ in range(CALIB_SAMPLES)]
            calib = qt.calibrate({sig["key"]: samples})
            int8_path = Path(tmp) / f"{name}.int8.tflite"
            qt.quantize(calib).export_model(str(int8_path), overwrite=True)
            inline_buffers(int8_path)
            target = out / f"{name}.tflite"
            target.write_bytes(int8_path.read_bytes())
        written.append(_checked(target))
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
    t.add_argument("--out", type=Path, default=HERE)
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
        make_tflite(args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
