"""Tiny VGG-like and ResNet-like models in the torchvision layout, for fast tests (random weights)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class TinyVGG(nn.Module):
    """features → avgpool → classifier, like torchvision's VGG; 16×16 cells give 2×2 final features."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 4):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.Identity()
        self.classifier = nn.Sequential(
            nn.Linear(4 * w * 2 * 2, 16),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(16, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TinyResNet(nn.Module):
    """conv1/bn1/relu/maxpool/layer1…layer3/avgpool/fc, like torchvision's ResNet."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths=(4, 8, 8)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None if stride == 1 and c == w else nn.Sequential(nn.Conv2d(c, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            layers.append(nn.Sequential(BasicBlock(c, w, stride, down)))
            c = w
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics so eval mode is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def tiny_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyVGG() if kind == "vgg" else randomize_bn(TinyResNet(), seed)
    return model.eval()


def tiny_run_config(seed: int, body: str, *, limit: int = 300, gridpg: int = 2, disconnected: int = 2) -> str:
    """TOML of a seconds-long run: ``fashion_resnet`` on a few 2×2 grids from the first ``limit`` images;
    ``body`` adds the ``[evaluation]`` and ``[methods…]`` tables."""
    header = f"""
seed = {seed}
[data]
limit = {limit}
[[models]]
name = "fashion_resnet"
[grids]
n = 2
gridpg = {gridpg}
disconnected = {disconnected}
"""
    return header + body.lstrip("\n")
