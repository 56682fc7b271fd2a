"""The run directory's manifest: one record per finished file, so damaged, swapped or foreign files are caught.

Layout: ``RUN/manifest/REL.json`` describes ``RUN/REL`` (e.g. ``manifest/parts/UNIT.parquet.json``)::

    {"file": "parts/UNIT.parquet", "bytes": 5120, "sha256": "…", "fingerprint": {…} (grid files only)}

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
        models = [m for m in models if (m.get("label") or m["name"]) == model_key]
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

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

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

    def commit(self, tmp: Path, path: Path, fingerprint: dict[str, Any] | None = None) -> None:
        """Rename the finished file ``tmp`` onto ``path`` and record it (see the module docstring for the order)."""
        record = {"file": self.rel(path), "bytes": tmp.stat().st_size, "sha256": sha256(tmp)}
        if fingerprint is not None:
            record["fingerprint"] = _jsonable(fingerprint)
        where = self.record_path(path)
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
        if not path.exists():
            return f"{self.rel(path)}: listed in the manifest but missing (deleted?); --resume recomputes it"
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
        return None

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


def verify_run(root: str | os.PathLike, *, skip: tuple[str, ...] = (), missing_ok: bool = False, strict: bool = False) -> list[str]:
    """Check a run directory against its manifest; returns one line per bad file (empty: all good).

    Every recorded file must exist (unless ``missing_ok``: ``--resume`` recomputes deleted files) and match
    its size and sha256; a grid file must also carry the fingerprint of ``config.json``'s grid settings and
    store that config's seed. ``skip``: relative paths not checked (what the caller rebuilds anyway).
    ``strict``: files of the run layout without a record are reported too (``attreval verify``)."""
    manifest = Manifest(root)
    problems: list[str] = []
    config = _stored_config(manifest, problems)
    for path in manifest.records():
        rel = manifest.rel(path)
        if rel in skip or rel == "config.json" or (missing_ok and not path.exists()):
            continue
        fingerprint = _fingerprint_of(config, path) if rel.startswith("grids/") else None
        try:
            problem = manifest.problem(path, fingerprint)
        except ValueError as err:  # an unreadable record
            problem = str(err)
        if problem is not None:
            problems.append(problem)
    if config is not None and "seed" in config:  # also the unrecorded grid files a report would read
        for path in sorted(manifest.root.glob("grids/*.pt")):
            if manifest.rel(path) not in skip and not any(p.startswith(manifest.rel(path) + ":") for p in problems):
                problem = grid_seed_problem(path, config["seed"], manifest.rel(path))
                if problem is not None:
                    problems.append(problem)
    if strict:
        problems += [
            f"{manifest.rel(p)}: no manifest record (an unfinished write, or not written by attreval run); {remedy(manifest.rel(p))}"
            for p in manifest.unrecorded()
        ]
    return problems


def _stored_config(manifest: Manifest, problems: list[str]) -> dict[str, Any] | None:
    """``config.json`` after checking it against its record (None when missing or bad: reported in ``problems``)."""
    path = manifest.root / "config.json"
    try:
        problem = manifest.problem(path)
    except ValueError as err:
        problem = str(err)
    if problem is not None:
        problems.append(problem)
        return None
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        problems.append(f"config.json: unreadable ({type(err).__name__}: {err}); {remedy('config.json')}")
        return None
    return config if isinstance(config, dict) else None


def _fingerprint_of(config: dict[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """The fingerprint ``grids/MODEL__KIND.pt`` must carry under ``config`` (None: config too partial to say)."""
    if config is None or "__" not in path.stem:
        return None
    model, kind = path.stem.rsplit("__", 1)
    try:
        return grid_fingerprint(config, model, kind)
    except (KeyError, TypeError):
        return None


def grid_seed_problem(path: Path, seed: int, rel: str) -> str | None:
    """Whether the grid file at ``path`` stores ``seed`` (a grid file of another run's seed is not ours)."""
    import torch

    try:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["seed"]
        except RuntimeError:  # a file in torch's legacy format cannot be memory-mapped
            stored = torch.load(path, map_location="cpu", weights_only=True)["seed"]
    except Exception as err:  # torch raises zip, pickle and runtime errors of several kinds for damaged files
        return f"{rel}: unreadable as a grid file ({type(err).__name__}); {remedy(rel)}"
    if int(stored) != int(seed):
        return f"{rel}: grids of seed {int(stored)}, but the run's config has seed {seed}; {remedy(rel)}"
    return None
