"""Vision Transformers (timm ``VisionTransformer`` and DeiT-distilled, torchvision ``vit_*``) as staged models.

Activations of a transformer: the token map
-------------------------------------------

At every layer a method sees one plain ``(B, C, h, w)`` tensor, as for a CNN, so grid folding, tails and every
method work unchanged. At the patch embedding and after every block it is the **token map**::

    channels [0, D)                 the patch tokens, token (i, j) of the h × w patch grid at position (i, j)
    channels [D·(e+1), D·(e+2))     extra token e (class, distillation, register tokens, in the model's order),
                                    the same D-vector at every position of the region it was computed from

so ``C = D · (1 + E)`` for E extra tokens, and ``C = D`` for an average-pooled model without extra tokens (a
pure patch-token map). A stage reads extra token e back as the **mean over positions** of its channels, which
at an unperturbed map is the token itself (every position holds the same vector), so the split reproduces the
model. Why the extra tokens ride in channels rather than beside the tensor:

* a class token after block k depends on the whole input, so it cannot be recomputed from the patch tokens;
* a per-batch constant bound into the tail cannot follow the rows: methods call the tail on perturbed,
  scaled, chunked and reordered copies of the examples (IntGrad path points, occlusion windows, RISE masks,
  SmoothGrad samples), and the tail is told neither which example a row came from nor which entries are
  "extra"; holding the extra tokens fixed would need every method to perturb only the patch part;
* extra *spatial* positions would break the grid geometry (``n·h × n·w`` maps).

What this means for an attribution (docs/transformers.md): the extra tokens are part of the layer's input,
as the whole layer output is in Captum's layer methods. They are perturbed with the map (a window occludes
its share of each extra token, IntGrad scales them), and their share of the relevance is spread evenly over
the positions that carry them: in DiFull over their own cell (cell i's class token depends on cell i only),
in GridPG and DiPart over the grid (their class token depends on every cell). At the input layer there are no
extra tokens (pixels). Grid helpers need nothing: folding a token map into cells gives each cell its own
block of copies, and stitching DiFull's per-cell maps puts each cell's class token in its own cell.

Stages and layers
-----------------

``patch_embed`` (timm) / ``conv_proj`` (torchvision): the patch projection, the extra tokens and the position
embedding, interpolated for images of another size than the training size exactly as timm's
``dynamic_img_size=True`` does (bicubic ``resample_abs_pos_embed``; the same interpolation for torchvision).
Then one stage per block (``blocks.i`` / ``encoder.layers.encoder_layer_i``); the last one also applies the
final per-token norm (``norm`` / ``encoder.ln``), where the head reads it.

* ``middle`` = block ``⌈L/2⌉`` (the output of half the blocks; ``blocks.5`` of a 12-block ViT);
* ``final`` = the last block (after the final norm) for average-pooled models; for class-token models the
  **input of the last block** (``blocks.{L-2}``): after the last block the head reads the class token only,
  so the patch tokens there reach no head in GridPG/DiFull and every map would be the class token's even
  spread; the last block is still available by name.

Heads
-----

``cell_head`` = ``grid_head``: the model's pooling (class token, or the mean of the patch tokens; distilled
models average their two heads as timm does in eval mode), then ``fc_norm``, ``head``. Pooling over tokens
takes any number of them, so GridPG is the model on the whole grid. ``part_head`` (DiPart, head k reads only
cell k's block of the final map): the mean of the cell's patch tokens through ``fc_norm`` and the classifier —
the model's own head for average-pooled models; for class-token models a rule of ours (docs/transformers.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from attreval.models.splitters.layer_rule import RuledStagedModel
from attreval.models.splitters.tokens import explicit_attention, pack, pack_grad, unpack  # noqa: F401 - re-exported

try:  # timm is optional for torchvision-only installs
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import Attention as _TimmAttention
    from timm.models.vision_transformer import VisionTransformer as _TimmViT
except ImportError:  # pragma: no cover - timm is installed in the dev environment
    # without timm the names are None; mypy keeps the types of timm's (installed wherever the types are checked)
    resample_abs_pos_embed, _TimmViT, _TimmAttention = None, None, None  # type: ignore[assignment, misc]

try:
    from torchvision.models.vision_transformer import VisionTransformer as _TvViT
except ImportError:  # pragma: no cover
    _TvViT = None


def _check_patches(x: Tensor, patch: tuple[int, int], what: str) -> tuple[int, int]:
    if x.dim() != 4 or x.shape[-2] % patch[0] or x.shape[-1] % patch[1]:
        raise ValueError(
            f"expected images (B, C, H, W) with sides divisible by the patch size {patch[0]}×{patch[1]} of {what}, got {tuple(x.shape)}"
        )
    return x.shape[-2] // patch[0], x.shape[-1] // patch[1]


class TimmEmbed(nn.Module):
    """Pixels ``(B, C, H, W)`` → token map at the patch embedding of a timm ViT (any H, W divisible by the patch)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.patch_embed, self.pos_drop, self.patch_drop, self.norm_pre = (
            model.patch_embed,
            model.pos_drop,
            model.patch_drop,
            model.norm_pre,
        )
        self.cls_token, self.reg_token, self.dist_token = model.cls_token, model.reg_token, getattr(model, "dist_token", None)
        self.pos_embed = model.pos_embed
        self.no_embed_class = bool(model.no_embed_class)
        self.num_extra = int(model.num_prefix_tokens)
        self.grid_size = tuple(model.patch_embed.grid_size)

    def forward(self, x: Tensor) -> Tensor:
        pe = self.patch_embed
        size = _check_patches(x, tuple(pe.patch_size), "this ViT")
        t = pe.norm(pe.proj(x).flatten(2).transpose(1, 2))  # (B, h·w, D)
        extra = [tok.expand(t.shape[0], -1, -1) for tok in (self.cls_token, self.dist_token, self.reg_token) if tok is not None]
        if self.pos_embed is not None:
            pos = resample_abs_pos_embed(
                self.pos_embed, new_size=size, old_size=self.grid_size, num_prefix_tokens=0 if self.no_embed_class else self.num_extra
            )
            if self.no_embed_class:
                t = torch.cat(extra + [t + pos], dim=1)
            else:
                t = torch.cat(extra + [t], dim=1) + pos
        else:
            t = torch.cat(extra + [t], dim=1)
        t = self.norm_pre(self.patch_drop(self.pos_drop(t)))
        return pack(t, self.num_extra, size)


