"""Families attreval knows it cannot split exactly, refused with one line that says why and names the way
out (a :class:`~attreval.StagedModel` built by hand, docs/models.md "Your own architecture"), rather than a
trace failure or a traceback deep inside the model.

Each reason is a fact of the family's forward in the installed timm / torchvision: GridPG and DiPart run the
model on a 2×2 grid of cells and DiFull on single cells, so a model that runs at one input size only, or whose
stage outputs are token sequences without a map layout, cannot be split into per-layer maps for both.
"""

from __future__ import annotations

from torch import Tensor, nn

from attreval.models.staged import StagedModel

_FIXED = "runs only at its build size, but DiFull's cells and GridPG's grids differ in size"

#: class name → ``(module prefix, reason)`` (the reason completes "cannot split it: …").
REASONS: dict[str, tuple[str, str]] = {
    "Beit": ("timm.", f"timm BEiT {_FIXED} (relative-position tables of one patch grid)"),
    "PoolingVisionTransformer": ("timm.", f"timm PiT {_FIXED} (position embedding added without resampling)"),
    "Levit": ("timm.", f"timm LeViT {_FIXED} (attention biases of one resolution)"),
    "LevitDistilled": ("timm.", f"timm LeViT {_FIXED} (attention biases of one resolution)"),
    "EfficientFormer": ("timm.", f"timm EfficientFormer {_FIXED} (its last stage's attention biases)"),
    "EfficientFormerV2": ("timm.", f"timm EfficientFormer-v2 {_FIXED} (attention biases of one resolution)"),
    "Eva": ("timm.", f"timm EVA / EVA-02 built without dynamic_img_size=True {_FIXED}"),
    "MaxVit": ("torchvision.", f"torchvision MaxViT {_FIXED} (partition grids fixed at construction; timm's maxvit_* splits)"),
}


def reason_for(model: nn.Module) -> str | None:
    prefix, reason = REASONS.get(type(model).__name__, ("", None))
    return reason if prefix and type(model).__module__.startswith(prefix) else None


class RefusedSplitter:
    """Accepts the families of :data:`REASONS` and refuses them with their reason (never splits)."""

    def accepts(self, model: nn.Module) -> bool:
        return reason_for(model) is not None

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        return 3, 224, 224

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        raise ValueError(reason_for(model))
