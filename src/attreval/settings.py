"""The three evaluation settings of PAPER.md §1: GridPG, DiFull, DiPart.

Each setting answers two questions for a batch of grids ``(B, C, n·H, n·W)`` and a layer:

* :meth:`Setting.activations`: the activations at that layer, grid-shaped ``(B, C', n·h, n·w)``;
* :meth:`Setting.tail`: the function from those activations to the logits of some heads,
  ``(N, C', n·h, n·w) → (N, len(heads), K)`` — the network that a method at that layer explains.

GridPG has one head (index 0) pooled over the whole grid. DiFull and DiPart have one head per cell.
DiFull also answers what its separate cells make cheap: :meth:`Setting.row_tail` (each row through its
own head's block only) and :meth:`Setting.head_regions` (the block each head can see).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from attreval.grid import GridSpec, fold_cells, row_blocks, select_cells, unfold_cells
from attreval.models.staged import StagedModel, split_model
from attreval.registry import Registry

Forward = Callable[[Tensor], Tensor]
RowForward = Callable[[Tensor, Tensor], Tensor]
SETTINGS: Registry[type["Setting"]] = Registry("setting")


class Setting(ABC):
    """A way of running a staged model on an ``n × n`` grid.

    Args:
        model: a torchvision/timm-style CNN or a :class:`StagedModel`.
        n: grid size (cells per side).
    """

    name: str = ""
    display: str = ""

    def __init__(self, model: nn.Module | StagedModel, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"expected a positive integer grid size n, got {n!r}")
        self.staged = split_model(model)
        self.n = n

    @property
    def num_heads(self) -> int:
        return self.n * self.n

    def default_heads(self) -> tuple[int, ...]:
        """Heads evaluated when none are named (DiFull/DiPart: the corners, PAPER.md §1.3)."""
        return (0,) if self.n == 1 else (0, self.num_heads - 1)

    @abstractmethod
    def activations(self, x: Tensor, layer: str) -> Tensor:
        """Activations at ``layer`` for grids ``x (B, C, n·H, n·W)``: ``(B, C', n·h, n·w)``, no autograd graph."""

    @abstractmethod
    def tail(self, layer: str, heads: Sequence[int]) -> Forward:
        """The function ``(N, C', n·h, n·w) → (N, len(heads), K)`` from the activations at ``layer``."""

    def row_tail(self, layer: str, heads: Sequence[int]) -> RowForward | None:
        """Like :meth:`tail`, but row r computes only head ``heads[index[r]]``: ``(x (N, …), index (N,)) → (N, K)``.

        Given only where that is cheaper than one shared forward for all heads: when the heads see
        disjoint blocks (DiFull), so a row that explains head h runs the network on block h alone.
        ``None`` here (GridPG has one head; DiPart's heads share the whole backbone, so gradient methods
        run one forward for all heads and one backward per head instead).
        """
        return None

    def head_regions(self, size: tuple[int, int], heads: Sequence[int]) -> Tensor | None:
        """``(len(heads), h, w)`` bool: the positions of a layer's ``h × w`` (grid-shaped) map that each head
        can depend on, or ``None`` when every head may depend on every position (GridPG, DiPart).

        Perturbation methods skip perturbations outside a head's region: their effect on it is exactly 0.
        """
        return None

    def check_heads(self, heads: Sequence[int]) -> tuple[int, ...]:
        heads = tuple(int(h) for h in heads)
        if not heads or any(h < 0 or h >= self.num_heads for h in heads):
            raise ValueError(f"expected head indices in [0, {self.num_heads - 1}], got {list(heads)}")
        return heads

    def logits(self, x: Tensor, heads: Sequence[int] | None = None) -> Tensor:
        """Logits of the full model on grids: ``(B, len(heads), K)``."""
        heads = self.default_heads() if heads is None else heads
        with torch.no_grad():
            return self.tail("input", heads)(x)


@SETTINGS.register("gridpg")
class GridPG(Setting):
    """Grid Pointing Game: the whole grid through the model, one globally pooled output (§1.2)."""

    name, display = "gridpg", "GridPG"

    @property
    def num_heads(self) -> int:
        return 1

    def default_heads(self) -> tuple[int, ...]:
        return (0,)

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def tail(self, layer: str, heads: Sequence[int] = (0,)) -> Forward:
        heads, start, staged = self.check_heads(heads), self.staged.index(layer), self.staged

        def forward(a: Tensor) -> Tensor:
            out = staged.grid_head(staged.run(a, start))
            return out[:, None, :].expand(-1, len(heads), -1)

        return forward


@SETTINGS.register("difull")
class DiFull(Setting):
    """Disconnected, full: every cell through the backbone on its own, one head per cell (§1.3).

    Cells are folded into the batch, so all cells share one backbone pass. At a hidden layer the
    per-cell activations are stitched into a grid; head i runs the rest of the network on block i only,
    so nothing outside cell i can reach head i.
    """

    name, display = "difull", "DiFull"

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            cells = self.staged.run(fold_cells(x, self.n), 0, self.staged.index(layer))
        return unfold_cells(cells, self.n)

    def tail(self, layer: str, heads: Sequence[int]) -> Forward:
        heads, start, staged, n = self.check_heads(heads), self.staged.index(layer), self.staged, self.n

        def forward(a: Tensor) -> Tensor:
            blocks = select_cells(a, n, heads)  # (N·len(heads), C', h, w)
            out = staged.cell_head(staged.run(blocks, start))
            return out.view(a.shape[0], len(heads), -1)

        return forward

    def row_tail(self, layer: str, heads: Sequence[int]) -> RowForward:
        heads, start, staged, n = self.check_heads(heads), self.staged.index(layer), self.staged, self.n

        def forward(a: Tensor, index: Tensor) -> Tensor:
            cells = torch.as_tensor(heads, device=a.device)[index]
            return staged.cell_head(staged.run(row_blocks(a, n, cells), start))

        return forward

    def head_regions(self, size: tuple[int, int], heads: Sequence[int]) -> Tensor:
        """Head i depends on block i of the stitched map only (its cell ran through the backbone alone)."""
        return GridSpec(self.n, 1, 1).cell_masks(*size)[list(self.check_heads(heads))]


@SETTINGS.register("dipart")
class DiPart(Setting):
    """Disconnected, partial: the grid through the backbone jointly, one head per cell (§1.4)."""

    name, display = "dipart", "DiPart"

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def tail(self, layer: str, heads: Sequence[int]) -> Forward:
        heads, start, staged, n = self.check_heads(heads), self.staged.index(layer), self.staged, self.n

        def forward(a: Tensor) -> Tensor:
            blocks = select_cells(staged.run(a, start), n, heads)
            return staged.cell_head(blocks).view(a.shape[0], len(heads), -1)

        return forward


def make_setting(name: str | Setting, model: nn.Module | StagedModel, n: int) -> Setting:
    """A setting by registry name (``gridpg``, ``difull``, ``dipart``) for ``model`` on ``n × n`` grids."""
    if isinstance(name, Setting):
        return name
    return SETTINGS.get(name)(model, n)