class TorchvisionEmbed(nn.Module):
    """Pixels → token map at ``conv_proj`` of a torchvision ViT (class token + position embedding)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.conv_proj, self.class_token, self.dropout = model.conv_proj, model.class_token, model.encoder.dropout
        self.pos_embedding = model.encoder.pos_embedding
        self.patch = int(model.patch_size)
        self.grid_size = (model.image_size // self.patch,) * 2

    def forward(self, x: Tensor) -> Tensor:
        size = _check_patches(x, (self.patch, self.patch), "this ViT")
        t = self.conv_proj(x).flatten(2).transpose(1, 2)
        pos = resample_abs_pos_embed(self.pos_embedding, new_size=size, old_size=self.grid_size, num_prefix_tokens=1)
        t = torch.cat([self.class_token.expand(t.shape[0], -1, -1), t], dim=1) + pos
        return pack(self.dropout(t), 1, size)


class TokenBlock(nn.Module):
    """One transformer block on token maps ``(B, D·(1+E), h, w) → (B, D·(1+E), h, w)`` (then ``norm``, if any)."""

    def __init__(self, block: nn.Module, num_extra: int, norm: nn.Module | None = None):
        super().__init__()
        self.block, self.num_extra = block, num_extra
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return pack(self.norm(self.block(unpack(x, self.num_extra))), self.num_extra, tuple(x.shape[-2:]))

    @property
    def attention(self) -> nn.Module:
        """The block's self-attention module (for :func:`explicit_attention`); a one-line error unless exactly one."""
        kinds = tuple(k for k in (_TimmAttention, nn.MultiheadAttention) if k is not None)
        found = [m for m in self.block.modules() if isinstance(m, kinds)]
        if len(found) != 1:
            raise ValueError(f"expected one self-attention module in the block {type(self.block).__name__}, got {len(found)}")
        return found[0]


class TokenHead(nn.Module):
    """Final token map ``(B, D·(1+E), h, w)`` → logits ``(B, K)``.

    ``pool``: ``"token"`` reads extra token 0 (the class token), ``"avg"`` averages the patch tokens. Distilled
    models (``heads`` of two) read extra tokens 0 and 1 through one head each and average the logits.
    """

    def __init__(self, pool: str, num_extra: int, fc_norm: nn.Module, drop: nn.Module, heads: list[nn.Module]):
        super().__init__()
        self.pool, self.num_extra = pool, num_extra
        self.fc_norm, self.drop, self.heads = fc_norm, drop, nn.ModuleList(heads)

    def forward(self, x: Tensor) -> Tensor:
        d = x.shape[1] // (1 + self.num_extra)
        outs = []
        for i, head in enumerate(self.heads):
            if self.pool == "token":
                feat = x[:, d * (1 + i) : d * (2 + i)].mean(dim=(-2, -1))
            else:
                feat = x[:, :d].mean(dim=(-2, -1))
            outs.append(head(self.drop(self.fc_norm(feat))))
        return outs[0] if len(outs) == 1 else sum(outs) / len(outs)


