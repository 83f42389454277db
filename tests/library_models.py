"""ViTs and CNNs as people write them: built from timm, torchvision and transformers, made small.

Every model takes a [1, 3, 32, 32] image and gives 10 logits; the ViTs use patch 4, D 96, depth 3,
3 heads (the sizes of issue 17). Weights are seeded (`build(name, seed)`), so a test and the benchmark
see the same model.

torchvision on the CPU torch: PyPI's torchvision wheel is built against CUDA torch, so its C
extension (detection ops such as nms) does not load beside the CPU torch 2.13.0, and `import
torchvision` then fails in its fake-kernel registrations ("operator torchvision::nms does not exist").
The ViT and ResNet code is pure Python and never calls those ops, so `import_torchvision()` declares
the two operator schemas that torchvision registers fake kernels for unconditionally before the first
import; the ops stay without kernels (calling one raises). Nothing else of torchvision is changed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import torch
from torch import nn

IMAGE, PATCH, DIM, DEPTH, HEADS, CLASSES = 32, 4, 96, 3, 3, 10
_TORCHVISION_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_schema_library: list[torch.library.Library] = []  # kept alive: dropping a Library undefines its ops


def import_torchvision():
    """`import torchvision`, also with the CPU torch (see the module docstring)."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so that it is imported again from the top
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_OPS:
        lib.define(schema)
    _schema_library.append(lib)
    return importlib.import_module("torchvision")


def _timm_vit(**kw) -> nn.Module:
    import_torchvision()  # timm imports torchvision
    import timm

    args = dict(img_size=IMAGE, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                num_classes=CLASSES, mlp_ratio=4.0)
    args.update(kw)
    return timm.models.vision_transformer.VisionTransformer(**args)


def timm_vit_token(qkv_bias: bool = True) -> nn.Module:
    """timm's default: a class token read out by x[:, 0]."""
    return _timm_vit(global_pool="token", qkv_bias=qkv_bias)


def timm_vit_avg(fc_norm: bool) -> nn.Module:
    """Average pooling without a class token; fc_norm: LayerNorm on the pooled vector."""
    return _timm_vit(global_pool="avg", class_token=False, fc_norm=fc_norm)


def deit_tiny() -> nn.Module:
    import_torchvision()
    import timm

    return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=IMAGE, patch_size=PATCH,
                             embed_dim=DIM, depth=DEPTH, num_heads=HEADS, num_classes=CLASSES)


def deit_tiny_distilled() -> nn.Module:
    """Two tokens (class and distillation); in eval the two heads' logits are averaged."""
    import_torchvision()
    import timm

    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=IMAGE,
                             patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, num_classes=CLASSES)


def torchvision_vit() -> nn.Module:
    tv = import_torchvision()
    return tv.models.vision_transformer.VisionTransformer(
        image_size=IMAGE, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=DIM,
        mlp_dim=4 * DIM, num_classes=CLASSES)


class _Logits(nn.Module):
    """A Hugging Face model returns an output object; export wants tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def hf_vit(attn_implementation: str) -> nn.Module:
    import_torchvision()  # transformers imports torchvision when it is installed
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=IMAGE, patch_size=PATCH, num_channels=3, hidden_size=DIM,
                    num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * DIM,
                    num_labels=CLASSES, attn_implementation=attn_implementation)
    return _Logits(ViTForImageClassification(cfg))


class HydraAttentionFused(nn.Module):
    """The Hydra paper's listing (Bolya et al. 2022, Appendix): one qkv Linear, chunked in three,
    cosine kernel, heads = features."""

    def __init__(self, dim: int, qkv_bias: bool = True, **_):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
        kv = (k * v).sum(dim=-2, keepdim=True)
        return self.proj(q * kv)


class HydraPaperViT(nn.Module):
    """A plain pre-norm ViT with average pooling around the paper's listing."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.pos = nn.Parameter(torch.randn(1, (IMAGE // PATCH) ** 2, DIM) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(DEPTH):
            self.blocks.append(nn.ModuleDict({
                "norm1": nn.LayerNorm(DIM), "attn": HydraAttentionFused(DIM),
                "norm2": nn.LayerNorm(DIM),
                "mlp": nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM)),
            }))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            x = x + b["attn"](b["norm1"](x))
            x = x + b["mlp"](b["norm2"](x))
        return self.head(self.norm(x).mean(dim=1))


def hydra_paper_vit() -> nn.Module:
    return HydraPaperViT()


