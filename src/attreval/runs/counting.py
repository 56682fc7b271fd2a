"""Counting the passes a method makes: the cost model of PAPER.md §7 measured, not assumed.

A :class:`PassCounter` wraps a task's tail (:class:`CountedTail`). Every call adds its batch rows to
``forward_rows``; when the input requires grad, a hook on it adds the rows to ``backward_rows`` each
time a backward pass reaches it (gradient methods on GridPG/DiPart run one forward and one backward per
target). Divided by the number of grids this gives forward and backward passes per grid image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from attreval.methods.base import Task
from attreval.tail import DelegatingTail, Occluder, Occluding, Tail


@dataclass
class PassCounter:
    """Rows pushed through the network: ``forward_rows`` (all) and ``backward_rows`` (backward passes
    that reached the wrapped forward's input, one per row and target)."""

    forward_rows: int = 0
    backward_rows: int = 0
    calls: int = 0
    image_rows: int = 0  # rows of the whole network from the image (Score-CAM), also in forward_rows
    head_rows: int = 0  # rows through one head only (the rows of a tail with separate cells: DiFull), also in forward_rows
    graph_rows: int = 0  # rows whose forward recorded an autograd graph (gradient methods), also in forward_rows
    head_graph_rows: int = 0  # those of them that went through the rows of a tail with separate cells
    method_seconds: float = 0.0  # wall time of the method computing its maps (set by the run around each batch)

    def count(self, x: Tensor, whole_network: bool = False, one_head: bool = False) -> None:
        """Count one call on ``x``; a hook on ``x`` counts the backward passes that reach it."""
        self.count_rows(x.shape[0], whole_network, one_head)
        if torch.is_grad_enabled() and x.requires_grad:
            self.graph_rows += x.shape[0]
            self.head_graph_rows += x.shape[0] if one_head else 0
            x.register_hook(lambda grad: self._count_backward(grad.shape[0]))

    def count_rows(self, rows: int, whole_network: bool = False, one_head: bool = False) -> None:
        """Count one forward call of ``rows`` rows (no autograd graph)."""
        self.calls += 1
        self.forward_rows += rows
        self.image_rows += rows if whole_network else 0
        self.head_rows += rows if one_head else 0

    def _count_backward(self, rows: int) -> None:
        self.backward_rows += rows

    def wrap(self, tail: Tail) -> Tail:
        """``tail``, counting its passes here."""
        return CountedTail(tail, self)

    def instrument(self, task: Task) -> Task:
        """A copy of ``task`` whose tail counts its passes."""
        return dataclasses.replace(task, tail=self.wrap(task.tail))

    def add(self, other: PassCounter) -> None:
        """Add the counts of ``other`` to these."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def per_grid(self, grids: int) -> dict[str, float]:
        return {
            "forward_passes": self.forward_rows / grids,
            "backward_passes": self.backward_rows / grids,
            "image_passes": self.image_rows / grids,
            "head_passes": self.head_rows / grids,
        }


class CountedTail(DelegatingTail):
    """A tail that counts every pass through ``inner`` in ``counter`` and otherwise behaves like it."""

    def __init__(self, inner: Tail, counter: PassCounter, whole_network: bool = False):
        super().__init__(inner)
        self.counter, self.whole_network = counter, whole_network

    def __call__(self, x: Tensor) -> Tensor:
        self.counter.count(x, whole_network=self.whole_network)
        return self.inner(x)

    def rows(self, x: Tensor, index: Tensor) -> Tensor:
        self.counter.count(x, whole_network=self.whole_network, one_head=self.inner.separate_cells)
        return self.inner.rows(x, index)

    def whole(self) -> Tail:
        return CountedTail(self.inner.whole(), self.counter, whole_network=True)

    def occluder(self, x: Tensor) -> Occluding:
        return CountedOccluder(self.inner.occluder(x), self)


class CountedOccluder(Occluder):
    """``inner`` (the wrapped tail's occluder, incremental or not) counting one forward row per example and
    window: the passes the occluded copies stand for, however cheaply each is computed."""

    def __init__(self, inner: Occluding, tail: CountedTail):
        super().__init__(tail, inner.x)
        self.inner, self.counted = inner, tail

    def __call__(self, boxes: Tensor, index: Tensor | None = None) -> Tensor:
        one_head = index is not None and self.counted.inner.separate_cells
        self.counted.counter.count_rows(self.x.shape[0] * boxes.shape[0], self.counted.whole_network, one_head)
        return self.inner(boxes, index)


def overhead_summary(costs: pd.DataFrame) -> str | None:
    """The run's own time (scoring, smoothing, writing maps) next to the methods' over all units of ``costs``
    (``costs.parquet``), e.g. ``"132.5 s in methods, 2.4 s (1.8 %) scoring and writing"``; None without the column."""
    if "overhead_seconds" not in costs or not costs["overhead_seconds"].notna().any():
        return None
    own, method = float(costs["overhead_seconds"].sum()), float(costs["seconds"].sum())
    return f"{method:.1f} s in methods, {own:.1f} s ({100 * own / max(own + method, 1e-9):.1f} %) scoring and writing"