@dataclass(frozen=True, eq=False)
class TokenStagedModel(RuledStagedModel):
    """A :class:`StagedModel` of a transformer, with DiPart's head.

    Attributes:
        part_head: ``nn.Module``: one cell's block of the final token map → logits, reading only the cell's
            patch tokens (DiPart; see the module docstring).
        num_extra: E, the extra tokens carried in the token map's channels.
    """

    part_head: nn.Module | None = None
    num_extra: int = 0


def _aliases(names: list[str], token: bool) -> dict[str, str]:
    blocks = names[1:]
    last = len(blocks) - 2 if token and len(blocks) >= 2 else len(blocks) - 1
    return {"middle": blocks[math.ceil(len(blocks) / 2) - 1], "final": blocks[last]}


class ViTSplitter:
    """Accepts timm ``VisionTransformer`` (class token or average pooling, register tokens, DeiT-distilled)
    and torchvision ``VisionTransformer``; refuses variants whose forward it does not reproduce (attention
    pooling, other pooling types, a subclass with its own forward)."""

    def accepts(self, model: nn.Module) -> bool:
        return self._timm(model) or self._torchvision(model)

    @staticmethod
    def _timm(model: nn.Module) -> bool:
        if _TimmViT is None or not isinstance(model, _TimmViT):
            return False
        from timm.models.deit import VisionTransformerDistilled

        own = {type(model).forward_features, type(model).forward}
        base_ok = own <= {_TimmViT.forward_features, _TimmViT.forward}
        head_ok = type(model).forward_head in (_TimmViT.forward_head, VisionTransformerDistilled.forward_head)
        distilled = isinstance(model, VisionTransformerDistilled)
        return (
            base_ok
            and head_ok
            and getattr(model, "attn_pool", None) is None
            and (distilled or model.global_pool in ("token", "avg"))
            and not getattr(model, "pool_include_prefix", False)
            and not getattr(model.patch_embed, "dynamic_img_pad", False)
            and hasattr(model.patch_embed, "proj")
            and (getattr(model.patch_embed, "flatten", True) or bool(getattr(model, "dynamic_img_size", False)))
        )

    @staticmethod
    def _torchvision(model: nn.Module) -> bool:
        return _TvViT is not None and isinstance(model, _TvViT) and type(model).forward is _TvViT.forward

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        if self._torchvision(model):
            return 3, int(model.image_size), int(model.image_size)
        h, w = (int(v) for v in model.patch_embed.img_size)
        return int(model.patch_embed.proj.in_channels), h, w

    def split(self, model: nn.Module, probe: Tensor) -> TokenStagedModel:
        if self._torchvision(model):
            return self._split_torchvision(model)
        from timm.models.deit import VisionTransformerDistilled

        e = int(model.num_prefix_tokens)
        distilled = isinstance(model, VisionTransformerDistilled)
        pool = "token" if distilled else model.global_pool
        if pool == "token" and model.cls_token is None:
            raise ValueError("expected a class token for token pooling, got cls_token=None")
        blocks = list(model.blocks)
        stages: list[tuple[str, nn.Module]] = [("patch_embed", TimmEmbed(model))]  # the embedding, then the blocks
        stages += [(f"blocks.{i}", TokenBlock(b, e, model.norm if i == len(blocks) - 1 else None)) for i, b in enumerate(blocks)]
        heads = [model.head, model.head_dist] if distilled else [model.head]
        head = TokenHead(pool, e, model.fc_norm, model.head_drop, heads)
        part = head if pool == "avg" else TokenHead("avg", e, model.fc_norm, model.head_drop, heads)
        names = [n for n, _ in stages]
        return TokenStagedModel(
            stages=tuple(stages),
            cell_head=head,
            grid_head=head,
            aliases=_aliases(names, pool == "token"),
            architecture=f"timm {type(model).__name__}",
            part_head=part,
            num_extra=e,
        )

    def _split_torchvision(self, model: nn.Module) -> TokenStagedModel:
        layers = list(model.encoder.layers.named_children())
        stages: list[tuple[str, nn.Module]] = [("conv_proj", TorchvisionEmbed(model))]  # the embedding, then the blocks
        stages += [
            (f"encoder.layers.{name}", TokenBlock(block, 1, model.encoder.ln if i == len(layers) - 1 else None))
            for i, (name, block) in enumerate(layers)
        ]
        drop = nn.Identity()
        # torch types Module.__getattr__ as Tensor | Module; torchvision's ViT keeps its classifier in an nn.Sequential
        classifier = cast(nn.Module, model.heads)
        head = TokenHead("token", 1, nn.Identity(), drop, [classifier])
        part = TokenHead("avg", 1, nn.Identity(), drop, [classifier])
        names = [n for n, _ in stages]
        return TokenStagedModel(
            stages=tuple(stages),
            cell_head=head,
            grid_head=head,
            aliases=_aliases(names, True),
            architecture=f"torchvision {type(model).__name__}",
            part_head=part,
            num_extra=1,
        )
