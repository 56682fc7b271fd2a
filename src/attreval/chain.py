"""The explained network from a layer on, written down once as data (f_explain of PAPER.md §2).

A :class:`Chain` is what a setting's tail runs on the activations ``(N, C, h, w)`` of a layer:

1. ``stem``: modules run in order on the whole map (the backbone the heads share; empty when nothing is shared);
2. each head's *view* of the stem's output (``cells``): one view shared by every head (``"shared"``: the whole
   map, or ``view(map)``), or head i's cell block ``heads[i]`` (``"blocks"``); ``"separate"`` says more: head i
   sees block ``heads[i]`` of the activations and nothing else (the stem is empty: nothing is shared);
3. ``head``: modules run in order on each view, ending in logits ``(·, K)``.

The three settings of PAPER.md §1 are three chains (``S`` the stages from the layer on)::

    GridPG   stem = S    head = (grid_head,)       cells = "shared"    the whole map
    DiFull   stem = ()   head = S + (cell_head,)   cells = "separate"  head i: block i of the activations alone
    DiPart   stem = S    head = (part_head,)       cells = "blocks"    head i: block i of the final features

Everything else a tail offers is read off the chain: its call, each row through its own head (:meth:`Chain.rows`),
what each head can depend on (:meth:`Chain.regions`: block i where the cells are separate), the modules
it runs (:attr:`Chain.modules`, for scoped hooks), and the cone engine's plan (:mod:`attreval.cone.occluder`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attreval.grid import GridSpec, row_blocks, select_cells

#: The values of :attr:`Chain.cells`.
CELLS = ("shared", "blocks", "separate")


def run_modules(modules: Sequence[Callable[[Tensor], Tensor]], x: Tensor) -> Tensor:
    """``x`` through ``modules`` in order."""
    for module in modules:
        x = module(x)
    return x


@dataclass(frozen=True, eq=False)
class Chain:
    """The network from a layer's activations to the logits of H heads (see the module docstring).

    Attributes:
        stem: run in order on the whole map ``(N, C, h, w)``.
        head: run in order on each head's view, ending in logits ``(·, K)``.
        heads: the setting's head index (a cell, or 0 for a single output) of each of the H output columns.
        n: grid size (cells per side).
        cells: ``"shared"`` (one view serves every head: GridPG), ``"blocks"`` (head i's view is cell block
            ``heads[i]`` of the stem's output: DiPart) or ``"separate"`` (the same with an empty stem, declared:
            head i depends on block ``heads[i]`` of the activations alone, DiFull).
        view: the shared view ``(N, C, h, w) → (N, C', h', w')`` of the stem's output (default: the whole map).
        label: names the chain in error messages (``"DiPart on torchvision ResNet"``).
        names: the names of the first stem-then-head modules (a staged model's stage names), for messages such as
            where an occluder's cone stops (:mod:`attreval.cone.report`); unnamed modules are left out.

    >>> chain = Chain(stem=(), head=(nn.Flatten(), nn.Linear(4, 3)), heads=(0, 3), n=2, cells="separate")
    >>> chain(torch.zeros(5, 1, 4, 4)).shape, chain.separate_cells, chain.regions((4, 4))[1].int().tolist()
    (torch.Size([5, 2, 3]), True, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    """

    stem: tuple[nn.Module, ...]
    head: tuple[nn.Module, ...]
    heads: tuple[int, ...]
    n: int
    cells: str = "shared"
    view: Callable[[Tensor], Tensor] | None = None
    label: str = "this chain"
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem", tuple(self.stem))
        object.__setattr__(self, "head", tuple(self.head))
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        if self.cells not in CELLS:
            raise ValueError(f"expected cells to be one of {', '.join(CELLS)} for {self.label}, got {self.cells!r}")
        if self.blocks and self.view is not None:
            raise ValueError(f"expected either cell blocks or a shared view for {self.label}, got both")
        if self.separate_cells and self.stem:
            raise ValueError(f"expected no shared stem before separate cells for {self.label}, got {len(self.stem)} modules")
        if not self.head and (self.blocks or self.view is not None):
            raise ValueError(f"expected head modules after the views of {self.label}, got none")

    def named(self, modules: Iterable[nn.Module]) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of those of ``modules`` that :attr:`names` names, in order."""
        lookup = {id(m): name for m, name in zip((*self.stem, *self.head), self.names)}
        return [(lookup[id(m)], m) for m in modules if id(m) in lookup]

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """Every ``nn.Module`` the chain runs, in order (for hooks scoped to it)."""
        return tuple(m for m in self.stem + self.head if isinstance(m, nn.Module))

    @property
    def blocks(self) -> bool:
        """Whether head i's view is cell block ``heads[i]`` (``cells`` is ``"blocks"`` or ``"separate"``)."""
        return self.cells != "shared"

    @property
    def separate_cells(self) -> bool:
        """Whether head i depends on cell block ``heads[i]`` of the activations alone (DiFull): :meth:`rows` runs
        one block per row and anything outside it is provably irrelevant (:meth:`regions`)."""
        return self.cells == "separate"

    @property
    def reads_whole_map(self) -> bool:
        """Whether the heads share one view, the whole map (GridPG): the head is then part of one chain of modules."""
        return not self.blocks and self.view is None

    def __call__(self, a: Tensor) -> Tensor:
        """``(N, C, h, w) → (N, H, K)``."""
        return self.read(run_modules(self.stem, a))

    def read(self, features: Tensor) -> Tensor:
        """The heads on the stem's output ``(N, C', h', w')``: logits ``(N, H, K)``."""
        if self.blocks:
            self.check_blocks(features)
            out = run_modules(self.head, select_cells(features, self.n, self.heads))  # (N·H, K)
            return out.view(features.shape[0], len(self.heads), -1)
        out = run_modules(self.head, features if self.view is None else self.view(features))
        return self.broadcast(out)

    def broadcast(self, out: Tensor) -> Tensor:
        """One shared output ``(N, K)`` as every head's: ``(N, H, K)`` (a view, no copy)."""
        return out[:, None, :].expand(-1, len(self.heads), -1)

    def check_blocks(self, features: Tensor) -> None:
        """A one-line error when the stem's output ``(N, C', h', w')`` does not split into n × n cell blocks."""
        h, w = features.shape[-2:]
        if self.blocks and (h % self.n or w % self.n):
            raise ValueError(
                f"expected the shared network's output to split into {self.n}×{self.n} cell blocks for {self.label}, got "
                f"{h}×{w} (its borders do not scale with the grid; use DiFull)"
            )

    def rows(self, a: Tensor, index: Tensor) -> Tensor:
        """Logits ``(N, K)`` of head ``index[r]`` (a position in :attr:`heads`) for row r of ``a``: one block per row
        where the cells are separate, else the full call's column."""
        index = index.to(a.device)
        if not self.separate_cells:
            out = self(a)
            return out[torch.arange(out.shape[0], device=out.device), index]
        cells = torch.as_tensor(self.heads, device=a.device)[index]
        return run_modules(self.head, row_blocks(a, self.n, cells))

    def regions(self, size: tuple[int, int]) -> Tensor | None:
        """``(H, h, w)`` bool: what each head can depend on in an ``h × w`` map (its cell block when the cells are
        separate), or ``None`` (everything)."""
        if not self.separate_cells:
            return None
        return GridSpec(self.n, 1, 1).cell_masks(*size)[list(self.heads)]
