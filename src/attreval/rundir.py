"""The run directory: create it, or check that ``--resume`` continues the same run intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attreval.config import RunConfig
from attreval.lock import LOCK_FILE, RunLock
from attreval.manifest import REBUILT, verify_run
from attreval.store import RunStore


def prepare_run_dir(out: Path, config: RunConfig, resume: bool, lock: RunLock | None = None) -> RunStore:
    """Create the run directory, or check that ``--resume`` continues a run of the same config whose files
    match their manifest records. ``lock`` (taken once the checks pass, before anything is changed) keeps
    a second process out of the directory until it is released."""
    store = RunStore(out)
    wanted = {k: v for k, v in config.to_dict().items() if k != "device"}
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
        if lock is not None:
            lock.acquire()  # before anything changes: another process may be writing here
        store.remove_temporary()  # half-written files of a killed run
        problems = verify_run(out, skip=REBUILT, missing_ok=True)  # deleted files are recomputed, damaged ones named
        if problems:
            more = f" (and {len(problems) - 1} more: see attreval verify {out})" if len(problems) > 1 else ""
            raise ValueError(f"expected the files of {out} to match its manifest, got {problems[0]}{more}")
        if not store.manifest.has(out / "config.json"):  # killed between config.json and its record
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
        store.write_json("config.json", config.to_dict())
    except OSError as err:
        raise ValueError(f"expected a writable output directory, got {out} ({err.strerror})") from None
    return store


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
