"""The run directory: create it, or check that ``--resume`` continues the same run intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attreval.config import RunConfig
from attreval.runs.identity import IDENTITY_FILE, identity_changes, run_identity
from attreval.runs.lock import LOCK_FILE, RunLock
from attreval.runs.manifest import REBUILT
from attreval.runs.nofollow import refuse_symlinks
from attreval.runs.store import RunStore
from attreval.runs.verify import verify_run


def prepare_run_dir(out: Path, config: RunConfig, resume: bool, lock: RunLock | None = None) -> RunStore:
    """Create the run directory, or check that ``--resume`` continues a run of the same config whose files
    match their manifest records. ``lock`` (taken once the checks pass, before anything is changed) keeps
    a second process out of the directory until it is released."""
    store = RunStore(out)
    wanted = {k: v for k, v in config.to_dict().items() if k != "device"}
    if out.is_dir():
        refuse_symlinks(out)  # nothing is ever written through a link (attreval.runs.nofollow)
    if (out / "config.json").exists():
        if not resume:
            raise ValueError(f"expected an empty output directory, got a run in {out}; pass --resume or another --out")
        problem = store.manifest.problem(out / "config.json")
        if problem is not None:
            raise ValueError(f"expected an intact run directory {out}, got {problem}")
        stored = {k: v for k, v in store.read_json("config.json").items() if k != "device"}
        stored.setdefault("variants", {})  # runs written before [variants] existed
        if _jsonable(stored) != _jsonable(wanted):
            diff = sorted(k for k in set(stored) | set(wanted) if _jsonable(stored.get(k)) != _jsonable(wanted.get(k)))
            raise ValueError(f"expected --resume with the config of {out}, got a different config (differs in: {', '.join(diff)})")
        identity = _same_inputs(store, config)
        if lock is not None:
            lock.acquire()  # before anything changes: another process may be writing here
        store.remove_temporary()  # half-written files of a killed run
        problems = verify_run(out, skip=REBUILT, missing_ok=True)  # deleted files are recomputed, damaged ones named
        if problems:
            more = f" (and {len(problems) - 1} more: see attreval verify {out})" if len(problems) > 1 else ""
            raise ValueError(f"expected the files of {out} to match its manifest, got {problems[0]}{more}")
        if identity is not None and not (out / IDENTITY_FILE).exists():  # killed between config.json and identity.json
            store.manifest.run = identity["fingerprint"]
            store.write_json("config.json", config.to_dict())
            store.write_json(IDENTITY_FILE, identity)
        elif not store.manifest.has(out / "config.json"):  # killed between config.json and its record
            store.write_json("config.json", config.to_dict())
        return store
    # Also with --resume: without config.json this is no run of ours, and a failing run removes what it created.
    if out.exists() and (not out.is_dir() or any(p.suffix != ".tmp" and p.name != LOCK_FILE for p in out.iterdir())):
        raise ValueError(f"expected an empty or new output directory, got the {'non-empty directory' if out.is_dir() else 'file'} {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if lock is not None:
            lock.acquire()
        if (out / "config.json").exists():  # another process started a run here between the check and the lock
            raise ValueError(f"expected an empty output directory, got a run in {out}; pass --resume or another --out")
        store.remove_temporary()
        identity = run_identity(config)
        store.manifest.run = identity["fingerprint"]  # written into every record of the run
        store.write_json("config.json", config.to_dict())
        store.write_json(IDENTITY_FILE, identity)
    except OSError as err:
        raise ValueError(f"expected a writable output directory, got {out} ({err.strerror})") from None
    return store


def _same_inputs(store: RunStore, config: RunConfig) -> dict[str, Any] | None:
    """The current identity of ``config``'s inputs after checking that ``--resume`` continues a run of the same
    inputs (:mod:`attreval.runs.identity`): a changed weights file, architecture source or data folder is a one-line
    error naming it, never a table mixing two models. None: a run made before identities were stored (its
    inputs cannot be compared) that got past its first unit."""
    out, current = store.root, run_identity(config)
    path = out / IDENTITY_FILE
    if not path.exists():
        record = store.manifest.record(out / "config.json") or {}
        return current if "run" in record else None  # a run of this version killed before identity.json
    problem = store.manifest.problem(path)
    if problem is not None:
        raise ValueError(f"expected an intact run directory {out}, got {problem}")
    changes = identity_changes(store.read_json(IDENTITY_FILE), current)
    if changes:
        raise ValueError(
            f"expected --resume with the inputs of {out}, got changed: {'; '.join(changes)}; "
            "restore them, or start a new run in another --out (the table would mix both)"
        )
    return current


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
