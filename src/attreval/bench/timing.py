"""Timing: the best wall time of a call, and the per-row times of plain passes of a task's networks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attreval.methods.base import Task

BATCHES = (1, 4, 16, 64, 256)
BUDGET = 2.0  # seconds: units shorter than this are timed as the best of several runs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1, budget: float = 0.0) -> tuple[float, Any]:
    """Best wall time of at least ``repeat`` calls (after the caller's warm-up) and the last result.

    With ``budget`` > 0 it keeps calling (up to 5 times) while the calls so far took less than ``budget``
    seconds: the best of several runs resists the bursts of load of a shared machine.
    """
    best, out, spent, calls = float("inf"), None, 0.0, 0
    while calls < repeat or (spent < budget and calls < 5):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        took = time.perf_counter() - start
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best, out


@dataclass(frozen=True)
class PassTimes:
    """Seconds per row of one network at its best batch size: a forward without autograd, a forward that
    records the graph, and the backward of that graph to the input."""

    forward: float
    graph_forward: float
    backward: float


def per_row_times(explained: Callable[[Tensor], Tensor], inputs: Tensor, max_batch: int) -> PassTimes:
    """:class:`PassTimes` of ``explained(x (N, …)) → (N,)``: the logits a method explains (one head and
    class per row), each time the best over batch sizes 1–``max_batch``."""
    device = inputs.device
    best = [float("inf")] * 3
    for batch in [b for b in BATCHES if b <= max_batch]:
        x = inputs[:1].expand(batch, *inputs.shape[1:]).contiguous()

        def fwd() -> Tensor:
            with torch.no_grad():
                return explained(x)

        def graph() -> tuple[Tensor, Tensor]:
            leaf = x.detach().requires_grad_(True)
            return leaf, explained(leaf).sum()

        def bwd() -> float:  # a fresh graph each time; only the backward is timed
            leaf, y = graph()
            return timed(lambda: torch.autograd.grad(y, leaf), device)[0]

        fwd(), bwd()  # warm-up
        times = (timed(fwd, device, 2)[0], timed(graph, device, 2)[0], min(bwd(), bwd()))
        best = [min(b, t / batch) for b, t in zip(best, times)]
    return PassTimes(*best)


def pass_rates(task: Task, max_batch: int, image: bool) -> dict[str, PassTimes]:
    """Per-row pass times of the task's networks: all heads from the layer (``forward``), one head from
    the layer (``head``, where the tail's cells are separate) and, if ``image``, all heads from the image
    (``image``, Score-CAM's passes)."""
    head, cls = task.heads[:1], task.classes[:1, 0]
    one = lambda out: out[:, 0].gather(1, cls.expand(out.shape[0])[:, None])[:, 0]
    tail = task.tail
    rates = {"forward": per_row_times(lambda x: one(tail(x)[:, head]), task.inputs, max_batch)}
    if image:
        if task.image is None:
            raise ValueError("expected the task's grid images for the image pass rates, got image=None")
        whole = tail.whole()
        rates["image"] = per_row_times(lambda x: one(whole(x)[:, head]), task.image, max_batch)
    if tail.separate_cells:
        rows = lambda x: tail.rows(x, head.expand(x.shape[0]))[:, None]
        rates["head"] = per_row_times(lambda x: one(rows(x)), task.inputs, max_batch)
    return rates
