"""The run directory: results table, maps, grids, config and metadata.

Layout::

    RUN/
      config.json            the resolved config (compared on --resume)
      meta.json              versions, seed, device, git revision, timings
      grids/MODEL__KIND.pt   the grid datasets used (KIND = gridpg | disconnected)
      parts/UNIT.parquet     rows of one finished unit (model, setting, layer, method)
      maps/UNIT.npy          float16 maps (G, T, h, w) of that unit, memory-mappable
      results.parquet        every part, merged in unit order

A unit is finished exactly when its part file exists; every file is written to a temporary name and
renamed, so a killed run leaves either a whole file or none, and ``--resume`` recomputes nothing finished.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

COLUMNS = [
    "model", "setting", "layer", "stage", "method", "kernel_size", "kernel_ref",
    "grid", "cell", "head", "label", "score", "inside", "total",
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


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same directory, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class RunStore:
    """Read and write one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- config and metadata ---------------------------------------------------------------------
    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write(self.root / name, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads((self.root / name).read_text())

    def remove_temporary(self) -> None:
        """Delete the ``*.tmp`` files a killed process left mid-write (only while no other process writes here)."""
        for path in self.root.rglob("*.tmp"):
            path.unlink(missing_ok=True)

    # -- units ------------------------------------------------------------------------------------
    def part_path(self, unit: Unit) -> Path:
        return self.root / "parts" / f"{unit.key}.parquet"

    def map_path(self, unit: Unit) -> Path:
        return self.root / "maps" / f"{unit.key}.npy"

    def is_done(self, unit: Unit) -> bool:
        return self.part_path(unit).exists()

    def write_unit(self, unit: Unit, rows: pd.DataFrame, maps: np.ndarray | None) -> None:
        """Maps first, rows last: the part file marks the unit finished."""
        if maps is not None:
            atomic_write(self.map_path(unit), lambda p: _save_npy(p, maps))
        atomic_write(self.part_path(unit), lambda p: rows[COLUMNS].to_parquet(p, index=False))

    def merge(self, units: list[Unit]) -> pd.DataFrame:
        """Concatenate the parts of ``units`` (in that order) into ``results.parquet``."""
        frames = [pd.read_parquet(self.part_path(u)) for u in units if self.is_done(u)]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
        atomic_write(self.root / "results.parquet", lambda p: table.to_parquet(p, index=False))
        return table

    def merge_costs(self, units: list[Unit]) -> pd.DataFrame:
        """One row per finished unit from its timing record → ``costs.parquet`` (seconds and passes per grid)."""
        rows = []
        for u in units:
            path = self.root / "timings" / f"{u.key}.json"
            if path.exists():
                record = json.loads(path.read_text())
                record["seconds_per_grid"] = record["seconds"] / max(record["grids"], 1)
                rows.append({"model": u.model, "setting": u.setting, "layer": u.layer, "method": u.method, **record})
        table = pd.DataFrame(rows)
        atomic_write(self.root / "costs.parquet", lambda p: table.to_parquet(p, index=False))
        return table

    # -- reading ----------------------------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        path = self.root / "results.parquet"
        if not path.exists():
            raise ValueError(f"expected a results table at {path}, found none (is {self.root} a finished run?)")
        return pd.read_parquet(path)

    def maps(self, model: str, setting: str, layer: str, method: str) -> np.ndarray:
        """The stored maps of a unit, memory-mapped: ``(G, T, h, w)`` float16 (float32 if out of its range)."""
        path = self.map_path(Unit(model, setting, layer, method))
        if not path.exists():
            raise ValueError(f"expected stored maps at {path}, found none")
        return np.load(path, mmap_mode="r")

    def grid_path(self, model: str, kind: str) -> Path:
        return self.root / "grids" / f"{model}__{kind}.pt"

    def units(self) -> Iterator[Unit]:
        for path in sorted((self.root / "parts").glob("*.parquet")):
            yield Unit(*path.stem.split("__"))


def _save_npy(path: Path, maps: np.ndarray) -> None:
    """float16 halves the size; maps beyond its range (|x| > 65,504) are kept as float32 instead of inf."""
    fits = not maps.size or float(np.abs(maps).max()) < np.finfo(np.float16).max
    with path.open("wb") as f:
        np.save(f, maps.astype(np.float16 if fits else np.float32))
