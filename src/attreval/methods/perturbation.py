"""Perturbation-based methods (PAPER.md §4.3): Occlusion and RISE.

Both run many perturbed copies of every example through ``task.tail`` with
:func:`~attreval.methods.base.perturbed_targets`, which gathers all T targets from each forward and
batches at most ~``task.chunk_size`` inputs per pass. At hidden layers the perturbation acts on the
activations (occluded value 0; RISE masks multiply the activations), PAPER.md §2.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from attreval.methods.base import Method, ReferencePattern, Task, check_classes, chunks, perturbed_targets, pick_targets, register
from attreval.methods.rise_masks import MaskDraws, rise_masks, upsampling_rows
from attreval.validation import fits_arrays, in_range, positive_int

logger = logging.getLogger(__name__)
__all__ = ["RISE", "MaskDraws", "Occlusion", "interval_masks", "patch_intervals", "rise_masks", "upsampling_rows", "window_boxes"]

# --------------------------------------------------------------------------------------------------
# Occlusion


def patch_intervals(size: int, kernel_size: int, stride: int) -> list[tuple[int, int]]:
    """Occlusion patches along one axis of ``size`` positions: clipped half-open ``[start, end)`` intervals.

    The paper's grid (PAPER.md §4.3, from the authors' code), generalised to any K and s:

    * **even K**: patch *starts* on the lattice ``s·ℤ``, every patch that overlaps the map, i.e. starts
      ``-(⌈K/s⌉-1)·s, …, s·⌊(W-1)/s⌋``. For s | K and s | W these are the paper's ``W/s + K/s - 1``
      positions from offset ``-(K/s-1)·s``, so border patches stick out (K=16, s=8, W=448: 57 per axis).
    * **odd K**: patch *centres* ``0, s, 2s, …`` with half-width ``⌊K/2⌋``, up to the first centre
      ``≥ W-1`` (the paper's "…, W" when s | W and s = 2) but never a patch wholly outside the map.
      The authors' code reuses the even count ``W//s + K//s - 1`` here, which agrees for the paper's
      K=5, s=2 and otherwise can yield empty patches (e.g. K=9, s=2) or miss the last pixel (odd W, K=3).

    Every position is covered when ``stride ≤ kernel_size``; with larger strides some are never occluded
    (their attribution is 0). Intervals are clipped to ``[0, size)``; their lengths give |P|.

    >>> len(patch_intervals(448, 16, 8)), patch_intervals(448, 16, 8)[:2], patch_intervals(448, 16, 8)[-1]
    (57, [(0, 8), (0, 16)], (440, 448))
    >>> patch_intervals(8, 5, 2)  # odd K: centres 0, 2, 4, 6, 8
    [(0, 3), (0, 5), (2, 7), (4, 8), (6, 8)]
    """
    for name, value in (("size", size), ("kernel_size", kernel_size), ("stride", stride)):
        positive_int(name, value)
    starts: Iterable[int]
    if kernel_size % 2 == 0:
        starts = range(-(math.ceil(kernel_size / stride) - 1) * stride, size, stride)
    else:
        half = kernel_size // 2
        last = min(math.ceil((size - 1) / stride) * stride, size - 1 + half)
        starts = (centre - half for centre in range(0, last + 1, stride))
    return [(max(start, 0), min(start + kernel_size, size)) for start in starts]


def interval_masks(size: int, kernel_size: int, stride: int, device: torch.device) -> Tensor:
    """``(P, size)`` bool: row p marks the positions of patch p along one axis (see :func:`patch_intervals`)."""
    bounds = torch.tensor(patch_intervals(size, kernel_size, stride), device=device)
    positions = torch.arange(size, device=device)
    return (positions >= bounds[:, :1]) & (positions < bounds[:, 1:])


@dataclass(frozen=True)
class Occlusion(Method):
    """Occlusion (Zeiler & Fergus 2014) as configured in PAPER.md §4.3.

    Each patch P of the grid of :func:`patch_intervals` is set to 0 (the mean pixel at the input in
    normalised space; zero activations at hidden layers). Position p gets
    ``Σ_{P ∋ p} (y_c(x) - y_c(x with P zeroed)) / |P|`` with |P| the patch area clipped to the map,
    logits, no clamp. Patches are the outer product of row and column intervals, so they are kept as
    two factors ``(Pr, h)`` and ``(Pc, w)`` rather than ``(Pr·Pc, h, w)`` masks (2.6 GB at 448²).

    Attributes:
        kernel_size, stride: patch side and step; ``None`` = the paper's rule for the task's layer.
        input_kernel_size, input_stride: the paper's input-layer window, **16 / 8**.
        hidden_kernel_size, hidden_stride: the paper's hidden-layer window, **5 / 2**.
    """

    display = "Occlusion"
    family = "perturbation"
    reference: ClassVar[ReferencePattern] = ReferencePattern(grids=1)  # the authors' max_imgs_bs = 1
    kernel_size: int | None = None
    stride: int | None = None
    input_kernel_size: int = 16
    input_stride: int = 8
    hidden_kernel_size: int = 5
    hidden_stride: int = 2

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in ("kernel_size", "stride"):
                continue
            positive_int(field.name, value)

    def window(self, task: Task) -> tuple[int, int]:
        """``(kernel_size, stride)`` used for ``task``: the explicit fields, else the paper's rule by layer."""
        if task.is_input_layer:
            default = (self.input_kernel_size, self.input_stride)
        else:
            default = (self.hidden_kernel_size, self.hidden_stride)
        kernel = default[0] if self.kernel_size is None else self.kernel_size
        stride = default[1] if self.stride is None else self.stride
        return kernel, stride

    def __call__(self, task: Task) -> Tensor:
        """Maps ``(B, T, h, w)`` float32 for every target, from ``1 + Pr·Pc`` forwards per example (DiFull:
        only the windows that overlap each head's block, each through that head's block alone)."""
        kernel, stride = self.window(task)
        x = task.inputs
        rows = interval_masks(x.shape[-2], kernel, stride, x.device)  # (Pr, h)
        cols = interval_masks(x.shape[-1], kernel, stride, x.device)  # (Pc, w)
        regions = task.tail.regions((x.shape[-2], x.shape[-1])) if task.tail.separate_cells else None
        if regions is None:
            drops = window_drops(task, rows, cols)
        else:
            drops = window_drops_per_head(task, rows, cols, regions.to(x.device))
        rows, cols = rows.float(), cols.float()
        area = rows.sum(1)[:, None] * cols.sum(1)[None, :]  # (Pr, Pc)
        delta = drops.unflatten(1, area.shape) / area[None, :, :, None]
        return torch.einsum("bpqt,ph,qw->bthw", delta, rows, cols)


def window_boxes(rows: Tensor, cols: Tensor) -> Tensor:
    """``(Pr·Pc, 4)`` long ``(top, bottom, left, right)`` of every window, row-major over the ``Pr × Pc`` grid of
    row masks ``rows (Pr, h)`` and column masks ``cols (Pc, w)`` (each one interval)."""

    def bounds(masks: Tensor) -> Tensor:
        start = masks.int().argmax(1)  # the first position of each interval
        return torch.stack([start, start + masks.sum(1)], 1)

    r, c = bounds(rows), bounds(cols)
    return torch.cat([r.repeat_interleave(c.shape[0], 0), c.repeat(r.shape[0], 1)], 1)


def window_drops(task: Task, rows: Tensor, cols: Tensor) -> Tensor:
    """``y_c(x) − y_c(x with window p zeroed)`` for every window and target: ``(B, Pr·Pc, T)``.

    The occluded logits come from ``task.tail.occluder`` (a setting's tail recomputes only each window's
    receptive-field cone), ~``task.chunk_size`` windows·examples per call."""
    x = task.inputs
    boxes = window_boxes(rows, cols)
    clean = perturbed_targets(task, lambda part: x[:, None], 1)  # (B, 1, T)
    occluder = task.tail.occluder(x)
    drops = []
    with torch.no_grad():
        for part in chunks(boxes.shape[0], max(1, task.chunk_size // task.batch)):
            drops.append(clean - pick_targets(occluder(boxes[part]), task.heads, task.classes).float())
    return torch.cat(drops, dim=1)


def window_drops_per_head(task: Task, rows: Tensor, cols: Tensor, regions: Tensor) -> Tensor:
    """:func:`window_drops` for a task whose heads see only their ``regions (H, h, w)`` (DiFull's tail).

    A window outside head u's region leaves u's logits unchanged, so its drop is exactly 0 and it is not
    run; a window inside is run through head u alone (the occluder's ``index``). Same maps as running every
    window through every head, in far fewer block passes (2×2 grid, corner heads: ~1/4).
    """
    x, b, t = task.inputs, task.batch, task.num_targets
    heads, classes = task.heads.to(x.device), task.classes.to(x.device)
    regions = regions.float()
    hits = torch.einsum("ph,qw,uhw->pqu", rows.float(), cols.float(), regions) > 0  # window overlaps head u
    index, head = hits.flatten(0, 1).nonzero(as_tuple=True)  # (window, head) pairs to run
    boxes = window_boxes(rows, cols)
    drops = torch.zeros((b, rows.shape[0] * cols.shape[0], t), device=x.device)
    with torch.no_grad():
        clean = torch.stack([task.tail.rows(x, torch.full((b,), u, device=x.device)) for u in range(regions.shape[0])])
        check_classes(classes, clean.shape[-1])
        clean = clean[heads].gather(2, classes.T[..., None])[..., 0].T.float()  # (B, T)
        occluder = task.tail.occluder(x)
        for part in chunks(index.numel(), max(1, task.chunk_size // b)):
            windows, own = index[part], head[part]
            out = occluder(boxes[windows], own).float()  # (B, q, K)
            for column in range(t):
                hit = own == heads[column]
                picked = out[:, hit].gather(2, classes[:, column, None, None].expand(-1, int(hit.sum()), 1))[..., 0]
                drops[:, windows[hit], column] = clean[:, column, None] - picked
    return drops


register("occlusion", Occlusion())

# --------------------------------------------------------------------------------------------------
# RISE


@dataclass(frozen=True)
class RISE(Method):
    """RISE (Petsiuk et al. 2018) as configured in PAPER.md §4.3.

    Saliency of target c: ``Σ_i softmax_c(f(x ⊙ m_i)) · m_i / (M · p1)`` with the softmax of the
    explained head. Masks are generated per map resolution (layer) from ``seed`` (:class:`MaskDraws`) and
    shared by every example, so a batch gives the same maps as each example alone.

    Attributes:
        num_masks: M, **1000** in the paper (fewer than the original 6000 because inputs are 448²).
        grid_size: s, **6**.
        keep_prob: p1, **0.1**.
        seed: seed of the mask generator.
    """

    display = "RISE"
    family = "perturbation"
    stochastic = True
    test_preset: ClassVar[dict[str, Any]] = {"num_masks": 64}
    reference: ClassVar[ReferencePattern] = ReferencePattern(grids=1, rows=2)  # max_imgs_bs = 1; 2 masked inputs per forward
    num_masks: int = 1000
    grid_size: int = 6
    keep_prob: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_masks", "grid_size"):
            positive_int(name, getattr(self, name))
        in_range("keep_prob", self.keep_prob, 0, 1, low_open=True)

    def __call__(self, task: Task) -> Tensor:
        """Maps ``(B, T, h, w)`` float32 from M forwards per example (softmax probabilities).

        Masks are built ~``task.chunk_size`` inputs at a time, run, and their weighted sum accumulated (float64)
        before the next chunk is built: memory stays that of one chunk whatever M is, and nothing is kept after
        the call."""
        x = task.inputs
        height, width = x.shape[-2:]
        # the masks are built a chunk at a time; their low-resolution draws are kept for all M
        fits_arrays("RISE masks", self.num_masks, (self.grid_size, self.grid_size), "lower [methods.rise] num_masks", None)
        draws = MaskDraws.draw(height, width, self.num_masks, self.grid_size, float(self.keep_prob), int(self.seed))
        total = torch.zeros((task.batch, task.num_targets, *x.shape[-2:]), dtype=torch.float64, device=x.device)
        for part in chunks(self.num_masks, max(1, task.chunk_size // task.batch)):
            masks = draws.masks(part).to(x.device)  # (m, h, w)
            perturb_masks = masks.to(dtype=x.dtype)
            count = perturb_masks.shape[0]
            probs = perturbed_targets(task, lambda sub: x[:, None] * perturb_masks[sub, None], count, softmax=True)  # (B, m, T)
            total += torch.einsum("bmt,mhw->bthw", probs.double(), masks.double())
        return (total / (self.num_masks * self.keep_prob)).float()


register("rise", RISE())
