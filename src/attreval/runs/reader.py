"""Read a run directory back from Python: ``attreval.load_run(DIR)``.

One reader for everything a run wrote (layout in :mod:`attreval.runs.store`), used by the report and the
analyses too, so that no caller needs to know the file layout:

>>> run = attreval.load_run("runs/default")                      # doctest: +SKIP
>>> run.results.groupby(["method", "layer"])["score"].median()   # doctest: +SKIP
>>> run.maps("fashion_vgg", "gridpg", "input", "grad").shape     # (G, T, h, w), memory-mapped  # doctest: +SKIP

Everything is read lazily, on first use, and cached: the tables as pandas DataFrames, the config as the
:class:`~attreval.config.RunConfig` the run resolved, the grids as :class:`~attreval.data.GridDataset`
(memory-mapped: the one place the grid file format lives), the maps as read-only memory maps.
"""

from __future__ import annotations

import hashlib
import io
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from attreval.config import RunConfig, config_from_json
from attreval.data.grids import GridDataset
from attreval.runs.manifest import remedy
from attreval.runs.store import RunStore, Unit

__all__ = ["Run", "load_run", "grid_kind", "unit_rows", "map_columns"]


def grid_kind(setting_or_kind: str) -> str:
    """The grid file kind of a setting (its ``grids`` attribute: ``gridpg`` for GridPG, ``disconnected`` for
    DiFull / DiPart); a kind passes through."""
    from attreval.settings import GRID_KINDS, SETTINGS

    if setting_or_kind in GRID_KINDS:
        return setting_or_kind
    return SETTINGS.get(setting_or_kind).grids


def unit_rows(results: pd.DataFrame, model: str, setting: str, layer: str, method: str, kernel_ref: int = 0) -> pd.DataFrame:
    """The result rows of one unit at one smoothing level (``kernel_ref``, 0 = unsmoothed), in stored order;
    none is a ``ValueError``.

    Rows are selected by ``kernel_ref``, not ``kernel_size``: on small maps several paper kernels scale to
    the same size (even to 1, the identity), so ``kernel_size`` does not identify a sweep point.
    """
    r = results
    mask = (r["model"] == model) & (r["setting"] == setting) & (r["layer"] == layer) & (r["method"] == method)
    rows = r[mask & (r["kernel_ref"] == kernel_ref)]
    if rows.empty:
        raise ValueError(f"expected result rows for {model}/{setting}/{layer}/{method} (kernel_ref {kernel_ref}), got none")
    return rows


def map_columns(rows: pd.DataFrame) -> list[int]:
    """The target cell of each column ``t`` of a unit's stored maps ``(G, T, h, w)``: columns follow the
    order of cells within a grid's rows."""
    return pd.unique(rows["cell"]).tolist()