class TimmHydraAttention(nn.Module):
    """timm's Attention with its softmax swapped for Hydra: timm's reshape/permute/unbind head split
    kept, with heads = features (num_heads = D, so each head is one feature)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, **_):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, C).permute(2, 0, 1, 3)
        q, k, v = qkv.unbind(0)
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
        kv = (k * v).sum(dim=-2, keepdim=True)
        return self.proj(q * kv)


def timm_hydra_vit() -> nn.Module:
    model = _timm_vit(global_pool="avg", class_token=False, fc_norm=False, qkv_bias=True)
    for block in model.blocks:
        block.attn = TimmHydraAttention(DIM, qkv_bias=True)
    return model


VITS: dict[str, Callable[[], nn.Module]] = {
    "timm_vit_token": lambda: timm_vit_token(qkv_bias=True),
    "timm_vit_token_nobias": lambda: timm_vit_token(qkv_bias=False),
    "timm_vit_avg": lambda: timm_vit_avg(fc_norm=False),
    "timm_vit_avg_fcnorm": lambda: timm_vit_avg(fc_norm=True),
    "deit_tiny": deit_tiny,
    "deit_tiny_distilled": deit_tiny_distilled,
    "torchvision_vit": torchvision_vit,
    "hf_vit_eager": lambda: hf_vit("eager"),
    "hf_vit_sdpa": lambda: hf_vit("sdpa"),
    "hydra_paper": hydra_paper_vit,
    "timm_hydra": timm_hydra_vit,
}


# -- CNNs and conv stems (issue 17 part 2) ---------------------------------------------------------


class _ResBlock(nn.Module):
    """MLPerf Tiny's ResNet-8 block: conv3x3-BN-ReLU, conv3x3-BN, a 1x1 strided conv-BN shortcut when the
    shape changes, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny's image-classification ResNet-8 (16/32/64 channels), global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(_ResBlock(16, 16, 1), _ResBlock(16, 32, 2), _ResBlock(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Tiny(nn.Module):
    """A MobileNetV2 made small: stem conv 3x3 stride 2 + ReLU6, five inverted residual blocks, 1x1 conv,
    global average pool, dropout-free classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(_InvertedResidual(16, 16, 1, 1), _InvertedResidual(16, 24, 2, 4),
                                    _InvertedResidual(24, 24, 1, 4), _InvertedResidual(24, 32, 2, 4),
                                    _InvertedResidual(32, 32, 1, 4))
        self.head = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class _CCTBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CCT(nn.Module):
    """A Compact Convolutional Transformer: two conv 3x3 + ReLU + max pool 3x3/2 tokenizer layers (32x32 ->
    8x8 tokens), flatten(2).transpose(1, 2), learned position embedding, transformer blocks, mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = nn.Sequential(
            nn.Conv2d(3, 48, 3, 1, 1, bias=False), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(48, DIM, 3, 1, 1, bias=False), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        )
        self.pos = nn.Parameter(torch.randn(1, (IMAGE // 4) ** 2, DIM) * 0.1)
        self.blocks = nn.Sequential(*[_CCTBlock() for _ in range(2)])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        x = self.tokenizer(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


class LeNet(nn.Module):
    """A LeNet-style net: conv 5x5 + ReLU + max pool 2, conv 3x3 stride 2 + SiLU, conv 3x3 + sigmoid (tables),
    a padded 3x3 average pool (count_include_pad=False, TFLite's),
    then torch.flatten(x, 1) of the 6x6 map into Linear + ReLU (fused) + Linear (the flatten permutes the first
    Linear's weight columns to channels-last order)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, 2), nn.SiLU(), nn.Conv2d(16, 16, 3, padding=1),
                                      nn.Sigmoid(), nn.AvgPool2d(3, 1, 1, count_include_pad=False))
        self.fc1, self.fc2 = nn.Linear(16 * 6 * 6, 32), nn.Linear(32, CLASSES)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(self.features(x), 1))))


CNNS: dict[str, Callable[[], nn.Module]] = {
    "resnet8": ResNet8,
    "mobilenetv2": MobileNetV2Tiny,
    "cct": CCT,
    "lenet": LeNet,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named model in eval mode with seeded weights: LayerNorm affine randomised too, a Linear its library
    initialises to zeros (torchvision's head) given random weights, so that the logits say something, and
    zero biases made small random ones, as training leaves them."""
    torch.manual_seed(seed)
    model = (VITS[name] if name in VITS else CNNS[name])().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            elif isinstance(m, nn.Linear) and not m.weight.any():
                nn.init.normal_(m.weight, std=m.in_features ** -0.5)
            elif isinstance(m, nn.BatchNorm2d):  # running statistics as if trained, so that folding them matters
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        for name, param in model.named_parameters():  # zero-initialised biases (Hugging Face, MultiheadAttention):
            if name.endswith("bias") and not param.any():  # trained ones are not, and exporters fold zero adds
                param.uniform_(-0.1, 0.1)
    return model


def example_input() -> torch.Tensor:
    return torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))


EXPORTS = ("pt2", "onnx_dynamo", "onnx_legacy")


def export(model: nn.Module, how: str, path) -> None:
    """Write `model` the way a user would: torch.export (.pt2), or ONNX by either exporter."""
    example = (torch.zeros(1, 3, IMAGE, IMAGE),)
    if how == "pt2":
        torch.export.save(torch.export.export(model, example), str(path))
    elif how == "onnx_dynamo":
        torch.onnx.export(model, example, str(path), dynamo=True, external_data=False, verbose=False)
    elif how == "onnx_legacy":
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=17)
    else:
        raise ValueError(f"unknown export {how!r}; choose from {EXPORTS}")
