"""Hierarchical models whose forward is "stem, then a sequence of stages, then a head" but that torch.fx
cannot trace (shape asserts, windowed attention) or whose stage outputs are channels-last:

* torchvision ``SwinTransformer`` (Swin and Swin-v2): ``features.0`` (patch embedding), ``features.1``, then
  one stage per patch merging + blocks (``features.3``, ``features.5``, ``features.7``, the last with ``norm``);
* timm ``SwinTransformer`` / ``SwinTransformerV2`` (``patch_embed``, ``layers.i``), ``MaxxVit`` (MaxViT),
  ``TinyVit``, ``EfficientVit`` / ``EfficientVitMsra``, ``ByobNet`` (MobileViT, MobileViT-v2), ``MambaOut``: the first
  child, then ``stages.i`` / ``layers.i`` (the last with ``norm`` / ``final_conv``), then ``forward_head``.

Every stage output is a ``(B, C, h, w)`` map: channels-last stage outputs (Swin's ``(B, h, w, C)``) are
permuted to channels-first between stages and back inside the next one, so methods see the same kind of map
as for a CNN. Stages are the model's own modules (module hooks see them). A split is made only if the stages
run on the probe and on a 2×2 grid of it (GridPG's and DiPart's input), and, like every split, it is verified
against the model's logits (:meth:`StagedModel.verify`). middle / final: the resolution rule of
:mod:`attreval.models.splitters.layer_rule` (Swin-T at 224 px: middle ``features.3`` 28×28, final
``features.7`` 7×7).

Windowed attention (Swin, MaxViT) mixes positions inside a window; cells are whole windows only if the cell's
map side at each stage is a multiple of the window. DiFull runs every cell alone, so its maps are exactly
zero outside the cell whatever the windows; GridPG and DiPart see the grid, as for any model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attreval.models.splitters.common import in_channels
from attreval.models.splitters.layer_rule import RuledStagedModel, rule_aliases
from attreval.models.staged import StagedModel

try:
    from torchvision.models.swin_transformer import SwinTransformer as _TvSwin
except ImportError:  # pragma: no cover
    _TvSwin = None

#: timm classes split by their attribute layout (first child, a stage container, post modules, forward_head).
TIMM_CLASSES = ("SwinTransformer", "SwinTransformerV2", "MaxxVit", "TinyVit", "EfficientVit", "EfficientVitMsra", "ByobNet", "MambaOut")
_CONTAINERS = ("stages", "layers")
_POST = ("norm", "final_conv", "norm_pre")


class ChannelsFirst(nn.Module):
    """A stage on channels-first maps: ``(B, C, h, w)`` → ``(B, C', h', w')`` around a module whose input
    (``last_in``) and/or output (``last_out``) is channels-last ``(B, h, w, C)``."""

    def __init__(self, module: nn.Module, last_in: bool, last_out: bool):
        super().__init__()
        self.module, self.last_in, self.last_out = module, last_in, last_out

    def forward(self, x: Tensor) -> Tensor:
        x = self.module(x.permute(0, 2, 3, 1) if self.last_in else x)
        return x.permute(0, 3, 1, 2) if self.last_out else x


class ForwardHead(nn.Module):
    """The model's own ``forward_head`` on a channels-first final map ``(B, C, h, w)`` → logits ``(B, K)``.

    ``modules`` are the head's modules (registered, so module hooks see the classifier); the model itself is
    held as a plain attribute (not a submodule: its backbone is not part of the head).
    """

    def __init__(self, model: nn.Module, modules: list[nn.Module], channels_last: bool):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.channels_last = channels_last
        self.__dict__["_owner"] = model

    def forward(self, x: Tensor) -> Tensor:
        return self.__dict__["_owner"].forward_head(x.permute(0, 2, 3, 1) if self.channels_last else x)


def _timm_name(model: nn.Module) -> str | None:
    if not type(model).__module__.startswith("timm.") or type(model).__name__ not in TIMM_CLASSES:
        return None
    names = [n for n, _ in model.named_children()]
    return next((c for c in _CONTAINERS if c in names and isinstance(getattr(model, c), nn.Sequential)), None)


class StageSplitter:
    """Accepts torchvision Swin / Swin-v2 and timm Swin, Swin-v2, MaxViT, TinyViT, EfficientViT, ByobNet
    (MobileViT) and MambaOut models: stem, stages, head by their attribute layout, channels-last outputs permuted."""

    def accepts(self, model: nn.Module) -> bool:
        tv = _TvSwin is not None and isinstance(model, _TvSwin) and type(model).forward is _TvSwin.forward
        return tv or _timm_name(model) is not None

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        """The size the model was built for (timm MaxViT's ``img_size`` sets its windows), else its config's."""
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = tuple(cfg.get("input_size", (in_channels(model), 224, 224)))
        built = getattr(model, "img_size", None)
        if isinstance(built, int) or (isinstance(built, tuple) and len(built) == 2):
            h, w = (built, built) if isinstance(built, int) else built
            return int(size[0]), int(h), int(w)
        return int(size[0]), int(size[1]), int(size[2])

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        if _timm_name(model) is None:
            stages, head, what = self._torchvision(model)
        else:
            stages, head, what = self._timm(model)
        sides = _sides(stages, probe, what)
        aliases, refusals = rule_aliases(what, [n for n, _ in stages], sides, int(probe.shape[-1]))
        return RuledStagedModel(tuple(stages), head, head, aliases, what, refusals=refusals)

    @staticmethod
    def _torchvision(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], nn.Module, str]:
        features = list(model.features)
        stages: list[tuple[str, nn.Module]] = [("features.0", ChannelsFirst(features[0], False, True))]
        for i in range(1, len(features), 2):  # features.1, then (patch merging, blocks) pairs
            parts = features[i - 1 : i + 1] if i > 1 else [features[1]]
            if i == len(features) - 1:
                parts = parts + [model.norm]
            stages.append((f"features.{i}", ChannelsFirst(nn.Sequential(*parts), True, True)))
        head = nn.Sequential(model.avgpool, model.flatten, model.head)
        return stages, head, f"torchvision {type(model).__name__}"

    @staticmethod
    def _timm(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], nn.Module, str]:
        container = _timm_name(model)
        assert container is not None
        names = [n for n, _ in model.named_children()]
        first, at = names[0], names.index(container)
        last = getattr(model, "output_fmt", "NCHW") == "NHWC"
        if at != 1:
            raise ValueError(f"expected '{first}' then '{container}' as its first modules, got {names[: at + 1]}")
        post = [getattr(model, n) for n in names[at + 1 :] if n in _POST]
        head_modules = [getattr(model, n) for n in names[at + 1 :] if n not in _POST]
        blocks = list(getattr(model, container).named_children())
        stages: list[tuple[str, nn.Module]] = [(first, ChannelsFirst(getattr(model, first), False, last))]
        for i, (name, block) in enumerate(blocks):
            module = nn.Sequential(block, *post) if i == len(blocks) - 1 else block
            stages.append((f"{container}.{name}", ChannelsFirst(module, last, last)))
        return stages, ForwardHead(model, head_modules, last), f"timm {type(model).__name__}"


def _sides(stages: list[tuple[str, nn.Module]], probe: Tensor, what: str) -> list[tuple[int, int]]:
    """``(h, w)`` of every stage's map on ``probe``; a one-line error unless every stage gives a map that
    grows with the input on the probe and on a 2×2 grid of it."""
    sides: list[tuple[int, int]] = []
    grid = probe.repeat(1, 1, 2, 2)
    with torch.no_grad():
        x, g = probe, grid
        for name, stage in stages:
            try:
                x, g = stage(x), stage(g)
            except Exception as err:
                detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
                raise ValueError(
                    f"expected {what}'s stage {name} to run on a {probe.shape[-1]}-px cell and a {grid.shape[-1]}-px grid, "
                    f"got {type(err).__name__}: {detail} (timm: create it with dynamic_img_size=True)"
                ) from None
            if x.dim() != 4 or g.dim() != 4 or g.shape[-1] <= x.shape[-1] or g.shape[1] != x.shape[1]:
                raise ValueError(f"expected {what}'s stage {name} to give (B, C, h, w) maps, got {tuple(x.shape)}")
            sides.append((int(x.shape[-2]), int(x.shape[-1])))
    return sides