class Run:
    """A run directory, read lazily. Build it with :func:`load_run`."""

    def __init__(self, root: str | os.PathLike, *, verify: bool = False):
        self.root = Path(root)
        self.store = RunStore(self.root)
        self.verify = verify  # hash each recorded file when it is first read (load_run's default)
        self._grids: dict[tuple[str, str], GridDataset] = {}
        self._hashed: set[Path] = set()
        self.keepalive: object = None  # attreval.evaluate(out=None): the temporary directory the run lives in

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # -- tables -------------------------------------------------------------------------------------
    @cached_property
    def results(self) -> pd.DataFrame:
        """``results.parquet``: one row per map and smoothing level (columns: :data:`attreval.runs.store.COLUMNS`)."""
        path = self.root / "results.parquet"
        return pd.read_parquet(io.BytesIO(self._verified_bytes(path))) if self.verify and path.exists() else self.store.results()

    @cached_property
    def costs(self) -> pd.DataFrame:
        """``costs.parquet``: one row per unit (seconds and passes per grid); empty when the run has none."""
        path = self.root / "costs.parquet"
        return pd.read_parquet(io.BytesIO(self._verified_bytes(path))) if path.exists() else pd.DataFrame()

    @cached_property
    def statistics(self) -> pd.DataFrame:
        """``statistics.parquet``: median and 95 % bootstrap interval (resampling grids) of every unit and
        smoothing level (:func:`attreval.analysis.statistics.unit_statistics`); computed from the results
        when the run predates the file."""
        from attreval.analysis.statistics import unit_statistics
        from attreval.runs.store import STATISTICS

        path = self.root / STATISTICS
        return (
            pd.read_parquet(io.BytesIO(self._verified_bytes(path))) if path.exists() else unit_statistics(self.results, seed=self._seed())
        )

    @cached_property
    def comparisons(self) -> pd.DataFrame:
        """``comparisons.parquet``: paired Wilcoxon tests of every pair of methods per (model, setting, layer,
        smoothing), Holm-corrected per group (:func:`attreval.analysis.statistics.paired_comparisons`)."""
        from attreval.analysis.statistics import paired_comparisons
        from attreval.runs.store import COMPARISONS

        path = self.root / COMPARISONS
        return pd.read_parquet(io.BytesIO(self._verified_bytes(path))) if path.exists() else paired_comparisons(self.results)

    def compare(
        self,
        method: str | None = None,
        *,
        model: str | None = None,
        setting: str | None = None,
        layer: str | None = None,
        kernel_ref: int = 0,
        alpha: float = 0.05,
    ) -> pd.DataFrame:
        """With ``method``: that method against every other of each selected group (``other``, medians, the median
        paired difference ``method − other``, p-values, ``verdict``: better / worse / no difference at ``alpha``).
        Without: the tier table (:func:`attreval.analysis.statistics.tiers`). ``None`` selects every value."""
        from attreval.analysis.comparison import method_versus_others, select
        from attreval.analysis.statistics import tiers

        where = {"model": model, "setting": setting, "layer": layer, "kernel_ref": kernel_ref}
        if method is None:
            return tiers(select(self.statistics, where), select(self.comparisons, where), alpha)
        return method_versus_others(select(self.comparisons, where), method, alpha)

    def _seed(self) -> int:
        return int((self.config_dict or {}).get("seed", 0))

    # -- config and metadata ------------------------------------------------------------------------
    @cached_property
    def config_dict(self) -> dict[str, Any] | None:
        """``config.json`` as stored (``None`` when missing or unreadable)."""
        return self._json("config.json")

    @cached_property
    def config(self) -> RunConfig:
        """The resolved config of the run (absolute paths, every default filled in)."""
        if self.config_dict is None:
            raise ValueError(f"expected a run config at {self.root / 'config.json'}, found none or unreadable")
        return config_from_json(self.config_dict)

    @cached_property
    def meta(self) -> dict[str, Any] | None:
        """``meta.json`` (versions, seed, device, timing), ``None`` for an unfinished run."""
        return self._json("meta.json")

    def problems(self) -> list[str]:
        """What does not match the run's manifest (:func:`attreval.runs.verify.verify_run`; a file not written
        yet is no problem), one line each; empty when all is well."""
        from attreval.runs.verify import verify_run

        return verify_run(self.root, missing_ok=True)

    # -- verification (load_run's default; Run(root) and load_run(root, verify=False) read as found) --------
    def check(self) -> None:
        """Raise one ``ValueError`` naming the first file that does not match the run's manifest: no symbolic
        link inside, every present recorded file of its recorded size, bound to its path and this run, and
        (in a run that has a manifest) no file of the layout without a record. Hashes are checked as files are
        read (:meth:`_verified_bytes`, :meth:`_verified_file`)."""
        from attreval.runs.manifest import MANIFEST
        from attreval.runs.verify import verify_run

        problems = verify_run(self.root, missing_ok=True, digest=False, strict=(self.root / MANIFEST).is_dir())
        if problems:
            more = f" (and {len(problems) - 1} more: see attreval verify {self.root})" if len(problems) > 1 else ""
            raise ValueError(f"expected the files of {self.root} to match its manifest, got {problems[0]}{more}")

    def _verified_file(self, path: Path) -> Path:
        """``path``, hashed once against its manifest record when the run is verified (a damaged file is named)."""
        if self.verify and path not in self._hashed and path.exists():
            problem = self.store.manifest.problem(path)
            if problem is not None:
                raise ValueError(f"expected the files of {self.root} to match its manifest, got {problem}")
            self._hashed.add(path)
        return path

    def _verified_bytes(self, path: Path) -> bytes:
        """The bytes of ``path``, checked against its record's sha256 when the run is verified (read once)."""
        data = path.read_bytes()
        record = self.store.manifest.record(path) if self.verify else None
        if record is not None and hashlib.sha256(data).hexdigest() != record["sha256"]:
            rel = self.store.manifest.rel(path)
            raise ValueError(
                f"expected the files of {self.root} to match its manifest, got {rel}: contents differ from the sha256 "
                f"in its manifest record (damaged or replaced); {remedy(rel)}"
            )
        return data

    def _json(self, name: str) -> dict[str, Any] | None:
        self._verified_file(self.root / name)
        try:
            data = self.store.read_json(name)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- grids, classes, maps -----------------------------------------------------------------------
    def grids(self, model: str, setting: str) -> GridDataset:
        """The grids of ``model`` for a setting (or a kind, ``gridpg`` / ``disconnected``), memory-mapped."""
        key = (model, grid_kind(setting))
        if key not in self._grids:
            path = self.store.grid_path(*key)
            if not path.exists():
                raise ValueError(f"expected a grid file at {path}, found none")
            self._grids[key] = GridDataset.load(self._verified_file(path), mmap=True)
        return self._grids[key]

    def class_names(self, model: str | None = None) -> tuple[str, ...]:
        """The dataset's class names (index = label), from the grid files (of ``model``, default any);
        ``()`` when the data has none or the run predates them."""
        for path in sorted((self.root / "grids").glob("*.pt")):
            name, kind = path.stem.rsplit("__", 1)
            if model is None or name == model:
                names = self.grids(name, kind).class_names
                if names:
                    return names
        return ()

    def maps(self, model: str, setting: str, layer: str, method: str) -> np.ndarray:
        """The stored maps of a unit, memory-mapped read-only: ``(G, T, h, w)``, float16 or float32 (whichever reproduces the stored scores)."""
        self._verified_file(self.store.map_path(Unit(model, setting, layer, method)))
        return self.store.maps(model, setting, layer, method)

    def units(self) -> list[Unit]:
        """The finished units, from their part files."""
        return list(self.store.units())

    def native_scores(
        self, model: str, setting: str, layer: str, method: str, *, kernel_ref: int = 0, chunk_size: int = 64
    ) -> pd.DataFrame:
        """The unit's rows at ``kernel_ref`` with a ``native`` column: the localization score of each stored
        map at its native resolution (:func:`attreval.metric.native_localization_score`), smoothed as the
        rows were. ``score`` below 1 with ``native`` = 1 is the upsampling leak of a hidden layer, not
        attribution outside the cell. Computed from the stored maps, which reproduce the stored scores to 1e-6."""
        from attreval.metric import native_localization_score
        from attreval.smoothing import smooth_maps

        rows = unit_rows(self.results, model, setting, layer, method, kernel_ref)
        kernel = int(rows["kernel_size"].iloc[0])
        maps, n = self.maps(model, setting, layer, method), self.grids(model, setting).spec.n
        cells = map_columns(rows)
        native = []
        for start in range(0, len(maps), chunk_size):
            part = torch.from_numpy(np.array(maps[start : start + chunk_size], dtype=np.float32))
            part = smooth_maps(part, kernel) if kernel else part
            native.append(native_localization_score(part, n, torch.tensor(cells).expand(len(part), -1)))
        scores = torch.cat(native).numpy()  # (G, T)
        out = rows.copy()
        out["native"] = scores[out["grid"].to_numpy(), [cells.index(c) for c in out["cell"]]]
        return out


def load_run(root: str | os.PathLike, *, verify: bool = True) -> Run:
    """The run in directory ``root`` (see :class:`Run`); a missing directory is a one-line error.

    ``verify`` (default): the run is checked against its manifest now (:meth:`Run.check`: links, sizes,
    bindings, unrecorded files; one ``ValueError`` naming the damaged file) and every recorded file is hashed
    when it is first read. ``verify=False``: read what is there, damaged or not (forensics; ``Run.problems()``
    lists what is wrong)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"expected a run directory, found nothing at {root.absolute()}")
    if not any((root / name).exists() for name in ("config.json", "results.parquet", "parts")):
        raise ValueError(f"expected a run directory (config.json, results.parquet), got a folder without them: {root.absolute()}")
    run = Run(root, verify=verify)
    if verify:
        run.check()
    return run
