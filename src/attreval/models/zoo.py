"""The project's own small models, laid out with torchvision's attribute names.

``vgg_small`` follows ``torchvision.models.VGG`` (``features`` / ``avgpool`` / ``classifier``) and ``resnet_small``
follows ``torchvision.models.ResNet`` (``conv1`` / ``bn1`` / ``relu`` / ``maxpool`` / ``layer1..3`` / ``avgpool`` /
``fc``), so the automatic model splitter treats them like their ImageNet counterparts.

The VGG configuration is the paper's CIFAR-10 VGG11 (PAPER.md §5.1): torchvision cfg "A" without its last two conv
layers and last max-pool, i.e. ``[64, M, 128, M, 256, 256, M, 512, 512, M]``. On a 32x32 input the last conv
(Conv6) is 4x4 and the last pool 2x2, so ``classifier[0]`` has ``in_features = C * 2 * 2``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from attreval.registry import Registry

__all__ = [
    "VGG_CFG",
    "FashionVGG",
    "SmallResNet",
    "vgg_small",
    "cifar_vgg11",
    "resnet_small",
    "vit_small",
    "ZooEntry",
    "MODELS",
    "model_names",
    "build_model",
    "WEIGHTS_DIR",
    "weights_path",
    "load_default_model",
]

# torchvision VGG11 cfg "A" minus the last two convs and the last pool; "M" = MaxPool2d(2, 2).
VGG_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _make_features(cfg: tuple[int | str, ...], in_channels: int, width: float, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = max(1, round(int(item) * width))
        layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=False))
        channels = out
    return nn.Sequential(*layers)


class FashionVGG(nn.Module):
    """VGG in torchvision's layout: ``classifier(flatten(avgpool(features(x))))``.

    Args:
        num_classes: number of outputs.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        width: channel multiplier applied to :data:`VGG_CFG` (1.0 = the paper's CIFAR-10 VGG11 variant).
        hidden: width of the two hidden Linear layers.
        dropout: dropout probability in the classifier.
        batch_norm: insert ``BatchNorm2d`` after every conv (before its ReLU).

    Input ``(B, in_channels, 32, 32)`` -> ``features`` ``(B, C, 2, 2)`` -> logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 0.25,
        hidden: int = 256,
        dropout: float = 0.5,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.features = _make_features(VGG_CFG, in_channels, width, batch_norm)
        channels = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)][-1]
        # Kept as an Identity (not AdaptiveAvgPool2d) so that a grid input keeps its spatial layout and the
        # classifier can be rewritten as a 2x2 convolution.
        self.avgpool = nn.Identity()
        self.classifier = nn.Sequential(
            nn.Linear(channels * 2 * 2, hidden),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_channels, 32, 32)``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SmallResNet(nn.Module):
    """ResNet with three stages of ``BasicBlock`` in torchvision's layout, for 32x32 inputs.

    Args:
        num_classes: number of outputs.
        in_channels: image channels.
        widths: channels of ``layer1``, ``layer2``, ``layer3`` (strides 1, 2, 2).
        blocks: ``BasicBlock`` s per stage.

    Input ``(B, in_channels, 32, 32)`` -> ``layer3`` ``(B, widths[2], 8, 8)`` -> logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (16, 32, 64),
        blocks: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.Identity()  # no stem down-sampling on 32x32 images
        self.layer1 = _make_stage(widths[0], widths[0], blocks, stride=1)
        self.layer2 = _make_stage(widths[0], widths[1], blocks, stride=2)
        self.layer3 = _make_stage(widths[1], widths[2], blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_channels, 32, 32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes))
    layers = [BasicBlock(in_planes, planes, stride=stride, downsample=downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module) -> None:
    # torchvision's schemes: Kaiming (fan_out) for convs, N(0, 0.01) for linears, BN at (1, 0).
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


def vgg_small(num_classes: int = 10, in_channels: int = 1, width: float = 0.25, dropout: float = 0.25, **kwargs) -> FashionVGG:
    """The Fashion-MNIST VGG: :data:`VGG_CFG` at ``width`` (default 1/4: ``[16, M, 32, M, 64, 64, M, 128, 128, M]``).

    Dropout is lighter than torchvision's 0.5: with the narrow 512 -> 256 -> 256 classifier and a short CPU
    schedule, 0.5 underfits (90.7 % test accuracy after 8 epochs, only 57 % of test images at softmax >= 0.99).
    Extra keyword arguments (``hidden``, ``batch_norm``) go to :class:`FashionVGG`.
    """
    return FashionVGG(num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout, **kwargs)


def cifar_vgg11(num_classes: int = 10, batch_norm: bool = False) -> FashionVGG:
    """The paper's CIFAR-10 VGG11 without its last two conv layers (PAPER.md §5.1), full width, RGB input.

    The paper does not give the classifier widths; we use 2048 -> 512 -> 512 -> ``num_classes``.
    """
    return FashionVGG(num_classes=num_classes, in_channels=3, width=1.0, hidden=512, batch_norm=batch_norm)


def resnet_small(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int] = (16, 32, 64), blocks: int = 1) -> SmallResNet:
    """A three-stage ResNet of ``BasicBlock`` s (see :class:`SmallResNet`); ``layer3`` is 8x8 on 32x32 inputs."""
    return SmallResNet(num_classes=num_classes, in_channels=in_channels, widths=widths, blocks=blocks)


def vit_small(num_classes: int = 10, in_channels: int = 1, dim: int = 48, depth: int = 4, heads: int = 3, patch: int = 4) -> nn.Module:
    """A small class-token timm ``VisionTransformer`` for 32x32 cells: 4x4 patches (an 8x8 token grid, like
    ``resnet_small``'s ``layer3``), D = ``dim``, ``depth`` blocks of ``heads`` heads, MLP ratio 2 (~80k parameters).

    A class-token model (``global_pool="token"``) rather than an average-pooled one, so that the evaluation shows
    the class-token rules of docs/transformers.md (the ``final`` layer, DiPart's head). Needs timm.
    Input ``(B, in_channels, 32, 32)`` -> tokens ``(B, 1 + 64, dim)`` -> logits ``(B, num_classes)``.
    """
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=patch,
        in_chans=in_channels,
        num_classes=num_classes,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=2.0,
        global_pool="token",
    )


@dataclass(frozen=True)
class ZooEntry:
    """A registered model: its builder and the dataset (``"fashion_mnist"`` or ``"cifar10"``) it is trained on."""

    builder: Callable[[], nn.Module]
    dataset: str


# One registry drives build_model, load_default_model, train's --model choices and the tests.
MODELS: Registry[ZooEntry] = Registry("model")
MODELS.register("fashion_vgg")(ZooEntry(vgg_small, "fashion_mnist"))
MODELS.register("fashion_resnet")(ZooEntry(resnet_small, "fashion_mnist"))
MODELS.register("cifar_vgg11")(ZooEntry(cifar_vgg11, "cifar10"))
MODELS.register("fashion_vit")(ZooEntry(vit_small, "fashion_mnist"))


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, in registration order."""
    return MODELS.names()


def build_model(name: str) -> nn.Module:
    """A freshly initialised (untrained, train-mode) model of the registry.

    Args:
        name: one of :func:`model_names`; unknown names raise ``ValueError`` with a did-you-mean.
    """
    return MODELS.get(name).builder()


def weights_path(name: str) -> Path:
    """Path of the weights shipped for ``name`` (``attreval/weights/{name}.pt``; may not exist)."""
    MODELS.get(name)  # validates the name
    return WEIGHTS_DIR / f"{name}.pt"


def load_default_model(name: str, path: str | os.PathLike | None = None) -> nn.Module:
    """Build ``name`` and load its weights, in eval mode on the CPU.

    Args:
        name: one of :func:`model_names`.
        path: state-dict file; ``None`` = the weights shipped with the package.

    Raises:
        ValueError: missing or unreadable file, or weights of another architecture.
    """
    model = build_model(name)
    path = Path(path) if path is not None else weights_path(name)
    if not path.is_file():
        raise ValueError(f"expected weights for {name!r} at {str(path)!r}, got no such file (train them: attreval train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle/zip/runtime errors of several kinds for bad files
        # torch's own messages span many lines; the type is enough to tell a truncated zip from a pickle.
        reason = type(error).__name__
        raise ValueError(f"expected a torch state-dict file at {str(path)!r}, got unreadable data ({reason})") from None
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict in {str(path)!r}, got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError:
        detail = _mismatch(model.state_dict(), state)
        raise ValueError(f"expected weights for {name!r}, got {detail} in {str(path)!r}") from None
    return model.eval()


def _mismatch(expected: dict[str, torch.Tensor], state: dict) -> str:
    """One-line summary of why ``state`` does not fit a model whose state dict is ``expected``."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        return f"{len(missing)} missing keys (e.g. {missing[:1]}) and {len(unexpected)} unexpected (e.g. {unexpected[:1]})"
    for key, value in expected.items():
        shape = tuple(getattr(state[key], "shape", ()))
        if shape != tuple(value.shape):
            return f"{key} of shape {shape} instead of {tuple(value.shape)}"
    return "weights that do not load"
