"""Isotropic transformers whose blocks take more than the tokens, split into token maps like ViT
(:mod:`attreval.models.splitters.vit`, docs/transformers.md):

* timm ``Eva`` (EVA, EVA-02) built with ``dynamic_img_size=True``: blocks take rotary position embeddings of
  the patch grid, recomputed here for each map's ``h × w`` exactly as the model's ``_pos_embed`` does. Stages
  ``patch_embed`` (patches, extra tokens, position embedding, ``norm_pre``), ``blocks.i`` (the last with
  ``norm``); head = the model's ``forward_head``. middle = block ⌈L/2⌉; final as for ViT (the input of the last
  block for class-token pooling, else the last block).
* timm ``Xcit``: blocks take the patch grid ``(H, W)``; the Fourier position encoding is computed for each grid.
  Stages ``patch_embed``, ``blocks.i``; head = the class-attention blocks, ``norm`` and ``forward_head`` (a class
  token attending to the patch tokens of the map it is given: one cell's in DiFull and DiPart). Its class
  attention does not pool a tiling of one cell's tokens, so GridPG is refused for XCiT (one line).

Token maps keep one resolution, so middle and final have the same map size (as for ViT).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from attreval.models.splitters.tokens import pack, unpack
from attreval.models.splitters.vit import TokenStagedModel
from attreval.models.staged import StagedModel


class _Owned(nn.Module):
    """A module that calls methods of its model (held as a plain attribute, not a submodule) and registers
    only ``parts`` (the modules it runs, for module hooks)."""

    def __init__(self, model: nn.Module, *parts: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.__dict__["owner"] = model


class EvaEmbed(_Owned):
    """Pixels ``(B, C, H, W)`` → token map ``(B, D·(1+E), h, w)`` at EVA's patch embedding."""

    def forward(self, x: Tensor) -> Tensor:
        m = self.__dict__["owner"]
        t = m.patch_embed(x)  # (B, h, w, D) with dynamic_img_size
        size = (int(t.shape[1]), int(t.shape[2]))
        t, _ = m._pos_embed(t)
        return pack(m.norm_pre(t), int(m.num_prefix_tokens), size)


class EvaBlock(_Owned):
    """EVA block ``i`` on token maps, with the rotary embedding of the map's patch grid (then ``norm`` if last)."""

    def __init__(self, model: nn.Module, index: int, last: bool):
        super().__init__(model, model.blocks[index], *([model.norm] if last else []))
        self.index, self.last = index, last

    def forward(self, x: Tensor) -> Tensor:
        m = self.__dict__["owner"]
        e = int(m.num_prefix_tokens)
        rope = m.rope.get_embed(shape=tuple(x.shape[-2:])) if m.rope is not None else None
        t = m.blocks[self.index](unpack(x, e), rope=rope)
        return pack(m.norm(t) if self.last else t, e, tuple(x.shape[-2:]))


class TokenForwardHead(_Owned):
    """Token map → logits through the model's own ``forward_head`` (after ``pre``, e.g. XCiT's class attention)."""

    def __init__(self, model: nn.Module, num_extra: int, pre: str = ""):
        parts = [getattr(model, n) for n in ("cls_attn_blocks", "norm") if pre and getattr(model, n, None) is not None]
        super().__init__(model, *parts, *[getattr(model, n) for n in ("fc_norm", "head") if isinstance(getattr(model, n, None), nn.Module)])
        self.num_extra, self.pre = num_extra, pre

    def forward(self, x: Tensor) -> Tensor:
        m = self.__dict__["owner"]
        t = unpack(x, self.num_extra)
        if self.pre:  # XCiT: forward_cls (class token + class-attention blocks), then norm
            t = m.norm(m.forward_cls(t) if m.cls_attn_blocks is not None else t)
        return m.forward_head(t)


class PatchMeanHead(_Owned):
    """DiPart's head of a class-token EVA: the mean of the cell's patch tokens through ``fc_norm`` and the
    classifier (the class token depends on the whole grid; the same rule as for ViT, docs/transformers.md)."""

    def __init__(self, model: nn.Module, num_extra: int):
        super().__init__(model, model.fc_norm, model.head)
        self.num_extra = num_extra

    def forward(self, x: Tensor) -> Tensor:
        m = self.__dict__["owner"]
        d = x.shape[1] // (1 + self.num_extra)
        return m.head(m.head_drop(m.fc_norm(x[:, :d].mean(dim=(-2, -1)))))


class XcitEmbed(_Owned):
    """Pixels → patch-token map ``(B, D, h, w)`` at XCiT's patch embedding (with its position encoding)."""

    def forward(self, x: Tensor) -> Tensor:
        m = self.__dict__["owner"]
        t, (h, w) = m.patch_embed(x)
        if m.pos_embed is not None:
            t = t + m.pos_embed(t.shape[0], h, w).reshape(t.shape[0], -1, t.shape[1]).permute(0, 2, 1)
        return pack(m.pos_drop(t), 0, (h, w))


class XcitBlock(_Owned):
    """XCiT block ``i`` on patch-token maps (the block takes the grid ``(H, W)``)."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__(model, model.blocks[index])
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        return pack(self.__dict__["owner"].blocks[self.index](unpack(x, 0), h, w), 0, (h, w))


def _kind(model: nn.Module) -> str | None:
    if not type(model).__module__.startswith("timm."):
        return None
    name = type(model).__name__
    if name == "Eva" and getattr(model, "dynamic_img_size", False) and not getattr(model, "rope_mixed", False):
        return "eva"
    return "xcit" if name == "Xcit" else None


class TokenFamilySplitter:
    """Accepts timm EVA / EVA-02 built with ``dynamic_img_size=True`` and timm XCiT (token maps, as ViT)."""

    def accepts(self, model: nn.Module) -> bool:
        return _kind(model) is not None

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = tuple(cfg.get("input_size", (3, 224, 224)))
        return int(size[0]), int(size[1]), int(size[2])

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        blocks = len(model.blocks)
        if _kind(model) == "eva":
            e = int(model.num_prefix_tokens)
            stages: list[tuple[str, nn.Module]] = [("patch_embed", EvaEmbed(model, model.patch_embed, model.norm_pre))]
            stages += [(f"blocks.{i}", EvaBlock(model, i, i == blocks - 1)) for i in range(blocks)]
            head: nn.Module | None = TokenForwardHead(model, e)
            token = model.global_pool == "token"
            grid_head, part = head, PatchMeanHead(model, e) if token else None
        else:
            e, token = 0, False
            stages = [("patch_embed", XcitEmbed(model, model.patch_embed))]
            stages += [(f"blocks.{i}", XcitBlock(model, i)) for i in range(blocks)]
            head, grid_head, part = TokenForwardHead(model, 0, "cls_attn_blocks"), None, None
        assert head is not None
        names = [n for n, _ in stages][1:]
        final = names[-2] if token and len(names) >= 2 else names[-1]
        aliases = {"middle": names[math.ceil(len(names) / 2) - 1], "final": final}
        return TokenStagedModel(tuple(stages), head, grid_head, aliases, f"timm {type(model).__name__}", part_head=part, num_extra=e)
