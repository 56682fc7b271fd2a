"""Grid geometry: an n×n grid of equally sized cells, numbered row-major from the top-left.

PAPER.md §1.1: cell i spans rows ``(i // n) * cell_h …`` and columns ``(i % n) * cell_w …``.
The helpers here fold grids into batches of cells and back; the same geometry applies to any map
resolution whose sides are divisible by n (activations at hidden layers, attribution maps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attreval.validation import positive_int


@dataclass(frozen=True)
class GridSpec:
    """An ``n × n`` grid of ``cell_h × cell_w`` cells.

    >>> g = GridSpec(2, 32, 32); (g.height, g.width, g.num_cells, g.corners)
    (64, 64, 4, (0, 3))
    """

    n: int
    cell_h: int
    cell_w: int

    def __post_init__(self) -> None:
        for name in ("n", "cell_h", "cell_w"):
            positive_int(f"GridSpec.{name}", getattr(self, name))

    @property
    def height(self) -> int:
        return self.n * self.cell_h

    @property
    def width(self) -> int:
        return self.n * self.cell_w

    @property
    def num_cells(self) -> int:
        return self.n * self.n

    @property
    def corners(self) -> tuple[int, ...]:
        """Top-left and bottom-right cells: the heads DiFull/DiPart evaluate by default (§1.3)."""
        return (0,) if self.n == 1 else (0, self.num_cells - 1)

    def cell_box(self, cell: int, height: int | None = None, width: int | None = None) -> tuple[slice, slice]:
        """Row and column slices of ``cell`` in a map of ``height × width`` (default: the grid image)."""
        height = self.height if height is None else height
        width = self.width if width is None else width
        h, w = check_divisible(self.n, height, width)
        row, col = divmod(cell, self.n)
        return slice(row * h, (row + 1) * h), slice(col * w, (col + 1) * w)

    def cell_masks(self, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
        """Boolean masks of every cell on a ``height × width`` map: ``(n², height, width)``."""
        h, w = check_divisible(self.n, height, width)
        rows = torch.arange(height, device=device) // h
        cols = torch.arange(width, device=device) // w
        index = rows[:, None] * self.n + cols[None, :]
        return index[None] == torch.arange(self.num_cells, device=device)[:, None, None]


def check_divisible(n: int, height: int, width: int) -> tuple[int, int]:
    """Cell size of an ``n × n`` split of a ``height × width`` map, or a clear error."""
    if height % n or width % n:
        raise ValueError(f"expected map sides divisible by the grid size {n}, got {height}×{width}")
    return height // n, width // n


def fold_cells(x: Tensor, n: int) -> Tensor:
    """Cut a batch of grids into its cells: ``(B, C, n·h, n·w) → (B·n², C, h, w)``, row-major per grid.

    >>> x = torch.arange(16.).view(1, 1, 4, 4); fold_cells(x, 2)[1, 0]
    tensor([[2., 3.],
            [6., 7.]])
    """
    b, c, height, width = x.shape
    h, w = check_divisible(n, height, width)
    cells = x.reshape(b, c, n, h, n, w).permute(0, 2, 4, 1, 3, 5)
    return cells.reshape(b * n * n, c, h, w)


def unfold_cells(cells: Tensor, n: int) -> Tensor:
    """Stitch cells back into grids: ``(B·n², C, h, w) → (B, C, n·h, n·w)``; inverse of :func:`fold_cells`."""
    bn, c, h, w = cells.shape
    if bn % (n * n):
        raise ValueError(f"expected a batch of cells divisible by n²={n * n}, got {bn}")
    grids = cells.reshape(bn // (n * n), n, n, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return grids.reshape(bn // (n * n), c, n * h, n * w)


def select_cells(x: Tensor, n: int, cells: tuple[int, ...]) -> Tensor:
    """Blocks ``cells`` of each grid: ``(B, C, n·h, n·w) → (B·len(cells), C, h, w)``, grid-major."""
    b, c, height, width = x.shape
    h, w = check_divisible(n, height, width)
    blocks = x.reshape(b, c, n, h, n, w).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, h, w)
    index = torch.as_tensor(cells, device=x.device)
    return blocks.index_select(1, index).reshape(b * len(cells), c, h, w)


def row_blocks(x: Tensor, n: int, cells: Tensor) -> Tensor:
    """Block ``cells[r]`` of grid r: ``(N, C, n·h, n·w)``, ``cells (N,)`` → ``(N, C, h, w)``.

    >>> x = torch.arange(16.).view(1, 1, 4, 4); row_blocks(x, 2, torch.tensor([3]))[0, 0]
    tensor([[10., 11.],
            [14., 15.]])
    """
    b, c, height, width = x.shape
    h, w = check_divisible(n, height, width)
    cells = cells.to(x.device)
    # advanced indices on the grid row and column axes only: copies the N selected blocks, not all n² of them
    return x.reshape(b, c, n, h, n, w)[torch.arange(b, device=x.device), :, cells // n, :, cells % n]
