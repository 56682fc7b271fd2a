"""What a run evaluates: its units (model × setting × layer × method, those that apply) and the grid datasets
each model is evaluated on, built once and cached in the run directory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attreval.config import RunConfig
from attreval.data import GridDataset, build_grid_dataset, load_dataset
from attreval.methods import Method
from attreval.models.splitters import split_model
from attreval.models.splitters.common import model_device
from attreval.runs.manifest import grid_fingerprint
from attreval.runs.store import RunStore, Unit
from attreval.settings import GRID_KINDS, SETTINGS, make_setting

log = logging.getLogger(__name__)


def make_grids(
    store: RunStore, config: RunConfig, models: dict[str, nn.Module], device: torch.device
) -> dict[tuple[str, str], GridDataset]:
    """Grid datasets per (model key, kind), built once and cached in the run directory."""
    kinds = {}  # grid kind → (count, repeated corners), for the kinds the selected settings evaluate
    for name in config.evaluation.settings:
        kind = SETTINGS.get(name).grids
        if getattr(config.grids, kind):
            kinds[kind] = (getattr(config.grids, kind), GRID_KINDS[kind])
    groups = {key: [model] for key, model in models.items()}
    if config.grids.selection == "intersection":
        groups = {key: list(models.values()) for key in models}
    grids, dataset = {}, None
    for key, group in groups.items():
        for kind, (count, repeat) in kinds.items():
            path = store.grid_path(key, kind)
            fingerprint = grid_fingerprint(config.to_dict(), key, kind)
            if not store.has_grids(path):  # missing, or unfinished (no manifest record)
                dataset = dataset if dataset is not None else load_dataset(**vars(config.data))
                built = build_grid_dataset(
                    dataset,
                    group,
                    config.grids.n,
                    count,
                    threshold=config.grids.confidence,
                    repeat_corners=repeat,
                    seed=config.seed,
                    device=device,
                    rule=config.grids.images,
                )
                store.save_grids(path, built, fingerprint)
            grids[key, kind] = store.load_grids(path, fingerprint, config.seed)
    return grids


def check_cells(config: RunConfig, models: dict[str, nn.Module], grids: dict[tuple[str, str], GridDataset]) -> None:
    """Before any unit: every model accepts the grids' cells, and a fully connected classifier sees its
    training window in GridPG (one line naming the model otherwise)."""
    pooled_kinds = {SETTINGS.get(s).grids for s in config.evaluation.settings if SETTINGS.get(s).pooled}
    for (key, kind), data in grids.items():
        c, height, width = data.images.shape[1:]
        cell = (c, height // config.grids.n, width // config.grids.n)
        try:
            split_model(models[key]).check_cell(cell, kind in pooled_kinds, model_device(models[key]))
        except ValueError as err:
            raise ValueError(f"model '{key}': {err}") from None


def resolve_methods(config: RunConfig, in_memory: Mapping[str, Any] | None = None) -> dict[str, Method]:
    """Every evaluated method name → its method object, built once per run (a plugin or a ``callable`` file is
    imported here, before any work); ``in_memory``: the objects handed to :func:`attreval.evaluate`."""
    return {name: config.method(name, in_memory) for name in config.method_names()}


def applicable_units(
    config: RunConfig, models: dict[str, nn.Module], units: list[Unit], methods: Mapping[str, Method]
) -> tuple[list[Unit], list[Unit]]:
    """``(units to run, units not applicable)``, decided before any work: a method that needs something of the tail
    (``Method.needs``: the attention methods need a transformer, LRP a CNN) checks the tail of each of its units, so
    a config listing it next to CNNs (or ``methods = ["all"]``) skips those units with one warning per method and
    model, instead of failing mid-run. A config in which nothing applies is a one-line error."""
    keep, skipped, said = [], [], set()
    for unit in units:
        method = methods[unit.method]
        if method.needs:
            setting = make_setting(unit.setting, models[unit.model], config.grids.n)
            try:
                method.check_tail(setting.tail(unit.layer, setting.default_heads()))
            except ValueError as err:
                skipped.append(unit)
                if (unit.method, unit.model) not in said:
                    said.add((unit.method, unit.model))
                    log.warning("method '%s' does not apply to model '%s', its units are skipped: %s", unit.method, unit.model, err)
                continue
        keep.append(unit)
    if units and not keep:
        raise ValueError(f"expected at least one method that applies to the models, got none: {len(skipped)} units not applicable")
    return keep, skipped


def plan_units(config: RunConfig) -> list[Unit]:
    e = config.evaluation
    return [
        Unit(m.key, s, layer, method)
        for m in config.models
        for s in e.settings
        for layer in e.layers
        for method in config.method_names()
        if config.applies(method, s, layer)  # variants may be restricted to some settings / layers
    ]
