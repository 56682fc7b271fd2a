"""AggAtt of a stored unit of a run (PAPER.md §3), read through :class:`attreval.runs.reader.Run` only: the rows
and map columns of a unit come from the reader, the grids (images, labels, class names, geometry) from
:class:`~attreval.data.GridDataset`, so that this module knows neither file layouts nor the grid schema.
The computation itself is :func:`attreval.analysis.aggatt.aggatt`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attreval.analysis.aggatt import AggAtt, aggatt, prepare_maps
from attreval.grid import GridSpec
from attreval.runs.reader import Run, load_run, map_columns, unit_rows
from attreval.runs.store import RunStore


def as_run(run: Run | RunStore | str | os.PathLike) -> Run:
    """A :class:`~attreval.runs.reader.Run` from a Run, a :class:`~attreval.runs.store.RunStore` or a directory."""
    if isinstance(run, Run):
        return run
    return Run(run.root) if isinstance(run, RunStore) else load_run(run)


def grid_spec(run: Run | RunStore, model: str, setting: str) -> GridSpec:
    """The geometry (``n``, image size ``spec.height × spec.width``) of ``model``'s grids for ``setting``;
    a missing grid file is a ``ValueError``."""
    return as_run(run).grids(model, setting).spec


def cell_column(rows: pd.DataFrame, cell: int) -> int:
    """The map column ``t`` holding ``cell`` (:func:`attreval.runs.reader.map_columns`)."""
    cells = map_columns(rows)
    if cell not in cells:
        raise ValueError(f"expected a cell among the evaluated ones {cells}, got {cell}")
    return cells.index(cell)


@dataclass(frozen=True)
class _Unit:
    """One stored unit at one smoothing level: its rows, the map column of the cell, the kernel its rows
    were smoothed with, and its maps ``(G, T, h, w)`` (memory-mapped)."""

    rows: pd.DataFrame
    column: int
    kernel_size: int
    maps: np.ndarray


def _unit(run: Run, results: pd.DataFrame | None, model: str, setting: str, layer: str, method: str, cell: int, kernel_ref: int) -> _Unit:
    rows = unit_rows(run.results if results is None else results, model, setting, layer, method, kernel_ref)
    sizes = pd.unique(rows["kernel_size"])
    if len(sizes) != 1:
        raise ValueError(f"expected one kernel_size per kernel_ref, got {sorted(sizes)}")
    return _Unit(rows, cell_column(rows, cell), int(sizes[0]), run.maps(model, setting, layer, method))


def aggatt_from_run(
    run: Run | RunStore,
    model: str,
    setting: str,
    layer: str,
    method: str,
    *,
    cell: int = 0,
    kernel_ref: int = 0,
    results: pd.DataFrame | None = None,
    spec: GridSpec | None = None,
    signed: bool = False,
) -> AggAtt:
    """AggAtt of one stored unit (smoothed as the rows of ``kernel_ref`` were), sorted by the **stored**
    scores and inside masses (the numbers the box plots show); samples are grid indices. ``spec``: the
    grids' geometry when the caller has it (:func:`grid_spec`). Raises ``ValueError`` when rows, maps or
    the grid file are missing."""
    run = as_run(run)
    unit = _unit(run, results, model, setting, layer, method, cell, kernel_ref)
    rows = unit.rows[unit.rows["cell"] == cell].sort_values("grid", kind="stable")
    count = unit.maps.shape[0]
    if len(rows) != count or not (rows["grid"].to_numpy() == np.arange(count)).all():
        raise ValueError(f"expected one row per stored grid ({count}) for cell {cell}, got {len(rows)}")
    spec = grid_spec(run, model, setting) if spec is None else spec
    return aggatt(
        unit.maps[:, unit.column],
        spec.n,
        cell,
        (spec.height, spec.width),
        kernel_size=unit.kernel_size,
        scores=rows["score"].to_numpy(),
        inside=rows["inside"].to_numpy(),
        signed=signed,
    )


@dataclass(frozen=True, eq=False)
class Examples:
    """The example of every bin: ``images (B, C, H, W)`` grid images, ``maps (B, H, W)`` their prepared
    maps (positive unless signed), the grid index, score and target cell's class name of each; ``None``
    entries for empty bins."""

    images: tuple[np.ndarray | None, ...]
    maps: tuple[np.ndarray | None, ...]
    grids: tuple[int | None, ...]
    scores: tuple[float | None, ...]
    classes: tuple[str | None, ...] = ()


def examples_from_run(
    run: Run | RunStore,
    agg: AggAtt,
    model: str,
    setting: str,
    layer: str,
    method: str,
    *,
    kernel_ref: int = 0,
    results: pd.DataFrame | None = None,
) -> Examples:
    """The grid image and map at each bin's median position of ``agg`` (built by :func:`aggatt_from_run`
    with the same arguments)."""
    run = as_run(run)
    unit = _unit(run, results, model, setting, layer, method, agg.cell, kernel_ref)
    grids = run.grids(model, setting)
    size = (grids.spec.height, grids.spec.width)
    images: list[np.ndarray | None] = []
    maps: list[np.ndarray | None] = []
    classes: list[str | None] = []
    for g in agg.examples:
        if g is None:
            images.append(None)
            maps.append(None)
            classes.append(None)
            continue
        images.append(np.asarray(grids.images[g], dtype=np.float32))
        maps.append(prepare_maps(unit.maps[g : g + 1, unit.column], size, unit.kernel_size, agg.signed)[0].numpy())
        classes.append(grids.class_name(int(grids.labels[g, agg.cell])))
    scores = tuple(None if g is None else float(agg.scores[g]) for g in agg.examples)
    return Examples(tuple(images), tuple(maps), agg.examples, scores, tuple(classes))


def bin_classes(run: Run | RunStore, agg: AggAtt, model: str, setting: str, top: int = 3) -> list[list[tuple[str, int]]]:
    """Per bin, the ``top`` most frequent class names of the target cell among its maps, with counts
    (samples of ``agg`` are grid indices, as :func:`aggatt_from_run` builds them)."""
    grids = as_run(run).grids(model, setting)
    labels = grids.labels[:, agg.cell].numpy()
    out = []
    for j in range(len(agg.bins)):
        counts = pd.Series(labels[agg.samples(j)]).value_counts(sort=True)
        out.append([(grids.class_name(int(label)), int(count)) for label, count in counts.head(top).items()])
    return out
