"""VGG-like models (torchvision VGG with or without BatchNorm, AlexNet, the project's VGGs):
``classifier(flatten(avgpool(features(x))))`` with plain layers in ``features`` and a fully connected
``classifier``.

Stages end after the ReLU of every conv (``conv1`` … ``convK``); the modules after the last ReLU (the final
max-pool) form the stage ``pool``. PAPER.md §2: VGG11 middle = Conv5 (``features[12]``), final = Conv8
(``features[19]``, before the last max-pool). The rule: final = the last conv; middle = the first conv of
block ⌈blocks/2⌉ (0-based, blocks separated by pooling), which gives Conv5 for VGG11 and Conv3 for the
CIFAR-10 VGG11 without its last two convs (PAPER.md §2 table), but at most the block before final's, so that
middle is always above final's resolution (AlexNet: conv2, 27×27 at 224 px, not conv3 at final's 13×13).

GridPG (§1.2): the classifier slides over the grid's features as ``Conv2d`` modules built from the
``Linear`` weights (first kernel ``d × d``, then 1 × 1), and the window logits are averaged; VGG's own
``avgpool`` is skipped. A grid's cells must then give exactly ``d × d`` final features.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from attreval.models.splitters.common import in_channels
from attreval.models.splitters.layer_rule import RuledStagedModel
from attreval.models.staged import StagedModel

FEATURE_LAYERS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d, nn.Dropout, nn.Identity, nn.LocalResponseNorm)
CLASSIFIER_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout, nn.Identity)
POOLS = (nn.Identity, nn.AdaptiveAvgPool2d, nn.AvgPool2d)


def _as_list(module: nn.Module) -> list[nn.Module]:
    return list(module) if isinstance(module, nn.Sequential) else [module]


class GlobalAveragePool(nn.Module):
    """``(B, K, h, w) → (B, K)``: the mean over all positions (GridPG's pooling of window logits)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def sliding_classifier(classifier: list[nn.Module], channels: int, side: int) -> nn.Sequential:
    """The fully connected ``classifier`` as convolutions over ``(B, channels, h, w)`` features, averaged.

    Each ``Linear`` becomes a ``Conv2d`` whose weight is a view of the Linear's (first: ``side × side`` kernel;
    later: 1 × 1), so the caller's weights are shared, not copied; the other modules are the caller's own.
    """
    layers, first = [], True
    for layer in classifier:
        if isinstance(layer, nn.Linear):
            kernel = side if first else 1
            inputs = layer.in_features // (kernel * kernel)
            conv = nn.Conv2d(inputs, layer.out_features, kernel, bias=layer.bias is not None)
            conv.weight = nn.Parameter(layer.weight.detach().view(layer.out_features, inputs, kernel, kernel), requires_grad=False)
            if layer.bias is not None:
                conv.bias = nn.Parameter(layer.bias.detach(), requires_grad=False)
            layers.append(conv)
            first = False
        else:
            layers.append(layer)
    return nn.Sequential(*layers, GlobalAveragePool())


def _side_of(size: int, modules: list[nn.Module]) -> int:
    """Spatial side after ``modules`` (convs and pools) for an input side ``size`` (shape arithmetic only)."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            pair = lambda v: v[0] if isinstance(v, tuple) else v
            k, s, p = pair(m.kernel_size), pair(m.stride), pair(m.padding)
            d = pair(getattr(m, "dilation", 1))
            span = size + 2 * p - d * (k - 1) - 1
            size = (math.ceil(span / s) if getattr(m, "ceil_mode", False) else span // s) + 1
    return size


class VGGSplitter:
    """Splits VGG-like models; refuses any ``features`` holding blocks (DenseNet, MobileNet …)."""

    def accepts(self, model: nn.Module) -> bool:
        features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
        pool = getattr(model, "avgpool", nn.Identity())
        if not isinstance(features, nn.Sequential) or not isinstance(classifier, (nn.Sequential, nn.Linear)):
            return False
        layers = _as_list(classifier)
        return (
            all(isinstance(m, FEATURE_LAYERS) for m in features)
            and any(isinstance(m, nn.Conv2d) for m in features)
            and all(isinstance(m, CLASSIFIER_LAYERS) for m in layers)
            and isinstance(layers[0] if not isinstance(layers[0], nn.Dropout) else layers[1], nn.Linear)
            and isinstance(pool, POOLS)
        )

    def window(self, model: nn.Module) -> tuple[int, int]:
        """``(channels, side)`` of the final features the first Linear takes."""
        channels = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)][-1]
        first = next(m for m in _as_list(model.classifier) if isinstance(m, nn.Linear))
        side = math.isqrt(first.in_features // channels)
        if side * side * channels != first.in_features:
            raise ValueError(f"expected the first classifier Linear to take {channels}·d·d features, got {first.in_features}")
        return channels, side

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        _, side = self.window(model)
        pool = getattr(model, "avgpool", nn.Identity())
        if isinstance(pool, nn.AdaptiveAvgPool2d):  # any size works; torchvision VGG/AlexNet are trained at 224
            return in_channels(model), 224, 224
        size = side  # the smallest input whose features are side × side
        while _side_of(size, list(model.features)) < side:
            size += 1
        return in_channels(model), size, size

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        stages, current, block_of_conv, block, seen_conv = [], [], [], 0, False
        for module in model.features:
            current.append(module)
            if isinstance(module, nn.Conv2d):
                seen_conv = True
                block_of_conv.append(block)
            elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                block += 1
            elif isinstance(module, nn.ReLU) and seen_conv:
                stages.append((f"conv{len(stages) + 1}", nn.Sequential(*current)))
                current, seen_conv = [], False
        if not stages:
            raise ValueError("expected 'features' with Conv2d → ReLU modules, found no ReLU after a conv")
        if current:
            stages.append(("pool", nn.Sequential(*current)))
        num_blocks = max(block_of_conv) + 1
        aliases, refusals = {"final": f"conv{len(block_of_conv)}"}, {}
        if num_blocks >= 2:  # middle's block is before final's: a pool lies between them (AlexNet: conv2, not conv3)
            aliases["middle"] = f"conv{block_of_conv.index(min(math.ceil(num_blocks / 2), num_blocks - 2)) + 1}"
        else:
            refusals["middle"] = (
                f"expected a middle layer above the final layer's resolution in VGG-like {type(model).__name__}, got "
                f"convs conv1 … conv{len(block_of_conv)} all before its first pool (one resolution); use 'final' or name a conv"
            )
        channels, side = self.window(model)
        pool = getattr(model, "avgpool", nn.Identity())
        cell_head = nn.Sequential(pool, nn.Flatten(1), *_as_list(model.classifier))
        grid_head = sliding_classifier(_as_list(model.classifier), channels, side)
        return RuledStagedModel(
            tuple(stages), cell_head, grid_head, aliases, f"VGG-like {type(model).__name__}", window=side, refusals=refusals
        )
