"""The three evaluation settings of PAPER.md §1: GridPG, DiFull, DiPart.

A setting runs a staged model on ``n × n`` grids ``(B, C, n·H, n·W)`` and answers, for a layer:

* :meth:`Setting.activations`: the activations there, grid-shaped ``(B, C', n·h, n·w)``;
* :meth:`Setting.tail`: the network from those activations to some heads, a :class:`~attreval.tail.Tail` of a
  :class:`~attreval.chain.Chain` (the network as data: modules on the whole map, each head's view, head modules).

It also owns its protocol facts, so that run, bench, report and AggAtt never spell a setting's name:
which grids it is evaluated on (:attr:`Setting.grids`: distinct classes, or the bottom-right cell repeating
the top-left class), which cells are scored (:meth:`Setting.evaluated_cells`) and which head explains each
(:meth:`Setting.heads_for`). A fourth setting is one class (its activations and its
:class:`~attreval.chain.Chain`) plus one registry line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attreval.chain import Chain
from attreval.grid import GridSpec, fold_cells, unfold_cells
from attreval.models.splitters import split_model
from attreval.models.staged import StagedModel
from attreval.registry import Registry
from attreval.tail import Tail
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
    def chain(self, layer: str, heads: tuple[int, ...]) -> Chain:
        """The network from the activations at ``layer`` to the (checked) ``heads``, as data."""

    def tail(self, layer: str, heads: Sequence[int] | None = None) -> Tail:
        """The network ``(N, C', n·h, n·w) → (N, len(heads), K)`` from the activations at ``layer`` (default: the
        default heads), a tail of :meth:`chain` that can also run from the image."""
        checked = self.default_heads() if heads is None else self.check_heads(heads)
        return Tail(self.chain(layer, checked), whole=lambda: self.tail("input", checked))

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

    def stages_from(self, layer: str) -> tuple[nn.Module, ...]:
        """The stages the network runs from ``layer`` on."""
        return tuple(module for _, module in self.staged.stages[self.staged.index(layer) :])

    def stage_names_from(self, layer: str) -> tuple[str, ...]:
        """Their names (a chain's ``names``: where a cone stops, in the run's messages)."""
        return tuple(name for name, _ in self.staged.stages[self.staged.index(layer) :])


# --------------------------------------------------------------------------------------------------


@SETTINGS.register("gridpg")
class GridPG(Setting):
    """Grid Pointing Game: the whole grid through the model, one globally pooled output (§1.2)."""

    name, display, grids, pooled = "gridpg", "GridPG", "gridpg", True

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def chain(self, layer: str, heads: tuple[int, ...]) -> Chain:
        return Chain(self.stages_from(layer), (self.staged.grid_head_or_error(),), heads, self.n, names=self.stage_names_from(layer))


@SETTINGS.register("difull")
class DiFull(Setting):
    """Disconnected, full: every cell through the backbone on its own, one head per cell (§1.3).

    Cells are folded into the batch, so all cells share one backbone pass. At a hidden layer the per-cell
    activations are stitched into a grid, and head i runs the rest of the network on block i alone: nothing
    outside cell i can reach head i.
    """

    name, display, separate_cells = "difull", "DiFull", True

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            cells = self.staged.run(fold_cells(x, self.n), 0, self.staged.index(layer))
        return unfold_cells(cells, self.n)

    def chain(self, layer: str, heads: tuple[int, ...]) -> Chain:
        return Chain(
            (), (*self.stages_from(layer), self.staged.cell_head), heads, self.n, cells="separate", names=self.stage_names_from(layer)
        )


@SETTINGS.register("dipart")
class DiPart(Setting):
    """Disconnected, partial: the grid through the backbone jointly, then head i on block i of the final features
    (§1.4): the staged model's ``part_head`` (a class-token transformer's reads the mean of the cell's patch tokens,
    since its class token depends on the whole grid; any other model's is its ``cell_head``)."""

    name, display = "dipart", "DiPart"

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def chain(self, layer: str, heads: tuple[int, ...]) -> Chain:
        staged, label = self.staged, f"DiPart on {self.staged.architecture}"
        head = staged.cell_head if staged.part_head is None else staged.part_head
        return Chain(self.stages_from(layer), (head,), heads, self.n, cells="blocks", label=label, names=self.stage_names_from(layer))


def make_setting(name: str | Setting, model: nn.Module | StagedModel, n: int) -> Setting:
    """A setting by registry name (``gridpg``, ``difull``, ``dipart``) for ``model`` on ``n × n`` grids."""
    if isinstance(name, Setting):
        return name
    return SETTINGS.get(name)(model, n)
