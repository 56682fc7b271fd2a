"""Which images may fill a grid (PAPER.md §1.1): those every model classifies by a rule (the paper's
``correct-and-confident``; ``confident``; ``any``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attreval.validation import first_line


def confident_indices(
    models: Sequence[nn.Module], images: Tensor, labels: Tensor, threshold: float = 0.99, batch_size: int = 256
) -> Tensor:
    """Indices of the images that **every** model classifies correctly with softmax ≥ ``threshold``.

    Args:
        images: ``(N, C, H, W)`` single images on the models' device; labels ``(N,)``.

    Returns:
        ``LongTensor (M,)`` sorted indices (PAPER.md §1.1: intersection over the given models).
    """
    return select_images(models, images, labels, threshold, "correct-and-confident", batch_size)[0]


#: The image rules of :func:`select_images` (``[grids] images``).
IMAGE_RULES = ("correct-and-confident", "confident", "any")


def select_images(
    models: Sequence[nn.Module],
    images: Tensor,
    labels: Tensor,
    threshold: float = 0.99,
    rule: str = "correct-and-confident",
    batch_size: int = 256,
) -> tuple[Tensor, str]:
    """Indices of the images that pass ``rule`` for **every** model, and a one-line account of what it removed.

    Rules: ``correct-and-confident`` (PAPER.md §1.1: top class = label and its softmax ≥ ``threshold``),
    ``confident`` (softmax of the label ≥ ``threshold``, whatever the top class), ``any`` (every image; one
    batch still goes through each model, so that images it cannot take or labels beyond its outputs fail
    here, before any unit).

    Args:
        images: ``(N, C, H, W)`` single images on the models' device; labels ``(N,)``.

    Returns:
        ``LongTensor (M,)`` sorted indices, and e.g. ``"[grids] images = "correct-and-confident" (confidence
        ≥ 0.99) kept 40 of 300 images of 3 of 10 classes: 200 misclassified, 60 below confidence"``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"expected a confidence threshold in [0, 1], got {threshold}")
    if rule not in IMAGE_RULES:
        raise ValueError(f"expected an image rule in {', '.join(IMAGE_RULES)}, got '{rule}'")
    wrong = torch.zeros(len(images), dtype=torch.bool)  # misclassified by some model (correct-and-confident only)
    unsure = torch.zeros(len(images), dtype=torch.bool)  # label's softmax below the threshold for some model
    for model in models:
        if model.training:
            raise ValueError("expected models in eval mode (call model.eval() first), got one in training mode")
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            probs = _checked_logits(model, images[part], labels if rule == "any" else labels[part].cpu()).softmax(dim=-1).cpu()
            if rule == "any":
                break  # the checks above are all "any" needs
            y = labels[part].cpu()
            if rule == "correct-and-confident":
                wrong[part] |= probs.argmax(dim=-1) != y
            unsure[part] |= probs.gather(1, y[:, None]).squeeze(1) < threshold
    keep = ~(wrong | unsure)
    classes = len(torch.unique(labels)) if len(labels) else 0
    kept_classes = len(torch.unique(labels[keep])) if keep.any() else 0
    where = f'[grids] images = "{rule}"' + ("" if rule == "any" else f" (confidence ≥ {threshold:g})")
    removed = [f"{int(wrong.sum())} misclassified"] if rule == "correct-and-confident" else []
    removed += [] if rule == "any" else [f"{int((unsure & ~wrong).sum())} below confidence"]
    summary = f"{where} kept {int(keep.sum())} of {len(images)} images of {kept_classes} of {classes} classes" + (
        f": {', '.join(removed)}" if removed else ""
    )
    return keep.nonzero().squeeze(1), summary


def _checked_logits(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """``model(images)`` without autograd, with one-line errors for data the model cannot take (channels,
    image size), for NaN/inf outputs and for labels beyond the model's outputs."""
    try:
        with torch.no_grad():
            logits = model(images)
    except RuntimeError as err:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        first = first_line(err)
        raise ValueError(
            f"expected images the model can take, got images of shape {tuple(images.shape[1:])} that it rejects: {first}"
        ) from None
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape (B, K) from the model, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(
            f"expected finite model outputs, got NaN/inf logits for {bad} of {len(images)} images in a batch (check the weights)"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"expected labels in 0..{logits.shape[1] - 1} (the model's {logits.shape[1]} outputs), "
            f"got labels in {int(labels.min())}..{int(labels.max())}"
        )
    return logits
