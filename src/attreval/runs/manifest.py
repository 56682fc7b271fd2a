"""The run directory's manifest: one record per finished file, so damaged, swapped or foreign files are caught.

Layout: ``RUN/manifest/REL.json`` describes ``RUN/REL`` (e.g. ``manifest/parts/UNIT.parquet.json``)::

    {"file": "parts/UNIT.parquet", "bytes": 5120, "sha256": "…", "run": "…", "fingerprint": {…} (grid files only),
     "with": {"maps/UNIT.npy": "…", "timings/UNIT.json": "…"} (part files only)}

Records bind content to identity: ``file`` names the path the record belongs to (a file swapped or renamed
together with its record fails), ``run`` is the run's fingerprint (:mod:`attreval.runs.identity`, ``RUN/identity.json``:
a file and record copied from another run fail), and a part's ``with`` names the sha256 of the unit's maps and
timing (a maps file deleted together with its record leaves its unit unfinished, and is named).

One record per file, not one shared manifest file, so that the ranks of a torchrun run (each writing its
own units) never write the same file. :meth:`Manifest.commit` keeps this invariant through a kill at any
point: *a record, when present, describes the file now at its path*. It hashes the finished temporary file,
removes the old record (if the file is being replaced), renames the file into place, then writes the new
record atomically. A kill between the rename and the record leaves a file without a record, which counts as
unfinished: ``--resume`` computes it again. A record whose file is missing means the file was deleted.

What it guarantees: a file that was truncated, had bytes changed, or was replaced by another file (another
unit's, another run's, another seed's grids) after it was recorded is reported by ``attreval verify``,
``--resume`` and ``attreval report`` with its name. What it does not: it is no signature (someone who rewrites
a file *and* its record is not caught), and it says nothing about a file damaged before it was hashed
(in memory, or by the code that wrote it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest"
#: What ``attreval run`` writes and records, relative to the run directory (verify lists unrecorded ones).
TRACKED = (
    "config.json",
    "identity.json",
    "meta.json",
    "results.parquet",
    "costs.parquet",
    "statistics.parquet",
    "comparisons.parquet",
    "grids/*.pt",
    "parts/*.parquet",
    "maps/*.npy",
    "timings/*.json",
)
#: Rebuilt at the end of every run, so ``--resume`` does not need them intact.
REBUILT = ("results.parquet", "costs.parquet", "statistics.parquet", "comparisons.parquet", "meta.json")


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read ``chunk`` bytes at a time (memory flat in the file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def grid_fingerprint(config: dict[str, Any], model_key: str, kind: str) -> dict[str, Any]:
    """What made a grid file: seed, data, grid settings, the count of its ``kind`` and the model(s) whose
    confident images it holds (``config``: :meth:`RunConfig.to_dict`, or a stored ``config.json``).
    The device is left out, as in the ``--resume`` config comparison."""
    grids, models = config["grids"], config["models"]
    if grids["selection"] != "intersection":
        models = [m for m in models if (m.get("label") or m["name"].replace(":", "-")) == model_key]  # ModelConfig.key
    return {
        "kind": kind,
        "seed": config["seed"],
        "data": config["data"],
        "models": models,
        "grids": {"n": grids["n"], "count": grids[kind], "confidence": grids["confidence"], "selection": grids["selection"]},
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class Manifest:
    """The records of the run directory ``root``."""

    def __init__(self, root: str | os.PathLike, run: str | None = None):
        self.root = Path(root)
        self._run = run  # the run's fingerprint, written into every record; None: read from identity.json

    @property
    def run(self) -> str | None:
        """The run's fingerprint (``identity.json``), or None for a run made before identities existed."""
        if self._run is None:
            try:
                self._run = str(json.loads((self.root / "identity.json").read_text())["fingerprint"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._run

    @run.setter
    def run(self, value: str | None) -> None:
        self._run = value

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def record_path(self, path: Path) -> Path:
        return self.root / MANIFEST / f"{self.rel(path)}.json"

    def record(self, path: Path) -> dict[str, Any] | None:
        """The record of ``path`` (None: no record); an unreadable record is a one-line error naming it."""
        where = self.record_path(path)
        try:
            record = json.loads(where.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise ValueError(
                f"expected a manifest record (JSON) at {where}, got an unreadable file ({err}); delete it and {self.rel(path)} to recompute"
            ) from None
        if not isinstance(record, dict) or not {"sha256", "bytes"} <= set(record):
            raise ValueError(
                f"expected a manifest record with sha256 and bytes at {where}, got {str(record)[:80]}; "
                f"delete it and {self.rel(path)} to recompute"
            )
        return record

    def has(self, path: Path) -> bool:
        return self.record_path(path).exists()

    def commit(self, tmp: Path, path: Path, fingerprint: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
        """Rename the finished file ``tmp`` onto ``path`` and record it (see the module docstring for the order);
        ``extra``: more keys of the record (a part's ``with``)."""
        from attreval.runs.nofollow import checked

        record: dict[str, Any] = {"file": self.rel(path), "bytes": tmp.stat().st_size, "sha256": sha256(tmp), **(extra or {})}
        if fingerprint is not None:
            record["fingerprint"] = _jsonable(fingerprint)
        where = checked(self.root, self.record_path(path))
        if self.run is not None:
            record["run"] = self.run
        where.unlink(missing_ok=True)  # from here until the new record: no record, i.e. unfinished
        os.replace(tmp, path)
        where.parent.mkdir(parents=True, exist_ok=True)
        staged = where.with_name(f".{where.name}.{os.getpid()}.tmp")
        try:
            staged.write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(staged, where)
        finally:
            staged.unlink(missing_ok=True)

    def forget(self, path: Path) -> None:
        self.record_path(path).unlink(missing_ok=True)

    def problem(self, path: Path, fingerprint: dict[str, Any] | None = None, *, digest: bool = True) -> str | None:
        """What is wrong with the recorded file ``path`` (None: it matches its record, or it has no record).

        ``fingerprint``: what a grid file must have been made from (compared with the recorded one);
        ``digest=False`` compares the size only (the caller hashes the file elsewhere)."""
        record = self.record(path)
        if record is None:
            return None
        rel = self.rel(path)
        if record.get("file", rel) != rel:
            return f"{rel}: its manifest record describes {record['file']} (swapped or renamed together with its record); {remedy(rel)}"
        if not path.exists():
            return f"{rel}: listed in the manifest but missing (deleted?); --resume recomputes it"
        size = path.stat().st_size
        if size != record["bytes"]:
            return f"{self.rel(path)}: {size} bytes, expected {record['bytes']} (truncated or overwritten); {remedy(self.rel(path))}"
        if digest and sha256(path) != record["sha256"]:
            return (
                f"{self.rel(path)}: contents differ from the sha256 in its manifest record (damaged or replaced); {remedy(self.rel(path))}"
            )
        if fingerprint is not None:
            stored = record.get("fingerprint") or {}
            wanted = _jsonable(fingerprint)
            if stored != wanted:
                diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
                return f"{self.rel(path)}: made by another config (differs in: {', '.join(diff)}); {remedy(self.rel(path))}"
        if self.run is not None and record.get("run") != self.run:
            return f"{rel}: recorded by another run (fingerprint {str(record.get('run'))[:12]}, this run's {self.run[:12]}); {remedy(rel)}"
        return None

    def companion_problem(self, path: Path, *, missing_ok: bool = False) -> str | None:
        """Whether the files a part's record names (``with``: the unit's maps and timing) are the ones it was
        scored with (``missing_ok``: one deleted with its record is no problem, ``--resume`` recomputes the unit)."""
        record, rel = self.record(path) or {}, self.rel(path)
        for other, digest in sorted((record.get("with") or {}).items()):
            companion = self.root / other
            if not companion.exists() and (missing_ok or self.has(companion)):
                continue  # recomputed by --resume, or named by its own record
            found = self.record(companion) if companion.exists() else None
            if found is None or found.get("sha256") != digest:
                what = "missing with its record" if not companion.exists() else "not the file this unit was scored with"
                return f"{other}: {what} (the record of {rel} names it); delete {rel} to recompute the unit with --resume"
        return None

    def companions_intact(self, path: Path) -> bool:
        """The files a part's record names exist with the recorded contents (by their records' sha256)."""
        record = self.record(path) or {}
        for other, digest in (record.get("with") or {}).items():
            found = self.record(self.root / other)
            if not (self.root / other).exists() or found is None or found.get("sha256") != digest:
                return False
        return True

    def records(self) -> Iterator[Path]:
        """The paths of all recorded files (whether they exist or not)."""
        base = self.root / MANIFEST
        for where in sorted(base.rglob("*.json")) if base.is_dir() else ():
            if not where.name.startswith("."):
                yield self.root / where.relative_to(base).as_posix()[: -len(".json")]

    def unrecorded(self) -> Iterator[Path]:
        """Files of the run layout (:data:`TRACKED`) that have no record: unfinished or not made by a run."""
        for pattern in TRACKED:
            for path in sorted(self.root.glob(pattern)):
                if path.is_file() and not self.has(path):
                    yield path


def remedy(rel: str) -> str:
    """What to do about a bad file ``rel`` of a run directory."""
    if rel == "config.json":
        return "restore it from a copy, or start a new run"
    if rel in REBUILT:
        return "delete it; --resume rebuilds it"
    return "delete it to recompute it with --resume"


__all__ = ["Manifest", "grid_fingerprint", "remedy", "sha256", "TRACKED", "REBUILT", "MANIFEST"]
