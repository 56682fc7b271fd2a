"""Splitters: strict rules that turn a model into a :class:`~attreval.models.staged.StagedModel`.

Each splitter is one small module registered in :data:`SPLITTERS`; :func:`split_model` tries them in
registration order and takes the first that accepts the model. A splitter accepts only models it can
split correctly, and every split is verified on a probe input (stages + cell head must reproduce
``model(x)``) before it is used, so a wrong split is a one-line error, never wrong maps.

Order: ``vgg`` (plain ``features`` / ``avgpool`` / fully connected ``classifier``: VGG, AlexNet), ``resnet``
(torchvision/timm ResNet, ResNeXt, Wide-ResNet), ``vit`` (timm/torchvision Vision Transformers as token maps,
:mod:`attreval.models.splitters.vit`), ``timm`` (any timm CNN, from its ``feature_info``), ``graph``
(any other ``nn.Module``, cut by torch.fx where one tensor is live). Adding a splitter = one module with a
class that has ``accepts(model)``, ``probe_shape(model)`` and ``split(model, probe)``, plus one
``SPLITTERS.register`` line.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from attreval.models.splitters.common import in_channels, model_device, probe_input
from attreval.models.splitters.layer_rule import RuledStagedModel, middle_refusal
from attreval.models.staged import StagedModel, StagedModule
from attreval.registry import Registry

log = logging.getLogger(__name__)


class Splitter(Protocol):
    """What a splitter provides."""

    def accepts(self, model: nn.Module) -> bool:
        """Whether this splitter can split ``model`` (it must never accept one it splits wrongly)."""

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        """``(C, H, W)`` of an input the model accepts, for verification when none is given."""

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        """The staged model; ``probe (1, C, H, W)`` is an input the model accepts."""


SPLITTERS: Registry[Splitter] = Registry("splitter")

# Splits are cached per model object and probe shape: settings are built once per unit.
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, StagedModel]] = weakref.WeakKeyDictionary()


def splitter_for(model: nn.Module) -> tuple[str, Splitter]:
    """The first registered splitter that accepts ``model``."""
    for name, splitter in SPLITTERS.items():
        if splitter.accepts(model):
            return name, splitter
    raise ValueError(_refusal(model, "no splitter accepts it"))


def split_model(model: nn.Module | StagedModel, probe: Tensor | Sequence[int] | None = None) -> StagedModel:
    """Split a model into stages and heads, verified against the model's own output.

    Args:
        model: a torchvision/timm CNN, any ``nn.Module`` that torch.fx can trace, or a :class:`StagedModel`
            (returned as it is; also inside a :class:`StagedModule`).
        probe: one input ``(1, C, H, W)`` (or its shape ``(C, H, W)``) the model accepts; default: the
            splitter's guess (timm's configured input size, a VGG classifier's window, else 224 px).

    The caller's model is not modified: stages and heads hold references to its modules (VGG's slid
    classifier holds views of its Linear weights), so weights loaded in place are seen. Splits are cached per
    model object and probe shape: a model whose submodules are *replaced* after its first split keeps the old
    split (split a fresh model object instead).
    """
    if isinstance(model, StagedModel):
        return model
    if isinstance(model, StagedModule):
        return model.staged
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module or StagedModel, got {type(model).__name__}")
    name, splitter = splitter_for(model)
    if probe is None:
        probe = splitter.probe_shape(model)
    if not isinstance(probe, Tensor):
        probe = probe_input(tuple(int(v) for v in probe), model_device(model))
    probe = probe[:1]
    key = (name, tuple(probe.shape), str(probe.device))
    cached = _CACHE.setdefault(model, {}).get(key)
    if cached is not None:
        return cached
    log.debug("splitting %s with the %s splitter (probe %s)", type(model).__name__, name, tuple(probe.shape))
    try:
        staged = splitter.split(model, probe)
    except Exception as err:  # never a traceback from inside a model (XCiT's bare StopIteration …)
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else "no message"
        reason = detail if isinstance(err, ValueError) else f"{type(err).__name__}: {detail}"
        raise ValueError(_refusal(model, f"the {name} splitter failed: {reason}")) from None
    staged.verify(model, probe)
    staged = _guard_middle(staged, probe)
    _CACHE[model][key] = staged
    return staged


def _guard_middle(staged: StagedModel, probe: Tensor) -> StagedModel:
    """The split, with ``middle`` refused (one line naming the stages and their resolutions) if the splitter's
    middle stage is not strictly above final's resolution on the probe. Token models (ViT) keep one
    resolution by design and are left alone (docs/transformers.md)."""
    if not isinstance(staged, RuledStagedModel) or isinstance(staged, TokenStagedModel) or "middle" not in staged.aliases:
        return staged
    rows = describe_layers(staged, probe)
    sides = {layer: (int(shape[-2]), int(shape[-1])) for layer, _, shape in rows if len(shape) == 3}
    middle, final = sides.get(staged.aliases["middle"]), sides.get(staged.aliases["final"])
    if middle is None or final is None or middle[0] * middle[1] > final[0] * final[1]:
        return staged
    names = [layer for layer, _, _ in rows[1:] if layer in sides]
    message = middle_refusal(staged.architecture, names, [sides[n] for n in names], int(probe.shape[-1]))
    aliases = {k: v for k, v in staged.aliases.items() if k != "middle"}
    return dataclasses.replace(staged, aliases=aliases, refusals={**staged.refusals, "middle": message})


def _refusal(model: nn.Module, reason: str) -> str:
    return (
        f"cannot split {type(model).__name__} into stages ({reason}); pass a factory that returns an "
        "attreval.StagedModel (docs/models.md, 'Your own architecture')"
    )


def describe_layers(staged: StagedModel, probe: Tensor) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(layer, alias, activation shape)`` of every layer for ``probe (1, C, H, W)``: input first."""
    names = {v: k for k, v in staged.aliases.items()}
    rows, x = [("input", names.get("input", ""), tuple(probe.shape[1:]))], probe
    with torch.no_grad():
        for stage, module in staged.stages:
            x = module(x)
            rows.append((stage, names.get(stage, ""), tuple(x.shape[1:])))
    return rows


