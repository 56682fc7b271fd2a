"""The run directory: results table, maps, grids, config and metadata.

Layout::

    RUN/
      config.json            the resolved config (compared on --resume)
      meta.json              versions, seed, device, git revision, timings
      grids/MODEL__KIND.pt   the grid datasets used (KIND = gridpg | disconnected)
      parts/UNIT.parquet     rows of one finished unit (model, setting, layer, method)
      maps/UNIT.npy          maps (G, T, h, w) of that unit (float16 where that reproduces every score, else float32), memory-mappable (streamed batch by
                             batch into a temporary file by :class:`MapWriter`, renamed when complete)
      results.parquet        every part, merged in unit order
      statistics.parquet     median and 95 % bootstrap interval of every unit (resampling grids)
      comparisons.parquet    paired Wilcoxon tests between the methods of every (model, setting, layer, smoothing)
      manifest/REL.json      size and sha256 of every finished file REL (and, for grids, the config
                             fingerprint that made them): see :mod:`attreval.runs.manifest`

A unit is finished exactly when its part file exists with its manifest record (and every other recorded
file of the unit, maps and timing, exists); every file is written to a temporary name, hashed, renamed and
recorded, so a killed run leaves either a whole recorded file or an unfinished one, and ``--resume``
recomputes nothing finished. Every path written is checked to lie inside the run directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attreval.runs.files import atomic_write, named, temporary_path  # noqa: F401 - atomic_write: re-exported for plots/report
from attreval.runs.manifest import Manifest
from attreval.runs.mapfile import MapWriter, _save_npy
from attreval.runs.nofollow import checked

STATISTICS, COMPARISONS = "statistics.parquet", "comparisons.parquet"

COLUMNS = [
    "model",
    "setting",
    "layer",
    "stage",
    "method",
    "kernel_size",
    "kernel_ref",
    "grid",
    "cell",
    "head",
    "label",
    "score",
    "inside",
    "total",
    "class_name",
]


@dataclass(frozen=True)
class Unit:
    """One (model, setting, layer, method) evaluation."""

    model: str
    setting: str
    layer: str
    method: str

    @property
    def key(self) -> str:
        return "__".join((self.model, self.setting, self.layer, self.method))


class RunStore:
    """Read and write one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest = Manifest(self.root)

    def inside(self, path: Path) -> Path:
        """``path``, checked to lie inside the run directory with no symbolic link on the way (the one check
        every write of the store passes: :func:`attreval.runs.nofollow.checked`)."""
        return checked(self.root, path)

    def _write(self, path: Path, write: Any, fingerprint: dict | None = None, extra: dict | None = None) -> None:
        atomic_write(self.inside(path), write, self.manifest, fingerprint, extra)

    # -- config and metadata ---------------------------------------------------------------------
    def write_json(self, name: str, data: dict[str, Any]) -> None:
        self._write(self.root / name, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run; a damaged one is a one-line error naming it."""
        path = self.root / name
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"expected {path}, found nothing") from None
        except (OSError, ValueError) as err:
            raise ValueError(
                f"expected JSON in {path}, got an unreadable file ({type(err).__name__}: {err}); delete it to recompute it with --resume"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object in {path}, got {type(data).__name__}")
        return data

    def remove_temporary(self) -> None:
        """Delete the ``*.tmp`` files a killed process left mid-write (only while no other process writes here)."""
        for path in self.root.rglob("*.tmp"):
            path.unlink(missing_ok=True)

    # -- units ------------------------------------------------------------------------------------
    def part_path(self, unit: Unit) -> Path:
        return self.root / "parts" / f"{unit.key}.parquet"

    def map_path(self, unit: Unit) -> Path:
        return self.root / "maps" / f"{unit.key}.npy"

    def timing_path(self, unit: Unit) -> Path:
        return self.root / "timings" / f"{unit.key}.json"

    def is_done(self, unit: Unit) -> bool:
        """The part file exists with its record, and so do the unit's other recorded files (maps, timing):
        a part without a record was being written when a run was killed; a deleted maps or timing file
        makes the unit be computed again."""
        part, m = self.part_path(unit), self.manifest
        if not (part.exists() and m.has(part)):
            return False
        if "with" in (m.record(part) or {}):  # the maps and timing it was scored with, by their sha256
            return m.companions_intact(part)
        return all(path.exists() or not m.has(path) for path in (self.map_path(unit), self.timing_path(unit)))

    def map_writer(self, unit: Unit, grids: int) -> MapWriter:
        """A :class:`MapWriter` that streams the ``(grids, T, h, w)`` maps of ``unit``; pass it to :meth:`write_unit`."""
        return MapWriter(self.inside(self.map_path(unit)), grids, self.manifest)

    def write_unit(self, unit: Unit, rows: pd.DataFrame, maps: np.ndarray | MapWriter | None) -> None:
        """Maps first, rows last: the part file marks the unit finished.

        ``maps``: the whole ``(G, T, h, w)`` array, a :class:`MapWriter` holding all ``G`` grids (committed
        here), or None (no maps stored)."""
        if isinstance(maps, MapWriter):
            maps.commit()
        elif maps is not None:
            self._write(self.map_path(unit), lambda p: _save_npy(p, maps))
        scored_with = {}  # the part's record names the unit's maps and timing: they are bound to it
        for path in (self.map_path(unit), self.timing_path(unit)):
            record = self.manifest.record(path) if path.exists() else None
            if record is not None:
                scored_with[self.manifest.rel(path)] = record["sha256"]
        self._write(self.part_path(unit), lambda p: rows[COLUMNS].to_parquet(p, index=False), extra={"with": scored_with})

    def read_part(self, unit: Unit) -> pd.DataFrame:
        """The rows of a finished unit, read from bytes checked against the part's manifest record."""
        path = self.part_path(unit)
        data = path.read_bytes()
        record = self.manifest.record(path)
        if record is not None and hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ValueError(
                f"expected {path} to match the sha256 in its manifest record, got other contents "
                "(damaged or replaced); delete it to recompute it with --resume"
            )
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as err:  # pyarrow raises several kinds for a damaged page or footer
            raise ValueError(
                f"expected a Parquet part file at {path}, got an unreadable file ({type(err).__name__}); "
                "delete it to recompute it with --resume"
            ) from None

    def merge(self, units: list[Unit]) -> pd.DataFrame:
        """Concatenate the parts of ``units`` (in that order) into ``results.parquet``; every unit must be
        finished (a missing one is an error naming its part file, not a short table)."""
        missing = [u for u in units if not self.is_done(u)]
        if missing:
            raise ValueError(
                f"expected every unit finished before the merge, got {len(missing)} unfinished "
                f"(e.g. {self.part_path(missing[0])}); continue with --resume"
            )
        frames = [self.read_part(u) for u in units]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
        self._write(self.root / "results.parquet", lambda p: table.to_parquet(p, index=False))
        return table

    def merge_costs(self, units: list[Unit]) -> pd.DataFrame:
        """One row per unit from its timing record → ``costs.parquet`` (seconds and passes per grid); a
        missing or damaged timing record of a unit is an error naming it, not a short table."""
        rows = []
        for u in units:
            path = self.timing_path(u)
            if not path.exists():
                raise ValueError(
                    f"expected the timing record {path} of the finished unit {u.key}, found none; "
                    f"delete {self.part_path(u)} to recompute the unit with --resume"
                )
            record = self.read_json(f"timings/{u.key}.json")
            try:
                record["seconds_per_grid"] = record["seconds"] / max(record["grids"], 1)
            except (KeyError, TypeError):
                raise ValueError(
                    f"expected seconds and grids in {path}, got keys {sorted(record)}; delete it to recompute it with --resume"
                ) from None
            rows.append({"model": u.model, "setting": u.setting, "layer": u.layer, "method": u.method, **record})
        table = pd.DataFrame(rows)
        self._write(self.root / "costs.parquet", lambda p: table.to_parquet(p, index=False))
        return table

    def write_statistics(self, statistics: pd.DataFrame, comparisons: pd.DataFrame) -> None:
        """``statistics.parquet`` (bootstrap intervals per unit) and ``comparisons.parquet`` (paired tests
        between methods): :mod:`attreval.analysis.statistics`."""
        self._write(self.root / STATISTICS, lambda p: statistics.to_parquet(p, index=False))
        self._write(self.root / COMPARISONS, lambda p: comparisons.to_parquet(p, index=False))

    # -- reading ----------------------------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        path = self.root / "results.parquet"
        if not path.exists():
            raise ValueError(f"expected a results table at {path}, found none (is {self.root} a finished run?)")
        return pd.read_parquet(path)

    def maps(self, model: str, setting: str, layer: str, method: str) -> np.ndarray:
        """The stored maps of a unit, memory-mapped: ``(G, T, h, w)`` float16, or float32 where float16 would not give back the unit's scores."""
        path = self.map_path(Unit(model, setting, layer, method))
        if not path.exists():
            raise ValueError(f"expected stored maps at {path}, found none")
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def grid_path(self, model: str, kind: str) -> Path:
        return self.root / "grids" / f"{model}__{kind}.pt"

    def has_grids(self, path: Path) -> bool:
        """A finished grid file: present with its record (one without was being written when a run was killed)."""
        return path.exists() and self.manifest.has(path)

    def save_grids(self, path: Path, grids: Any, fingerprint: dict) -> None:
        """Write a :class:`~attreval.data.GridDataset` (the format of its ``save``) and record it with the
        ``fingerprint`` of the config that made it. Written through a Python file object, so that a full disk
        is an ``OSError`` naming the file (torch's own writer turns it into an opaque RuntimeError)."""
        import torch

        payload = grids.payload()

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                torch.save(payload, handle)

        self._write(path, write, fingerprint)

    def load_grids(self, path: Path, fingerprint: dict, seed: int) -> Any:
        """The grid file at ``path``, checked against its record's size and ``fingerprint`` and its stored
        seed against ``seed`` (its sha256 is checked by ``--resume`` before, or was taken when it was written)."""
        from attreval.data import GridDataset

        problem = self.manifest.problem(path, fingerprint, digest=False)
        if problem is not None:
            raise ValueError(f"expected grids made by this config, got {problem}")
        grids = GridDataset.load(path)
        if grids.seed != seed:
            raise ValueError(f"expected grids of seed {seed} in {path}, got seed {grids.seed}; delete it to recompute it with --resume")
        return grids

    def units(self) -> Iterator[Unit]:
        """The units of the part files (a file whose name is not ``MODEL__SETTING__LAYER__METHOD`` is no unit's)."""
        for path in sorted((self.root / "parts").glob("*.parquet")):
            names = path.stem.split("__")
            if len(names) == 4 and all(names):
                yield Unit(*names)
