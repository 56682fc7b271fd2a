"""A CNN as a sequence of named stages plus heads (PAPER.md §1.2–§1.4, §2).

A *layer* is a point between stages: ``"input"`` (the image) or the name of the stage that ends there.
Attributing at layer L means treating the activations at L as the input of the rest of the network
(ML-Att), so every method works at every layer without layer-specific code.

Two heads are kept apart because the settings pool differently:

* ``cell_head`` maps the backbone features of **one cell** ``(B, C, d, d)`` to logits ``(B, K)``; it is the
  model's own, unmodified classifier (DiFull, DiPart).
* ``grid_head`` maps the features of a **whole grid** ``(B, C, n·d, n·d)`` to one output ``(B, K)`` by
  sliding the classifier over the map and averaging (GridPG). For global-average-pooling models this is
  the model's own head; a fully connected VGG classifier becomes a stride-1 convolution whose first
  kernel is ``d × d`` (§1.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Head = Callable[[Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class StagedModel:
    """A model split into stages.

    Attributes:
        stages: ``(name, module)`` pairs; stage i maps the activations at layer i-1 to layer i.
        cell_head: one cell's backbone features ``(B, C, d, d)`` → logits ``(B, K)``.
        grid_head: a grid's backbone features ``(B, C, n·d, n·d)`` → logits ``(B, K)``.
        aliases: paper layer names (``"middle"``, ``"final"``) → stage names.
        architecture: a short description used in error messages and metadata.
    """

    stages: tuple[tuple[str, nn.Module], ...]
    cell_head: Head
    grid_head: Head
    aliases: dict[str, str] = field(default_factory=dict)
    architecture: str = "custom"

    @property
    def layer_names(self) -> list[str]:
        """Every layer a method can be applied at, input first."""
        return ["input"] + [name for name, _ in self.stages]

    def resolve(self, layer: str) -> str:
        """The stage name for a layer name or alias; unknown names raise with a did-you-mean."""
        from attreval.registry import unknown_name_error

        name = self.aliases.get(layer, layer)
        if name not in self.layer_names:
            choices = self.layer_names + sorted(self.aliases)
            raise unknown_name_error(f"layer of this {self.architecture}", layer, choices)
        return name

    def index(self, layer: str) -> int:
        """Position of a layer: 0 for the input, i for the output of stage i."""
        return self.layer_names.index(self.resolve(layer))

    def run(self, x: Tensor, start: int = 0, end: int | None = None) -> Tensor:
        """Activations at layer ``end`` from activations at layer ``start`` (indices as :meth:`index`)."""
        end = len(self.stages) if end is None else end
        for _, module in self.stages[start:end]:
            x = module(x)
        return x

    def modules(self) -> list[nn.Module]:
        """Every module the staged model runs (stages and head owners)."""
        return [module for _, module in self.stages]


# --------------------------------------------------------------------------------------------------
# ResNet family (torchvision, timm): conv1 … layerK / avgpool / fc


def is_resnet_like(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("conv1", "bn1", "layer1", "fc")) and _pool_of(model) is not None


def _pool_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, "avgpool", None) or getattr(model, "global_pool", None)


def split_resnet(model: nn.Module) -> StagedModel:
    """Stages ``conv1`` (conv, BN, ReLU), ``layer1`` (max-pool + layer1), ``layer2`` … ``layerK``.

    PAPER.md §2: ResNet18 layers are input, the ReLU after conv1, and the outputs of layer1…layer4;
    middle = ``layer2`` (Conv3_x), final = ``layer4`` (Conv5_x). For K stages: middle = ``layer⌈K/2⌉``.
    """
    act = getattr(model, "relu", None) or getattr(model, "act1", None)
    if act is None:
        raise ValueError("expected a ResNet-like model with a 'relu' or 'act1' module after bn1, found neither")
    layers = []
    k = 1
    while hasattr(model, f"layer{k}"):
        layers.append(f"layer{k}")
        k += 1
    stages = [("conv1", nn.Sequential(model.conv1, model.bn1, act))]
    stages.append(("layer1", nn.Sequential(getattr(model, "maxpool", nn.Identity()), model.layer1)))
    stages += [(name, getattr(model, name)) for name in layers[1:]]
    pool, fc = _pool_of(model), model.fc

    def head(features: Tensor) -> Tensor:
        return fc(torch.flatten(pool(features), 1))

    aliases = {"middle": layers[math.ceil(len(layers) / 2) - 1], "final": layers[-1]}
    return StagedModel(tuple(stages), head, head, aliases, f"ResNet-like {type(model).__name__}")


# --------------------------------------------------------------------------------------------------
# VGG family (torchvision): features / avgpool / classifier


def is_vgg_like(model: nn.Module) -> bool:
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    return (
        isinstance(features, nn.Sequential)
        and isinstance(classifier, (nn.Sequential, nn.Linear))
        and any(isinstance(m, nn.Conv2d) for m in features)
        and any(isinstance(m, nn.Linear) for m in _as_sequence(classifier))
    )


def _as_sequence(module: nn.Module) -> list[nn.Module]:
    return list(module) if isinstance(module, nn.Sequential) else [module]


def split_vgg(model: nn.Module) -> StagedModel:
    """Stages end after the ReLU of every conv (``conv1`` … ``convK``); the modules after the last ReLU
    (the final max-pool) form the stage ``pool``.

    PAPER.md §2: VGG11 middle = Conv5 (``features[12]``), final = Conv8 (``features[19]``, before the last
    max-pool). The general rule: final = the last conv; middle = the first conv of block ⌈blocks/2⌉
    (0-based, blocks separated by max-pools), which gives Conv5 for VGG11 and Conv3 for the CIFAR-10
    VGG11 without its last two convs (PAPER.md §2 table).
    """
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
        raise ValueError("expected a VGG-like 'features' with Conv2d → ReLU modules, found no ReLU after a conv")
    if current:
        stages.append(("pool", nn.Sequential(*current)))
    num_blocks = max(block_of_conv) + 1
    middle = block_of_conv.index(min(math.ceil(num_blocks / 2), num_blocks - 1)) + 1
    aliases = {"middle": f"conv{middle}", "final": f"conv{len(block_of_conv)}"}
    channels = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)][-1]
    cell_head, grid_head = vgg_heads(model, channels)
    return StagedModel(tuple(stages), cell_head, grid_head, aliases, f"VGG-like {type(model).__name__}")


def vgg_heads(model: nn.Module, channels: int) -> tuple[Head, Head]:
    """The FC classifier on one cell, and the same classifier slid as a convolution over a grid."""
    layers = _as_sequence(model.classifier)
    first = next(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    side = math.isqrt(layers[first].in_features // channels)
    if side * side * channels != layers[first].in_features:
        raise ValueError(
            f"expected the first classifier Linear to take {channels}·d·d features, got {layers[first].in_features}"
        )
    pool = getattr(model, "avgpool", nn.Identity())

    def cell_head(features: Tensor) -> Tensor:
        return model.classifier(torch.flatten(pool(features), 1))

    def grid_head(features: Tensor) -> Tensor:
        # PAPER.md §1.2: the FC layers become convolutions sliding with stride 1; VGG's avgpool is skipped.
        if min(features.shape[-2:]) < side:
            raise ValueError(
                f"expected grid features of at least {side}×{side} for the convolutional VGG classifier, "
                f"got {tuple(features.shape[-2:])}: use cells as large as the model's training images"
            )
        x = features
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                k = side if i == first else 1
                weight = layer.weight.view(layer.out_features, -1, k, k)
                x = F.conv2d(x, weight, layer.bias)
            else:
                x = layer(x)
        return x.mean(dim=(2, 3))

    return cell_head, grid_head


# --------------------------------------------------------------------------------------------------


def split_model(model: nn.Module | StagedModel) -> StagedModel:
    """Split a torchvision/timm-style CNN into stages and heads, without an adapter from the user.

    Recognised: VGG-like (``features`` / ``avgpool`` / ``classifier``) and ResNet-like (``conv1``, ``bn1``,
    ``layer1`` …, ``avgpool`` or ``global_pool``, ``fc``). A :class:`StagedModel` passes through.
    The caller's model is not modified: the stages hold references to its modules.
    """
    if isinstance(model, StagedModel):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module or StagedModel, got {type(model).__name__}")
    if is_resnet_like(model):
        return split_resnet(model)
    if is_vgg_like(model):
        return split_vgg(model)
    raise ValueError(
        f"cannot split {type(model).__name__} into stages: expected a VGG-like (features/avgpool/classifier) "
        "or ResNet-like (conv1/bn1/layer1…/avgpool/fc) model; build an attreval.StagedModel for other models"
    )
