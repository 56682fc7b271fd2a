"""Grid datasets (PAPER.md §1.1): n×n grids of confidently classified images of distinct classes.

Pipeline: :func:`confident_indices` keeps the images every given model classifies correctly with softmax
confidence ≥ a threshold; :func:`sample_grid_indices` draws the grids; :func:`build_grid_dataset` does
both and stitches the cells. A :class:`GridDataset` saves and loads with its labels, spec and source
indices.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from attreval.grid import GridSpec, unfold_cells

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GridDataset:
    """Grids and their provenance.

    Attributes:
        images: ``(G, C, n·H, n·W)`` float32 grid images (cells placed side by side in normalised space).
        labels: ``LongTensor (G, n²)`` class of every cell, row-major.
        sources: ``LongTensor (G, n²)`` index of every cell's image in the source dataset.
        spec: the grid geometry.
        repeat_corners: whether the bottom-right cell repeats the top-left cell's class (DiFull/DiPart).
        seed: the sampling seed.
    """

    images: Tensor
    labels: Tensor
    sources: Tensor
    spec: GridSpec
    repeat_corners: bool = False
    seed: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "images": self.images, "labels": self.labels, "sources": self.sources,
                "n": self.spec.n, "cell_h": self.spec.cell_h, "cell_w": self.spec.cell_w,
                "repeat_corners": self.repeat_corners, "seed": self.seed,
            },
            tmp,
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GridDataset":
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            spec = GridSpec(d["n"], d["cell_h"], d["cell_w"])
            return cls(d["images"], d["labels"], d["sources"], spec, d["repeat_corners"], d["seed"])
        except FileNotFoundError:
            raise ValueError(f"expected a grid dataset file, found nothing at {path}") from None
        except (KeyError, RuntimeError, EOFError, OSError) as err:
            raise ValueError(f"expected a grid dataset saved by attreval at {path}, got an unreadable file ({err})") from None


def dataset_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """All images ``(N, C, H, W)`` and labels ``(N,)`` of a map-style dataset of ``(image, label)``."""
    if isinstance(getattr(dataset, "tensors", None), tuple) and len(dataset.tensors) == 2:
        images, labels = dataset.tensors
        return images, torch.as_tensor(labels).long()
    images, labels, shape = [], [], None
    for i in range(len(dataset)):
        image, label = dataset[i]
        if shape is None:
            shape = tuple(image.shape)
        elif tuple(image.shape) != shape:
            raise ValueError(f"expected every image of shape {shape}, got {tuple(image.shape)} at index {i}")
        images.append(image)
        labels.append(int(label))
    if not images:
        raise ValueError("expected a non-empty dataset, got 0 images")
    return torch.stack(images), torch.tensor(labels)


def confident_indices(
    models: Sequence[nn.Module], images: Tensor, labels: Tensor, threshold: float = 0.99, batch_size: int = 256
) -> Tensor:
    """Indices of the images that **every** model classifies correctly with softmax ≥ ``threshold``.

    Args:
        images: ``(N, C, H, W)`` single images on the models' device; labels ``(N,)``.

    Returns:
        ``LongTensor (M,)`` sorted indices (PAPER.md §1.1: intersection over the given models).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"expected a confidence threshold in [0, 1], got {threshold}")
    keep = torch.ones(len(images), dtype=torch.bool)
    for model in models:
        if model.training:
            raise ValueError("expected models in eval mode (call model.eval() first), got one in training mode")
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            y = labels[part].cpu()
            probs = _checked_logits(model, images[part], y).softmax(dim=-1).cpu()
            ok = (probs.argmax(dim=-1) == y) & (probs.gather(1, y[:, None]).squeeze(1) >= threshold)
            keep[part] &= ok
    return keep.nonzero().squeeze(1)


