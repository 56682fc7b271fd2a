"""The authors' pass pattern (PAPER.md Appendix A), run through attreval's own method code.

Batches of 8 grids (Occlusion and RISE: one grid), one target (GridPG) or head (DiFull/DiPart) at a time,
per-target backward, per-channel CAM forwards, IntGrad ``internal_batch_size=1`` (one step of the batch per
forward), the backbone once per head. Same method code, so the same maps as attreval's own pattern. What a
method's pattern is comes from its class attribute ``reference`` (a
:class:`~attreval.methods.base.ReferencePattern`), so no method is named here.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from attreval.api import build_task
from attreval.methods.base import Method, Task
from attreval.runs.counting import PassCounter
from attreval.tail import DelegatingTail, Occluder, Occluding

REFERENCE_BATCH = 8  # the paper script's batch size (PAPER.md Appendix A)


def reference_pattern(name: str, method: Method) -> tuple[int, int]:
    """(grids per call, inputs per forward) of the authors' pattern for ``method`` (PAPER.md Appendix A, §4).

    Batches of 8 grids, 8 inputs per forward (one CAM channel or one IntGrad step of the 8 grids: Captum's
    ``perturbations_per_eval = 1``, ``internal_batch_size = 1``); Occlusion and RISE one grid at a time, with
    8 windows per forward (the code's batch of 8 perturbed inputs) or **2** masked inputs per forward (the
    authors' RISE code); SmoothGrad all noisy copies of the 8 grids at once (Captum's NoiseTunnel default).
    ``name`` (the registry name) only labels the call; the pattern is read from the method's class.

    >>> from attreval.methods import resolve_method
    >>> reference_pattern("rise", resolve_method("rise")), reference_pattern("occlusion", resolve_method("occlusion"))
    ((1, 2), (1, 8))
    """
    pattern = method.reference
    grids = pattern.grids or REFERENCE_BATCH
    if pattern.rows is not None:
        return grids, pattern.rows
    copies = getattr(method, pattern.copies_field) if pattern.copies_field else 1
    return grids, REFERENCE_BATCH * copies


def reference_maps(
    method: Method,
    name: str,
    setting,
    images: Tensor,
    classes: Tensor,
    layer: str,
    heads: tuple[int, ...],
    counter: PassCounter | None = None,
) -> Tensor:
    """The authors' pass pattern: one target column (GridPG) or head (DiFull/DiPart) per call, per-target
    backward, and the batch sizes of :func:`reference_pattern`; every DiFull Occlusion window runs (no
    ``head_regions``). Same method code, so the same maps ``(G, T, h, w)``. ``counter`` (optional) counts
    the passes."""
    grids, per_forward = reference_pattern(name, method)

    def task(part: slice, t: int, head: int) -> Task:
        one = build_task(setting, images[part], classes[part, t : t + 1], layer, (head,), chunk_size=per_forward)
        one = dataclasses.replace(one, tail=EveryWindow(one.tail))
        return counter.instrument(one) if counter is not None else one

    batches = []
    for start in range(0, images.shape[0], grids):
        part = slice(start, start + grids)
        columns = [method(task(part, t, head)) for t, head in enumerate(heads)]
        batches.append(torch.cat(columns, dim=1))
    return torch.cat(batches)


class EveryWindow(DelegatingTail):
    """``inner`` without its ``regions`` and with plain occluded copies: the authors' DiFull Occlusion runs every
    window through the head, each as a full forward."""

    def regions(self, size: tuple[int, int]) -> Tensor | None:
        return None

    def occluder(self, x: Tensor) -> Occluding:
        return Occluder(self, x)
