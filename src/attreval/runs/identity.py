"""A run's identity: the config *and the content of every input it points to*, so ``--resume`` never mixes.

The config names files (weights, an architecture's source, a labels file, a data folder); the same config text
can point at other bytes tomorrow. :func:`run_identity` digests them all:

* ``config``: the resolved config (:meth:`RunConfig.to_dict`) without ``device``, as the ``--resume``
  comparison;
* ``inputs``: the SHA-256 of every file of :func:`input_files` (weights, shipped weights of a built-in model,
  ``architecture = "file.py:fn"`` or the module file of ``"package.module:fn"``, a variant's ``callable``,
  ``[data] labels_file``);
* ``data``: :func:`data_identity` of ``[data] root``: every file's relative path, size and modification
  time (a folder of 50,000 images is listed in well under a second; hashing it would take minutes), or the
  SHA-256 of each file where the folder is small (Fashion-MNIST / CIFAR-10: at most :data:`HASHED_FILES` files).

The run stores it in ``RUN/identity.json`` (recorded in the manifest); :func:`identity_changes` names what
differs, and its ``fingerprint`` is written into every manifest record of the run (:mod:`attreval.runs.manifest`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from attreval.config import RunConfig

__all__ = ["input_files", "data_identity", "run_identity", "identity_changes", "IDENTITY_FILE"]

IDENTITY_FILE = "identity.json"
HASHED_FILES = 16  # a data folder of at most this many files is hashed, a larger one listed (size, mtime)


def _sha256(path: Path) -> str:
    from attreval.runs.manifest import sha256

    return sha256(path)


def _factory_file(spec: str) -> Path | None:
    """The source file of ``"file.py:fn"`` or ``"package.module:fn"`` (None: not found; the load names it)."""
    from attreval.methods.sources import MEMORY

    where = spec.rpartition(":")[0]
    if not where or spec.startswith(MEMORY):  # attreval.evaluate's objects in memory: their hash is in the spec itself
        return None
    if where.endswith(".py"):
        return Path(where).expanduser()
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin not in (None, "built-in", "frozen") else None


def input_files(config: RunConfig) -> dict[str, Path]:
    """Every input file the config points to, by a label naming its config key (label → path).

    Extend it here when the config gains a key naming a file; :func:`run_identity` hashes them all."""
    from attreval.models.zoo import MODELS, weights_path

    files: dict[str, Path] = {}
    for m in config.models:
        if m.weights:
            files[f"models[{m.key}].weights"] = Path(m.weights)
        elif not m.architecture and m.name in MODELS:
            files[f"models[{m.key}].weights"] = weights_path(m.name)  # the shipped weights
        if m.architecture and (source := _factory_file(m.architecture)) is not None:
            files[f"models[{m.key}].architecture"] = source
    for name, variant in config.variants.items():
        if variant.callable and (source := _factory_file(variant.callable)) is not None:  # [variants.NAME] callable
            files[f"variants[{name}].callable"] = source
    if config.data.labels_file:
        files["data.labels_file"] = Path(config.data.labels_file)
    return files


def data_identity(config: RunConfig) -> dict[str, Any]:
    """The identity of ``[data] root`` (the embedded Fashion-MNIST when empty): ``{"files": N, "sha256": …}``,
    a digest of each file's relative path with its SHA-256 (≤ :data:`HASHED_FILES` files) or its size and
    modification time. Symbolic links to folders are not followed (a loop cannot trap it); a link to a file
    counts as that file."""
    from attreval.data.fashion_mnist import EMBEDDED_DIR

    root = Path(config.data.root) if config.data.root else EMBEDDED_DIR
    if not root.is_dir():
        return {"root": str(root), "files": 0, "sha256": ""}  # the data loader names a missing root
    listing = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # listed, not descended into
        for name in sorted(names + links):
            path = Path(folder) / name
            try:
                info = path.stat()
            except OSError:  # a dangling link: listed as such (the loader names it if it reads it)
                listing.append((path.relative_to(root).as_posix(), -1, 0))
                continue
            listing.append((path.relative_to(root).as_posix(), info.st_size, info.st_mtime_ns))
    digest = hashlib.sha256()
    small = len(listing) <= HASHED_FILES
    for rel, size, mtime in listing:
        content = _sha256(root / rel) if small and (root / rel).is_file() else f"{size}:{mtime}"
        digest.update(f"{rel}\0{content}\n".encode())
    return {"root": str(root), "files": len(listing), "by": "sha256" if small else "size+mtime", "sha256": digest.hexdigest()}


def run_identity(config: RunConfig) -> dict[str, Any]:
    """``{"config", "inputs", "data", "fingerprint"}`` of a run (see the module docstring); a missing input
    file gets the digest ``"missing"`` (the model loader names it)."""
    settings = {k: v for k, v in config.to_dict().items() if k != "device"}
    config_digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    inputs = {label: (_sha256(path) if path.is_file() else "missing") for label, path in sorted(input_files(config).items())}
    identity: dict[str, Any] = {"config": config_digest, "inputs": inputs, "data": data_identity(config)}
    identity["fingerprint"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return identity


def identity_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, one phrase each (empty: the same run)."""
    changes = []
    if stored.get("config") != current.get("config"):
        changes.append("the config")
    old, new = stored.get("inputs") or {}, current.get("inputs") or {}
    for label in sorted(set(old) | set(new)):
        if label not in old:
            changes.append(f"{label} (new)")
        elif label not in new:
            changes.append(f"{label} (no longer used)")
        elif old[label] != new[label]:
            changes.append(f"{label} ({'now missing' if new[label] == 'missing' else 'other contents'})")
    before, after = stored.get("data") or {}, current.get("data") or {}
    if before.get("sha256") != after.get("sha256"):
        changes.append(f"the data in {after.get('root')} ({before.get('files')} files before, {after.get('files')} now)")
    return changes
