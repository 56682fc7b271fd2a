"""The run directory: results table, maps, grids, config and metadata.

Layout::

    RUN/
      config.json            the resolved config (compared on --resume)
      meta.json              versions, seed, device, git revision, timings
      grids/MODEL__KIND.pt   the grid datasets used (KIND = gridpg | disconnected)
      parts/UNIT.parquet     rows of one finished unit (model, setting, layer, method)
      maps/UNIT.npy          float16 maps (G, T, h, w) of that unit, memory-mappable (streamed batch by
                             batch into a temporary file by :class:`MapWriter`, renamed when complete)
      results.parquet        every part, merged in unit order

A unit is finished exactly when its part file exists; every file is written to a temporary name and
renamed, so a killed run leaves either a whole file or none, and ``--resume`` recomputes nothing finished.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

COLUMNS = [
    "model", "setting", "layer", "stage", "method", "kernel_size", "kernel_ref",
    "grid", "cell", "head", "label", "score", "inside", "total", "class_name",
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


def temporary_path(path: Path, tag: str = "") -> Path:
    """``.NAME.PID[TAG].tmp`` beside ``path``: same directory (atomic rename), removed by :meth:`RunStore.remove_temporary`."""
    return path.with_name(f".{path.name}.{os.getpid()}{tag}.tmp")


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same directory, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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

    def map_writer(self, unit: Unit, grids: int) -> MapWriter:
        """A :class:`MapWriter` that streams the ``(grids, T, h, w)`` maps of ``unit``; pass it to :meth:`write_unit`."""
        return MapWriter(self.map_path(unit), grids)

    def write_unit(self, unit: Unit, rows: pd.DataFrame, maps: np.ndarray | MapWriter | None) -> None:
        """Maps first, rows last: the part file marks the unit finished.

        ``maps``: the whole ``(G, T, h, w)`` array, a :class:`MapWriter` holding all ``G`` grids (committed
        here), or None (no maps stored)."""
        if isinstance(maps, MapWriter):
            maps.commit()
        elif maps is not None:
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


class MapWriter:
    """Streams the maps ``(G, T, h, w)`` of one unit to ``path`` batch by batch, so no more than one batch is
    ever in memory: batches go into :func:`temporary_path` (an ``.npy`` made by ``open_memmap``, mapped only
    while a batch is written) and :meth:`commit` renames it onto ``path`` once all ``G`` grids are written.

    dtype as :func:`_save_npy`: float16 while every value fits (|x| < 65,504); the first batch that does not
    switches the file to float32 (the rows written so far are copied, float16 → float32 is exact, so those
    grids keep their float16 rounding where :func:`_save_npy` of the whole array keeps float32 values). As a
    context manager it discards the temporary file when the block ends without :meth:`commit` (an
    exception); a killed process leaves only the ``.tmp`` file. ``seconds`` is the time spent writing.
    """

    def __init__(self, path: Path, grids: int):
        self.path, self.grids, self.tmp = Path(path), grids, temporary_path(Path(path))
        self.written, self.seconds, self.committed = 0, 0.0, False
        self.dtype: type | None = None  # of the file, once the first batch has created it

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()

    def write(self, start: int, batch: np.ndarray) -> None:
        """Write ``batch`` ``(B, T, h, w)`` as grids ``start … start + B - 1``; batches come in order."""
        t0 = time.perf_counter()
        if batch.ndim != 4 or start != self.written or start + len(batch) > self.grids:
            raise ValueError(f"expected maps (B, T, h, w) of grids {self.written}… of {self.grids}, got {batch.shape} from grid {start}")
        if self.dtype is None:
            self._create(batch)
        elif self.dtype == np.float16 and not _fits_float16(batch):
            self._widen(step=max(len(batch), 1))
        _write_rows(self.tmp, start, batch)
        self.written += len(batch)
        self.seconds += time.perf_counter() - t0

    def commit(self) -> None:
        """Rename the temporary file onto ``path``; every one of the ``G`` grids must have been written."""
        if self.dtype is None or self.written != self.grids:
            raise ValueError(f"expected maps of all {self.grids} grids before commit, got {self.written}")
        os.replace(self.tmp, self.path)
        self.committed = True

    def discard(self) -> None:
        """Delete the temporary file (nothing after :meth:`commit`)."""
        if not self.committed:
            self.tmp.unlink(missing_ok=True)

    def _create(self, batch: np.ndarray) -> None:
        """The temporary ``.npy`` of shape ``(G, T, h, w)`` from the first batch ``(B, T, h, w)``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.float16 if _fits_float16(batch) else np.float32
        np.lib.format.open_memmap(self.tmp, mode="w+", dtype=self.dtype, shape=(self.grids, *batch.shape[1:]))

    def _widen(self, step: int) -> None:
        """Switch the temporary file to float32, copying the rows written so far ``step`` grids at a time."""
        wide = temporary_path(self.path, ".float32")
        try:
            shape = np.lib.format.open_memmap(self.tmp, mode="r").shape
            np.lib.format.open_memmap(wide, mode="w+", dtype=np.float32, shape=shape)
            for start in range(0, self.written, step):
                _write_rows(wide, start, np.lib.format.open_memmap(self.tmp, mode="r")[start:start + step])
            os.replace(wide, self.tmp)
        finally:
            wide.unlink(missing_ok=True)
        self.dtype = np.float32


def _write_rows(path: Path, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` ``(B, T, h, w)`` into the ``.npy`` at ``path`` from grid ``start`` (cast to its dtype).

    The file is mapped only during this call, so the pages written do not stay in the process's memory."""
    array = np.lib.format.open_memmap(path, mode="r+")
    if array.shape[1:] != rows.shape[1:]:
        raise ValueError(f"expected maps of shape (B, {', '.join(map(str, array.shape[1:]))}), got {rows.shape}")
    array[start:start + len(rows)] = rows


def _fits_float16(maps: np.ndarray) -> bool:
    """Whether every value of ``maps`` (any shape) is below float16's largest, 65,504, in magnitude."""
    return bool(not maps.size or float(np.abs(maps).max()) < float(np.finfo(np.float16).max))


def _save_npy(path: Path, maps: np.ndarray) -> None:
    """float16 halves the size; maps beyond its range (|x| > 65,504) are kept as float32 instead of inf."""
    with path.open("wb") as f:
        np.save(f, maps.astype(np.float16 if _fits_float16(maps) else np.float32))
