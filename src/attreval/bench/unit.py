"""One bench unit: a method × layer × setting timed on a batch of grids, its passes counted, against its
pass-count limit (:mod:`attreval.bench.limit`) and, optionally, the authors' pattern
(:mod:`attreval.bench.reference`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attreval.api import cells_task
from attreval.bench.limit import pass_limit
from attreval.bench.reference import reference_maps
from attreval.bench.timing import BUDGET, pass_rates, timed
from attreval.cone import report as cone_report
from attreval.methods import resolve_method
from attreval.metric import localization_score
from attreval.runs.counting import PassCounter
from attreval.settings import make_setting


def scores_of(maps: Tensor, n: int, heads: tuple[int, ...], size: tuple[int, int]) -> Tensor:
    cells = torch.tensor(heads).expand(maps.shape[0], -1)
    return localization_score(maps, n, cells, size)


def bench_unit(
    model: nn.Module,
    setting_name: str,
    layer: str,
    name: str,
    images: Tensor,
    labels: Tensor,
    n: int,
    chunk_size: int,
    options: dict,
    reference: bool,
    rates: dict | None = None,
    warm_ups: int = 1,
) -> dict[str, Any]:
    """Measure one (setting, layer, method) on ``images (G, C, nH, nW)`` with cell labels ``(G, n²)``.

    ``rates`` caches the plain per-row pass times (:func:`pass_rates`) per (setting, layer) across methods.
    ``warm_ups`` untimed calls come first (the first unit of a process pays for thread-pool and allocator
    start-up: measured 1.4× its later time on the CPU, so the bench gives it 3)."""
    rates = {} if rates is None else rates
    device, grids = images.device, images.shape[0]
    setting = make_setting(setting_name, model, n)
    heads = setting.evaluated_cells()
    task_heads, classes = setting.heads_for(heads), labels[:, list(heads)]  # for the reference pattern's per-head tasks
    method = resolve_method(name, **options)
    task = cells_task(setting, images, labels, layer, heads, chunk_size)
    for _ in range(warm_ups):  # also fills caches such as RISE masks
        method(task)
    counter = PassCounter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with cone_report.recording() as notes:  # where Occlusion's receptive-field cone stops, if it does
        seconds, maps = timed(lambda: method(counter.instrument(task)), device)
    if seconds < BUDGET:  # short units: the best of a few runs (counted once)
        seconds = min(seconds, timed(lambda: method(task), device, budget=BUDGET)[0])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    key = (setting_name, layer, counter.image_rows > 0)
    if key not in rates:
        rates[key] = pass_rates(task, chunk_size, image=counter.image_rows > 0)
    limit = pass_limit(counter, rates[key])
    row = {
        "setting": setting_name,
        "layer": layer,
        "method": name,
        "seconds_per_grid": seconds / grids,
        **counter.per_grid(grids),
        "limit_seconds_per_grid": limit / grids,
        "limit_ratio": seconds / limit if limit else None,
        "overhead_seconds_per_grid": (seconds - limit) / grids,  # time beyond the passes: map arithmetic, calls
        "peak_memory_mb": peak,
        "cone": cone_report.summary(notes),
    }
    if reference:
        counters: list[PassCounter] = []

        def run_reference() -> Tensor:
            counters.append(PassCounter())
            return reference_maps(method, name, setting, images, classes, layer, task_heads, counters[-1])

        ref_seconds, ref_maps = timed(run_reference, device, budget=BUDGET)
        size = (images.shape[-2], images.shape[-1])
        diff = (scores_of(ref_maps, n, heads, size) - scores_of(maps, n, heads, size)).abs().max().item()
        # the reference's tasks explain one head: on DiFull that is one block, charged at one head's rates
        one_head = {**rates[key], "forward": rates[key]["head"]} if "head" in rates[key] else rates[key]
        ref_limit = pass_limit(counters[-1], one_head)
        row.update(
            reference_seconds_per_grid=ref_seconds / grids,
            speedup=ref_seconds / seconds,
            max_score_diff=diff,
            reference_forward_passes=counters[-1].forward_rows / grids,
            reference_backward_passes=counters[-1].backward_rows / grids,
            pass_speedup=ref_limit / limit if limit else None,  # the part of the speed-up that fewer passes explain
        )
    return row


def random_grids(model: nn.Module, n: int, cell: int, grids: int, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Random normalised grids and distinct random cell labels (timing needs no real images)."""
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(grids, first_conv.in_channels, n * cell, n * cell, generator=g)
    with torch.no_grad():
        classes = model(images[:1, :, :cell, :cell].to(device)).shape[-1]
    labels = torch.stack([torch.randperm(classes, generator=g)[: n * n] for _ in range(grids)])
    return images.to(device), labels.to(device)
