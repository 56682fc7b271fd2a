"""Tiny random-weight Vision Transformers (timm, torchvision) for fast tests."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT


def _shake(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    # timm's init leaves class/register tokens near zero and attention near uniform; noise makes every
    # token matter, so locality and reproduction tests can fail
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def tiny_vit(
    pool: str = "token",
    reg: int = 0,
    cls: bool = True,
    img: int = 32,
    patch: int = 8,
    dim: int = 32,
    dynamic: bool = False,
    seed: int = 0,
    depth: int = 4,
) -> VisionTransformer:
    """A ``depth``-block timm ViT, D=``dim``, 2 heads, 10 classes; ``pool`` ``"token"`` or ``"avg"``, ``reg`` register tokens."""
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=2,
        mlp_ratio=2,
        num_classes=10,
        global_pool=pool,
        class_token=cls,
        reg_tokens=reg,
        dynamic_img_size=dynamic,
    )
    return _shake(model, seed)


def tiny_torchvision_vit(img: int = 32, patch: int = 8, seed: int = 0) -> TorchvisionViT:
    torch.manual_seed(seed)
    model = TorchvisionViT(image_size=img, patch_size=patch, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    return _shake(model, seed)