def _checked_logits(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """``model(images)`` without autograd, with one-line errors for data the model cannot take (channels,
    image size), for NaN/inf outputs and for labels beyond the model's outputs."""
    try:
        with torch.no_grad():
            logits = model(images)
    except RuntimeError as err:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"expected images the model can take, got images of shape {tuple(images.shape[1:])} that it rejects: {first}"
        ) from None
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape (B, K) from the model, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(f"expected finite model outputs, got NaN/inf logits for {bad} of {len(images)} images in a batch (check the weights)")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"expected labels in 0..{logits.shape[1] - 1} (the model's {logits.shape[1]} outputs), "
            f"got labels in {int(labels.min())}..{int(labels.max())}"
        )
    return logits


def sample_grid_indices(
    labels: Tensor, pool: Tensor, n: int, count: int, *, repeat_corners: bool = False, generator: torch.Generator
) -> Tensor:
    """Draw ``count`` grids of source indices ``(count, n²)`` from the images ``pool`` (PAPER.md §1.1).

    The images of each class are shuffled once. Each grid draws n² distinct classes at random among
    the classes that still have unused images (with ``repeat_corners``: n²−1 classes, the first of which
    has two unused images, and the first class repeated in the last cell) and takes the next unused image
    of each. This equals the reference's "redraw until every class has an image" loop in distribution,
    without its unbounded loop. No image is used twice.
    """
    pool_labels = labels[pool]
    classes = torch.unique(pool_labels)
    queues = {int(c): pool[pool_labels == c][torch.randperm(int((pool_labels == c).sum()), generator=generator)].tolist()
              for c in classes}
    needed = n * n - (1 if repeat_corners else 0)
    if n * n > 1 and len(classes) < needed:
        raise ValueError(
            f"expected at least {needed} classes with confident images for {n}×{n} grids, got {len(classes)}"
        )
    grids = []
    for g in range(count):
        chosen = _draw_classes(queues, needed, repeat_corners, generator)
        if chosen is None:
            raise ValueError(
                f"expected {count} {n}×{n} grids from the confident images, got only {g} (too few: {len(pool)} "
                f"confident images); lower the count or the confidence threshold"
            )
        cells = [queues[c].pop() for c in chosen]
        if repeat_corners:
            cells.append(queues[chosen[0]].pop())
        grids.append(cells)
    return torch.tensor(grids, dtype=torch.long).view(count, n * n)


def _draw_classes(queues: dict[int, list[int]], needed: int, repeat: bool, generator: torch.Generator) -> list[int] | None:
    available = [c for c, q in queues.items() if q]
    if repeat:
        firsts = [c for c in available if len(queues[c]) >= 2]
        if not firsts or len(available) < needed:
            return None
        first = firsts[int(torch.randint(len(firsts), (1,), generator=generator))]
        rest = [c for c in available if c != first]
        order = torch.randperm(len(rest), generator=generator)[: needed - 1].tolist()
        return [first] + [rest[i] for i in order]
    if len(available) < needed:
        return None
    return [available[i] for i in torch.randperm(len(available), generator=generator)[:needed].tolist()]


def build_grid_dataset(
    dataset: Dataset,
    models: Sequence[nn.Module],
    n: int,
    count: int,
    *,
    threshold: float = 0.99,
    repeat_corners: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> GridDataset:
    """Build ``count`` n×n grids from a labelled image dataset, for the given models.

    Only images that every model classifies correctly with softmax ≥ ``threshold`` are used; every
    grid holds n² distinct classes (``repeat_corners``: the bottom-right cell holds a different image of
    the top-left cell's class, the DiFull/DiPart variant). Reproducible from ``seed``.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"expected a positive number of grids, got {count!r}")
    images, labels = dataset_tensors(dataset)
    pool = confident_indices(models, images.to(device), labels, threshold)
    log.info("%d of %d images are confident (≥ %.2f) for all %d model(s)", len(pool), len(images), threshold, len(models))
    generator = torch.Generator().manual_seed(seed)
    sources = sample_grid_indices(labels, pool, n, count, repeat_corners=repeat_corners, generator=generator)
    cells = images[sources.view(-1)]
    spec = GridSpec(n, images.shape[-2], images.shape[-1])
    return GridDataset(unfold_cells(cells, n).contiguous(), labels[sources], sources, spec, repeat_corners, seed)
