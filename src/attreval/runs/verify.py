"""Check a whole run directory against its manifest (:mod:`attreval.runs.manifest`): ``attreval verify``,
``--resume``, the report and :func:`attreval.load_run` all call :func:`verify_run`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attreval.runs.manifest import Manifest, grid_fingerprint, remedy


def verify_run(
    root: str | os.PathLike, *, skip: tuple[str, ...] = (), missing_ok: bool = False, strict: bool = False, digest: bool = True
) -> list[str]:
    """Check a run directory against its manifest; returns one line per bad file (empty: all good).

    No symbolic link may lie inside the run directory (:mod:`attreval.runs.nofollow`). Every recorded file must
    exist (unless ``missing_ok``: ``--resume`` recomputes deleted files), match its size and sha256 (the size
    only with ``digest=False``: the caller hashes what it reads), belong to its path and to this run (the
    record's ``file`` and ``run``), and a part's record must name the unit's maps and timing as they are; a
    grid file must also carry the fingerprint of ``config.json``'s grid settings and store that config's seed.
    ``skip``: relative paths not checked (what the caller rebuilds anyway). ``strict``: files of the run layout
    without a record are reported too (``attreval verify``, :func:`attreval.load_run`)."""
    from attreval.runs.nofollow import symlink_problem, symlinks_under

    manifest = Manifest(root)
    links = symlinks_under(manifest.root)
    if links:  # nothing is read through a link: the rest would check what it points to
        return [symlink_problem(manifest.root, links)]
    problems: list[str] = []
    config = _stored_config(manifest, problems)
    for path in manifest.records():
        rel = manifest.rel(path)
        if rel in skip or rel == "config.json" or (missing_ok and not path.exists()):
            continue
        fingerprint = _fingerprint_of(config, path) if rel.startswith("grids/") else None
        try:
            problem = manifest.problem(path, fingerprint, digest=digest)
            if problem is None and rel.startswith("parts/"):
                problem = manifest.companion_problem(path, missing_ok=missing_ok)
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
