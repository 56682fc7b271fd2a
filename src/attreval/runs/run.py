"""The main job: the paper's protocol for every model × setting × layer × method of a config.

Data flow: dataset → confident images → grid datasets (per model) → for every unit
(model, setting, layer, method): activations → method → maps → (smoothed maps) → localization
scores → one part of the results table + the maps, written atomically.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from attreval.analysis.statistics import run_statistics
from attreval.api import cells_task
from attreval.cone import report as cone_report
from attreval.config import RunConfig
from attreval.data import GridDataset
from attreval.methods import Method
from attreval.metric import localization_parts, score_from_parts
from attreval.models.loading import load_model
from attreval.runs.counting import PassCounter, overhead_summary
from attreval.runs.distributed import Group, from_environment
from attreval.runs.lock import RunLock
from attreval.runs.mapfile import float16_keeps_scores
from attreval.runs.plan import applicable_units, check_cells, make_grids, plan_units, resolve_methods
from attreval.runs.rundir import prepare_run_dir
from attreval.runs.runtime import faithful_numerics, metadata, resolve_device
from attreval.runs.store import RunStore, Unit
from attreval.settings import SETTINGS, make_setting
from attreval.smoothing import scaled_kernel_size, smooth_sweep

log = logging.getLogger(__name__)


def evaluate_unit(
    unit: Unit,
    model: nn.Module,
    grids: GridDataset,
    config: RunConfig,
    device: torch.device,
    counter: PassCounter | None = None,
    sink: Callable[[int, np.ndarray, Callable[[], bool]], None] | None = None,
    method: Method | None = None,
) -> pd.DataFrame:
    """Result rows of one unit, computed ``batch_size`` grids at a time so memory stays flat in the number of grids.

    Every batch's maps ``(B, T, h, w)`` float32 are checked finite, scored for every smoothing variant, handed
    to ``sink(start, maps, keeps_scores)`` (e.g. :meth:`MapWriter.write`; None = not stored) and dropped: only the ``(B, T)``
    inside/total masses of each variant are kept. ``counter`` (optional) counts forward/backward passes.
    ``method``: the unit's method object (default: built from the config, :meth:`RunConfig.method`).
    """
    n, e = config.grids.n, config.evaluation
    setting = make_setting(unit.setting, model, n)
    heads = setting.evaluated_cells(all_cells=e.heads == "all")  # the cells scored; heads_for: who explains them
    method = config.method(unit.method) if method is None else method
    size, cells = (grids.images.shape[-2], grids.images.shape[-1]), torch.tensor(heads)
    parts, variants, chunk = [], [], e.chunk_size  # per batch: per variant, inside and total (B, T)
    for start in range(0, len(grids), e.batch_size):
        maps, chunk = _fitting_batch_maps(unit, method, setting, grids, slice(start, start + e.batch_size), heads, chunk, device, counter)
        variants = _variants(unit, maps.shape[-1], config)
        kernels = [kernel for kernel, _ in variants]

        def parts_of(m: torch.Tensor, kernels=kernels) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return _score_variants(m, kernels, n, cells.expand(len(m), -1), size)

        parts.append(parts_of(maps))
        if sink is not None:  # stored as float16 only where that gives back these scores (attreval.runs.mapfile)
            sink(start, maps.numpy(), partial(float16_keeps_scores, maps, parts_of, parts[-1]))
        del maps  # before the next batch's maps are computed
    return _rows(unit, setting, grids, heads, variants, _join(parts))


def _score_variants(maps: torch.Tensor, kernels: list[int], n: int, cells: torch.Tensor, size) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per smoothing kernel (0: none), ``(inside, total)`` each ``(B, T)`` of ``maps (B, T, h, w)``: the sweep smoothed
    in one batched product (a few kernels at a time, so the smoothed copies stay ≤ 2²⁵ values), each variant scored."""
    step = max(1, (1 << 25) // max(maps.numel(), 1))
    out = []
    for first in range(0, len(kernels), step):
        group = kernels[first : first + step]
        smoothed = smooth_sweep(maps, group) if any(k > 1 for k in group) else maps[None].expand(len(group), *maps.shape)
        out += [localization_parts(variant, n, cells, size) for variant in smoothed]
    return out


def _join(parts: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch, per variant ``(inside, total)`` each ``(B, T)`` → per variant ``(inside, total)`` each ``(G, T)``."""
    return [(torch.cat([b[i][0] for b in parts]), torch.cat([b[i][1] for b in parts])) for i in range(len(parts[0]))]


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA/accelerator out-of-memory error, or the CPU allocator's (a plain RuntimeError)."""
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def _fitting_batch_maps(
    unit: Unit, method, setting, grids: GridDataset, batch: slice, heads, chunk: int, device: torch.device, counter: PassCounter | None
) -> tuple[torch.Tensor, int]:
    """:func:`_batch_maps` with at most ``chunk`` inputs per forward, halving it after an out-of-memory error
    (the maps do not depend on it); returns the maps and the chunk size that fitted, kept for later batches.
    Passes of a failed attempt are not counted."""
    while True:
        attempt, t0 = PassCounter(), time.perf_counter()
        try:
            maps = _batch_maps(unit, method, setting, grids, batch, heads, chunk, device, attempt)
            attempt.method_seconds = time.perf_counter() - t0
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            if chunk == 1:
                raise ValueError(f"expected {unit.key} to fit in memory with chunk_size 1, got out of memory; lower batch_size") from None
            log.warning("%s: out of memory with chunk_size %d; retrying with %d", unit.key, chunk, chunk // 2)
            chunk //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if counter is not None:
            counter.add(attempt)
        return maps, chunk


def _batch_maps(
    unit: Unit, method, setting, grids: GridDataset, batch: slice, heads, chunk: int, device: torch.device, counter: PassCounter | None
) -> torch.Tensor:
    """The maps ``(B, T, h, w)`` float32 on the CPU of the grids ``batch``; a clear error if any is NaN/inf."""
    task = cells_task(setting, grids.images[batch].to(device), grids.labels[batch], unit.layer, heads, chunk, counter)
    maps = method(task).float()
    if not torch.isfinite(maps).all():
        raise ValueError(f"expected finite attribution maps, got NaN/inf from {unit.method} on {unit.model} (check the model's outputs)")
    return maps.cpu().contiguous()


def _variants(unit: Unit, side: int, config: RunConfig) -> list[tuple[int, int]]:
    """``(kernel, reference kernel)`` of every scored variant of maps ``side`` pixels wide; ``(0, 0)`` = unsmoothed."""
    e = config.evaluation
    variants = [(0, 0)]
    if unit.method in e.smooth_methods:  # S-IntGrad, S-IxG (PAPER.md §6.1): smooth at the native resolution
        variants += [(scaled_kernel_size(k, side, e.reference_side), k) for k in e.kernel_sizes]
    return variants


def _rows(unit: Unit, setting, grids: GridDataset, heads, variants: list[tuple[int, int]], parts) -> pd.DataFrame:
    """One table for every variant (variant-major, then grid, then target): the columns every variant shares are
    built once and tiled."""
    g, t = parts[0][0].shape
    v = len(variants)
    labels = grids.labels[:, list(heads)].reshape(-1)
    names = {c: grids.class_name(c) for c in set(labels.tolist())}
    inside = torch.stack([i for i, _ in parts]).reshape(-1)
    total = torch.stack([tot for _, tot in parts]).reshape(-1)
    score = torch.stack([score_from_parts(i, tot) for i, tot in parts]).reshape(-1)
    return pd.DataFrame(
        {
            "model": unit.model,
            "setting": unit.setting,
            "layer": unit.layer,
            "stage": setting.staged.resolve(unit.layer),
            "method": unit.method,
            "kernel_size": np.repeat(np.array([k for k, _ in variants], dtype=np.int64), g * t),
            "kernel_ref": np.repeat(np.array([r for _, r in variants], dtype=np.int64), g * t),
            "grid": np.tile(np.repeat(np.arange(g), t), v),
            "cell": np.tile(np.array(heads), g * v),
            "head": np.tile(np.array(setting.heads_for(heads)), g * v),
            "label": np.tile(labels.numpy(), v),
            "class_name": [names[c] for c in labels.tolist()] * v,
            "score": score.numpy(),
            "inside": inside.numpy(),
            "total": total.numpy(),
        }
    )


def run(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    methods: Mapping[str, Any] | None = None,
    models: Mapping[str, nn.Module] | None = None,
) -> RunStore:
    """Run (or resume) the protocol of ``config`` into the directory ``out``; returns its store.

    ``methods`` / ``models``: objects in memory for the config's ``memory:`` entries (made by
    :func:`attreval.evaluate`), by name. Under ``torchrun`` the units are sharded across the processes (see
    :mod:`attreval.runs.distributed`). A run that fails before its first unit finishes removes the directory it
    created, so bad input leaves nothing behind; later failures keep the finished units for ``--resume``. On
    CUDA it runs under :func:`faithful_numerics`, so reruns and resumes give bit-identical tables there too.
    """
    group, dev = from_environment(resolve_device(device or config.device))
    out = Path(out)
    created, existed = not (out / "config.json").exists(), out.is_dir()
    lock = RunLock(out)  # rank 0 takes it in prepare_run_dir and holds it until the end (see attreval.runs.lock)
    given = dict(models or {})
    try:
        with faithful_numerics(dev):
            loaded = {
                m.key: _given(given[m.key], m.key, config, dev)
                if m.key in given
                else load_model(m.name, m.weights, m.num_classes, config.evaluation.layers, m.architecture).to(dev)
                for m in config.models
            }
            evaluated = resolve_methods(config, methods)  # a plugin or callable file that fails to load stops here
            group.on_main(lambda: prepare_run_dir(out, config, resume, lock))  # its errors end every rank with one line
            store = RunStore(out)
            try:
                _execute(store, config, loaded, evaluated, dev, resume, progress, group)
            except BaseException:
                if group.is_main and created and not any((out / "parts").glob("*.parquet")):
                    shutil.rmtree(out, ignore_errors=True)
                    if existed:  # the (empty) directory the user gave stays
                        out.mkdir(exist_ok=True)
                raise
    finally:
        lock.release()
        group.close()
    return store


def _given(model: nn.Module, name: str, config: RunConfig, dev: torch.device) -> nn.Module:
    """A model handed over in memory, split and checked like a loaded one; a copy on ``dev`` if it lives
    elsewhere (the caller's model is never moved or changed)."""
    from attreval.models.splitters import split_model
    from attreval.models.splitters.common import model_device

    if model.training:
        raise ValueError(f"expected model '{name}' in eval mode (call model.eval() first), got one in training mode")
    staged = split_model(model)
    for layer in config.evaluation.layers:
        staged.resolve(layer)
    return model if model_device(model) == dev else copy.deepcopy(model).to(dev)


def _execute(
    store: RunStore,
    config: RunConfig,
    models: dict[str, nn.Module],
    methods: dict[str, Method],
    dev: torch.device,
    resume: bool,
    progress: bool,
    group: Group,
) -> None:
    started = time.time()
    units, skipped = applicable_units(config, models, plan_units(config), methods)  # before any work
    group.on_main(lambda: make_grids(store, config, models, dev))
    grids = make_grids(store, config, models, dev)  # loads what rank 0 built
    check_cells(config, models, grids)
    todo = group.shard([u for u in units if not store.is_done(u)])
    log.info("rank %d/%d: %d units, %d to compute here", group.rank, group.world, len(units), len(todo))
    for unit in tqdm(todo, desc=f"attreval run [{group.rank}]" if group.world > 1 else "attreval run", unit="unit", disable=not progress):
        grid_set = grids[unit.model, SETTINGS.get(unit.setting).grids]
        _execute_unit(store, unit, models[unit.model], grid_set, config, methods[unit.method], dev, group)
    group.barrier()
    if group.is_main:
        results = store.merge(units)
        if (overhead := overhead_summary(store.merge_costs(units))) is not None:
            log.info("units: %s (costs.parquet)", overhead)
        store.write_statistics(*run_statistics(results, seed=config.seed))
        meta = metadata(config.seed, dev)
        meta.update(
            seconds=time.time() - started, resumed=resume, units=len(units), processes=group.world, not_applicable=[u.key for u in skipped]
        )
        store.write_json("meta.json", meta)
    group.barrier()


def _execute_unit(
    store: RunStore, unit: Unit, model: nn.Module, grids: GridDataset, config: RunConfig, method: Method, dev: torch.device, group: Group
) -> None:
    """Evaluate ``unit``, streaming its maps ``(G, T, h, w)`` to the store batch by batch (if ``store_maps``),
    then write its timing record and finish it: maps renamed into place first, part file last. A failure
    discards the half-written maps."""
    counter, t0 = PassCounter(), time.perf_counter()
    with store.map_writer(unit, len(grids)) if config.evaluation.store_maps else nullcontext() as writer:
        with cone_report.recording() as notes:
            rows = evaluate_unit(unit, model, grids, config, dev, counter, writer.write if writer is not None else None, method)
        # the method computing its maps; the run's own time so far (scoring, the float16 check, writing the maps)
        seconds, overhead = counter.method_seconds, time.perf_counter() - t0 - counter.method_seconds
        cone = cone_report.summary(notes)
        if cone is not None and cone != "cone":
            log.info("%s: Occlusion's receptive-field cone: %s", unit.key, cone)
        cost = dict(
            seconds=seconds, overhead_seconds=overhead, grids=len(grids), rank=group.rank, cone=cone, **counter.per_grid(len(grids))
        )
        store.write_json(f"timings/{unit.key}.json", cost)
        store.write_unit(unit, rows, writer)
