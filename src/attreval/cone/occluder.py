"""A chain's occluder on the cone engine: the logits of every example with each window zeroed, from one clean
forward per input (per head's block where the cells are separate) and each window's receptive-field cone.

It reads only the :class:`~attreval.chain.Chain` (the network as data), never a setting."""

from __future__ import annotations

import torch
from torch import Tensor

from attreval.chain import Chain
from attreval.cone import ConePlan
from attreval.grid import select_cells


class ConeOccluder:
    """The logits of ``x (B, C, h, w)`` with windows zeroed, for ``chain``, recomputing only each window's cone.

    ``occluder(boxes)``: ``boxes (P, 4)`` long ``(top, bottom, left, right)`` half-open windows →
    ``(B, P, H, K)``; ``occluder(boxes, index)``: ``index (P,)`` a head position per window → ``(B, P, K)``
    (the interface of :class:`~attreval.tail.Occluder`, whose materialised copies give the same logits to float
    rounding).

    Which plan: where the cells are separate (DiFull: nothing shared before the blocks) one
    :class:`~attreval.cone.ConePlan` per head over the chain's ``head``, on that head's block of the map (windows in
    block coordinates, clipped to the block); where every head reads the whole map (GridPG) one plan over ``stem``
    and ``head`` (the grid head's sliding convolutions have rules too); otherwise one plan over the ``stem``, and the
    heads read its patched output in full (DiPart's blocks, a custom view).
    """

    def __init__(self, chain: Chain, x: Tensor):
        self.chain, self.x = chain, x
        self.per_cell = chain.separate_cells
        if self.per_cell:
            modules = chain.head
        elif chain.reads_whole_map:
            modules = chain.stem + chain.head
        else:
            modules = chain.stem
        self.modules, self.plan = tuple(modules), ConePlan(modules)
        self.caches: dict[int, tuple[Tensor, object]] = {}  # per separate head position (or -1): clean input, cache

    @property
    def incremental(self) -> bool:
        """Whether the plan saves work (its first module has a rule; see :attr:`ConePlan.incremental`)."""
        return self.plan.incremental

    def _clean(self, key: int) -> tuple[Tensor, object]:
        if key not in self.caches:
            x = self.x if key < 0 else select_cells(self.x, self.chain.n, (self.chain.heads[key],))
            self.caches[key] = (x, self.plan.prepare(x))
        return self.caches[key]

    def __call__(self, boxes: Tensor, index: Tensor | None = None) -> Tensor:
        chain, b, p = self.chain, self.x.shape[0], boxes.shape[0]
        boxes = boxes.to(device=self.x.device, dtype=torch.long)
        if self.per_cell:
            return self._cells(boxes, index)
        x, cache = self._clean(-1)
        out = self.plan.occluded(cache, x, boxes)  # whole map: (B·P, K) logits; else (B·P, C, h, w) features
        with torch.no_grad():
            logits = (chain.broadcast(out) if chain.reads_whole_map else chain.read(out)).unflatten(0, (b, p))
        if index is None:
            return logits
        index = index.to(logits.device)
        return logits[:, torch.arange(p, device=logits.device), index]

    def _cells(self, boxes: Tensor, index: Tensor | None) -> Tensor:
        """Separate cells: window p through head ``index[p]``'s block alone (every head when ``index`` is None)."""
        chain, b, p = self.chain, self.x.shape[0], boxes.shape[0]
        h, w = self.x.shape[-2] // chain.n, self.x.shape[-1] // chain.n
        wanted = range(len(chain.heads)) if index is None else [int(u) for u in torch.unique(index)]
        results = {}
        for u in wanted:
            cell = chain.heads[u]
            origin = torch.tensor([(cell // chain.n) * h] * 2 + [(cell % chain.n) * w] * 2, device=boxes.device)
            limit = torch.tensor([h, h, w, w], device=boxes.device)
            pick = torch.arange(p, device=boxes.device) if index is None else (index.to(boxes.device) == u).nonzero()[:, 0]
            local = (boxes[pick] - origin).clamp(min=0).minimum(limit)  # clipped to the block; may be empty
            x, cache = self._clean(u)
            results[u] = (pick, self.plan.occluded(cache, x, local).unflatten(0, (b, -1)))  # (B, q, K)
        if index is None:
            return torch.stack([results[u][1] for u in range(len(chain.heads))], dim=2)
        first = next(iter(results.values()))[1]
        out = first.new_empty(b, p, first.shape[-1])
        for pick, logits in results.values():
            out[:, pick] = logits
        return out
