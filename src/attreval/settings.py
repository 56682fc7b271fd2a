"""The three evaluation settings of PAPER.md §1: GridPG, DiFull, DiPart.

A setting runs a staged model on ``n × n`` grids ``(B, C, n·H, n·W)`` and answers, for a layer:

* :meth:`Setting.activations`: the activations there, grid-shaped ``(B, C', n·h, n·w)``;
* :meth:`Setting.tail`: the network from those activations to some heads, a :class:`~attreval.tail.Tail`.

It also owns its protocol facts, so that run, bench, report and AggAtt never spell a setting's name:
which grids it is evaluated on (:attr:`Setting.grids`: distinct classes, or the bottom-right cell repeating
the top-left class), which cells are scored (:meth:`Setting.evaluated_cells`) and which head explains each
(:meth:`Setting.heads_for`). A fourth setting is one class plus one registry line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attreval.grid import GridSpec, fold_cells, row_blocks, select_cells, unfold_cells
from attreval.models.splitters import split_model
from attreval.models.staged import StagedModel
from attreval.registry import Registry
from attreval.tail import Occluder, Tail
from attreval.validation import positive_int

SETTINGS: Registry[type[Setting]] = Registry("setting")

#: Grid kinds (``[grids]`` config keys): distinct classes, or the bottom-right cell repeating the top-left class.
GRID_KINDS = {"gridpg": False, "disconnected": True}


class Setting(ABC):
    """A way of running a staged model on an ``n × n`` grid.

    Args:
        model: a torchvision/timm-style CNN, any fx-traceable module, or a :class:`StagedModel`.
        n: grid size (cells per side).

    Class attributes:
        grids: the grid kind evaluated (a key of :data:`GRID_KINDS`).
        pooled: whether there is one output pooled over the whole grid (GridPG) instead of one head per cell.
        separate_cells: whether every cell runs through the backbone alone (DiFull), so that any attribution
            outside a head's cell is provably wrong.
    """

    name: str = ""
    display: str = ""
    grids: str = "disconnected"
    pooled: bool = False
    separate_cells: bool = False

    def __init__(self, model: nn.Module | StagedModel, n: int):
        positive_int("grid size n", n)
        self.staged = split_model(model)
        self.n = n

    @property
    def num_heads(self) -> int:
        return 1 if self.pooled else self.n * self.n

    def default_heads(self) -> tuple[int, ...]:
        """Heads evaluated when none are named: GridPG's single output; DiFull/DiPart the heads of the
        evaluated cells (the corners, PAPER.md §1.3)."""
        return (0,) if self.pooled else self.heads_for(self.evaluated_cells())

    def evaluated_cells(self, all_cells: bool = False) -> tuple[int, ...]:
        """Cells scored in the protocol: GridPG every cell (§1.2), DiFull/DiPart the corners (§1.3) unless
        ``all_cells``."""
        if self.pooled or all_cells:
            return tuple(range(self.n * self.n))
        return GridSpec(self.n, 1, 1).corners

    def heads_for(self, cells: Sequence[int]) -> tuple[int, ...]:
        """The head explaining each cell's class: GridPG's single output, else the cell's own head."""
        return (0,) * len(cells) if self.pooled else tuple(int(c) for c in cells)

    @abstractmethod
    def activations(self, x: Tensor, layer: str) -> Tensor:
        """Activations at ``layer`` for grids ``x (B, C, n·H, n·W)``: ``(B, C', n·h, n·w)``, no autograd graph."""

    @abstractmethod
    def tail(self, layer: str, heads: Sequence[int]) -> Tail:
        """The network ``(N, C', n·h, n·w) → (N, len(heads), K)`` from the activations at ``layer``."""

    def target_heads(self, num_targets: int, heads: Sequence[int] | None = None) -> tuple[int, ...]:
        """The head explained by each of the T target columns.

        GridPG: head 0 for every column. DiFull/DiPart: ``heads`` if given; otherwise every head when
        T = n², the corner heads when T equals their number (PAPER.md §1.3).
        """
        if self.pooled:
            return self.heads_for(range(num_targets))
        if heads is None:
            if num_targets == self.num_heads:
                heads = tuple(range(self.num_heads))
            elif num_targets == len(self.default_heads()):
                heads = self.default_heads()
            else:
                raise ValueError(
                    f"expected {self.num_heads} (all heads) or {len(self.default_heads())} (corner heads) "
                    f"target columns for {self.display}, got {num_targets}; pass heads=[…] explicitly"
                )
        heads = self.check_heads(heads)
        if len(heads) != num_targets or len(set(heads)) != len(heads):
            raise ValueError(f"expected {num_targets} distinct heads (one per target column), got {list(heads)}")
        return heads

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


