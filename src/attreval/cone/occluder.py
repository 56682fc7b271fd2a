"""A setting tail's occluder on the cone engine: the logits of every example with each window zeroed, from
one clean forward per input (per head's block in DiFull) and each window's receptive-field cone."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from attreval.cone import ConePlan
from attreval.grid import select_cells
from attreval.settings import CellTail, GridTail, PartTail, SettingTail
from attreval.tail import Occluder


class ConeOccluder(Occluder):
    """A setting tail's :class:`~attreval.tail.Occluder` that recomputes only each window's cone.

    GridPG and DiPart run one :class:`~attreval.cone.ConePlan` over the grid (GridPG's plan goes on into the
    grid head, whose sliding convolutions have rules too); DiFull one plan per head, over that head's block
    of the map (windows in block coordinates, clipped to the block), into the cell head. Same logits as the
    base class's materialised copies, to float rounding.
    """

    def __init__(self, tail: SettingTail, a: Tensor):
        super().__init__(tail, a)
        self.setting_tail = tail  # the base class keeps it as a plain Tail
        stages = [module for _, module in tail.staged.stages[tail.start :]]
        self.per_cell = isinstance(tail, CellTail)
        if isinstance(tail, GridTail):
            stages.append(tail.head)
        elif self.per_cell:
            stages.append(tail.staged.cell_head)
        self.plan = ConePlan(stages)
        self.caches: dict[int, tuple[Tensor, object]] = {}  # per DiFull head position (or -1): clean input, cache

    def _clean(self, key: int) -> tuple[Tensor, object]:
        if key not in self.caches:
            x = self.x if key < 0 else select_cells(self.x, self.setting_tail.n, (self.setting_tail.heads[key],))
            self.caches[key] = (x, self.plan.prepare(x))
        return self.caches[key]

    def __call__(self, boxes: Tensor, index: Tensor | None = None) -> Tensor:
        tail, b, p = self.setting_tail, self.x.shape[0], boxes.shape[0]
        boxes = boxes.to(device=self.x.device, dtype=torch.long)
        if self.per_cell:
            return self._cells(boxes, index)
        x, cache = self._clean(-1)
        out = self.plan.occluded(cache, x, boxes)  # GridPG: (B·P, K) logits; DiPart: (B·P, C, h, w) features
        logits = (
            out.view(b, p, 1, -1).expand(-1, -1, len(tail.heads), -1)
            if isinstance(tail, GridTail)
            else cast(PartTail, tail).from_features(out).unflatten(0, (b, p))
        )
        if index is None:
            return logits
        index = index.to(logits.device)
        return logits[:, torch.arange(p, device=logits.device), index]

    def _cells(self, boxes: Tensor, index: Tensor | None) -> Tensor:
        """DiFull: window p through head ``index[p]``'s block alone (every head when ``index`` is None)."""
        tail, b, p = self.setting_tail, self.x.shape[0], boxes.shape[0]
        h, w = self.x.shape[-2] // tail.n, self.x.shape[-1] // tail.n
        wanted = range(len(tail.heads)) if index is None else [int(u) for u in torch.unique(index)]
        results = {}
        for u in wanted:
            cell = tail.heads[u]
            origin = torch.tensor([(cell // tail.n) * h] * 2 + [(cell % tail.n) * w] * 2, device=boxes.device)
            limit = torch.tensor([h, h, w, w], device=boxes.device)
            pick = torch.arange(p, device=boxes.device) if index is None else (index.to(boxes.device) == u).nonzero()[:, 0]
            local = (boxes[pick] - origin).clamp(min=0).minimum(limit)  # clipped to the block; may be empty
            x, cache = self._clean(u)
            results[u] = (pick, self.plan.occluded(cache, x, local).unflatten(0, (b, -1)))  # (B, q, K)
        if index is None:
            return torch.stack([results[u][1] for u in range(len(tail.heads))], dim=2)
        first = next(iter(results.values()))[1]
        out = first.new_empty(b, p, first.shape[-1])
        for pick, logits in results.values():
            out[:, pick] = logits
        return out
