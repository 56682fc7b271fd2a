"""ResNet-like models (torchvision ResNet / ResNeXt / Wide-ResNet, timm ResNets, the project's ResNet):
``conv1`` → ``bn1`` → ``relu``/``act1`` → ``maxpool`` → ``layer1`` … ``layerK`` → ``avgpool``/``global_pool`` → ``fc``.

Stages ``conv1`` (conv, BN, ReLU), ``layer1`` (max-pool + layer1), ``layer2`` … ``layerK``. PAPER.md §2:
ResNet18 layers are input, the ReLU after conv1, and the outputs of layer1…layer4; middle = ``layer2``
(Conv3_x), final = ``layer4`` (Conv5_x). For K stages: middle = ``layer⌈K/2⌉``. The head (global pooling,
flatten, fc) is the model's own; it pools any map, so GridPG runs it on the whole grid.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from attreval.models.splitters.common import in_channels
from attreval.models.splitters.layer_rule import RuledStagedModel
from attreval.models.staged import StagedModel


def _pool_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, "avgpool", None) or getattr(model, "global_pool", None)


def _act_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, "relu", None) or getattr(model, "act1", None)


def _layers(model: nn.Module) -> list[str]:
    names, k = [], 1
    while isinstance(getattr(model, f"layer{k}", None), nn.Module):
        names.append(f"layer{k}")
        k += 1
    return names


class ResNetSplitter:
    """Splits models with ResNet's attribute layout; the forward must be the layout's (checked by the probe)."""

    # Modules a ResNet-layout model may hold besides the stages; anything else (an extra branch, a second
    # head) means its forward is not the plain layout, so the model is left to the graph splitter.
    ALLOWED = {"conv1", "bn1", "relu", "act1", "maxpool", "avgpool", "global_pool", "fc", "head_drop", "drop"}

    def accepts(self, model: nn.Module) -> bool:
        layers = _layers(model)
        if not layers or not all(isinstance(getattr(model, a, None), nn.Module) for a in ("conv1", "bn1", "fc")):
            return False
        if _act_of(model) is None or _pool_of(model) is None or not isinstance(model.fc, nn.Linear):
            return False
        return all(name in self.ALLOWED or name in layers for name, _ in model.named_children())

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        return in_channels(model), 64, 64  # any size works; small keeps the check cheap

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        layers = _layers(model)
        stages = [("conv1", nn.Sequential(model.conv1, model.bn1, _act_of(model)))]
        stages.append(("layer1", nn.Sequential(getattr(model, "maxpool", None) or nn.Identity(), model.layer1)))
        stages += [(name, getattr(model, name)) for name in layers[1:]]
        head = nn.Sequential(_pool_of(model), nn.Flatten(1), model.fc)
        aliases = {"middle": layers[math.ceil(len(layers) / 2) - 1], "final": layers[-1]}
        return RuledStagedModel(tuple(stages), head, head, aliases, f"ResNet-like {type(model).__name__}")