class SettingTail(Tail):
    """A tail of a setting: the stages from ``start`` on, for the setting's heads ``heads``."""

    def __init__(self, setting: Setting, start: int, heads: Sequence[int]):
        self.setting, self.start, self.heads = setting, start, setting.check_heads(heads)
        self.staged, self.n = setting.staged, setting.n
        self.modules = self.staged.modules_from(start, grid=setting.pooled)

    def whole(self) -> Tail:
        return type(self)(self.setting, 0, self.heads)

    def occluder(self, a: Tensor) -> Occluder:
        """Occluded logits from receptive-field cones over the tail's modules (:class:`~attreval.cone.occluder.ConeOccluder`), or the
        materialised copies when the first module has no cone rule (nothing to save)."""
        from attreval.cone.occluder import ConeOccluder  # the cone engine imports torchvision; only Occlusion needs it
        from attreval.cone.report import note

        cone = ConeOccluder(self, a)
        note(cone, list(self.staged.stages[self.start :]))  # for the run's `cone` column
        return cone if cone.plan.incremental else Occluder(self, a)


# --------------------------------------------------------------------------------------------------


class GridTail(SettingTail):
    """GridPG's network: the rest of the backbone on the whole grid, then the grid head (one output)."""

    def __init__(self, setting: Setting, start: int, heads: Sequence[int]):
        super().__init__(setting, start, heads)
        self.head = self.staged.grid_head_or_error()

    def __call__(self, a: Tensor) -> Tensor:
        out = self.head(self.staged.run(a, self.start))
        return out[:, None, :].expand(-1, len(self.heads), -1)


@SETTINGS.register("gridpg")
class GridPG(Setting):
    """Grid Pointing Game: the whole grid through the model, one globally pooled output (§1.2)."""

    name, display, grids, pooled = "gridpg", "GridPG", "gridpg", True

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def tail(self, layer: str, heads: Sequence[int] = (0,)) -> Tail:
        return GridTail(self, self.staged.index(layer), heads)


class CellTail(SettingTail):
    """DiFull's network: head i runs the rest of the network on block i of the stitched map only.

    ``rows`` runs each row through its own head's block alone, and ``regions`` says head i sees block i:
    nothing outside cell i can reach head i.
    """

    separable = True

    def __call__(self, a: Tensor) -> Tensor:
        blocks = select_cells(a, self.n, self.heads)  # (N·H, C', h, w)
        out = self.staged.cell_head(self.staged.run(blocks, self.start))
        return out.view(a.shape[0], len(self.heads), -1)

    def rows(self, a: Tensor, index: Tensor) -> Tensor:
        cells = torch.as_tensor(self.heads, device=a.device)[index.to(a.device)]
        return self.staged.cell_head(self.staged.run(row_blocks(a, self.n, cells), self.start))

    def regions(self, size: tuple[int, int]) -> Tensor:
        return GridSpec(self.n, 1, 1).cell_masks(*size)[list(self.heads)]


@SETTINGS.register("difull")
class DiFull(Setting):
    """Disconnected, full: every cell through the backbone on its own, one head per cell (§1.3).

    Cells are folded into the batch, so all cells share one backbone pass. At a hidden layer the
    per-cell activations are stitched into a grid (:class:`CellTail`).
    """

    name, display, separate_cells = "difull", "DiFull", True

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            cells = self.staged.run(fold_cells(x, self.n), 0, self.staged.index(layer))
        return unfold_cells(cells, self.n)

    def tail(self, layer: str, heads: Sequence[int]) -> Tail:
        return CellTail(self, self.staged.index(layer), heads)


class PartTail(SettingTail):
    """DiPart's network: the rest of the backbone on the whole grid, then head i on block i of its features.

    The head is the staged model's ``part_head`` where it has one (a class-token transformer: its class token
    depends on the whole grid, so head i reads the mean of cell i's patch tokens instead), else ``cell_head``.
    """

    def __init__(self, setting: Setting, start: int, heads: Sequence[int]):
        super().__init__(setting, start, heads)
        self.head = getattr(self.staged, "part_head", None) or self.staged.cell_head
        if self.head is not self.staged.cell_head:
            self.modules = tuple(m for m in self.modules if m is not self.staged.cell_head) + (self.head,)

    def __call__(self, a: Tensor) -> Tensor:
        return self.from_features(self.staged.run(a, self.start)).view(a.shape[0], len(self.heads), -1)

    def from_features(self, features: Tensor) -> Tensor:
        """``(N, H, K)``: each head on its block of the grid's final features ``(N, C, n·d, n·d)``."""
        if features.shape[-1] % self.n or features.shape[-2] % self.n:
            raise ValueError(
                f"expected the grid's final features to split into {self.n}×{self.n} cell blocks for DiPart, got "
                f"{features.shape[-2]}×{features.shape[-1]} from {self.staged.architecture} (its borders do not scale with the grid; use DiFull)"
            )
        blocks = select_cells(features, self.n, self.heads)
        return self.head(blocks).view(features.shape[0], len(self.heads), -1)


@SETTINGS.register("dipart")
class DiPart(Setting):
    """Disconnected, partial: the grid through the backbone jointly, one head per cell (§1.4)."""

    name, display = "dipart", "DiPart"

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def tail(self, layer: str, heads: Sequence[int]) -> Tail:
        return PartTail(self, self.staged.index(layer), heads)


def make_setting(name: str | Setting, model: nn.Module | StagedModel, n: int) -> Setting:
    """A setting by registry name (``gridpg``, ``difull``, ``dipart``) for ``model`` on ``n × n`` grids."""
    if isinstance(name, Setting):
        return name
    return SETTINGS.get(name)(model, n)
