"""The localization score of PAPER.md §1.5 (Eq. 1), vectorised over maps and cells.

Order of operations (§1.5, from the authors' protocol): maps are channel-summed at their native
resolution, **bilinearly upsampled** to the grid image size (``align_corners=False``), **then** clipped
to their positive part, then the positive mass inside the target cell is divided by the total.

**Zero-mass rule** (PAPER.md §1.5, the authors' code): a map whose total positive mass is at most
:data:`ZERO_MASS` = 1e-7 scores 0 (``total > 1e-7 ? inside / total : 0``), so a map that is zero or
whose positive part is float noise gets no credit and no NaN. The threshold is an absolute mass on the
maps' own scale (summed over the upsampled grid image), as in the authors' code, so maps of a tiny
scale also score 0 (in the embedded default: 15 RISE maps at fashion_resnet's middle layer, where the
target's softmax under the masks is ~1e-10); ``threshold=0.0`` keeps only exact zeros out.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from attreval.grid import check_divisible

ZERO_MASS = 1e-7  # a total positive mass ≤ this scores 0 (the authors' threshold, PAPER.md §1.5)


def upsample(maps: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Bilinear upsampling of ``(B, T, h, w)`` maps to ``size`` (no-op when ``size`` is None or equal)."""
    maps = maps.float()
    if size is None or tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def cell_masses(maps: Tensor, n: int, size: tuple[int, int] | None = None) -> Tensor:
    """Positive attribution mass of every cell: ``(B, T, h, w) → (B, T, n²)`` after upsampling to ``size``."""
    _check_maps(maps)
    positive = upsample(maps, size).clamp(min=0)
    b, t, height, width = positive.shape
    h, w = check_divisible(n, height, width)
    return positive.view(b, t, n, h, n, w).sum(dim=(3, 5)).view(b, t, n * n)


def localization_parts(maps: Tensor, n: int, cells: Tensor, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Positive mass inside the target cell and in total, each ``(B, T)`` float32."""
    masses = cell_masses(maps, n, size)
    cells = _check_cells(cells, masses.shape[:2], n)
    inside = masses.gather(2, cells.to(masses.device)[..., None]).squeeze(2)
    return inside, masses.sum(dim=2)


def localization_score(maps: Tensor, n: int, cells: Tensor, size: tuple[int, int] | None = None, threshold: float = ZERO_MASS) -> Tensor:
    """Localization score L = positive mass in the target cell ÷ total positive mass (PAPER.md Eq. 1).

    Args:
        maps: attribution maps ``(B, T, h, w)``, sign kept, at any resolution divisible by ``n``.
        n: grid size (cells per side).
        cells: ``LongTensor (B, T)``, the target cell (row-major) of every map.
        size: the grid image size ``(H, W)`` to upsample to; ``None`` = maps are already at that size.
        threshold: the zero-mass rule: a map whose total positive mass is ``≤ threshold`` scores 0
            (default :data:`ZERO_MASS` = 1e-7, the authors' value).

    Returns:
        ``(B, T)`` float32 scores in [0, 1]; 0 where the total positive mass is ``≤ threshold`` (no NaN).

    >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, :2, :2] = 1.0
    >>> localization_score(m, 2, torch.tensor([[0]])).item()
    1.0
    """
    return score_from_parts(*localization_parts(maps, n, cells, size), threshold=threshold)


def score_from_parts(inside: Tensor, total: Tensor, threshold: float = ZERO_MASS) -> Tensor:
    """``inside / total`` where ``total > threshold``, else 0 (the zero-mass rule, PAPER.md §1.5), no NaN.

    ``inside``, ``total``: positive masses of the same shape (:func:`localization_parts`); ``threshold``
    ≥ 0, default :data:`ZERO_MASS` = 1e-7.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"expected a zero-mass threshold ≥ 0, got {threshold!r}")
    keep = total > threshold
    return torch.where(keep, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def native_localization_score(maps: Tensor, n: int, cells: Tensor) -> Tensor:
    """The localization score of maps at their **native** resolution, with no upsampling: the check that tells
    the upsampling leak from real leakage at hidden layers.

    At a hidden layer the metric upsamples the ``(h, w)`` map bilinearly to the grid image first (PAPER.md
    §1.5), which spreads a map that is exactly zero outside its cell across the cell border: a DiFull map of
    a 4×4 final layer that the head cannot see beyond its cell scores about 0.88, not 1. At the native
    resolution the cells are whole pixels when ``n`` divides ``h`` and ``w``, and such a map scores exactly 1;
    a native score below 1 is attribution that really lies outside the cell.

    Args:
        maps: ``(B, T, h, w)`` maps, sign kept, at their native resolution.
        n: grid size; cells: ``LongTensor (B, T)`` target cells.

    Returns:
        ``(B, T)`` float32 scores; all NaN when ``n`` does not divide ``h`` and ``w`` (cells are not whole pixels).

    >>> m = torch.zeros(1, 1, 2, 2); m[0, 0, 0, 0] = 1.0
    >>> native_localization_score(m, 2, torch.tensor([[0]])).item(), localization_score(m, 2, torch.tensor([[0]]), (8, 8)).item() < 1
    (1.0, True)
    """
    _check_maps(maps)
    if maps.shape[-2] % n or maps.shape[-1] % n:
        return torch.full(maps.shape[:2], float("nan"), dtype=torch.float32, device=maps.device)
    return localization_score(maps, n, cells, None)


def _check_maps(maps: Tensor) -> None:
    if not isinstance(maps, Tensor) or maps.dim() != 4:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"expected maps of shape (B, T, h, w), got {shape}")


def _check_cells(cells: Tensor, batch_targets: torch.Size, n: int) -> Tensor:
    cells = torch.as_tensor(cells)
    if cells.shape != batch_targets:
        raise ValueError(f"expected cells of shape {tuple(batch_targets)} (B, T), got {tuple(cells.shape)}")
    if cells.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"expected integer cells, got {cells.dtype}")
    if cells.numel() and (cells.min() < 0 or cells.max() >= n * n):
        raise ValueError(f"expected cells in [0, {n * n - 1}], got values in [{cells.min()}, {cells.max()}]")
    return cells.long()
