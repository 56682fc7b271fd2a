"""Grid datasets (PAPER.md §1.1): n×n grids of confidently classified images of distinct classes.

Pipeline: :func:`select_images` keeps the images that pass a rule for every given model (the paper's
``correct-and-confident``: classified correctly with softmax confidence ≥ a threshold, which
:func:`confident_indices` is; ``confident``: the label's softmax ≥ the threshold, right or wrong; ``any``:
every image, for untrained or randomised models); :func:`sample_grid_indices` draws the grids;
:func:`build_grid_dataset` does both and stitches the cells. A :class:`GridDataset` saves and loads with
its labels, spec, source indices and class names; its file format lives only in this class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from attreval.data.kinds import class_names
from attreval.data.selection import IMAGE_RULES, confident_indices, select_images  # noqa: F401 - re-exported
from attreval.grid import GridSpec, unfold_cells
from attreval.validation import positive_int

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
        class_names: the source dataset's class names, index = label (``()`` when it has none).
    """

    images: Tensor
    labels: Tensor
    sources: Tensor
    spec: GridSpec
    repeat_corners: bool = False
    seed: int = 0
    class_names: tuple[str, ...] = ()

    def class_name(self, label: int) -> str:
        """The name of class ``label``, or the label as text when the dataset has no names for it."""
        label = int(label)
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def payload(self) -> dict:
        """The grid file's content: the one place its schema is written (:meth:`load` reads it back)."""
        return {
            "images": self.images,
            "labels": self.labels,
            "sources": self.sources,
            "n": self.spec.n,
            "cell_h": self.spec.cell_h,
            "cell_w": self.spec.cell_w,
            "repeat_corners": self.repeat_corners,
            "seed": self.seed,
            "class_names": list(self.class_names),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.payload(), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False) -> GridDataset:
        """Read a file written by :meth:`save`; ``mmap``: map the images instead of reading them (reading a
        few example grids then touches only their pages). Files from before class names load with none."""
        try:
            try:
                d = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                d = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
            spec = GridSpec(d["n"], d["cell_h"], d["cell_w"])
            names = tuple(str(c) for c in d.get("class_names", ()))
            return cls(d["images"], d["labels"], d["sources"], spec, d["repeat_corners"], d["seed"], names)
        except FileNotFoundError:
            raise ValueError(f"expected a grid dataset file, found nothing at {path}") from None
        except (KeyError, RuntimeError, EOFError, OSError) as err:
            raise ValueError(f"expected a grid dataset saved by attreval at {path}, got an unreadable file ({err})") from None


def dataset_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """All images ``(N, C, H, W)`` and labels ``(N,)`` of a map-style dataset of ``(image, label)``."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) == 2:
        images, labels = tensors
        return images, torch.as_tensor(labels).long()
    images, labels, shape = [], [], None
    for i in range(len(dataset)):  # type: ignore[arg-type]  # map-style datasets have a length
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


def sample_grid_indices(
    labels: Tensor,
    pool: Tensor,
    n: int,
    count: int,
    *,
    repeat_corners: bool = False,
    generator: torch.Generator,
    pool_name: str = "confident",
) -> Tensor:
    """Draw ``count`` grids of source indices ``(count, n²)`` from the images ``pool`` (PAPER.md §1.1).

    The images of each class are shuffled once. Each grid draws n² distinct classes at random among
    the classes that still have unused images (with ``repeat_corners``: n²−1 classes, the first of which
    has two unused images, and the first class repeated in the last cell) and takes the next unused image
    of each. This equals the reference's "redraw until every class has an image" loop in distribution,
    without its unbounded loop. No image is used twice. ``pool_name`` names the pool in errors.
    """
    pool_labels = labels[pool]
    classes = torch.unique(pool_labels)
    queues = {int(c): pool[pool_labels == c][torch.randperm(int((pool_labels == c).sum()), generator=generator)].tolist() for c in classes}
    needed = n * n - (1 if repeat_corners else 0)
    if n * n > 1 and len(classes) < needed:
        raise ValueError(f"expected at least {needed} classes with {pool_name} images for {n}×{n} grids, got {len(classes)}")
    grids = []
    for g in range(count):
        chosen = _draw_classes(queues, needed, repeat_corners, generator)
        if chosen is None:
            raise ValueError(
                f"expected {count} {n}×{n} grids from the {pool_name} images, got only {g} (too few: {len(pool)} "
                f"{pool_name} images); lower the count or the confidence threshold"
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
    rule: str = "correct-and-confident",
) -> GridDataset:
    """Build ``count`` n×n grids from a labelled image dataset, for the given models.

    Only images that pass ``rule`` for every model are used (:func:`select_images`; the default is the
    paper's: classified correctly with softmax ≥ ``threshold``); every grid holds n² distinct classes
    (``repeat_corners``: the bottom-right cell holds a different image of the top-left cell's class, the
    DiFull/DiPart variant). Reproducible from ``seed``. Too few images end in one line that also says
    which rule removed how many. The dataset's class names (:func:`attreval.data.class_names`) are kept.
    """
    positive_int("number of grids", count)
    images, labels = dataset_tensors(dataset)
    pool, summary = select_images(models, images.to(device), labels, threshold, rule)
    log.info("%s, for all %d model(s)", summary, len(models))
    generator = torch.Generator().manual_seed(seed)
    try:
        sources = sample_grid_indices(
            labels,
            pool,
            n,
            count,
            repeat_corners=repeat_corners,
            generator=generator,
            pool_name="selected" if rule == "any" else "confident",
        )
    except ValueError as err:
        raise ValueError(f"{err}; {summary}") from None
    cells = images[sources.view(-1)]
    spec = GridSpec(n, images.shape[-2], images.shape[-1])
    return GridDataset(unfold_cells(cells, n).contiguous(), labels[sources], sources, spec, repeat_corners, seed, class_names(dataset))
