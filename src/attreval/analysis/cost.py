"""Counting the passes a method makes: the cost model of PAPER.md §7 measured, not assumed.

A :class:`PassCounter` wraps a task's forward functions. Every call adds its batch rows to
``forward_rows``; when the input requires grad, a hook on it adds the rows to ``backward_rows`` each
time a backward pass reaches it (gradient methods on GridPG/DiPart run one forward and one backward per
target). Divided by the number of grids this gives forward and backward passes per grid image.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from attreval.methods.base import Task


@dataclass
class PassCounter:
    """Rows pushed through the network: ``forward_rows`` (all) and ``backward_rows`` (backward passes
    that reached the wrapped forward's input, one per row and target)."""

    forward_rows: int = 0
    backward_rows: int = 0
    calls: int = 0
    image_rows: int = 0  # rows of the whole network from the image (Score-CAM), also in forward_rows
    head_rows: int = 0  # rows through one head's network only (task.row_forward; DiFull: one block), also in forward_rows
    graph_rows: int = 0  # rows whose forward recorded an autograd graph (gradient methods), also in forward_rows
    head_graph_rows: int = 0  # those of them that went through task.row_forward

    def wrap(self, forward: Callable[[Tensor], Tensor], whole_network: bool = False, one_head: bool = False) -> Callable[[Tensor], Tensor]:
        def counted(x: Tensor) -> Tensor:
            self.calls += 1
            self.forward_rows += x.shape[0]
            self.image_rows += x.shape[0] if whole_network else 0
            self.head_rows += x.shape[0] if one_head else 0
            if torch.is_grad_enabled() and x.requires_grad:
                self.graph_rows += x.shape[0]
                self.head_graph_rows += x.shape[0] if one_head else 0
                x.register_hook(lambda grad: self._count_backward(grad.shape[0]))
            return forward(x)

        return counted

    def _count_backward(self, rows: int) -> None:
        self.backward_rows += rows

    def instrument(self, task: Task) -> Task:
        """A copy of ``task`` whose forwards are counted."""
        image_forward = None if task.image_forward is None else self.wrap(task.image_forward, whole_network=True)
        row_forward = None
        if task.row_forward is not None:
            rows = task.row_forward

            def row_forward(x: Tensor, index: Tensor) -> Tensor:
                return self.wrap(lambda inputs: rows(inputs, index), one_head=True)(x)

        return dataclasses.replace(task, forward=self.wrap(task.forward), image_forward=image_forward, row_forward=row_forward)

    def add(self, other: "PassCounter") -> None:
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