# The registry lines, in the order splitters are tried (strict family rules first, the fx fallback last).
from attreval.models.splitters.graph import GraphSplitter  # noqa: E402
from attreval.models.splitters.refused import RefusedSplitter  # noqa: E402
from attreval.models.splitters.resnet import ResNetSplitter  # noqa: E402
from attreval.models.splitters.stages import StageSplitter  # noqa: E402
from attreval.models.splitters.timm_models import TimmSplitter  # noqa: E402
from attreval.models.splitters.token_families import TokenFamilySplitter  # noqa: E402
from attreval.models.splitters.vgg import VGGSplitter  # noqa: E402
from attreval.models.splitters.vit import TokenStagedModel, ViTSplitter  # noqa: E402

SPLITTERS.register("vgg")(VGGSplitter())
SPLITTERS.register("resnet")(ResNetSplitter())
# before "timm": a timm ViT has a feature_info too, but its blocks' outputs are token sequences, not maps
SPLITTERS.register("vit")(ViTSplitter())
# before "timm" and "graph": families torch.fx cannot trace at grid size, split by their stage layout / refused
SPLITTERS.register("stages")(StageSplitter())
SPLITTERS.register("tokens")(TokenFamilySplitter())
SPLITTERS.register("refused")(RefusedSplitter())
SPLITTERS.register("timm")(TimmSplitter())
SPLITTERS.register("graph")(GraphSplitter())

__all__ = ["SPLITTERS", "Splitter", "split_model", "splitter_for", "describe_layers", "in_channels", "probe_input"]
