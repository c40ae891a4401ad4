"""Built-in models, defined here so estimates work offline: ResNet-18/50, UNet, ViT-B/16 and a
GPT-2-small-sized decoder (PyTorch), EfficientNetV2-S/L (Keras). Shapes follow the papers
(torchvision's ResNet and ViT parameter counts are matched; tested)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ZooModel:
    """A model factory, its default input (``3x224x224`` or ``tokens:1024``) and the parameter
    names of its backbone (what transfer learning freezes)."""

    name: str
    framework: str
    factory: Callable[..., Any]
    input: str
    backbone: str
    summary: str


def _resnet(layers: tuple[int, ...], bottleneck: bool) -> Any:
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = _shortcut(cin, width, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + (self.downsample(x) if self.downsample is not None else x))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = _shortcut(cin, width * 4, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (self.downsample(x) if self.downsample is not None else x))

    def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
        if stride == 1 and cin == cout:
            return None
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    block = Bottleneck if bottleneck else BasicBlock

    class ResNet(nn.Module):
        """Module names as torchvision's (``conv1``, ``layer1.0.conv1``, ``fc``)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, count in enumerate(layers):
                width = 64 * 2**i
                blocks = []
                for j in range(count):
                    blocks.append(block(cin, width, 2 if j == 0 and i > 0 else 1))
                    cin = width * block.expansion
                self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(len(layers)):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def resnet18() -> Any:
    """ResNet-18 (11.7M parameters), 1000 classes."""
    return _resnet((2, 2, 2, 2), False)


def resnet50() -> Any:
    """ResNet-50 (25.6M parameters), 1000 classes."""
    return _resnet((3, 4, 6, 3), True)


def unet() -> Any:
    """The UNet of Ronneberger et al. with padded convolutions and batch norm (31M parameters),
    3 input channels, 1 output channel."""
    import torch
    from torch import nn

    def double(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (64, 128, 256, 512, 1024)
            self.down = nn.ModuleList([double(3, 64)] + [double(widths[i], widths[i + 1]) for i in range(4)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, 2) for i in reversed(range(4))])
            self.decode = nn.ModuleList([double(widths[i + 1], widths[i]) for i in reversed(range(4))])
            self.pool = nn.MaxPool2d(2)
            self.head = nn.Conv2d(64, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, stage in enumerate(self.down):
                x = stage(x if i == 0 else self.pool(x))
                skips.append(x)
            for up, decode, skip in zip(self.up, self.decode, reversed(skips[:-1])):
                x = decode(torch.cat([skip, up(x)], dim=1))
            return self.head(x)

    return UNet()


def vit_b16() -> Any:
    """ViT-B/16 at 224x224 (86.6M parameters), pre-norm encoder, 1000 classes."""
    import torch
    from torch import nn

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 768, 16, 16)
            self.cls = nn.Parameter(torch.zeros(1, 1, 768))
            self.pos = nn.Parameter(torch.zeros(1, 197, 768))
            # Twelve layers built one by one: nn.TransformerEncoder deep-copies one layer, which
            # reads data pointers (undefined on the fake tensors the estimator builds models with).
            self.encoder = nn.Sequential(*[
                nn.TransformerEncoderLayer(768, 12, 3072, 0.0, activation="gelu", batch_first=True, norm_first=True)
                for _ in range(12)])
            self.norm = nn.LayerNorm(768)
            self.head = nn.Linear(768, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(self.norm(self.encoder(x))[:, 0])

    return ViT()


def gpt2_small() -> Any:
    """A GPT-2-small-sized decoder (124M parameters, tied embeddings): 12 layers, 768 wide,
    12 heads, 1024 positions, 50257 tokens, causal SDPA attention."""
    import torch
    from torch import nn
    from torch.nn import functional

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(768)
            self.qkv = nn.Linear(768, 3 * 768)
            self.proj = nn.Linear(768, 768)
            self.ln2 = nn.LayerNorm(768)
            self.mlp = nn.Sequential(nn.Linear(768, 3072), nn.GELU(approximate="tanh"), nn.Linear(3072, 768))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, 12, c // 12).permute(2, 0, 3, 1, 4)
            attn = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(50257, 768)
            self.wpe = nn.Embedding(1024, 768)
            self.blocks = nn.Sequential(*[Block() for _ in range(12)])
            self.ln_f = nn.LayerNorm(768)
            self.head = nn.Linear(768, 50257, bias=False)
            self.head.weight = self.wte.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(idx.shape[1], device=idx.device)
            return self.head(self.ln_f(self.blocks(self.wte(idx) + self.wpe(pos))))

    return GPT()


def efficientnetv2(size: str) -> Callable[[tuple[int, ...] | None], Any]:
    """A Keras EfficientNetV2 (no weights: offline), 1000 classes, at an input shape (HxWxC)."""

    def build(shape: tuple[int, ...] | None) -> Any:
        import keras

        factory = getattr(keras.applications, f"EfficientNetV2{size}")
        return factory(weights=None, include_top=True, classes=1000, input_shape=shape,
                       include_preprocessing=False)

    return build


ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("resnet18", "torch", resnet18, "3x224x224", r"^(?!fc\.)", "ResNet-18, 11.7M parameters"),
    ZooModel("resnet50", "torch", resnet50, "3x224x224", r"^(?!fc\.)", "ResNet-50, 25.6M parameters"),
    ZooModel("unet", "torch", unet, "3x256x256", r"^down\.", "UNet, 31M parameters"),
    ZooModel("vit_b16", "torch", vit_b16, "3x224x224", r"^(patch|cls|pos|encoder)", "ViT-B/16, 86.6M parameters"),
    ZooModel("gpt2_small", "torch", gpt2_small, "tokens:1024", r"^(wte|wpe|blocks)", "GPT-2-small-sized, 124M"),
    ZooModel("efficientnetv2_s", "keras", efficientnetv2("S"), "384x384x3", "", "Keras EfficientNetV2-S, 21.6M"),
    ZooModel("efficientnetv2_l", "keras", efficientnetv2("L"), "480x480x3", "", "Keras EfficientNetV2-L, 119M"),
)}
